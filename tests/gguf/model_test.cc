// The real model: SmolLM2-135M-Instruct quantized to Q4_1 (its embedding Q8_0, norms F32).
// Expected values were read with gguf-py's GGUFReader.
#include <gtest/gtest.h>

#include <cmath>
#include <map>

#include "gguf/dequant.h"
#include "gguf/gguf_file.h"
#include "test_util.h"

namespace slimkv::gguf {
namespace {

class ModelTest : public ::testing::Test {
 protected:
  // One parse shared by the tests: the file is 98 MB with a 49k-token vocabulary.
  static void SetUpTestSuite() {
    const auto path = slimkv::testing::ModelPath(slimkv::testing::DefaultModelFile());
    if (!path) return;
    auto f = GgufFile::Open(*path);
    open_status_ = new Status(f.status());
    if (f.ok()) file_ = new GgufFile(std::move(*f));
  }
  static void TearDownTestSuite() {
    delete file_;
    delete open_status_;
    file_ = nullptr;
    open_status_ = nullptr;
  }
  void SetUp() override {
    SLIMKV_REQUIRE_MODEL(path, slimkv::testing::DefaultModelFile());
    (void)path;  // opened once in SetUpTestSuite
    ASSERT_NE(file_, nullptr) << open_status_->ToString();
  }
  static const GgufFile& file() { return *file_; }

 private:
  static GgufFile* file_;
  static Status* open_status_;
};
GgufFile* ModelTest::file_ = nullptr;
Status* ModelTest::open_status_ = nullptr;

TEST_F(ModelTest, Header) {
  EXPECT_EQ(file().version(), 3u);
  EXPECT_EQ(file().alignment(), 32u);
  EXPECT_EQ(file().metadata().size(), 33u);
  EXPECT_EQ(file().tensors().size(), 272u);
  EXPECT_EQ(file().data_offset(), 1785664u);
}

TEST_F(ModelTest, Metadata) {
  const GgufFile& f = file();
  EXPECT_EQ(*f.GetString("general.architecture"), "llama");
  EXPECT_EQ(*f.GetString("general.basename"), "smollm2");
  EXPECT_EQ(*f.GetInt("llama.block_count"), 30);
  EXPECT_EQ(*f.GetInt("llama.context_length"), 8192);
  EXPECT_EQ(*f.GetInt("llama.embedding_length"), 576);
  EXPECT_EQ(*f.GetInt("llama.feed_forward_length"), 1536);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count"), 9);
  EXPECT_EQ(*f.GetInt("llama.attention.head_count_kv"), 3);
  EXPECT_EQ(*f.GetInt("llama.rope.dimension_count"), 64);
  EXPECT_EQ(*f.GetInt("llama.vocab_size"), 49152);
  EXPECT_EQ(*f.GetInt("general.file_type"), 3);  // MOSTLY_Q4_1
  EXPECT_EQ(*f.GetFloat("llama.rope.freq_base"), 100000.0);
  EXPECT_EQ(static_cast<float>(*f.GetFloat("llama.attention.layer_norm_rms_epsilon")), 1e-5f);
  EXPECT_EQ(f.Find("llama.attention.layer_norm_rms_epsilon")->type, ValueType::kFloat32);
  EXPECT_EQ(*f.GetBool("tokenizer.ggml.add_bos_token"), false);
  EXPECT_EQ(*f.GetString("tokenizer.ggml.model"), "gpt2");
  EXPECT_EQ(*f.GetInt("tokenizer.ggml.eos_token_id"), 2);
  EXPECT_NE(f.GetString("tokenizer.chat_template")->find("<|im_start|>"), std::string::npos);

  const MetaArray* tokens = f.GetArray("tokenizer.ggml.tokens");
  ASSERT_NE(tokens, nullptr);
  EXPECT_EQ(tokens->elem_type, ValueType::kString);
  ASSERT_EQ(tokens->items.size(), 49152u);
  EXPECT_EQ(*tokens->items[1].AsString(), "<|im_start|>");
  const MetaArray* types = f.GetArray("tokenizer.ggml.token_type");
  ASSERT_NE(types, nullptr);
  EXPECT_EQ(types->elem_type, ValueType::kInt32);
  EXPECT_EQ(types->items.size(), 49152u);
  const MetaArray* merges = f.GetArray("tokenizer.ggml.merges");
  ASSERT_NE(merges, nullptr);
  EXPECT_EQ(merges->items.size(), 48900u);
  const MetaArray* languages = f.GetArray("general.languages");
  ASSERT_NE(languages, nullptr);
  EXPECT_EQ(f.Find("general.languages")->ToString(), "[\"en\"]");
}

TEST_F(ModelTest, TensorTypesAndShapes) {
  std::map<TensorType, int> by_type;
  for (const TensorInfo& t : file().tensors()) ++by_type[t.type];
  EXPECT_EQ(by_type.size(), 3u);
  EXPECT_EQ(by_type[TensorType::kQ4_1], 210);
  EXPECT_EQ(by_type[TensorType::kF32], 61);
  EXPECT_EQ(by_type[TensorType::kQ8_0], 1);

  const TensorInfo* embd = file().FindTensor("token_embd.weight");
  ASSERT_NE(embd, nullptr);
  EXPECT_EQ(embd->type, TensorType::kQ8_0);
  EXPECT_EQ(embd->ShapeString(), "[576, 49152]");
  EXPECT_EQ(embd->offset, 0u);
  EXPECT_EQ(embd->n_bytes, 30081024u);
  EXPECT_EQ(embd->rows(), 49152u);
  EXPECT_EQ(embd->row_bytes(), 612u);

  const TensorInfo* down = file().FindTensor("blk.0.ffn_down.weight");
  ASSERT_NE(down, nullptr);
  EXPECT_EQ(down->type, TensorType::kQ4_1);
  EXPECT_EQ(down->ShapeString(), "[1536, 576]");
  EXPECT_EQ(down->n_bytes, 552960u);
  EXPECT_EQ(file().FindTensor("blk.29.attn_k.weight")->ShapeString(), "[576, 192]");
  const TensorInfo* norm = file().FindTensor("output_norm.weight");
  ASSERT_NE(norm, nullptr);
  EXPECT_EQ(norm->type, TensorType::kF32);
  EXPECT_EQ(norm->ShapeString(), "[576]");
  EXPECT_EQ(file().FindTensor("output.weight"), nullptr);  // tied to the embedding
}

TEST_F(ModelTest, EveryTensorIsInsideTheFileAlignedAndDequantizes) {
  const uint8_t* base = file().tensors()[0].data - file().tensors()[0].offset;
  for (const TensorInfo& t : file().tensors()) {
    SCOPED_TRACE(t.name);
    EXPECT_EQ(t.n_bytes, *BytesFor(t.type, t.n_elements));
    EXPECT_EQ(t.data, base + t.offset);
    EXPECT_EQ(reinterpret_cast<uintptr_t>(t.data) % 32, 0u);  // the mapping is page-aligned
    std::vector<float> row(t.dims[0]);
    ASSERT_TRUE(Dequantize(t.type, t.data, row.data(), row.size()).ok());
    for (float x : row) ASSERT_TRUE(std::isfinite(x));
  }
}

}  // namespace
}  // namespace slimkv::gguf
