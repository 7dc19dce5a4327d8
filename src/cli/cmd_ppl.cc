// slimkv ppl: perplexity of a text file, llama.cpp's method (see eval/perplexity.h).
#include <cstdio>
#include <memory>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "eval/perplexity.h"
#include "eval/result_json.h"

namespace slimkv::cli {
namespace {

struct PplFlags {
  CommonFlags common;
  std::string file;
  int chunks = -1;
  int step = 0;
  std::string kl_base = "fp16";
  bool stream = false;
  int max_tokens = 0;
  std::string json;
};

// With `:recall`: recall's traffic over the run, printed (j null) or put in --json.
void ReportRecall(engine::Engine& eng, nlohmann::json* j) {
  if (!eng.kv().policy().recall) return;
  const kv::EvictionStats e = eng.kv().eviction_stats();
  if (j) {
    (*j)["recall"] = eval::RecallJson(e);
  } else {
    std::printf("%s\n", kv::RecallSummary(e).c_str());
  }
}

// The run's identity beside its numbers in --json.
nlohmann::json Header(engine::Engine& eng, int n_ctx) {
  return {{"model", eng.model().config().name},
          {"kv", KvDescription(eng)},
          {"kv_share", model::KvShareMapString(eng.model().kv_share())},
          {"policy", kv::PolicyName(eng.kv().policy())},
          {"policy_budget", eng.kv().policy().budget},
          {"n_ctx", n_ctx}};
}

int PplMain(const PplFlags& f) {
  auto text = ReadFile(ResolveDataFile(f.file));
  if (!text.ok()) return Fail(text.status());
  size_t bad = 0;
  if (!tokenizer::IsValidUtf8(*text, &bad)) {
    return Fail(InvalidArgument("'{}' is not valid UTF-8 (first bad byte at offset {})", f.file, bad));
  }
  const int n_ctx = f.common.n_ctx > 0 ? f.common.n_ctx : 512;
  // Streaming holds one long sequence: without a policy it needs room for the whole stream.
  auto engine_or = MakeEngine(f.common, f.stream ? (f.common.n_ctx > 0 ? f.common.n_ctx : 32768) : n_ctx);
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  const double t0 = NowSeconds();
  const auto& tok = eng.tokenizer();
  const std::vector<int32_t> ids = tok.Encode(*text, tok.add_bos_default(), /*parse_special=*/false);
  const double t_tok = NowSeconds() - t0;
  std::fprintf(stderr, "tokenized %s: %zu bytes -> %zu tokens in %.2f s\n", f.file.c_str(), text->size(),
               ids.size(), t_tok);
  if (f.stream) {
    std::vector<int32_t> toks = ids;
    if (f.max_tokens > 0 && static_cast<int>(toks.size()) > f.max_tokens) toks.resize(f.max_tokens);
    auto r = eval::StreamPerplexity(eng, toks, true);
    if (!r.ok()) return Fail(r.status());
    const auto& kv = eng.kv();
    std::printf("model %s, KV %s, policy %s (budget %d), streaming %lld tokens one at a time\n",
                eng.model().config().name.c_str(), kv::ConfigName(kv.config()).c_str(),
                kv::PolicyName(kv.policy()).c_str(), kv.policy().budget, static_cast<long long>(r->scored_tokens));
    std::printf("PPL = %.4f; KV held at the end %s, at most %s; %.1f tokens/s\n", r->ppl,
                HumanBytes(r->kv_bytes_end).c_str(), HumanBytes(r->kv_bytes_max).c_str(),
                r->scored_tokens / std::max(1e-9, r->seconds));
    for (const auto& [n, p] : r->curve) std::fprintf(stderr, "  after %lld tokens: ppl %.4f\n", static_cast<long long>(n), p);
    ReportRecall(eng, nullptr);
    if (!f.json.empty()) {
      nlohmann::json j = Header(eng, n_ctx);
      j.update(eval::ToJson(*r));
      ReportRecall(eng, &j);
      if (Status st = eval::WriteJsonFile(f.json, j); !st.ok()) return Fail(st);
    }
    return 0;
  }
  eval::PerplexityOptions po;
  po.n_ctx = n_ctx;
  po.max_chunks = f.chunks;
  po.step = f.step;
  auto cfg = KvConfigFromFlags(f.common);
  if (!cfg.ok()) return Fail(cfg.status());
  if (!f.kl_base.empty() && f.kl_base != "none") {
    auto base = kv::ParsePreset(f.kl_base);
    if (!base.ok()) return Fail(base.status());
    if (f.common.block_tokens > 0) base->block_tokens = f.common.block_tokens;
    // The same format is its own base, unless layers share a cache or a policy evicts (the base
    // does neither).
    if (!(base->k == cfg->k && base->v == cfg->v && base->residual == cfg->residual) ||
        !f.common.kv_share.empty() || !f.common.kv_policy.empty()) {
      po.kl_base = *base;
    }
  }
  auto r = eval::Perplexity(eng, ids, po);
  if (!r.ok()) return Fail(r.status());
  const kv::PolicySpec& policy = eng.kv().policy();
  std::printf(
      "model %s, KV %s (%zu bytes/token), ctx %d, %d chunks, %lld scored "
      "tokens, %d tokens per step%s\n",
      eng.model().config().name.c_str(), KvDescription(eng).c_str(),
      eng.kv().DataBytesPerToken() + eng.kv().MetaBytesPerToken(), n_ctx, r->chunks,
      static_cast<long long>(r->scored_tokens), r->step,
      policy.active() ? fmt::format(", policy {} (budget {}; scored tokens decoded one per step)",
                                    kv::PolicyName(policy), policy.budget)
                            .c_str()
                      : "");
  std::printf("PPL = %.4f +/- %.5f\n", r->ppl, r->ppl_stderr);
  if (po.kl_base) {
    std::printf("base %s: PPL = %.4f, delta %+.3f%%; mean KL(base || this) = %.6f +/- %.6f nats; same top-1 %.2f%%\n",
                f.kl_base.c_str(), r->base_ppl, 100.0 * (r->ppl / r->base_ppl - 1), r->mean_kl, r->kl_stderr,
                100.0 * r->top1_agreement);
  }
  std::fprintf(stderr, "%.1f s, %.1f tokens/s\n", r->seconds,
               static_cast<double>(r->chunks) * n_ctx / std::max(1e-9, r->seconds));
  ReportRecall(eng, nullptr);
  if (!f.json.empty()) {
    nlohmann::json j = Header(eng, n_ctx);
    j["bytes_per_token"] = eng.kv().DataBytesPerToken() + eng.kv().MetaBytesPerToken();
    if (po.kl_base) j["kl_base"] = f.kl_base;
    j.update(eval::ToJson(*r));
    ReportRecall(eng, &j);
    if (Status st = eval::WriteJsonFile(f.json, j); !st.ok()) return Fail(st);
  }
  return 0;
}

}  // namespace

CommandMain AddPerplexityCommand(CLI::App& app) {
  auto f = std::make_shared<PplFlags>();
  CLI::App* cmd = app.add_subcommand("ppl", "perplexity of a text file (llama.cpp's method)");
  f->common.Add(cmd);
  cmd->add_option("-f,--file", f->file, "text file")->required();
  cmd->add_option("-c,--ctx,--ctx-size", f->common.n_ctx, "window size in tokens (default 512)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("--step", f->step,
                  "tokens per forward call (default: -b, or one KV block for "
                  "quantized formats so every "
                  "scored token sees the cache as a decoding token does; with "
                  "--kv-policy the window's first "
                  "half is the prompt, compressed at its end, and the scored "
                  "half is decoded one token per step)")
      ->check(CLI::Range(0, 1 << 16));
  cmd->add_option("--kl-base", f->kl_base,
                  "also run this KV preset and report KL divergence and top-1 agreement against it "
                  "(default fp16; 'none' to skip)");
  cmd->add_flag("--stream", f->stream,
                "stream the text through one sequence, one token per step (with --kv-policy/--kv-budget: "
                "constant memory past the trained context)");
  cmd->add_option("--max-tokens", f->max_tokens, "with --stream: stop after this many tokens")->check(CLI::Range(0, 1 << 30));
  cmd->add_option("--chunks", f->chunks, "score at most this many windows (default: all)")
      ->check(CLI::Range(1, 1 << 30));
  cmd->add_option("--json", f->json, "also write the results to this JSON file");
  return [f] { return PplMain(*f); };
}

}  // namespace slimkv::cli
