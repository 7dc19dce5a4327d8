// slimkv inspect-kv: per-layer statistics of the keys and values a model caches for a text,
// and the reconstruction error of each quantization granularity (eval/inspect_kv.h).
#include <cstdio>
#include <memory>

#include "cli/commands.h"
#include "cli/common.h"
#include "eval/inspect_kv.h"

namespace slimkv::cli {
namespace {

struct InspectFlags {
  CommonFlags common;
  std::string file;
  int tokens = 1024;
  std::string svg;
};

int InspectMain(InspectFlags f) {
  auto text = ReadFile(f.file);
  if (!text.ok()) return Fail(text.status());
  size_t bad = 0;
  if (!tokenizer::IsValidUtf8(*text, &bad)) {
    return Fail(InvalidArgument("'{}' is not valid UTF-8 (first bad byte at offset {})", f.file, bad));
  }
  // The analysis needs the exact values: the cache stores them in fp32.
  f.common.kv = "fp32";
  f.common.kv_k.clear();
  f.common.kv_v.clear();
  f.common.llama.cache_type_k.clear();
  f.common.llama.cache_type_v.clear();
  auto engine_or = MakeEngine(f.common, f.tokens + 1);
  if (!engine_or.ok()) return Fail(engine_or.status());
  engine::Engine& eng = **engine_or;
  std::vector<int32_t> ids = eng.tokenizer().Encode(*text, eng.tokenizer().add_bos_default(), false);
  if (static_cast<int>(ids.size()) > f.tokens) ids.resize(f.tokens);
  const int bt = eng.kv().config().block_tokens;
  auto r = eval::InspectKv(eng, ids, bt);
  if (!r.ok()) return Fail(r.status());
  std::printf("model %s, %d tokens of %s, blocks of %d tokens\n\n", eng.model().config().name.c_str(),
              r->tokens, f.file.c_str(), bt);
  std::fputs(eval::FormatInspectTable(*r).c_str(), stdout);
  if (!f.svg.empty()) {
    std::string name = eng.options().model_path;
    name = name.substr(name.find_last_of('/') + 1);
    name = name.substr(0, name.find('.'));
    const Status st = eval::WriteInspectChart(*r, name, f.svg);
    if (!st.ok()) return Fail(st);
    std::fprintf(stderr, "chart: %s\n", f.svg.c_str());
  }
  return 0;
}

}  // namespace

CommandMain AddInspectKvCommand(CLI::App& app) {
  auto f = std::make_shared<InspectFlags>();
  CLI::App* cmd =
      app.add_subcommand("inspect-kv", "statistics of cached keys and values, error per granularity");
  f->common.Add(cmd);
  cmd->add_option("-f,--file", f->file, "text file")->required();
  cmd->add_option("-n,--tokens", f->tokens, "tokens of the text to run (default 1024)")
      ->check(CLI::Range(32, 1 << 20));
  cmd->add_option("--svg", f->svg, "also draw the error per layer into this SVG file");
  return [f] { return InspectMain(*f); };
}

}  // namespace slimkv::cli
