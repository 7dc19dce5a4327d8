#include "server/tokenize_api.h"

#include <fmt/format.h>

namespace slimkv::server {

using nlohmann::json;

namespace {

// The first of `names` the body has, or null; false when it is not of the wanted kind.
const json* Field(const json& body, std::initializer_list<const char*> names) {
  for (const char* n : names) {
    if (auto it = body.find(n); it != body.end() && !it->is_null()) return &*it;
  }
  return nullptr;
}

}  // namespace

bool TokenizeResponse(const json& body, const tokenizer::Tokenizer& tok, int n_ctx, json* out,
                      ApiError* error) {
  if (!body.is_object()) {
    *error = BadRequest("the request body must be a JSON object");
    return false;
  }
  const json* text = Field(body, {"prompt", "content"});
  if (text == nullptr || !text->is_string()) {
    *error = BadRequest("'prompt' (or 'content') must be a string", "prompt");
    return false;
  }
  bool add_special = true;
  if (const json* a = Field(body, {"add_special_tokens", "add_special"})) {
    if (!a->is_boolean()) {
      *error = BadRequest("'add_special_tokens' must be a boolean", "add_special_tokens");
      return false;
    }
    add_special = a->get<bool>();
  }
  bool with_pieces = false;
  if (const json* w = Field(body, {"with_pieces"})) {
    if (!w->is_boolean()) {
      *error = BadRequest("'with_pieces' must be a boolean", "with_pieces");
      return false;
    }
    with_pieces = w->get<bool>();
  }
  auto ids = tok.EncodeText(text->get_ref<const std::string&>(), add_special && tok.add_bos_default(),
                            /*parse_special=*/false);
  if (!ids.ok()) {
    *error = BadRequest("'prompt': " + ids.status().message(), "prompt");
    return false;
  }
  *out = {{"tokens", *ids}, {"count", ids->size()}, {"max_model_len", n_ctx}};
  if (with_pieces) {
    json pieces = json::array();
    for (int32_t t : *ids) pieces.push_back(tok.TokenToPiece(t));
    (*out)["pieces"] = std::move(pieces);
  }
  return true;
}

bool DetokenizeResponse(const json& body, const tokenizer::Tokenizer& tok, json* out, ApiError* error) {
  if (!body.is_object()) {
    *error = BadRequest("the request body must be a JSON object");
    return false;
  }
  const json* t = Field(body, {"tokens"});
  if (t == nullptr || !t->is_array()) {
    *error = BadRequest("'tokens' must be an array of token ids", "tokens");
    return false;
  }
  std::vector<int32_t> ids;
  ids.reserve(t->size());
  for (const json& x : *t) {
    if (!x.is_number_integer() || x.get<int64_t>() < 0 || x.get<int64_t>() >= tok.vocab_size() ||
        (x.is_number_unsigned() && x.get<uint64_t>() >= static_cast<uint64_t>(tok.vocab_size()))) {
      *error = BadRequest(fmt::format("'tokens' must hold token ids in [0, {})", tok.vocab_size()), "tokens");
      return false;
    }
    ids.push_back(static_cast<int32_t>(x.get<int64_t>()));
  }
  const std::string text = tok.Decode(ids);
  *out = {{"prompt", text}, {"content", text}};
  return true;
}

}  // namespace slimkv::server
