#include "eval/capacity.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <sstream>
#include <string>
#include <vector>

#include "base/thread_pool.h"
#include "gguf/gguf_file.h"
#include "kv/kv_cache.h"
#include "test_util.h"

namespace slimkv::eval {
namespace {

constexpr uint64_t kGiB = uint64_t{1} << 30;

ModelShape Llama8B() {
  auto m = FindModelPreset("Llama-3.1-8B");
  EXPECT_TRUE(m.ok()) << m.status().ToString();
  return *m;
}

Plan MustPlan(const ModelShape& m, const PlanOptions& o) {
  auto p = MakePlan(m, o);
  EXPECT_TRUE(p.ok()) << p.status().ToString();
  return p.ok() ? *p : Plan{};
}

const PlanRow& Row(const Plan& p, const std::string& format) {
  for (const auto& r : p.rows)
    if (r.format == format) return r;
  ADD_FAILURE() << "no row " << format;
  return p.rows.at(0);
}

// The issue's example: Llama-3.1-8B, 74 GiB for the KV cache, users at 2K/8K/32K/128K.
TEST(CapacityTest, IssueNumbersWithoutMetadata) {
  const Plan p = MustPlan(Llama8B(), {.formats = {"fp16", "int4"}, .counting = Counting::kData, .kv_bytes = 74 * kGiB});
  EXPECT_EQ(Row(p, "fp16").users, (std::vector<int64_t>{296, 74, 18, 4}));
  EXPECT_EQ(Row(p, "int4").users, (std::vector<int64_t>{1184, 296, 74, 18}));
  // 32 layers x 8 KV heads x 128 x (K + V) x 2 bytes, and a quarter of it.
  EXPECT_EQ(Row(p, "fp16").bytes.data, 131072);
  EXPECT_EQ(Row(p, "int4").bytes.data, 32768);
  EXPECT_EQ(Row(p, "fp16").sequence_bytes[0], 2048u * 131072);
}

TEST(CapacityTest, MetadataAndResidualWindowGiveTheRealLowerFigure) {
  const ModelShape m = Llama8B();
  const Plan data = MustPlan(m, {.counting = Counting::kData, .kv_bytes = 74 * kGiB});
  const Plan stored = MustPlan(m, {.counting = Counting::kStored, .kv_bytes = 74 * kGiB});
  // fp16 stores no metadata and has no residual window: the same figure.
  EXPECT_EQ(Row(stored, "fp16").users, (std::vector<int64_t>{296, 74, 18, 4}));
  for (const auto& r : stored.rows) {
    if (r.format == "fp16") continue;
    for (size_t i = 0; i < r.users.size(); ++i) {
      EXPECT_LE(r.users[i], Row(data, r.format).users[i]) << r.format << " @ " << i;
      EXPECT_GT(r.sequence_bytes[i], Row(data, r.format).sequence_bytes[i]) << r.format << " @ " << i;
    }
    EXPECT_LT(r.users[0], Row(data, r.format).users[0]) << r.format;
  }
  // int4 by hand (its preset uses blocks of 64 tokens). A block of one stream: K codes 4096 +
  // per-channel scale and zero 2 x 2 x 128 = 512 bytes; V codes 4096 + per-token scale and
  // zero 2 x 2 x 64 = 256 bytes; 8960 bytes, 140 per token per stream, x 256 streams = 35840
  // bytes per token. The 128-token residual window is held in f16 (512 bytes per token per
  // stream).
  const PlanRow& int4 = Row(stored, "int4");
  EXPECT_EQ(int4.bytes.meta, 3072);
  EXPECT_EQ(int4.bytes.stored, 35840);
  EXPECT_EQ(int4.bytes.staged, 131072);
  EXPECT_EQ(int4.residual_bytes, 128u * (131072 - 35840));
  const std::vector<int64_t> contexts = {2048, 8192, 32768, 131072};
  for (size_t i = 0; i < contexts.size(); ++i) {
    const uint64_t seq = contexts[i] * 35840 + 128 * (131072 - 35840);
    EXPECT_EQ(int4.sequence_bytes[i], seq);
    EXPECT_EQ(int4.users[i], static_cast<int64_t>(74 * kGiB / seq));
  }
  EXPECT_EQ(int4.users[1], static_cast<int64_t>(74 * kGiB / (8192ull * 35840 + 128 * (131072 - 35840))));
}

// The stored figure is what the cache really allocates: fill a KvCache step by step and
// compare its bytes in use after every step, for formats with and without staging, a
// residual window and a sliding-window layer.
TEST(CapacityTest, StoredBytesAreWhatTheCacheAllocates) {
  const kv::KvSpec spec{.n_layers = 3, .n_kv_heads = 2, .n_q_heads = 4, .head_dim = 64, .max_context = 4096,
                        .layer_window = {0, 64, 0}};
  const ModelShape m{.name = "small", .n_layers = 3, .n_kv_heads = 2, .head_dim = 64, .max_context = 4096,
                     .params = 1, .layer_window = {0, 64, 0}};
  ThreadPool pool(1);
  for (const char* preset : {"fp16", "fp32", "fp8", "int8", "int4", "kivi2", "q4_0"}) {
    SCOPED_TRACE(preset);
    auto config = kv::ParsePreset(preset);
    ASSERT_TRUE(config.ok());
    config->block_tokens = 32;
    auto cache_or = kv::KvCache::Create(spec, *config, 64 << 20);
    ASSERT_TRUE(cache_or.ok()) << cache_or.status().ToString();
    kv::KvCache& cache = **cache_or;
    const kv::SeqId seq = cache.AddSequence();
    const int width = spec.n_kv_heads * spec.head_dim;
    int length = 0;
    for (int n : {37, 1, 1, 25, 64, 5, 100, 1, 31, 33}) {
      const kv::StepChunk chunk[] = {{seq, n, 0}};
      const std::vector<float> k = testing::RandomNormal(static_cast<size_t>(n) * width, length + 1);
      const std::vector<float> v = testing::RandomNormal(static_cast<size_t>(n) * width, length + 2);
      ASSERT_TRUE(cache.BeginStep(chunk).ok());
      for (int layer = 0; layer < spec.n_layers; ++layer) cache.Append(layer, chunk, k.data(), width, v.data(), width);
      cache.EndStep(chunk);
      length += n;
      EXPECT_EQ(cache.bytes_in_use(), SequenceBytes(m, *config, length, Counting::kStored)) << "length " << length;
    }
  }
}

TEST(CapacityTest, SlidingWindowLayersHoldAtMostTheirWindow) {
  // Gemma-3-like: 5 local layers of 512 tokens per global layer.
  ModelShape m{.name = "gemma-like", .n_layers = 6, .n_kv_heads = 1, .head_dim = 256, .max_context = 32768,
               .params = 1, .layer_window = {512, 512, 512, 512, 512, 0}};
  auto fp16 = kv::ParsePreset("fp16");
  ASSERT_TRUE(fp16.ok());
  const uint64_t per_layer_token = 256 * 2 * 2;  // K and V, f16
  EXPECT_EQ(SequenceBytes(m, *fp16, 300, Counting::kData), 6 * 300 * per_layer_token);
  EXPECT_EQ(SequenceBytes(m, *fp16, 32768, Counting::kData), (32768 + 5 * 512) * per_layer_token);
  // Stored at a block boundary: a window layer holds exactly its 512 / 32 blocks.
  EXPECT_EQ(SequenceBytes(m, *fp16, 32768, Counting::kStored), (32768 + 5 * 512) * per_layer_token);
  // ... and one block more when the window straddles a block.
  EXPECT_EQ(SequenceBytes(m, *fp16, 32768 + 16, Counting::kStored), (32768 + 32 + 5 * 544) * per_layer_token);
  ModelShape global = m;
  global.layer_window.clear();
  const Plan windowed = MustPlan(m, {.formats = {"fp16"}, .kv_bytes = 10 * kGiB});
  const Plan full = MustPlan(global, {.formats = {"fp16"}, .kv_bytes = 10 * kGiB});
  EXPECT_EQ(windowed.rows[0].users[3], static_cast<int64_t>(10 * kGiB / ((131072 + 5 * 512) * per_layer_token)));
  EXPECT_GT(windowed.rows[0].users[3], 4 * full.rows[0].users[3]);

  // The Gemma-3-27B preset: every 6th layer global, the rest windows of 1024 tokens.
  auto g = FindModelPreset("gemma-3-27b");
  ASSERT_TRUE(g.ok());
  EXPECT_EQ(g->n_window_layers(), 52);
  for (int l = 0; l < 62; ++l) EXPECT_EQ(g->window(l), (l + 1) % 6 == 0 ? 0 : 1024) << l;
  EXPECT_EQ(SequenceBytes(*g, *fp16, 131072, Counting::kData), (10ull * 131072 + 52 * 1024) * 16 * 128 * 2 * 2);
  // Mistral-7B-v0.1: every layer is a window layer; the cache never grows past 4096 tokens.
  auto mistral = FindModelPreset("mistral-7b-v0.1");
  ASSERT_TRUE(mistral.ok());
  EXPECT_EQ(SequenceBytes(*mistral, *fp16, 32768, Counting::kStored),
            SequenceBytes(*mistral, *fp16, 4096, Counting::kStored));
}

// Parameter count of a dense decoder from its config.json shapes: embeddings (and an untied
// output matrix), q/k/v/o, gated MLP, two norms per layer (Gemma-3: four, plus q/k norms),
// q/k/v biases (Qwen2), the final norm.
int64_t DecoderParams(int64_t vocab, int64_t hidden, int64_t ff, int64_t layers, int64_t heads, int64_t kv_heads,
                      int64_t head_dim, bool tied, bool qkv_bias, bool gemma_norms) {
  int64_t per_layer = hidden * heads * head_dim * 2 + hidden * kv_heads * head_dim * 2 + 3 * hidden * ff + 2 * hidden;
  if (qkv_bias) per_layer += heads * head_dim + 2 * kv_heads * head_dim;
  if (gemma_norms) per_layer += 2 * hidden + 2 * head_dim;
  return per_layer * layers + vocab * hidden * (tied ? 1 : 2) + hidden;
}

TEST(CapacityTest, PresetsMatchTheirConfigs) {
  struct Config {
    const char* key;
    int64_t vocab, hidden, ff, layers, heads, kv_heads, head_dim, max_context;
    bool tied, qkv_bias, gemma;
    int window;
  };
  // config.json values (see the sources in capacity.cc).
  const Config configs[] = {
      {"llama-3.1-8b", 128256, 4096, 14336, 32, 32, 8, 128, 131072, false, false, false, 0},
      {"llama-3.1-70b", 128256, 8192, 28672, 80, 64, 8, 128, 131072, false, false, false, 0},
      {"qwen2.5-7b", 152064, 3584, 18944, 28, 28, 4, 128, 131072, false, true, false, 0},
      {"mistral-7b", 32768, 4096, 14336, 32, 32, 8, 128, 32768, false, false, false, 0},
      {"mistral-7b-v0.1", 32000, 4096, 14336, 32, 32, 8, 128, 32768, false, false, false, 4096},
      {"gemma-3-1b", 262144, 1152, 6912, 26, 4, 1, 256, 32768, true, false, true, 512},
      {"gemma-3-4b", 262208, 2560, 10240, 34, 8, 4, 256, 131072, true, false, true, 1024},
      {"gemma-3-12b", 262208, 3840, 15360, 48, 16, 8, 256, 131072, true, false, true, 1024},
      {"gemma-3-27b", 262208, 5376, 21504, 62, 32, 16, 128, 131072, true, false, true, 1024},
  };
  for (const Config& c : configs) {
    SCOPED_TRACE(c.key);
    auto m = FindModelPreset(c.key);
    ASSERT_TRUE(m.ok()) << m.status().ToString();
    EXPECT_EQ(m->params, DecoderParams(c.vocab, c.hidden, c.ff, c.layers, c.heads, c.kv_heads, c.head_dim, c.tied,
                                       c.qkv_bias, c.gemma));
    EXPECT_EQ(m->n_layers, c.layers);
    EXPECT_EQ(m->n_kv_heads, c.kv_heads);
    EXPECT_EQ(m->head_dim, c.head_dim);
    EXPECT_EQ(m->max_context, c.max_context);
    int max_window = 0;
    for (int l = 0; l < m->n_layers; ++l) max_window = std::max(max_window, m->window(l));
    EXPECT_EQ(max_window, c.window);
    EXPECT_TRUE(m->Check().ok());
    EXPECT_FALSE(m->source.empty());
  }
  // The published totals.
  EXPECT_NEAR(FindModelPreset("llama-3.1-8b")->params / 1e9, 8.03, 0.005);
  EXPECT_NEAR(FindModelPreset("llama-3.1-70b")->params / 1e9, 70.6, 0.05);
  EXPECT_NEAR(FindModelPreset("qwen2.5-7b")->params / 1e9, 7.61, 0.01);  // the card: "7.61B"
  EXPECT_NEAR(FindModelPreset("mistral-7b")->params / 1e9, 7.25, 0.005);
  // Names are matched without case and punctuation.
  EXPECT_TRUE(FindModelPreset("LLAMA-3.1-8B").ok());
  EXPECT_TRUE(FindModelPreset("llama3.1_8b").ok());
}

TEST(CapacityTest, ShapeFromGgufFiles) {
  SLIMKV_REQUIRE_MODEL(gemma_path, "gemma-3-270m-q4_k_m.gguf");
  auto file = gguf::GgufFile::Open(gemma_path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  auto m = ModelShapeFromGguf(*file);
  ASSERT_TRUE(m.ok()) << m.status().ToString();
  EXPECT_EQ(m->n_layers, 18);
  EXPECT_EQ(m->n_kv_heads, 1);
  EXPECT_EQ(m->head_dim, 256);
  EXPECT_EQ(m->max_context, 32768);
  EXPECT_EQ(m->n_window_layers(), 15);
  // The formula the presets are checked with, on a real file's tensors: Gemma-3-270M's
  // config (vocab 262144, hidden 640, intermediate 2048, 4 heads, 1 KV head of 256).
  EXPECT_EQ(m->params, DecoderParams(262144, 640, 2048, 18, 4, 1, 256, true, false, true));
  EXPECT_GT(m->file_weight_bytes, 0u);
  EXPECT_LT(m->file_weight_bytes, static_cast<uint64_t>(m->params) * 2);

  SLIMKV_REQUIRE_MODEL(smol_path, testing::DefaultModelFile());
  auto smol_file = gguf::GgufFile::Open(smol_path);
  ASSERT_TRUE(smol_file.ok());
  auto smol = ModelShapeFromGguf(*smol_file);
  ASSERT_TRUE(smol.ok());
  EXPECT_EQ(smol->n_layers, 30);
  EXPECT_EQ(smol->n_kv_heads, 3);
  EXPECT_EQ(smol->head_dim, 64);
  EXPECT_EQ(smol->n_window_layers(), 0);
  // fp16: 30 x 3 x 64 x 2 x 2 bytes per token, as docs/KV_FORMATS.md says.
  EXPECT_EQ(BytesPerToken(*smol, *kv::ParsePreset("fp16")).data, 23040);
}

TEST(CapacityTest, GpusWeightsAndTheReserve) {
  auto a100 = ParseGpu("A100-80GB");
  ASSERT_TRUE(a100.ok());
  EXPECT_EQ(a100->bytes, 80 * kGiB);
  EXPECT_EQ(ParseGpu("h100")->bytes, uint64_t{81559} << 20);
  EXPECT_EQ(ParseGpu("h200-141gb")->bytes, uint64_t{143771} << 20);
  EXPECT_EQ(ParseGpu("l4-24gb")->bytes, uint64_t{23034} << 20);
  EXPECT_EQ(ParseGpu("48")->bytes, 48 * kGiB);
  EXPECT_EQ(ParseGpu("12.5GiB")->bytes, 25 * kGiB / 2);
  EXPECT_EQ(WeightBytes(8030261248, 4), 4015130624u);
  const MemoryBudget b = BudgetOnGpu(*a100, WeightBytes(8030261248, 4), 4, 0.10);
  EXPECT_TRUE(CheckBudget(b).ok());
  EXPECT_EQ(b.reserve_bytes, 8 * kGiB);
  EXPECT_EQ(b.kv_bytes, 80 * kGiB - 4015130624u - 8 * kGiB);
  // 70B at 16 bits does not fit on one A100.
  const MemoryBudget big = BudgetOnGpu(*a100, WeightBytes(70553706496, 16), 16, 0.10);
  EXPECT_EQ(big.kv_bytes, 0u);
  EXPECT_EQ(CheckBudget(big).code(), StatusCode::kResourceExhausted);
  EXPECT_NE(CheckBudget(big).message().find("leave nothing"), std::string::npos);
  EXPECT_EQ(CheckBudget(BudgetOnGpu(*a100, 0, 16, 1.0)).code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(CheckBudget(BudgetOnGpu(*a100, 0, 16, -0.1)).code(), StatusCode::kInvalidArgument);
}

TEST(CapacityTest, ContextsParseAndPrint) {
  auto c = ParseContexts("2K,8K,32K,128K");
  ASSERT_TRUE(c.ok());
  EXPECT_EQ(*c, (std::vector<int64_t>{2048, 8192, 32768, 131072}));
  EXPECT_EQ(*ParseContexts("1000,4k,1M"), (std::vector<int64_t>{1000, 4096, 1 << 20}));
  EXPECT_EQ(ContextLabel(2048), "2K");
  EXPECT_EQ(ContextLabel(1000), "1000");
  EXPECT_EQ(ContextLabel(1 << 20), "1M");
  for (const char* bad : {"", "0", "-1", "2K,,8K", "abc", "2G", "1.5K", "99999999999999K", "8K,"}) {
    EXPECT_EQ(ParseContexts(bad).status().code(), StatusCode::kInvalidArgument) << bad;
  }
}

TEST(CapacityTest, BadInputIsRejectedWithTheChoices) {
  auto model = FindModelPreset("llama-9b");
  ASSERT_FALSE(model.ok());
  EXPECT_NE(model.status().message().find("llama-3.1-8b"), std::string::npos);
  EXPECT_NE(model.status().message().find("gemma-3-27b"), std::string::npos);
  auto gpu = ParseGpu("a200");
  ASSERT_FALSE(gpu.ok());
  EXPECT_NE(gpu.status().message().find("h100-80gb"), std::string::npos);
  for (const char* bad : {"0", "-8", "nan", "inf", "", "1e9", "GiB"}) EXPECT_FALSE(ParseGpu(bad).ok()) << bad;

  const ModelShape m = Llama8B();
  auto fmt = MakePlan(m, {.formats = {"fp16", "int5"}, .kv_bytes = kGiB});
  ASSERT_FALSE(fmt.ok());
  EXPECT_NE(fmt.status().message().find("kivi2"), std::string::npos);  // the list of presets
  EXPECT_FALSE(MakePlan(m, {.formats = {}, .kv_bytes = kGiB}).ok());
  EXPECT_FALSE(MakePlan(m, {.contexts = {}, .kv_bytes = kGiB}).ok());
  EXPECT_FALSE(MakePlan(m, {.contexts = {2048, 0}, .kv_bytes = kGiB}).ok());
  EXPECT_FALSE(MakePlan(m, {.contexts = {-5}, .kv_bytes = kGiB}).ok());
  EXPECT_FALSE(MakePlan(m, {.block_tokens = 24, .kv_bytes = kGiB}).ok());
  EXPECT_FALSE(MakePlan(m, {.block_tokens = 8, .kv_bytes = kGiB}).ok());
  EXPECT_FALSE(MakePlan(m, {.kv_bytes = 0}).ok());
  ModelShape odd = m;
  odd.head_dim = 48;  // q4_0's groups of 32 channels do not divide it
  auto q4 = MakePlan(odd, {.formats = {"q4_0"}, .kv_bytes = kGiB});
  ASSERT_FALSE(q4.ok());
  EXPECT_NE(q4.status().message().find("q4_0"), std::string::npos);
  odd.head_dim = 40;
  EXPECT_FALSE(MakePlan(odd, {.formats = {"fp16"}, .kv_bytes = kGiB}).ok());
  ModelShape empty;
  EXPECT_FALSE(MakePlan(empty, {.kv_bytes = kGiB}).ok());
  ModelShape ragged = m;
  ragged.layer_window = {512};
  EXPECT_FALSE(MakePlan(ragged, {.kv_bytes = kGiB}).ok());
  // More memory than one sequence needs is not required: zero users is an answer.
  const Plan tiny = MustPlan(m, {.formats = {"fp16"}, .kv_bytes = 1 << 20});
  EXPECT_EQ(tiny.rows[0].users, (std::vector<int64_t>{0, 0, 0, 0}));
}

// Cells of the table row whose first cell is `first`, trimmed.
std::vector<std::string> TableRow(const std::string& report, const std::string& first) {
  std::istringstream in(report);
  std::string line;
  while (std::getline(in, line)) {
    if (!line.starts_with("|")) continue;
    std::vector<std::string> cells;
    std::istringstream cs(line.substr(1));
    std::string cell;
    while (std::getline(cs, cell, '|')) {
      const size_t a = cell.find_first_not_of(' '), b = cell.find_last_not_of(' ');
      cells.push_back(a == std::string::npos ? "" : cell.substr(a, b - a + 1));
    }
    if (!cells.empty() && cells[0] == first) return cells;
  }
  return {};
}

TEST(CapacityTest, ReportAndChartShowTheNumbers) {
  const ModelShape m = Llama8B();
  MemoryBudget budget = BudgetOnGpu(*ParseGpu("a100-80gb"), WeightBytes(m.params, 4), 4, 0.10);
  budget.kv_bytes = 74 * kGiB;
  budget.kv_given = true;
  const Plan p = MustPlan(m, {.counting = Counting::kData, .kv_bytes = budget.kv_bytes});
  const std::string report = PlanReport(p, budget);
  EXPECT_EQ(TableRow(report, "fp16"),
            (std::vector<std::string>{"fp16", "131072", "0", "131072", "-", "296", "74", "18", "4"}));
  EXPECT_EQ(TableRow(report, "int4"),
            (std::vector<std::string>{"int4", "32768", "3072", "35840", "11.62 MiB", "1184", "296", "74", "18"}));
  EXPECT_NE(report.find("KV memory:  74.00 GiB (--kv-mem-gib)"), std::string::npos);
  EXPECT_NE(report.find("3.74 GiB"), std::string::npos);  // 4-bit weights
  EXPECT_NE(report.find("10%"), std::string::npos);       // the stated reserve
  EXPECT_NE(report.find("data only"), std::string::npos);
  EXPECT_EQ(report.find("*"), std::string::npos);  // 128K is within Llama-3.1's context

  // Contexts beyond the maximum are marked, in the table and the chart.
  auto gemma1b = FindModelPreset("gemma-3-1b");
  const Plan g = MustPlan(*gemma1b, {.formats = {"fp16", "int4"}, .kv_bytes = 10 * kGiB});
  const std::string gr = PlanReport(g, budget);
  EXPECT_EQ(TableRow(gr, "fp16")[8].back(), '*');
  EXPECT_NE(TableRow(gr, "fp16")[7].back(), '*');  // 32K is the maximum itself
  EXPECT_NE(gr.find("* beyond the model's maximum context of 32K"), std::string::npos);
  EXPECT_NE(gr.find("22 of 26 layers are sliding-window"), std::string::npos);
  const BarChart chart = PlanChart(g);
  EXPECT_EQ(chart.categories, (std::vector<std::string>{"2K", "8K", "32K", "128K*"}));
  EXPECT_TRUE(chart.log_y);
  auto svg = chart.ToSvg();
  ASSERT_TRUE(svg.ok()) << svg.status().ToString();
  EXPECT_NE(svg->find(std::to_string(g.rows[1].users[0])), std::string::npos);
}

}  // namespace
}  // namespace slimkv::eval
