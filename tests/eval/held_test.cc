#include "eval/held.h"

#include <gtest/gtest.h>

namespace slimkv::eval {
namespace {

const ModelShape kShape{.name = "small",
                        .n_layers = 3,
                        .n_kv_heads = 2,
                        .head_dim = 64,
                        .max_context = 4096,
                        .params = 1,
                        .layer_window = {0, 128, 0}};

// Without eviction the bytes held are the planner's stored figure, part by part
// adding up.
TEST(HeldTest, HeldBytesAreThePlannersAndTheirPartsAddUp) {
  for (const char* preset : {"fp16", "int8", "int4", "kivi2", "q4_0", "tq3"}) {
    SCOPED_TRACE(preset);
    auto config = kv::ParsePreset(preset);
    ASSERT_TRUE(config.ok());
    auto held = MeasureHeldBytes(SpecOf(kShape), *config, {}, {1, 100, 256, 1000}, 96);
    ASSERT_TRUE(held.ok()) << held.status().ToString();
    for (const HeldBytes& h : *held) {
      SCOPED_TRACE(h.context);
      EXPECT_EQ(h.usage.tokens, h.context);
      EXPECT_EQ(h.usage.bytes_allocated, SequenceBytes(kShape, *config, h.context, Counting::kStored));
      EXPECT_EQ(h.usage.bytes_data + h.usage.bytes_meta + h.usage.bytes_residual + h.usage.bytes_waste,
                h.usage.bytes_allocated);
      // Two global layers hold every token, the window layer at most its window
      // and a block.
      EXPECT_LE(h.slots,
                (2.0 * h.context + std::min<int64_t>(h.context, 128 + config->block_tokens)) / 3 + 1e-9);
    }
  }
}

TEST(HeldTest, EvictionHoldsTheBudget) {
  auto config = kv::ParsePreset("int4");
  ASSERT_TRUE(config.ok());
  auto full = MeasureHeldBytes(SpecOf(kShape), *config, {}, {2048});
  ASSERT_TRUE(full.ok());
  for (const char* policy : {"window", "sinks", "h2o", "snapkv"}) {
    SCOPED_TRACE(policy);
    auto p = kv::ParsePolicy(policy, 512);
    ASSERT_TRUE(p.ok()) << p.status().ToString();
    auto held = MeasureHeldBytes(SpecOf(kShape), *config, *p, {2048});
    ASSERT_TRUE(held.ok()) << held.status().ToString();
    const HeldBytes& h = (*held)[0];
    EXPECT_LE(h.slots, 512 + config->block_tokens);
    EXPECT_GE(h.slots, 128);  // the window layer's 128 tokens pull the mean
                              // down, the others keep ~512
    EXPECT_LT(h.usage.bytes_allocated, (*full)[0].usage.bytes_allocated / 2);
  }
}

TEST(HeldTest, BadContextsAndHugeCachesAreErrors) {
  auto config = kv::ParsePreset("fp16");
  EXPECT_EQ(MeasureHeldBytes(SpecOf(kShape), *config, {}, {0}).status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(MeasureHeldBytes(SpecOf(kShape), *config, {}, {4096}, 512, 1000).status().code(),
            StatusCode::kInvalidArgument);
  EXPECT_EQ(MeasureHeldBytes(SpecOf(kShape), *config, {}, {16}, 0).status().code(),
            StatusCode::kInvalidArgument);
}

}  // namespace
}  // namespace slimkv::eval
