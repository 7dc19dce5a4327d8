// slimkv run: generate text from a prompt (optionally through the model's chat template).
#include <cstdio>
#include <memory>

#include "base/log.h"
#include "cli/commands.h"
#include "cli/common.h"
#include "tokenizer/chat_template.h"

namespace slimkv::cli {
namespace {

struct RunFlags {
  CommonFlags common;
  std::string prompt, prompt_file, system;
  int n_predict = 128;
  bool chat = false, ignore_eos = false, json_object = false;
  engine::SamplingParams sampling;
};

int RunMain(const RunFlags& f) {
  std::string prompt = f.prompt;
  if (!f.prompt_file.empty()) {
    auto text = ReadFile(f.prompt_file);
    if (!text.ok()) return Fail(text.status());
    prompt = *text;
  }
  if (prompt.empty()) {
    return Fail(f.prompt_file.empty() ? InvalidArgument("no prompt: give -p TEXT or -f FILE")
                                      : InvalidArgument("prompt file '{}' is empty", f.prompt_file));
  }
  // Flags are checked before the model is loaded, so a typo fails at once.
  if (Status st = f.sampling.Validate(); !st.ok()) return Fail(st);
  size_t bad = 0;
  if (!tokenizer::IsValidUtf8(prompt, &bad)) {
    return Fail(InvalidArgument("the prompt is not valid UTF-8 (first bad byte at offset {})", bad));
  }
  if (!tokenizer::IsValidUtf8(f.system, &bad)) {
    return Fail(InvalidArgument("--system is not valid UTF-8 (first bad byte at offset {})", bad));
  }
  auto engine_or = MakeEngine(f.common, 4096);
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  const auto& tok = eng.tokenizer();
  std::vector<int32_t> ids;
  if (f.chat) {
    // The template the file carries, or the one its vocabulary implies (Gemma-3 270M's file
    // has none but its <start_of_turn> tokens say Gemma).
    const std::string& tmpl_text = tok.chat_template();
    auto style = tokenizer::DetectChatStyle(tok);
    if (!style.ok()) {
      return Fail(Status(style.status().code(),
                         fmt::format("{}: {}", eng.model().file().name(), style.status().message())));
    }
    std::vector<tokenizer::ChatMessage> msgs;
    if (!f.system.empty()) msgs.push_back({"system", f.system});
    msgs.push_back({"user", prompt});
    const std::string text = tokenizer::ApplyChatTemplate(*style, tmpl_text, msgs, true);
    if (f.common.verbose) std::fprintf(stderr, "chat template: %s\n", tokenizer::ChatStyleName(*style));
    ids = tokenizer::EncodePrompt(tok, text, /*chat=*/true);
  } else {
    ids = tokenizer::EncodePrompt(tok, prompt, /*chat=*/false);
  }

  const auto& mc = eng.model().config();
  const kv::KvCache& kv = eng.kv();
  if (f.common.verbose) {
    std::fprintf(stderr, "model: %s (%s), %d layers, %d/%d heads, head dim %d, vocab %d\n",
                 mc.name.c_str(), mc.arch.c_str(), mc.n_layers, mc.n_heads, mc.n_kv_heads,
                 mc.head_dim, mc.n_vocab);
    std::fprintf(stderr, "weights read per token: %s\n", HumanBytes(eng.model().WeightBytesPerToken()).c_str());
    const std::string staging =
        kv.config().needs_staging() ? " (staging block " + HumanBytes(kv.staged_block_bytes()) + ")" : "";
    std::fprintf(stderr, "KV: %s, %d tokens per block, block %s%s, budget %s\n",
                 kv::ConfigName(kv.config()).c_str(), kv.config().block_tokens,
                 HumanBytes(kv.sealed_block_bytes()).c_str(), staging.c_str(), HumanBytes(kv.budget_bytes()).c_str());
    if (kv.policy().active()) {
      std::fprintf(stderr, "KV policy: %s, %d tokens per layer and KV head\n", kv::PolicyName(kv.policy()).c_str(),
                   kv.policy().budget);
    }
    std::fprintf(stderr, "KV bytes per token: %zu (data %zu + metadata %zu)\n",
                 kv.DataBytesPerToken() + kv.MetaBytesPerToken(), kv.DataBytesPerToken(),
                 kv.MetaBytesPerToken());
    std::fprintf(stderr, "prompt: %zu tokens\n", ids.size());
  }
  engine::GenerateOptions go;
  go.max_tokens = f.n_predict;
  go.sampling = f.sampling;
  go.stop_at_end_of_generation = !f.ignore_eos;
  go.json_object = f.json_object;
  if (!f.chat) std::fputs(prompt.c_str(), stdout);
  auto st = eng.Generate(ids, go, [](int32_t, const std::string& text) {
    std::fputs(text.c_str(), stdout);
    std::fflush(stdout);
    return true;
  });
  std::fputc('\n', stdout);
  if (!st.ok()) return Fail(st.status());
  const auto& s = *st;
  const int decode_steps = std::max(0, s.generated_tokens - 1);
  std::fprintf(stderr, "\nprompt: %d tokens in %.3f s (%.1f tokens/s); generated: %d tokens (%.1f tokens/s); stop: %s\n",
               s.prompt_tokens, s.prefill_seconds, s.prompt_tokens / std::max(1e-9, s.prefill_seconds),
               s.generated_tokens, decode_steps / std::max(1e-9, s.decode_seconds), s.stop_reason.c_str());
  if (f.common.verbose) {
    for (const auto& [kind, usage] : s.kv_usage_by_kind) {
      std::fprintf(stderr, "KV %s layers: %lld tokens held, %s (%.1f bytes per token of the sequence)\n",
                   kind.c_str(), static_cast<long long>(usage.tokens), HumanBytes(usage.bytes_allocated).c_str(),
                   s.kv_usage.tokens ? static_cast<double>(usage.bytes_allocated) / s.kv_usage.tokens : 0.0);
    }
    const kv::KvUsage& u = s.kv_usage;
    std::fprintf(stderr,
                 "KV of this sequence: %lld tokens in %lld blocks: data %s + metadata %s + residual %s + "
                 "waste %s = %s (%.1f bytes per token held)\n",
                 static_cast<long long>(u.tokens), static_cast<long long>(u.blocks),
                 HumanBytes(u.bytes_data).c_str(), HumanBytes(u.bytes_meta).c_str(),
                 HumanBytes(u.bytes_residual).c_str(), HumanBytes(u.bytes_waste).c_str(),
                 HumanBytes(u.bytes_allocated).c_str(),
                 u.tokens ? static_cast<double>(u.bytes_allocated) / u.tokens : 0.0);
  }
  return 0;
}

}  // namespace

CommandMain AddRunCommand(CLI::App& app) {
  auto f = std::make_shared<RunFlags>();
  CLI::App* cmd = app.add_subcommand("run", "generate text from a prompt");
  f->common.Add(cmd);
  cmd->add_option("-c,--ctx-size", f->common.n_ctx, "context size in tokens (default 4096)")
      ->check(CLI::Range(0, 1 << 24));
  cmd->add_option("-p,--prompt", f->prompt, "prompt text");
  cmd->add_option("-f,--file", f->prompt_file, "read the prompt from a file");
  cmd->add_option("-n,--n-predict", f->n_predict, "tokens to generate at most")->check(CLI::Range(0, 1 << 24));
  cmd->add_flag("--chat", f->chat, "wrap the prompt in the model's chat template");
  cmd->add_option("--system", f->system, "system message (with --chat)");
  cmd->add_flag("--ignore-eos", f->ignore_eos, "keep generating past end-of-generation tokens");
  cmd->add_flag("--json-object", f->json_object,
                "constrain the output to one JSON object (response_format json_object); stops when it closes");
  cmd->add_option("--temp", f->sampling.temperature, "temperature (0 = greedy)");
  cmd->add_option("--top-k", f->sampling.top_k, "top-k (0 = off)");
  cmd->add_option("--top-p", f->sampling.top_p, "top-p (1 = off)");
  cmd->add_option("--min-p", f->sampling.min_p, "min-p (0 = off)");
  cmd->add_option("--repeat-penalty", f->sampling.repeat_penalty, "repetition penalty (1 = off)");
  cmd->add_option("--repeat-last-n", f->sampling.repeat_last_n, "tokens the penalty looks back");
  cmd->add_option("-s,--seed", f->sampling.seed, "random seed");
  return [f] { return RunMain(*f); };
}

}  // namespace slimkv::cli
