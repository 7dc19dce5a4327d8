#include "eval/needle.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <fstream>
#include <map>
#include <optional>
#include <nlohmann/json.hpp>
#include <set>
#include <sstream>

#include "base/log.h"
#include "eval/svg.h"
#include "tokenizer/chat_template.h"

namespace slimkv::eval {

Result<NeedleSpec> LoadNeedleSpec(const std::string& path) {
  std::ifstream in(path);
  if (!in) return NotFound("needle spec '{}' not found (make setup writes data/needle.json)", path);
  nlohmann::json j;
  try {
    in >> j;
    NeedleSpec s{j.at("needle").get<std::string>(), j.at("question").get<std::string>(),
                 j.at("system").get<std::string>(), j.at("instruction").get<std::string>(),
                 j.at("answer").get<std::string>()};
    if (NormalizeAnswer(s.answer).empty()) return DataLoss("{}: empty answer", path);
    return s;
  } catch (const std::exception& e) {
    return DataLoss("{}: {}", path, e.what());
  }
}

std::string NormalizeAnswer(const std::string& s) {
  std::string out;
  bool space = false;
  for (unsigned char c : s) {
    if (std::isalnum(c)) {
      if (space && !out.empty()) out += ' ';
      out += static_cast<char>(std::tolower(c));
      space = false;
    } else {
      space = true;
    }
  }
  return out;
}

std::vector<int32_t> NeedlePrompt(const tokenizer::Tokenizer& tok, const NeedleSpec& spec,
                                  const std::string& document, std::optional<tokenizer::ChatStyle> style) {
  if (!style) return tokenizer::EncodePrompt(tok, document + "\n\nQuestion: " + spec.question + "\nAnswer:", false);
  const std::vector<tokenizer::ChatMessage> msgs = {
      {"system", spec.system}, {"user", document}, {"user", spec.question + " " + spec.instruction}};
  return tokenizer::EncodePrompt(tok, tokenizer::ApplyChatTemplate(*style, tok.chat_template(), msgs, true), true);
}

Result<NeedleResult> RunNeedle(engine::Engine& engine, const std::string& haystack, const NeedleSpec& spec,
                               const NeedleOptions& o) {
  const auto& tok = engine.tokenizer();
  const std::vector<int32_t> hay = tok.Encode(haystack, false, false);
  const std::vector<int32_t> needle = tok.Encode(spec.needle, false, false);
  const std::vector<int32_t> period = tok.Encode(".", false, false);
  NeedleResult r;
  r.plain = PlainPrompt(o.prompt, tok);
  std::optional<tokenizer::ChatStyle> style;
  if (!r.plain) {
    auto detected = tokenizer::DetectChatStyle(tok);
    RETURN_IF_ERROR(detected.status());
    style = *detected;
  }
  const std::string want = NormalizeAnswer(spec.answer);
  const kv::EvictionStats before = engine.kv().eviction_stats();
  Progress progress("needle", static_cast<int64_t>(o.contexts.size() * o.depths.size()), "cells", false);
  int done = 0, found = 0;
  for (int ctx : o.contexts) {
    const int n_hay = ctx - o.buffer - static_cast<int>(needle.size());
    if (n_hay <= 0 || n_hay > static_cast<int>(hay.size())) {
      return InvalidArgument("context {} cannot hold the needle (haystack of {} tokens)", ctx, hay.size());
    }
    if (o.policy.active()) {
      kv::PolicySpec p = o.policy;
      if (o.budget_fraction > 0) p.budget = std::max(engine.kv().config().block_tokens,
                                                     static_cast<int>(std::lround(ctx * o.budget_fraction)));
      RETURN_IF_ERROR(engine.kv().SetPolicy(p));
    }
    for (int depth : o.depths) {
      // The package's insertion: at depth% of the haystack, moved back to a sentence end.
      std::vector<int32_t> context(hay.begin(), hay.begin() + n_hay);
      size_t at = static_cast<size_t>(static_cast<double>(n_hay) * depth / 100.0);
      if (depth < 100) {
        while (at > 0 && std::find(period.begin(), period.end(), context[at - 1]) == period.end()) --at;
      } else {
        at = context.size();
      }
      context.insert(context.begin() + static_cast<int64_t>(at), needle.begin(), needle.end());
      const std::vector<int32_t> ids = NeedlePrompt(tok, spec, tok.Decode(context), style);
      engine::GenerateOptions go;
      go.max_tokens = o.max_new_tokens;
      go.sampling.temperature = 0;
      std::string out;
      auto st = engine.Generate(ids, go, [&](int32_t, const std::string& text) {
        out += text;
        return true;
      });
      RETURN_IF_ERROR(st.status());
      NeedleCell cell{ctx, depth, NormalizeAnswer(out).find(want) != std::string::npos, out};
      found += cell.found;
      r.cells.push_back(std::move(cell));
      // done is counted before the line is formatted (an argument list has no order).
      ++done;
      if (o.progress) progress.Update(done, fmt::format("found {}/{}", found, done));
    }
  }
  progress.Finish();
  r.accuracy = r.cells.empty() ? 0 : static_cast<double>(found) / r.cells.size();
  if (o.policy.recall) r.recall = engine.kv().eviction_stats().Since(before);
  return r;
}

namespace {
void Axes(const NeedleResult& r, std::vector<int>* contexts, std::vector<int>* depths) {
  std::set<int> c, d;
  for (const auto& cell : r.cells) c.insert(cell.context), d.insert(cell.depth);
  contexts->assign(c.begin(), c.end());
  depths->assign(d.begin(), d.end());
}
}  // namespace

Status WriteNeedleChart(const NeedleResult& r, const std::string& title, const std::string& path) {
  std::vector<int> contexts, depths;
  Axes(r, &contexts, &depths);
  HeatMap h;
  h.title = title;
  h.x_label = "context (tokens)";
  h.y_label = "needle depth (%)";
  h.scale_label = "found (1) or missed (0)";
  h.scale_min = 0;
  h.scale_max = 1;
  h.decimals = 0;
  for (int c : contexts) h.column_labels.push_back(std::to_string(c));
  for (int d : depths) h.row_labels.push_back(std::to_string(d));
  h.values.assign(depths.size(), std::vector<double>(contexts.size(), std::nan("")));
  for (const auto& cell : r.cells) {
    const size_t row = std::find(depths.begin(), depths.end(), cell.depth) - depths.begin();
    const size_t col = std::find(contexts.begin(), contexts.end(), cell.context) - contexts.begin();
    h.values[row][col] = cell.found ? 1 : 0;
  }
  return h.WriteFile(path);
}

std::string FormatNeedleTable(const NeedleResult& r) {
  std::vector<int> contexts, depths;
  Axes(r, &contexts, &depths);
  std::string s = "| depth \\ context |";
  for (int c : contexts) s += fmt::format(" {} |", c);
  s += "\n|---|";
  for (size_t i = 0; i < contexts.size(); ++i) s += "---|";
  s += "\n";
  for (int d : depths) {
    s += fmt::format("| {}% |", d);
    for (int c : contexts) {
      for (const auto& cell : r.cells)
        if (cell.context == c && cell.depth == d) s += cell.found ? " found |" : " - |";
    }
    s += "\n";
  }
  s += fmt::format("\naccuracy {:.1f}% ({} cells)\n", 100 * r.accuracy, r.cells.size());
  if (r.recall) s += kv::RecallSummary(*r.recall) + "\n";
  return s;
}

}  // namespace slimkv::eval
