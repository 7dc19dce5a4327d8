// Writes the fuzzers' seed corpus: small valid files covering every metadata type, nested
// arrays, versions 2 and 3, alignments, a tensor of every dequantizable type (gguf_fuzz), and
// two whole small vocabularies with a model configuration and a chat template: byte-level BPE
// (llama) and SentencePiece (gemma3) (vocab_fuzz).
// Usage: make_gguf_seeds OUT_DIR
#include <cstdio>
#include <filesystem>
#include <fstream>

#include "gguf/gguf_writer.h"
#include "gguf/types.h"
#include "tokenizer/unicode.h"

namespace {

using slimkv::gguf::testing::GgufWriter;
using slimkv::gguf::testing::Value;

void Write(const std::filesystem::path& dir, const std::string& name, const GgufWriter& w) {
  const auto bytes = w.Build();
  std::ofstream out(dir / (name + ".gguf"), std::ios::binary);
  out.write(reinterpret_cast<const char*>(bytes.data()), static_cast<std::streamsize>(bytes.size()));
}

// Deterministic filler; fp16 scales that happen to be inf/NaN only make values non-finite.
std::vector<uint8_t> Bytes(size_t n, uint32_t seed) {
  std::vector<uint8_t> b(n);
  for (size_t i = 0; i < n; ++i) {
    seed = seed * 1664525u + 1013904223u;
    b[i] = static_cast<uint8_t>(seed >> 24) & 0x3F;  // small fp16 exponents: finite scales
  }
  return b;
}

Value Strings(const std::vector<std::string>& items) {
  std::vector<Value> v;
  for (const std::string& s : items) v.push_back(Value::String(s));
  return Value::Array(8, v);
}

Value Ints(const std::vector<int32_t>& items) {
  std::vector<Value> v;
  for (int32_t x : items) v.push_back(Value::I32(x));
  return Value::Array(5, v);
}

// The configuration keys every family reads, for a tiny model.
void Config(GgufWriter& w, const std::string& arch) {
  w.Kv("general.architecture", Value::String(arch))
      .Kv(arch + ".block_count", Value::U32(2))
      .Kv(arch + ".context_length", Value::U32(256))
      .Kv(arch + ".embedding_length", Value::U32(64))
      .Kv(arch + ".feed_forward_length", Value::U32(128))
      .Kv(arch + ".attention.head_count", Value::U32(4))
      .Kv(arch + ".attention.head_count_kv", Value::U32(2))
      .Kv(arch + ".attention.layer_norm_rms_epsilon", Value::F32(1e-5f))
      .Kv(arch + ".rope.freq_base", Value::F32(10000.f));
}

// Byte-level BPE: the 256 byte characters, a few merges, ChatML special tokens.
GgufWriter VocabBpe() {
  GgufWriter w;
  Config(w, "llama");
  std::vector<std::string> tokens;
  for (int b = 0; b < 256; ++b) tokens.push_back(slimkv::tokenizer::ByteLevelChar(static_cast<uint8_t>(b)));
  const std::string sp = slimkv::tokenizer::ByteLevelChar(' ');
  for (std::string t : {sp + "t", std::string("he"), sp + "the", std::string("em"), sp + "them"})
    tokens.push_back(t);
  const std::vector<std::string> merges = {sp + " t", "h e", sp + "t he", "e m", sp + "the m"};
  std::vector<int32_t> types(tokens.size(), 1);
  for (std::string special : {"<|endoftext|>", "<|im_start|>", "<|im_end|>"}) {
    tokens.push_back(special);
    types.push_back(3);
  }
  const auto n = static_cast<uint32_t>(tokens.size());
  w.Kv("tokenizer.ggml.model", Value::String("gpt2"))
      .Kv("tokenizer.ggml.pre", Value::String("smollm"))
      .Kv("tokenizer.ggml.tokens", Strings(tokens))
      .Kv("tokenizer.ggml.token_type", Ints(types))
      .Kv("tokenizer.ggml.merges", Strings(merges))
      .Kv("tokenizer.ggml.bos_token_id", Value::U32(n - 2))
      .Kv("tokenizer.ggml.eos_token_id", Value::U32(n - 1))
      .Kv("tokenizer.ggml.add_bos_token", Value::Bool(false))
      .Kv("tokenizer.chat_template",
          Value::String(
              "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
              "{{ '<|im_start|>system\nYou are helpful.<|im_end|>\n' }}{% endif %}"
              "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
              "{% endfor %}"));
  return w;
}

// SentencePiece: <unk> <s> </s>, the 256 <0xXX> byte tokens, a few pieces with scores,
// Gemma's turn tokens; a gemma3 configuration with its sliding-window keys.
GgufWriter VocabSpm() {
  GgufWriter w;
  Config(w, "gemma3");
  w.Kv("gemma3.attention.sliding_window", Value::U32(64))
      .Kv("gemma3.rope.freq_base_swa", Value::F32(10000.f))
      .Kv("gemma3.attention.sliding_window_pattern",
          Value::Array(7, {Value::Bool(true), Value::Bool(false)}));
  std::vector<std::string> tokens = {"<unk>", "<s>", "</s>"};
  std::vector<int32_t> types = {2, 3, 3};
  for (int b = 0; b < 256; ++b) {
    tokens.push_back(fmt::format("<0x{:02X}>", b));
    types.push_back(6);
  }
  const std::string sp = "\xE2\x96\x81";
  for (std::string t : {sp, std::string("t"), std::string("h"), std::string("e"), sp + "t", sp + "th",
                        sp + "the", std::string("m"), sp + "them"}) {
    tokens.push_back(t);
    types.push_back(1);
  }
  for (std::string special : {"<start_of_turn>", "<end_of_turn>"}) {
    tokens.push_back(special);
    types.push_back(3);
  }
  std::vector<Value> scores;
  for (size_t i = 0; i < tokens.size(); ++i) scores.push_back(Value::F32(-static_cast<float>(i % 17)));
  w.Kv("tokenizer.ggml.model", Value::String("llama"))
      .Kv("tokenizer.ggml.tokens", Strings(tokens))
      .Kv("tokenizer.ggml.scores", Value::Array(6, scores))
      .Kv("tokenizer.ggml.token_type", Ints(types))
      .Kv("tokenizer.ggml.bos_token_id", Value::U32(1))
      .Kv("tokenizer.ggml.eos_token_id", Value::U32(2))
      .Kv("tokenizer.ggml.unknown_token_id", Value::U32(0))
      .Kv("tokenizer.chat_template", Value::String("{{ bos_token }}{% set first_user_prefix = "
                                                   "messages[0]['content'] + '\n\n' %}<start_of_turn>"));
  return w;
}

}  // namespace

int main(int argc, char** argv) {
  if (argc != 2) {
    std::fprintf(stderr, "usage: %s OUT_DIR\n", argv[0]);
    return 2;
  }
  const std::filesystem::path dir = argv[1];
  std::filesystem::create_directories(dir);

  GgufWriter meta;
  meta.Kv("general.architecture", Value::String("llama"))
      .Kv("u8", Value::U8(1))
      .Kv("i8", Value::I8(-1))
      .Kv("u16", Value::U16(2))
      .Kv("i16", Value::I16(-2))
      .Kv("u32", Value::U32(3))
      .Kv("i32", Value::I32(-3))
      .Kv("f32", Value::F32(0.5f))
      .Kv("bool", Value::Bool(true))
      .Kv("u64", Value::U64(4))
      .Kv("i64", Value::I64(-4))
      .Kv("f64", Value::F64(0.25))
      .Kv("tokens", Value::Array(8, {Value::String("<s>"), Value::String("hi")}))
      .Kv("scores", Value::Array(6, {Value::F32(0.f), Value::F32(-1.f)}))
      .Kv("nested", Value::Array(9, {Value::Array(4, {Value::U32(1)}), Value::Array(8, {})}));
  Write(dir, "metadata", meta);

  GgufWriter v2 = meta;
  v2.version = 2;
  v2.Tensor("w", {4, 2}, 0, Bytes(32, 1));
  Write(dir, "v2", v2);

  for (uint64_t alignment : {1, 64}) {
    GgufWriter w;
    w.alignment = alignment;
    w.Kv("general.alignment", Value::U32(static_cast<uint32_t>(alignment)));
    w.Tensor("a", {3}, 0, Bytes(12, 2)).Tensor("b", {32}, 8, Bytes(34, 3));
    Write(dir, "alignment" + std::to_string(alignment), w);
  }

  // One tensor of every type slimkv can dequantize, two rows each, and one it cannot.
  GgufWriter all;
  all.Kv("general.architecture", Value::String("llama"));
  for (uint32_t id = 0; id < 64; ++id) {
    const auto traits = slimkv::gguf::GetTypeTraits(id);
    if (!traits || !traits->can_dequantize) continue;
    all.Tensor(std::string(traits->name), {traits->block_elems, 2}, id, Bytes(2 * traits->block_bytes, id));
  }
  all.Tensor("iq4_nl", {32}, 20, Bytes(18, 99));
  Write(dir, "all_types", all);

  Write(dir, "vocab_bpe", VocabBpe());
  Write(dir, "vocab_spm", VocabSpm());
  return 0;
}
