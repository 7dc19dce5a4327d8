#include "eval/ruler.h"

#include <algorithm>
#include <cctype>
#include <cmath>
#include <random>
#include <set>

#include "base/log.h"
#include "tokenizer/chat_template.h"

namespace slimkv::eval {
namespace {

// RULER's templates (scripts/data/synthetic/constants.py), numbers as the
// needle values.
constexpr const char* kNeedleIntro =
    "Some special magic numbers are hidden within the following text. Make "
    "sure to memorize it. I will quiz you "
    "about the numbers afterwards.\n";
constexpr const char* kVtIntro =
    "Memorize and track the chain(s) of variable "
    "assignment hidden in the following text.\n\n";
constexpr const char* kCweIntro =
    "Below is a numbered list of words. In these words, some appear more often "
    "than others. Memorize the ones that "
    "appear most often.\n";

const RulerTaskSpec kTasks[] = {{"mk", 24}, {"mv", 64}, {"vt", 40}, {"cwe", 64}};

bool IsSentenceEnd(char c) { return c == '.' || c == '?' || c == '!'; }

// A seed per (task, context, sample) so every method answers the same samples.
uint64_t SampleSeed(uint64_t seed, const std::string& task, int context, int sample) {
  uint64_t h = seed * 0x9E3779B97F4A7C15ull;
  for (char c : task) h = (h ^ static_cast<unsigned char>(c)) * 1099511628211ull;
  h = (h ^ static_cast<uint64_t>(context)) * 1099511628211ull;
  return (h ^ static_cast<uint64_t>(sample)) * 1099511628211ull;
}

std::string Lower(std::string s) {
  for (char& c : s) c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
  return s;
}

}  // namespace

Result<RulerTaskSpec> FindRulerTask(const std::string& name) {
  for (const auto& t : kTasks)
    if (name == t.name) return t;
  return InvalidArgument("unknown RULER task '{}' (tasks: {})", name, RulerTaskList());
}

std::string RulerTaskList() {
  std::string s;
  for (const auto& t : kTasks) s += (s.empty() ? "" : ", ") + t.name;
  return s;
}

RulerGenerator::RulerGenerator(const tokenizer::Tokenizer& tok, const std::string& text, RulerSizes sizes)
    : tok_(tok), text_(text), sizes_(sizes) {
  sentence_starts_.push_back(0);
  for (size_t i = 1; i + 1 < text_.size(); ++i) {
    if (IsSentenceEnd(text_[i - 1]) && text_[i] == ' ' &&
        std::isupper(static_cast<unsigned char>(text_[i + 1]))) {
      sentence_starts_.push_back(i + 1);
    }
  }
  std::set<std::string> words;
  std::string w;
  for (size_t i = 0; i <= text_.size(); ++i) {
    const unsigned char c = i < text_.size() ? static_cast<unsigned char>(text_[i]) : ' ';
    if (std::isalpha(c) && c < 0x80) {
      w += static_cast<char>(std::tolower(c));
    } else {
      if (w.size() >= 4 && w.size() <= 10) words.insert(w);
      w.clear();
    }
  }
  vocabulary_.assign(words.begin(), words.end());
  const size_t probe = std::min<size_t>(text_.size(), 20000);
  const int n = Tokens(text_.substr(0, probe));
  if (n > 0) bytes_per_token_ = static_cast<double>(probe) / n;
}

int RulerGenerator::Tokens(const std::string& s) const {
  return static_cast<int>(tok_.Encode(s, false, false).size());
}

std::string RulerGenerator::Haystack(int tokens, const std::vector<std::string>& inserts,
                                     uint64_t seed) const {
  std::mt19937_64 rng(seed);
  if (tokens <= 0) tokens = 1;
  const size_t want_bytes = static_cast<size_t>(tokens * bytes_per_token_ * 1.3) + 64;
  // A sentence start with enough text after it (the text wraps around when it
  // is short).
  size_t last_ok = 0;
  while (last_ok + 1 < sentence_starts_.size() && sentence_starts_[last_ok + 1] + want_bytes <= text_.size())
    ++last_ok;
  const size_t start = sentence_starts_[std::uniform_int_distribution<size_t>(0, last_ok)(rng)];
  std::string cut = text_.substr(start, want_bytes);
  while (cut.size() < want_bytes) cut += " " + text_.substr(0, want_bytes - cut.size());
  // Exactly `tokens` tokens of it, ending at the last sentence end.
  std::vector<int32_t> ids = tok_.Encode(cut, false, false);
  if (static_cast<int>(ids.size()) > tokens) ids.resize(tokens);
  std::string hay = tok_.Decode(ids);
  size_t end = hay.size();
  while (end > 0 && !IsSentenceEnd(hay[end - 1])) --end;
  if (end > hay.size() / 2) hay.resize(end);
  // Sentences, then the inserts at sorted random sentence boundaries.
  std::vector<std::string> sentences;
  size_t from = 0;
  for (size_t i = 1; i + 1 < hay.size(); ++i) {
    if (IsSentenceEnd(hay[i - 1]) && hay[i] == ' ') {
      sentences.push_back(hay.substr(from, i - from));
      from = i + 1;
    }
  }
  sentences.push_back(hay.substr(from));
  std::vector<size_t> at(inserts.size());
  std::uniform_int_distribution<size_t> place(0, sentences.size());
  for (auto& a : at) a = place(rng);
  std::sort(at.begin(), at.end());
  std::string out;
  size_t next = 0;
  for (size_t s = 0; s <= sentences.size(); ++s) {
    while (next < at.size() && at[next] == s) {
      out += (out.empty() ? "" : " ") + inserts[next];
      ++next;
    }
    if (s < sentences.size()) out += (out.empty() ? "" : " ") + sentences[s];
  }
  return out;
}

Result<RulerSample> RulerGenerator::Make(const std::string& task, int context_tokens, uint64_t seed) const {
  RETURN_IF_ERROR(FindRulerTask(task).status());
  if (context_tokens < 256)
    return InvalidArgument("RULER context {} is too short (at least 256 tokens)", context_tokens);
  if (task == "mk" || task == "mv") return Needles(task, context_tokens, seed);
  if (task == "vt") return VariableTracking(context_tokens, seed);
  return CommonWords(context_tokens, seed);
}

Result<RulerSample> RulerGenerator::Needles(const std::string& task, int context_tokens,
                                            uint64_t seed) const {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<size_t> word(0, vocabulary_.size() - 1);
  std::uniform_int_distribution<int> number(1000000, 9999999);
  const int n_keys = task == "mk" ? sizes_.mk_keys : 1;
  const int n_values = task == "mv" ? sizes_.mv_values : 1;
  std::vector<std::string> keys;
  while (static_cast<int>(keys.size()) < n_keys) {
    const std::string& k = vocabulary_[word(rng)];
    if (k.size() >= 5 && std::find(keys.begin(), keys.end(), k) == keys.end()) keys.push_back(k);
  }
  RulerSample s;
  s.task = task;
  std::vector<std::string> needles;
  for (size_t k = 0; k < keys.size(); ++k) {
    for (int v = 0; v < n_values; ++v) {
      const std::string value = std::to_string(number(rng));
      needles.push_back("One of the special magic numbers for " + keys[k] + " is: " + value + ".");
      if (k == 0) s.answers.push_back(value);
    }
  }
  std::shuffle(needles.begin(), needles.end(), rng);
  const std::string& query = keys[0];
  const std::string question =
      "\nWhat are all the special magic numbers for " + query + " mentioned in the provided text?";
  s.answer_prefix = " The special magic numbers for " + query + " mentioned in the provided text are";
  const int max_new = FindRulerTask(task)->max_new_tokens;
  const int overhead = Tokens(std::string(kNeedleIntro) + question + s.answer_prefix) + 40;  // + template
  int needle_tokens = 0;
  for (const auto& n : needles) needle_tokens += Tokens(n) + 1;
  const int hay = context_tokens - max_new - overhead - needle_tokens;
  if (hay < 32)
    return InvalidArgument("context {} leaves no room for the haystack of task {}", context_tokens, task);
  s.user = std::string(kNeedleIntro) + Haystack(hay, needles, rng()) + question;
  return s;
}

Result<RulerSample> RulerGenerator::VariableTracking(int context_tokens, uint64_t seed) const {
  std::mt19937_64 rng(seed);
  std::uniform_int_distribution<int> letter('A', 'Z');
  std::vector<std::string> vars;
  while (static_cast<int>(vars.size()) < sizes_.vt_hops + 1) {
    std::string v(5, 'A');
    for (char& c : v) c = static_cast<char>(letter(rng));
    if (std::find(vars.begin(), vars.end(), v) == vars.end()) vars.push_back(v);
  }
  const std::string value = std::to_string(std::uniform_int_distribution<int>(10000, 99999)(rng));
  std::vector<std::string> chain = {"VAR " + vars[0] + " = " + value + "."};
  for (size_t i = 1; i < vars.size(); ++i) chain.push_back("VAR " + vars[i] + " = VAR " + vars[i - 1] + ".");
  RulerSample s;
  s.task = "vt";
  s.answers = vars;
  const std::string question =
      "\nQuestion: Find all variables that are assigned the value " + value + " in the text above.";
  s.answer_prefix =
      " Answer: According to the chain(s) of variable assignment "
      "in the text above, " +
      std::to_string(vars.size()) + " variables are assigned the value " + value + ", they are: ";
  int chain_tokens = 0;
  for (const auto& c : chain) chain_tokens += Tokens(c) + 1;
  const int overhead = Tokens(std::string(kVtIntro) + question + s.answer_prefix) + 40;
  const int hay = context_tokens - FindRulerTask("vt")->max_new_tokens - overhead - chain_tokens;
  if (hay < 32)
    return InvalidArgument("context {} leaves no room for the haystack of task vt", context_tokens);
  // Haystack keeps the inserts in order: the chain reads top to bottom.
  s.user = std::string(kVtIntro) + Haystack(hay, chain, rng()) + question;
  return s;
}

Result<RulerSample> RulerGenerator::CommonWords(int context_tokens, uint64_t seed) const {
  std::mt19937_64 rng(seed);
  std::vector<std::string> pool = vocabulary_;
  std::shuffle(pool.begin(), pool.end(), rng);
  const int n_common = sizes_.cwe_common;
  RulerSample s;
  s.task = "cwe";
  s.answers.assign(pool.begin(), pool.begin() + n_common);
  const std::string question =
      "\nQuestion: What are the " + std::to_string(n_common) + " most common words in the above list?";
  s.answer_prefix =
      " Answer: The top " + std::to_string(n_common) + " words that appear most often in the list are:";
  const int budget = context_tokens - FindRulerTask("cwe")->max_new_tokens -
                     Tokens(std::string(kCweIntro) + question + s.answer_prefix) - 40;
  auto build = [&](int n_rare, std::mt19937_64 order) {
    std::vector<std::string> list;
    for (int i = 0; i < n_common; ++i)
      for (int k = 0; k < sizes_.cwe_freq_common; ++k) list.push_back(pool[i]);
    for (int i = 0; i < n_rare; ++i)
      for (int k = 0; k < sizes_.cwe_freq_rare; ++k) list.push_back(pool[n_common + i]);
    std::shuffle(list.begin(), list.end(), order);
    std::string text;
    for (size_t i = 0; i < list.size(); ++i) text += (i ? " " : "") + std::to_string(i + 1) + ". " + list[i];
    return text;
  };
  const std::mt19937_64 order(rng());
  // Rare words fill the context: sized from the tokens one list item costs,
  // then trimmed.
  const int max_rare = static_cast<int>(pool.size()) - n_common;
  int n_rare = 0;
  const int base_tokens = Tokens(build(0, order));
  if (base_tokens > budget)
    return InvalidArgument("context {} cannot hold the common words of task cwe", context_tokens);
  const int probe = std::min(max_rare, 64);
  const double per_rare = static_cast<double>(Tokens(build(probe, order)) - base_tokens) / std::max(1, probe);
  n_rare = std::min(max_rare, static_cast<int>((budget - base_tokens) / std::max(1.0, per_rare)));
  while (n_rare > 0 && Tokens(build(n_rare, order)) > budget) n_rare = n_rare * 19 / 20;
  s.user = std::string(kCweIntro) + build(n_rare, order) + question;
  return s;
}

double RulerScore(const std::vector<std::string>& answers, const std::string& output) {
  if (answers.empty()) return 0;
  const std::string out = Lower(output);
  int found = 0;
  for (const auto& a : answers) found += out.find(Lower(a)) != std::string::npos;
  return static_cast<double>(found) / static_cast<double>(answers.size());
}

double RulerResult::Score(const std::string& task, int context) const {
  double sum = 0;
  int n = 0;
  for (const auto& c : cells) {
    if (c.task == task && c.context == context) {
      sum += c.score;
      ++n;
    }
  }
  return n ? sum / n : std::nan("");
}

double RulerResult::Mean() const {
  double sum = 0;
  for (const auto& c : cells) sum += c.score;
  return cells.empty() ? 0 : sum / static_cast<double>(cells.size());
}

Result<RulerResult> RunRuler(engine::Engine& engine, const std::string& text, const RulerOptions& o) {
  const auto& tok = engine.tokenizer();
  RulerResult r;
  r.plain = PlainPrompt(o.prompt, tok);
  tokenizer::ChatStyle style{};
  if (!r.plain) {
    ASSIGN_OR_RETURN(style, tokenizer::DetectChatStyle(tok));
  }
  for (const auto& t : o.tasks) RETURN_IF_ERROR(FindRulerTask(t).status());
  if (o.samples < 1) return InvalidArgument("RULER needs at least one sample per task, got {}", o.samples);
  RulerGenerator gen(tok, text, o.sizes);
  Progress progress("ruler", static_cast<int64_t>(o.tasks.size() * o.contexts.size()) * o.samples, "samples");
  int64_t done = 0;
  double score_sum = 0;
  for (int ctx : o.contexts) {
    if (o.policy.active()) {
      kv::PolicySpec p = o.policy;
      if (o.budget_fraction > 0) {
        p.budget = std::max(engine.kv().config().block_tokens,
                            static_cast<int>(std::lround(ctx * o.budget_fraction)));
      }
      RETURN_IF_ERROR(engine.kv().SetPolicy(p));
    }
    for (const auto& task : o.tasks) {
      const RulerTaskSpec spec = *FindRulerTask(task);
      for (int i = 0; i < o.samples; ++i) {
        ASSIGN_OR_RETURN(RulerSample s, gen.Make(task, ctx, SampleSeed(o.seed, task, ctx, i)));
        const std::vector<int32_t> ids =
            r.plain ? tokenizer::EncodePrompt(tok, s.user + "\nAnswer:" + s.answer_prefix, false)
                    : tokenizer::EncodePrompt(tok,
                                   tokenizer::ApplyChatTemplate(style, tok.chat_template(), {{"user", s.user}}, true) +
                                       s.answer_prefix,
                                   true);
        engine::GenerateOptions go;
        go.max_tokens = spec.max_new_tokens;
        go.sampling.temperature = 0;
        std::string out;
        auto st = engine.Generate(ids, go, [&](int32_t, const std::string& piece) {
          out += piece;
          return true;
        });
        RETURN_IF_ERROR(st.status());
        RulerCell cell{task,      ctx, i, static_cast<int>(ids.size()), RulerScore(s.answers, out),
                       s.answers, out};
        score_sum += cell.score;
        r.cells.push_back(std::move(cell));
        ++done;
        if (o.progress)
          progress.Update(done, fmt::format("mean score {:.2f}", score_sum / static_cast<double>(done)));
      }
    }
  }
  progress.Finish();
  // Task-major order for the table and the JSON.
  std::stable_sort(r.cells.begin(), r.cells.end(), [&](const RulerCell& a, const RulerCell& b) {
    const auto ia = std::find(o.tasks.begin(), o.tasks.end(), a.task) - o.tasks.begin();
    const auto ib = std::find(o.tasks.begin(), o.tasks.end(), b.task) - o.tasks.begin();
    return ia < ib;
  });
  return r;
}

std::string FormatRulerTable(const RulerResult& r) {
  std::vector<std::string> tasks;
  std::vector<int> contexts;
  for (const auto& c : r.cells) {
    if (std::find(tasks.begin(), tasks.end(), c.task) == tasks.end()) tasks.push_back(c.task);
    if (std::find(contexts.begin(), contexts.end(), c.context) == contexts.end())
      contexts.push_back(c.context);
  }
  std::sort(contexts.begin(), contexts.end());
  std::string s = "| task \\ context |";
  for (int c : contexts) s += fmt::format(" {} |", c);
  s += "\n|---|";
  for (size_t i = 0; i < contexts.size(); ++i) s += "---:|";
  s += "\n";
  for (const auto& t : tasks) {
    s += "| " + t + " |";
    for (int c : contexts) s += fmt::format(" {:.2f} |", r.Score(t, c));
    s += "\n";
  }
  s += fmt::format("\nmean score {:.3f} ({} samples)\n", r.Mean(), r.cells.size());
  return s;
}

}  // namespace slimkv::eval
