// The fingerprint and checksum rules: a record reads back exactly as written;
// every flipped byte, every truncation and every foreign fingerprint or key is
// refused, never crashes.
#include "kv/tiers/block_record.h"

#include <gtest/gtest.h>

#include "kv/tiers/fingerprint.h"
#include "tier_test_util.h"

namespace slimkv::kv::tiers {
namespace {

using testing::MakeRecord;

const Fingerprint kFp{.lo = 0x1111, .hi = 0x2222};

TEST(BlockRecordTest, RoundTripKeepsEveryByte) {
  const auto bytes = MakeRecord(kFp, 42, 7, /*seed=*/1, /*n_tokens=*/16,
                                /*n_streams=*/9, 96, 48);
  auto v = ParseRecord(bytes, kFp, 42);
  ASSERT_TRUE(v.ok()) << v.status().ToString();
  EXPECT_EQ(v->header().parent, 7u);
  EXPECT_EQ(v->header().n_tokens, 16u);
  EXPECT_EQ(v->header().n_streams, 9u);
  // The same source, re-encoded from the view, gives the same bytes.
  std::vector<int32_t> tokens;
  v->CopyTokens(&tokens);
  std::vector<StreamKind> kinds(9);
  std::vector<const uint8_t *> blocks(9, nullptr);
  for (int st = 0; st < 9; ++st) {
    kinds[st] = v->Kind(st);
    if (kinds[st] != StreamKind::kAbsent) blocks[st] = v->Block(st);
  }
  EXPECT_EQ(kinds[6], StreamKind::kAbsent);
  EXPECT_EQ(kinds[3], StreamKind::kSealed);
  EXPECT_EQ(kinds[1], StreamKind::kStaged);
  RecordSource src{.header = v->header(), .tokens = tokens, .kinds = kinds, .blocks = blocks};
  EXPECT_EQ(EncodeRecord(src), bytes);
  EXPECT_EQ(v->Token(3), tokens[3]);
}

TEST(BlockRecordTest, EveryFlippedByteIsRefused) {
  const auto good = MakeRecord(kFp, 5, 0, 2, 16, 4, 64, 64);
  for (size_t i = 0; i < good.size(); ++i) {
    for (uint8_t mask : {0x01, 0x80}) {
      auto bad = good;
      bad[i] ^= mask;
      auto v = ParseRecord(bad, kFp, 5);
      EXPECT_FALSE(v.ok()) << "byte " << i << " mask " << int(mask) << " went unnoticed";
    }
  }
}

TEST(BlockRecordTest, TruncatedAndOverlongRecordsAreDataLoss) {
  const auto good = MakeRecord(kFp, 5, 0, 3);
  for (size_t n = 0; n < good.size(); ++n) {
    auto v = ParseRecord(std::span(good).first(n), kFp, 5);
    ASSERT_FALSE(v.ok()) << n;
    EXPECT_EQ(v.status().code(), StatusCode::kDataLoss) << n;
  }
  auto longer = good;
  longer.push_back(0);
  EXPECT_EQ(ParseRecord(longer, kFp, 5).status().code(), StatusCode::kDataLoss);
  // The header alone checks the length the file says it has.
  EXPECT_TRUE(ParseRecordHeader(good, good.size()).ok());
  EXPECT_EQ(ParseRecordHeader(good, good.size() - 1).status().code(), StatusCode::kDataLoss);
}

TEST(BlockRecordTest, AnIntactRecordOfAnotherFingerprintOrKeyIsRefused) {
  const auto bytes = MakeRecord(kFp, 5, 0, 4);
  const Fingerprint other{.lo = 0x1111, .hi = 0x2223};
  auto v = ParseRecord(bytes, other, 5);
  ASSERT_FALSE(v.ok());
  EXPECT_EQ(v.status().code(), StatusCode::kInvalidArgument);
  EXPECT_EQ(ParseRecord(bytes, kFp, 6).status().code(), StatusCode::kInvalidArgument);
}

// A header that claims huge sizes is refused before anything is allocated or
// read.
TEST(BlockRecordTest, HostileHeadersAreRefused) {
  auto bytes = MakeRecord(kFp, 5, 0, 5);
  auto set32 = [&](size_t off, uint32_t v) {
    auto b = bytes;
    std::memcpy(b.data() + off, &v, 4);
    return b;
  };
  for (auto [off, v] : {std::pair<size_t, uint32_t>{48, 0},
                        {48, 0xFFFFFFFF},
                        {52, 0},
                        {52, 0xFFFFFFFF},
                        {56, 0xFFFFFFFF},
                        {60, 0xFFFFFFFF},
                        {8, 81}}) {
    auto b = set32(off, v);
    EXPECT_EQ(ParseRecordHeader(b, b.size()).status().code(), StatusCode::kDataLoss) << off << " " << v;
  }
  auto b = bytes;
  const uint64_t huge = ~0ull;
  std::memcpy(b.data() + 64, &huge, 8);
  EXPECT_EQ(ParseRecordHeader(b, b.size()).status().code(), StatusCode::kDataLoss);
  b = bytes;
  b[0] = 'X';
  EXPECT_EQ(ParseRecordHeader(b, b.size()).status().code(), StatusCode::kDataLoss);
}

KvSpec SmallSpec() {
  return KvSpec{.n_layers = 2,
                .n_kv_heads = 2,
                .n_q_heads = 4,
                .head_dim = 32,
                .max_context = 1024,
                .layer_window = {0, 0},
                .rope_dim = 32,
                .layer_inv_freq = {{1.0f, 0.5f}, {1.0f, 0.5f}}};
}

// Everything the bytes depend on changes the fingerprint; the same inputs give
// the same one (in every process: a golden value pins it).
TEST(FingerprintTest, EachInputSeparatesAndTheSameInputsAgree) {
  const KvSpec spec = SmallSpec();
  auto cfg = MakeConfig("int4", "", "", 0);
  ASSERT_TRUE(cfg.ok());
  const FingerprintInputs base{.model_id = 99, .spec = &spec, .config = &*cfg, .salt = 0};
  const Fingerprint f0 = MakeFingerprint(base);
  EXPECT_EQ(f0, MakeFingerprint(base));
  std::vector<Fingerprint> others;
  auto with = [&](auto change) {
    KvSpec s = spec;
    KvConfig c = *cfg;
    FingerprintInputs in = base;
    in.spec = &s;
    in.config = &c;
    change(in, s, c);
    others.push_back(MakeFingerprint(in));
  };
  with([](auto &in, auto &, auto &) { in.model_id = 100; });
  with([](auto &in, auto &, auto &) { in.salt = 1; });
  with([](auto &, auto &, auto &c) { c.block_tokens *= 2; });
  with([](auto &, auto &s, auto &) { s.head_dim = 64; });
  with([](auto &, auto &s, auto &) { s.n_kv_heads = 1; });
  with([](auto &, auto &s, auto &) { s.layer_window = {16, 0}; });
  with([](auto &, auto &s, auto &) { s.layer_inv_freq[1][1] = 0.25f; });
  with([](auto &, auto &, auto &c) { c.v.type = ElemType::kInt8; });
  with([](auto &, auto &, auto &c) { c.k.rotate = !c.k.rotate; });
  with([](auto &, auto &, auto &c) { c.k.symmetric = !c.k.symmetric; });
  for (size_t i = 0; i < others.size(); ++i) {
    EXPECT_NE(others[i], f0) << "change " << i;
    for (size_t j = 0; j < i; ++j) EXPECT_NE(others[i], others[j]) << i << " " << j;
  }
  EXPECT_NE(FingerprintText(base).find("salt 0000000000000000"), std::string::npos);
  // Pinned: a change of this value means stored blocks of earlier builds no
  // longer match; bump kLayoutVersion when a codec's bytes change, and update
  // the value here.
  EXPECT_EQ(f0.Hex(), "eb1f44f39b950cba67d845d55f5fad87") << FingerprintText(base);
}

}  // namespace
}  // namespace slimkv::kv::tiers
