// The reference codecs against the formats' own error bounds, against llama.cpp's
// quantizers (through the PyPI gguf package's numpy port of them), and against bad values.
#include "kv/codec.h"
#include "kv/codecs/float_codec.h"
#include "kv/codecs/packing.h"

#include <gtest/gtest.h>

#include <cmath>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <random>
#include <vector>

#include "base/aligned_buffer.h"
#include "test_util.h"

namespace slimkv::kv {
namespace {

namespace fs = std::filesystem;

// Every (token, channel) of K and V arrays of every width keeps its code, and the arrays are
// dense: exactly bt x width x bits / 8 bytes, nothing written past them.
TEST(CodecTest, PackedCodesRoundTripAtEveryPosition) {
  std::mt19937 rng(3);
  for (int bits : {1, 2, 3, 4, 8}) {
    for (bool is_key : {true, false}) {
      for (auto [bt, width] : {std::pair{32, 64}, std::pair{16, 48}, std::pair{64, 256}, std::pair{48, 32}}) {
        if (bits == 1 && bt * width % 512 != 0) continue;  // 1-bit units hold 8 tiles
        const CodeArray a{bits, is_key, bt, width};
        SCOPED_TRACE(::testing::Message()
                     << bits << " bits, " << (is_key ? "K " : "V ") << bt << " x " << width);
        ASSERT_EQ(a.bytes(), static_cast<size_t>(bt) * width * bits / 8);
        std::vector<uint8_t> buf(a.bytes() + 64, 0);
        std::vector<uint32_t> want(static_cast<size_t>(bt) * width);
        for (int t = 0; t < bt; ++t)
          for (int d = 0; d < width; ++d)
            PutCode(buf.data(), a, t, d, want[t * width + d] = rng() & ((1u << bits) - 1));
        for (int t = 0; t < bt; ++t)
          for (int d = 0; d < width; ++d)
            ASSERT_EQ(GetCode(buf.data(), a, t, d), want[t * width + d]) << t << ", " << d;
        for (size_t i = a.bytes(); i < buf.size(); ++i) ASSERT_EQ(buf[i], 0) << i;
      }
    }
  }
}

TEST(CodecTest, Fp8CodesRoundTripAndRoundToNearest) {
  for (int b = 0; b < 256; ++b) {
    const uint8_t c = static_cast<uint8_t>(b);
    const float x4 = Fp8E4M3ToFloat(c);
    if (!std::isnan(x4) && !(x4 == 0 && (c & 0x80))) EXPECT_EQ(FloatToFp8E4M3(x4), c) << b;
    const float x5 = Fp8E5M2ToFloat(c);
    if (std::isfinite(x5) && !(x5 == 0 && (c & 0x80))) EXPECT_EQ(FloatToFp8E5M2(x5), c) << b;
  }
  EXPECT_EQ(Fp8E4M3ToFloat(0x7E), 448.0f);
  EXPECT_EQ(Fp8E4M3ToFloat(0x01), std::ldexp(1.0f, -9));  // smallest subnormal
  EXPECT_EQ(Fp8E5M2ToFloat(0x7B), 57344.0f);
  EXPECT_EQ(FloatToFp8E4M3(1e9f), 0x7E);  // saturates
  EXPECT_EQ(FloatToFp8E4M3(-1e9f), 0xFE);
  EXPECT_EQ(FloatToFp8E4M3(NAN), 0);
  // Random values: at most half an ulp (relative 2^-4 for e4m3, 2^-3 for e5m2) away.
  std::mt19937 rng(5);
  std::uniform_real_distribution<float> u(-400, 400);
  for (int i = 0; i < 100000; ++i) {
    const float x = u(rng);
    ASSERT_LE(std::abs(Fp8E4M3ToFloat(FloatToFp8E4M3(x)) - x), std::max(std::abs(x) * 0.0625f, std::ldexp(1.0f, -10))) << x;
    ASSERT_LE(std::abs(Fp8E5M2ToFloat(FloatToFp8E5M2(x)) - x), std::max(std::abs(x) * 0.125f, std::ldexp(1.0f, -17))) << x;
  }
}

// Every format: a block of random data with outlier channels and tokens; each decoded
// element is within the format's bound for the range of the group it was quantized in.
class FormatErrorTest : public ::testing::TestWithParam<const char*> {};

TEST_P(FormatErrorTest, DecodedValuesAreWithinTheFormatsStep) {
  for (bool is_key : {true, false}) {
    auto f = ParseFormat(GetParam(), is_key);
    ASSERT_TRUE(f.ok()) << f.status().ToString();
    for (int hd : {64, 256}) {
      if (!CheckFormat(*f, hd, is_key).ok()) continue;  // e.g. groups of 128 in a 64-wide head
      const int bt = 32;
      std::mt19937_64 rng(hd + is_key);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> x(static_cast<size_t>(bt) * hd);
      for (int t = 0; t < bt; ++t)
        for (int d = 0; d < hd; ++d)
          x[t * hd + d] = nd(rng) * (d % 17 == 3 ? 30.0f : 1.0f) + (t % 9 == 0 ? 5.0f : 0.0f);
      const PartLayout lay = is_key ? KLayout(*f, bt, hd) : VLayout(*f, bt, hd);
      AlignedBuffer<uint8_t> part(lay.total());
      (is_key ? EncodeKPart : EncodeVPart)(*f, bt, hd, x.data(), bt, part.data());
      std::vector<float> y(hd);
      for (int t = 0; t < bt; ++t) {
        (is_key ? DecodeK : DecodeV)(*f, bt, hd, t, part.data(), y.data());
        for (int d = 0; d < hd; ++d) {
          // The group this element was quantized with.
          float lo = INFINITY, hi = -INFINITY;
          auto see = [&](float v) { lo = std::min(lo, v), hi = std::max(hi, v); };
          if (f->granularity == Granularity::kChannel) {
            for (int s = 0; s < bt; ++s) see(x[s * hd + d]);
          } else if (f->granularity == Granularity::kToken) {
            const int g = f->group_size(hd);
            for (int j = d / g * g; j < d / g * g + g; ++j) see(x[t * hd + j]);
          } else {
            for (float v : x) see(v);  // per block (fp8) or per element (floats)
          }
          const float bound = f->is_float() ? MaxAbsError(*f, -std::abs(x[t * hd + d]), std::abs(x[t * hd + d]))
                                            : MaxAbsError(*f, lo, hi);
          ASSERT_LE(std::abs(y[d] - x[t * hd + d]), bound * 1.0001f + 1e-6f)
              << FormatName(*f) << (is_key ? " K" : " V") << " hd " << hd << " token " << t << " channel " << d;
        }
      }
    }
  }
}

INSTANTIATE_TEST_SUITE_P(All, FormatErrorTest,
                         ::testing::Values("f32", "f16", "bf16", "fp8e4m3", "fp8e5m2", "int8", "int4", "int3", "int2",
                                           "int8:sym", "int4:sym", "int3:sym", "int2:sym", "int4:token", "int4:channel",
                                           "int4:g32", "int4:g64", "int4:g128", "int2:g32", "q8_0", "q4_0"));

// A NaN or an infinity in one token must not change how the other tokens are stored.
TEST(CodecTest, NonFiniteValuesDoNotPoisonOtherTokens) {
  for (const char* spec : {"int4:channel", "int2:channel", "int8:token", "fp8e4m3", "q4_0"}) {
    for (bool is_key : {true, false}) {
      auto f = ParseFormat(spec, is_key);
      ASSERT_TRUE(f.ok());
      const int bt = 32, hd = 64;
      std::mt19937_64 rng(1);
      std::normal_distribution<float> nd(0.0f, 1.0f);
      std::vector<float> clean(bt * hd), dirty;
      for (auto& v : clean) v = nd(rng);
      dirty = clean;
      dirty[5 * hd + 7] = NAN;
      dirty[9 * hd + 1] = INFINITY;
      dirty[11 * hd + 2] = -INFINITY;
      const PartLayout lay = is_key ? KLayout(*f, bt, hd) : VLayout(*f, bt, hd);
      AlignedBuffer<uint8_t> a(lay.total()), b(lay.total());
      (is_key ? EncodeKPart : EncodeVPart)(*f, bt, hd, clean.data(), bt, a.data());
      (is_key ? EncodeKPart : EncodeVPart)(*f, bt, hd, dirty.data(), bt, b.data());
      std::vector<float> ya(hd), yb(hd);
      for (int t = 0; t < bt; ++t) {
        (is_key ? DecodeK : DecodeV)(*f, bt, hd, t, a.data(), ya.data());
        (is_key ? DecodeK : DecodeV)(*f, bt, hd, t, b.data(), yb.data());
        for (int d = 0; d < hd; ++d) {
          ASSERT_TRUE(std::isfinite(yb[d])) << spec << " token " << t << " channel " << d;
          if (t == 5 || t == 9 || t == 11) continue;  // the bad tokens themselves
          const float bound = MaxAbsError(*f, -5, 5);
          ASSERT_NEAR(yb[d], clean[t * hd + d], bound) << spec << (is_key ? " K" : " V") << " token " << t;
        }
      }
    }
  }
}

// q8_0 and q4_0 store exactly what llama.cpp's reference quantizers produce: decoded values
// equal gguf-py's dequantize(quantize(x)) bit for bit.
TEST(CodecTest, GgmlLayoutsMatchLlamaCppQuantizers) {
  const fs::path dir = fs::temp_directory_path() / fmt::format("slimkv_codec_{}", ::getpid());
  fs::create_directories(dir);
  const int bt = 32, hd = 64;
  std::mt19937_64 rng(11);
  std::normal_distribution<float> nd(0.0f, 1.0f);
  std::vector<float> x(bt * hd);
  for (int i = 0; i < bt * hd; ++i) x[i] = nd(rng) * (i % 29 == 0 ? 10.0f : 1.0f);
  std::ofstream(dir / "x.f32", std::ios::binary).write(reinterpret_cast<const char*>(x.data()), x.size() * 4);
  const std::string script = fmt::format(
      "import numpy as np, gguf\n"
      "from gguf.quants import quantize, dequantize\n"
      "x = np.fromfile('{0}/x.f32', dtype=np.float32).reshape({1}, {2})\n"
      "for t in ('Q8_0', 'Q4_0'):\n"
      "    q = gguf.GGMLQuantizationType[t]\n"
      "    dequantize(quantize(x, q), q).astype(np.float32).tofile('{0}/' + t + '.f32')\n",
      dir.string(), bt, hd);
  std::ofstream(dir / "ref.py") << script;
  std::string out;
  const int rc = testing::RunCommand(fmt::format("'{}' '{}/ref.py' 2>&1", testing::VenvPython(), dir.string()), &out);
  if (rc != 0) {
    if (testing::ModelsRequired()) FAIL() << out;
    GTEST_SKIP() << "python with gguf not available: " << out;
  }
  for (auto [spec, file] : {std::pair{"q8_0", "Q8_0.f32"}, std::pair{"q4_0", "Q4_0.f32"}}) {
    std::vector<float> want(bt * hd);
    std::ifstream(dir / file, std::ios::binary).read(reinterpret_cast<char*>(want.data()), want.size() * 4);
    for (bool is_key : {true, false}) {
      auto f = ParseFormat(spec, is_key);
      ASSERT_TRUE(f.ok());
      const PartLayout lay = is_key ? KLayout(*f, bt, hd) : VLayout(*f, bt, hd);
      AlignedBuffer<uint8_t> part(lay.total());
      (is_key ? EncodeKPart : EncodeVPart)(*f, bt, hd, x.data(), bt, part.data());
      std::vector<float> y(hd);
      for (int t = 0; t < bt; ++t) {
        (is_key ? DecodeK : DecodeV)(*f, bt, hd, t, part.data(), y.data());
        for (int d = 0; d < hd; ++d) ASSERT_EQ(y[d], want[t * hd + d]) << spec << " token " << t << " channel " << d;
      }
    }
  }
  fs::remove_all(dir);
}

TEST(FormatTest, SpecsParseAndBadOnesListTheChoices) {
  EXPECT_EQ(FormatName(*ParseFormat("int4", true)), "int4:channel");
  EXPECT_EQ(FormatName(*ParseFormat("int4", false)), "int4:token");
  EXPECT_EQ(FormatName(*ParseFormat("int2:g32:sym:rot", false)), "int2:g32:sym:rot");
  EXPECT_EQ(FormatName(*ParseFormat("fp8", true)), "fp8e4m3");
  auto bad = ParseFormat("int5:foo", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("int4"), std::string::npos) << bad.status().message();
  bad = ParseFormat("int4:foo", true);
  ASSERT_FALSE(bad.ok());
  EXPECT_NE(bad.status().message().find("channel"), std::string::npos) << bad.status().message();
  EXPECT_FALSE(ParseFormat("f16:sym", true).ok());        // sym applies to ints
  EXPECT_FALSE(ParseFormat("int4:pre", false).ok());      // values have no RoPE
  EXPECT_FALSE(ParseFormat("int4:rot:pre", true).ok());   // contradictory
  EXPECT_FALSE(ParseFormat("q4_0:g64", true).ok());       // q4_0 is fixed
  EXPECT_FALSE(CheckFormat(*ParseFormat("int4:g128", false), 64, false).ok());
  EXPECT_FALSE(CheckFormat(*ParseFormat("int4:rot", true), 48, true).ok());
  auto preset = ParsePreset("kivi2");
  ASSERT_TRUE(preset.ok());
  EXPECT_EQ(preset->residual, 128);
  EXPECT_NE(ParsePreset("int5").status().message().find("kivi2"), std::string::npos);
}

}  // namespace
}  // namespace slimkv::kv
