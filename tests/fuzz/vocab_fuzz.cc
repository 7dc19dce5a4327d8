// libFuzzer target for what a model file's metadata drives past the GGUF reader: the
// architecture configuration (model/config), the vocabulary with its special tokens and
// BPE/SentencePiece models, and the chat template. Any byte string must give a Status naming
// the file, or a tokenizer whose encodings stay inside its vocabulary and decode. Seeds:
// make_gguf_seeds (vocab_bpe, vocab_spm: small whole vocabularies). Run with tools/run_fuzz.sh.
#include <cstdint>
#include <string>
#include <vector>

#include "base/check.h"
#include "gguf/gguf_file.h"
#include "model/config.h"
#include "tokenizer/chat_template.h"
#include "tokenizer/tokenizer.h"

namespace {

using slimkv::Status;

void CheckNamesFile(const Status& st) {
  CHECK(st.message().rfind("fuzz.gguf: ", 0) == 0 || st.message().find("fuzz.gguf") != std::string::npos,
        "message does not name the file: {}", st.message());
}

// Texts that reach every path of the tokenizers: ASCII words and digits, spaces and
// newlines, multi-byte UTF-8, the special token texts of the seeds, and bytes that the
// seeds' vocabularies have no token for.
const char* const kTexts[] = {
    "Hello world! 12345 the them",
    "  leading spaces\n\nnew lines\t tabs",
    "caf\xC3\xA9 \xE2\x96\x81 \xF0\x9F\x98\x80 \xE4\xB8\xAD",
    "<|im_start|>user\nhi<|im_end|><s></s><start_of_turn><end_of_turn><|endoftext|>",
    "\x01\x02\x7F",
};

void CheckTokenizer(const slimkv::tokenizer::Tokenizer& tok) {
  for (const char* text : kTexts) {
    for (bool special : {false, true}) {
      const std::vector<int32_t> ids = tok.Encode(text, tok.add_bos_default(), special);
      for (int32_t id : ids)
        CHECK(id >= 0 && id < tok.vocab_size(), "id {} outside [0, {})", id, tok.vocab_size());
      (void)tok.Decode(ids, special);
    }
  }
  // Streaming ids a model may produce, including ones past the tokenizer's vocabulary.
  slimkv::tokenizer::StreamDecoder stream(tok, /*render_special=*/false);
  for (int32_t id : {0, 1, 2, tok.vocab_size() - 1, tok.vocab_size(), 1 << 30, -1}) (void)stream.Push(id);
  (void)stream.Flush();
  auto style = slimkv::tokenizer::DetectChatStyle(tok);
  if (!style.ok()) return;
  const std::vector<slimkv::tokenizer::ChatMessage> messages = {{"system", " be brief "},
                                                                {"user", "Hi there"}};
  const std::string prompt =
      slimkv::tokenizer::ApplyChatTemplate(*style, tok.chat_template(), messages, true);
  for (int32_t id : tok.Encode(prompt, tok.add_bos_default(), true)) CHECK(id >= 0 && id < tok.vocab_size());
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const uint8_t* data, size_t size) {
  auto f = slimkv::gguf::GgufFile::FromBytes({data, size}, "fuzz.gguf");
  if (!f.ok()) return 0;  // gguf_fuzz covers the reader
  auto config = slimkv::model::ReadConfig(*f);
  if (!config.ok()) CheckNamesFile(config.status());
  auto tok = slimkv::tokenizer::Tokenizer::FromGguf(*f);
  if (!tok.ok()) {
    CheckNamesFile(tok.status());
    return 0;
  }
  CheckTokenizer(**tok);
  return 0;
}
