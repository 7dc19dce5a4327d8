// loadgen_engine: the scheduler's batched decode without HTTP — N requests at once, each
// generating --max-tokens tokens (end-of-generation ignored), stepped on this thread. Shows
// what continuous batching gives before any server overhead: aggregate tokens/s and the
// time of a decode step per batch size.
//
//   loadgen_engine [-m MODEL] [--kv fp16] [--clients 1,4,16,64] [--max-tokens 64] [-t 2]
#include <CLI/CLI.hpp>

#include <chrono>
#include <cstdio>

#include "engine/scheduler.h"
#include "kv/format.h"

using namespace slimkv;

int main(int argc, char** argv) {
  CLI::App app{"loadgen_engine: batched decode through the scheduler, no HTTP"};
  std::string model_path = "models/SmolLM2-135M-Instruct.Q4_1.gguf", preset = "fp16";
  std::vector<int> clients = {1, 4, 16, 64};
  int max_tokens = 64, threads = 2, prompt_words = 48;
  app.add_option("-m,--model", model_path);
  app.add_option("--kv", preset);
  app.add_option("--clients", clients)->delimiter(',');
  app.add_option("--max-tokens", max_tokens);
  app.add_option("--prompt-words", prompt_words);
  app.add_option("-t,--threads", threads);
  CLI11_PARSE(app, argc, argv);
  engine::EngineOptions eo;
  eo.model_path = model_path;
  auto config = kv::ParsePreset(preset);
  if (!config.ok()) return std::fprintf(stderr, "error: %s\n", config.status().message().c_str()), 2;
  eo.kv = *config;
  eo.n_ctx = 1024;
  eo.kv_budget_bytes = size_t{1} << 30;
  eo.threads = threads;
  auto eng = engine::Engine::Create(eo);
  if (!eng.ok()) return std::fprintf(stderr, "error: %s\n", eng.status().message().c_str()), 1;
  engine::Engine& e = **eng;
  std::printf("| KV | clients | tokens | wall s | tokens/s | vs 1 client | decode step ms |\n|---|---:|---:|---:|---:|---:|---:|\n");
  double single = 0;
  for (int n : clients) {
    auto sched = engine::Scheduler::Create(&e, {.max_running = std::max(n, 1), .max_waiting = n,
                                                .max_batch_tokens = 512, .prefix_sharing = false});
    if (!sched.ok()) return 1;
    std::string words;
    for (int w = 0; w < prompt_words; ++w) words += " word";
    for (int i = 0; i < n; ++i) {
      engine::RequestParams p;
      p.prompt = e.tokenizer().Encode("Request " + std::to_string(i) + ":" + words, true, false);
      p.max_tokens = max_tokens;
      p.ignore_eos = true;
      p.sampling.temperature = 0;
      if (!(*sched)->Submit(std::move(p)).ok()) return 1;
    }
    // Prompts first (not timed), then the decode steps.
    while ((*sched)->Stats().generated_tokens < static_cast<uint64_t>(n)) (*sched)->Step();
    const uint64_t before = (*sched)->Stats().generated_tokens, steps_before = (*sched)->Stats().steps;
    const auto t0 = std::chrono::steady_clock::now();
    while (!(*sched)->Idle()) (*sched)->Step();
    const double wall = std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
    const auto st = (*sched)->Stats();
    const double tokens = static_cast<double>(st.generated_tokens - before);
    if (n == clients.front()) single = tokens / wall / n;
    std::printf("| %s | %d | %.0f | %.2f | %.1f | %.2fx | %.1f |\n", preset.c_str(), n, tokens, wall, tokens / wall,
                single > 0 ? tokens / wall / single : 0.0, 1000 * wall / static_cast<double>(st.steps - steps_before));
    std::fflush(stdout);
  }
  return 0;
}
