// The cost of response_format json_object's mask per sampled token (engine/json_constraint.h):
// Sampler::Sample with and without the constraint on the real vocabulary, for greedy, top-k 40
// and no top-k (every token tested). The logits are random with the next token of a JSON
// answer on top, as a model that follows the format would give; the constrained sampler is
// fed the answer, so it walks the grammar's states (keys, strings, numbers, nesting).
//
//   build/bin/bench_json_mask models/SmolLM2-135M-Instruct.Q4_1.gguf
#include <chrono>
#include <cstdio>
#include <random>
#include <string>
#include <vector>

#include "engine/json_constraint.h"
#include "engine/sampler.h"
#include "gguf/gguf_file.h"
#include "tokenizer/tokenizer.h"

using namespace slimkv;

int main(int argc, char** argv) {
  if (argc < 2) {
    std::fprintf(stderr, "usage: %s MODEL.gguf\n", argv[0]);
    return 2;
  }
  auto file = gguf::GgufFile::Open(argv[1]);
  if (!file.ok()) {
    std::fprintf(stderr, "%s\n", file.status().ToString().c_str());
    return 1;
  }
  auto tok = tokenizer::Tokenizer::FromGguf(*file);
  if (!tok.ok()) {
    std::fprintf(stderr, "%s\n", tok.status().ToString().c_str());
    return 1;
  }
  auto t0 = std::chrono::steady_clock::now();
  auto vocab = engine::ConstraintVocab::FromTokenizer(**tok);
  const double build_ms =
      std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0).count();
  // Two answers: mostly structure (keys, numbers, short strings), and mostly prose inside one
  // string (where nearly every token is allowed).
  const std::string answers[] = {
      "{\n  \"name\": \"Luna\",\n  \"age\": 3,\n  \"weight_kg\": -4.25e+0,\n  \"colors\": [\"black\", "
      "\"white\"],\n  \"vaccinated\": true,\n  \"owner\": {\"name\": \"Ana \\\"Ann\\\" L\\u00f3pez\", "
      "\"city\": \"S\xC3\xA3o Paulo\"},\n  \"notes\": null\n}",
      "{\"description\": \"Luna is a small black cat with white paws who likes to sleep in the sun by the "
      "kitchen window and chase moths in the garden at night. She was adopted from a shelter when she was "
      "two "
      "years old and has lived with the same family ever since, growing fond of their old dog.\"}"};
  const int n = vocab->size();
  for (const std::string& answer : answers) {
    const std::vector<engine::TokenId> ids = (*tok)->Encode(answer, false, false);
    std::mt19937_64 rng(1);
    std::normal_distribution<float> normal(0.0f, 2.0f);
    std::vector<std::vector<float>> rows(ids.size(), std::vector<float>(n));
    for (size_t i = 0; i < ids.size(); ++i) {
      for (float& l : rows[i]) l = normal(rng);
      rows[i][ids[i]] += 12.0f;
    }
    std::printf("vocabulary %d tokens, ConstraintVocab built in %.1f ms; answer of %zu tokens, %zu bytes\n",
                n, build_ms, ids.size(), answer.size());
    std::printf("%-34s %14s %14s %14s\n", "sampling", "plain us/tok", "json us/tok", "mask us/tok");
    struct Mode {
      const char* name;
      float temperature;
      int top_k;
      float top_p;
    };
    constexpr int kReps = 5;
    for (const Mode& m :
         {Mode{"greedy", 0.0f, 40, 0.95f}, Mode{"temp 0.8, top-k 40, top-p 0.95", 0.8f, 40, 0.95f},
          Mode{"temp 0.8, no top-k, top-p 0.95", 0.8f, 0, 0.95f},
          Mode{"temp 0.8, no top-k, no top-p", 0.8f, 0, 1.0f}}) {
      engine::SamplingParams p;
      p.temperature = m.temperature;
      p.top_k = m.top_k;
      p.top_p = m.top_p;
      double best[2] = {1e30, 1e30};
      int mismatches = 0;
      for (int rep = 0; rep < kReps; ++rep) {
        for (int constrained = 0; constrained < 2; ++constrained) {
          engine::Sampler sampler(p);
          engine::JsonConstraint json(vocab.get());
          const engine::TokenFilter allowed = [&json](engine::TokenId t) { return json.Allows(t); };
          const engine::TokenLister list = [&json](std::vector<engine::TokenId>* out) {
            json.AllowedTokens(out);
          };
          std::vector<engine::TokenId> history;
          const auto start = std::chrono::steady_clock::now();
          for (size_t i = 0; i < ids.size(); ++i) {
            const engine::TokenId t = constrained ? sampler.Sample(rows[i], history, allowed, list)
                                                  : sampler.Sample(rows[i], history);
            if (constrained) {
              mismatches += t != ids[i];
              json.Accept(ids[i]);  // follow the answer whatever was drawn
            }
            history.push_back(ids[i]);
          }
          const double us =
              std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - start).count() /
              ids.size();
          best[constrained] = std::min(best[constrained], us);
        }
      }
      std::printf("%-34s %14.1f %14.1f %14.1f   (draws off the answer: %d of %zu)\n", m.name, best[0],
                  best[1], best[1] - best[0], mismatches, kReps * ids.size());
    }
  }
  return 0;
}
