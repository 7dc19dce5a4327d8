// Long-context tasks beyond one needle, in the style of RULER (Hsieh et al.
// 2024, github.com/NVIDIA/RULER), generated here from the eval text with a
// fixed seed (data sets cannot be downloaded on this machine):
//
//   mk   multi-key needles: several "One of the special magic numbers for KEY
//   is: VALUE."
//        sentences with different keys at random depths; the question asks for
//        one key's value (the others are distractors).
//   mv   multi-value needles: the same key with several values; all are asked
//   for. vt   variable tracking: a chain "VAR A = 12345", "VAR B = VAR A", ...
//   spread over the
//        text; the question asks for every variable that holds the value.
//   cwe  common-word extraction: the context is a numbered list of words in
//   which a few
//        words appear `freq_common` times and the rest `freq_rare` times; the
//        question asks for the most common ones.
//
// mk, mv and vt hide their sentences in essay text (RULER's "essay" haystack),
// cut from the eval text at a seeded offset; cwe draws its words from the eval
// text's vocabulary. Prompts go through the model's chat template, with RULER's
// answer prefix opening the assistant turn. Scoring is RULER's
// string_match_all: the share of expected strings that appear in the generation
// (case-insensitive).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "base/status.h"
#include "engine/engine.h"
#include "eval/prompt.h"
#include "kv/policy.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::eval {

struct RulerTaskSpec {
  std::string name;         // "mk", "mv", "vt", "cwe"
  int max_new_tokens = 32;  // answer tokens at most
};
// The tasks by name; InvalidArgument listing them for an unknown one.
Result<RulerTaskSpec> FindRulerTask(const std::string& name);
std::string RulerTaskList();

// Task sizes. Defaults are RULER's own where a 135M model can still do the task
// (mk: 4 keys, mv: 4 values, vt: 1 chain of 4 hops); cwe asks for 5 words
// instead of 10.
struct RulerSizes {
  int mk_keys = 4;
  int mv_values = 4;
  int vt_hops = 4;
  int cwe_common = 5;
  int cwe_freq_common = 12;
  int cwe_freq_rare = 2;
};

struct RulerSample {
  std::string task;
  std::string user;                  // the user turn: instructions, context and question
  std::string answer_prefix;         // opens the assistant turn
  std::vector<std::string> answers;  // every one should appear in the generation
};

// Builds one sample whose prompt is about `context_tokens` tokens (the chat
// template included) from `text`, deterministically from `seed`.
// InvalidArgument when the text is too short for the context.
class RulerGenerator {
 public:
  RulerGenerator(const tokenizer::Tokenizer& tok, const std::string& text, RulerSizes sizes = {});
  Result<RulerSample> Make(const std::string& task, int context_tokens, uint64_t seed) const;

 private:
  Result<RulerSample> Needles(const std::string& task, int context_tokens, uint64_t seed) const;
  Result<RulerSample> VariableTracking(int context_tokens, uint64_t seed) const;
  Result<RulerSample> CommonWords(int context_tokens, uint64_t seed) const;
  // Essay text of about `tokens` tokens starting at a seeded sentence start,
  // with `inserts` placed between sentences at sorted random depths.
  std::string Haystack(int tokens, const std::vector<std::string>& inserts, uint64_t seed) const;
  int Tokens(const std::string& s) const;

  const tokenizer::Tokenizer& tok_;
  const std::string& text_;
  RulerSizes sizes_;
  std::vector<size_t> sentence_starts_;  // byte offsets in text_ where a sentence begins
  std::vector<std::string> vocabulary_;  // distinct lower-case words of text_, sorted
  double bytes_per_token_ = 4;           // of text_, to size cuts before tokenizing them
};

// string_match_all: the share of `answers` found in `output`, ignoring case.
double RulerScore(const std::vector<std::string>& answers, const std::string& output);

struct RulerOptions {
  std::vector<std::string> tasks = {"mk", "mv", "vt", "cwe"};
  std::vector<int> contexts = {2048};  // tokens of the whole prompt
  int samples = 4;                     // per task and context, seeds seed .. seed + samples - 1
  uint64_t seed = 1;
  RulerSizes sizes;
  kv::PolicySpec policy;       // eviction; budget a fraction of each context when
  double budget_fraction = 0;  // budget_fraction > 0
  // Through the chat template, the answer prefix after the assistant's header; plain: the
  // task text, then "Answer:" and the answer prefix (eval/prompt.h).
  PromptStyle prompt = PromptStyle::kAuto;
  bool progress = true;
};

struct RulerCell {
  std::string task;
  int context = 0;
  int sample = 0;
  int prompt_tokens = 0;
  double score = 0;  // share of the expected strings found
  std::vector<std::string> answers;
  std::string output;
};

struct RulerResult {
  std::vector<RulerCell> cells;  // task-major, then context, then sample
  bool plain = false;             // the prompts were plain (RulerOptions::prompt)
  // Mean score of a task over its samples at one context (NaN when it has
  // none).
  double Score(const std::string& task, int context) const;
  double Mean() const;  // over every cell
};

Result<RulerResult> RunRuler(engine::Engine& engine, const std::string& text, const RulerOptions& options);

// A markdown table: task x context mean scores.
std::string FormatRulerTable(const RulerResult& r);

}  // namespace slimkv::eval
