// Dequantizers against gguf-py's numpy reference (gguf.quants.dequantize), bit for bit.
//
// tests/gguf/dequant_golden.py writes random-but-valid blocks of every type gguf-py can
// dequantize (all fp16 scales finite) and its float32 results; we dequantize the same bytes
// and compare the bit patterns. Bit equality (not "within 1 ulp") is expected: both sides
// widen fp16 exactly and then do the same float32 operations in the same order (d*sc first,
// then *q, then -m), each correctly rounded; dequant.cc disables FMA contraction so a fused
// multiply-add cannot round differently.
#include <gtest/gtest.h>
#include <unistd.h>

#include <bit>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <sstream>

#include "gguf/dequant.h"
#include "gguf/gguf_file.h"
#include "test_util.h"

namespace slimkv::gguf {
namespace {

namespace fs = std::filesystem;

// Real tensors compared too: NAME[:MAX_ROWS] (the embedding is 113 MB as float32).
constexpr const char* kModelTensors[] = {
    "token_embd.weight:300",   // Q8_0
    "blk.0.attn_q.weight",     // Q4_1
    "blk.0.ffn_down.weight",   // Q4_1, rows of 1536
    "blk.29.ffn_up.weight",    // Q4_1
    "blk.0.attn_norm.weight",  // F32
    "output_norm.weight",      // F32
};

std::string ShellQuote(const std::string& s) {
  std::string out = "'";
  for (char c : s) out += c == '\'' ? std::string("'\\''") : std::string(1, c);
  return out + "'";
}

// The project's venv python: SLIMKV_VENV_PYTHON under ctest, else .venv of the checkout.
std::string Python() {
  if (std::getenv("SLIMKV_VENV_PYTHON")) return slimkv::testing::VenvPython();
  const fs::path venv = fs::path(slimkv::testing::SourceDir()) / ".venv/bin/python";
  return fs::exists(venv) ? venv.string() : "python3";
}

std::vector<uint8_t> ReadFile(const fs::path& p) {
  std::ifstream in(p, std::ios::binary);
  return std::vector<uint8_t>(std::istreambuf_iterator<char>(in), {});
}

std::vector<float> ReadFloats(const fs::path& p) {
  const auto bytes = ReadFile(p);
  std::vector<float> out(bytes.size() / 4);
  if (!out.empty()) std::memcpy(out.data(), bytes.data(), out.size() * 4);
  return out;
}

// Compares bit patterns; reports the first few differences.
void ExpectBitEqual(const std::vector<float>& got, const std::vector<float>& want,
                    const std::string& what) {
  ASSERT_EQ(got.size(), want.size()) << what;
  int reported = 0;
  size_t mismatches = 0;
  for (size_t i = 0; i < got.size(); ++i) {
    if (std::bit_cast<uint32_t>(got[i]) == std::bit_cast<uint32_t>(want[i])) continue;
    ++mismatches;
    if (reported++ < 5) {
      ADD_FAILURE() << what << "[" << i << "]: slimkv " << got[i] << " (0x" << std::hex
                    << std::bit_cast<uint32_t>(got[i]) << "), gguf-py " << want[i] << " (0x"
                    << std::bit_cast<uint32_t>(want[i]) << ")" << std::dec;
    }
  }
  EXPECT_EQ(mismatches, 0u) << what << ": " << mismatches << " of " << got.size() << " differ";
}

class DequantGoldenTest : public ::testing::Test {
 protected:
  static void SetUpTestSuite() {
    dir_ = new fs::path(fs::temp_directory_path() /
                        fmt::format("slimkv_dequant_golden_{}", ::getpid()));
    fs::create_directories(*dir_);
    const std::string python = Python();
    std::string ignored;
    python_ok_ = slimkv::testing::RunCommand(
                     ShellQuote(python) + " -c 'import gguf, numpy' 2>/dev/null", &ignored) == 0;
    if (!python_ok_) return;
    std::string cmd = ShellQuote(python) + " " +
                      ShellQuote(slimkv::testing::SourceDir() + "/tests/gguf/dequant_golden.py") +
                      " " + ShellQuote(dir_->string());
    if (const auto model = slimkv::testing::ModelPath(slimkv::testing::DefaultModelFile())) {
      model_ = new std::string(*model);
      cmd += " --model " + ShellQuote(*model);
      for (const char* t : kModelTensors) cmd += fmt::format(" --tensor {}", t);
    }
    script_output_ = new std::string;
    script_status_ = slimkv::testing::RunCommand(cmd + " 2>&1", script_output_);
  }
  static void TearDownTestSuite() {
    std::error_code ec;
    fs::remove_all(*dir_, ec);
    delete dir_;
    delete model_;
    delete script_output_;
    dir_ = nullptr;
    model_ = nullptr;
    script_output_ = nullptr;
  }
  void SetUp() override {
    if (!python_ok_) {
      if (slimkv::testing::ModelsRequired()) FAIL() << "python with gguf and numpy not found";
      GTEST_SKIP() << "python with gguf and numpy not found (" << Python() << ")";
    }
    ASSERT_EQ(script_status_, 0) << "dequant_golden.py failed:\n" << *script_output_;
  }

  static fs::path* dir_;
  static std::string* model_;
  static bool python_ok_;
  static int script_status_;
  static std::string* script_output_;
};
fs::path* DequantGoldenTest::dir_ = nullptr;
std::string* DequantGoldenTest::model_ = nullptr;
bool DequantGoldenTest::python_ok_ = false;
int DequantGoldenTest::script_status_ = -1;
std::string* DequantGoldenTest::script_output_ = nullptr;

TEST_F(DequantGoldenTest, TypeGeometryMatchesGgufPy) {
  std::ifstream in(*dir_ / "sizes.txt");
  std::string name;
  uint32_t id, elems, bytes;
  int compared = 0;
  while (in >> name >> id >> elems >> bytes) {
    SCOPED_TRACE(name);
    const auto traits = GetTypeTraits(id);
    ASSERT_TRUE(traits) << "slimkv does not know type id " << id;
    EXPECT_EQ(traits->name, name);
    EXPECT_EQ(traits->block_elems, elems);
    // gguf-py says 40 for Q8_1; ggml's block_q8_1 is 36 bytes (two fp16 + 32 int8).
    if (name != "Q8_1") {
      EXPECT_EQ(traits->block_bytes, bytes);
    }
    ++compared;
  }
  EXPECT_GE(compared, 30);
}

TEST_F(DequantGoldenTest, RandomBlocksOfEveryTypeAreBitExact) {
  for (const char* name : {"F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0", "Q2_K", "Q3_K",
                           "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"}) {
    SCOPED_TRACE(name);
    std::optional<TensorType> type;
    for (uint32_t id = 0; id < 64 && !type; ++id) {
      const auto t = GetTypeTraits(id);
      if (t && t->name == name) type = static_cast<TensorType>(id);
    }
    ASSERT_TRUE(type);
    const auto raw = ReadFile(*dir_ / (std::string(name) + ".raw"));
    const auto want = ReadFloats(*dir_ / (std::string(name) + ".f32"));
    ASSERT_FALSE(want.empty());
    ASSERT_EQ(raw.size(), *BytesFor(*type, want.size()));
    std::vector<float> got(want.size());
    ASSERT_TRUE(Dequantize(*type, raw.data(), got.data(), got.size()).ok());
    ExpectBitEqual(got, want, name);
  }
}

TEST_F(DequantGoldenTest, RealModelTensors) {
  SLIMKV_REQUIRE_MODEL(path, slimkv::testing::DefaultModelFile());
  auto file = GgufFile::Open(path);
  ASSERT_TRUE(file.ok()) << file.status().ToString();
  for (const char* spec : kModelTensors) {
    const std::string s = spec;
    const std::string name = s.substr(0, s.find(':'));
    SCOPED_TRACE(name);
    const TensorInfo* t = file->FindTensor(name);
    ASSERT_NE(t, nullptr);
    uint64_t rows = t->rows();
    if (s.find(':') != std::string::npos)
      rows = std::min<uint64_t>(rows, std::stoull(s.substr(s.find(':') + 1)));
    std::vector<float> got(rows * t->dims[0]);
    ASSERT_TRUE(Dequantize(t->type, t->data, got.data(), got.size()).ok());
    ExpectBitEqual(got, ReadFloats(*dir_ / ("tensor." + name + ".f32")), name);
  }
}

}  // namespace
}  // namespace slimkv::gguf
