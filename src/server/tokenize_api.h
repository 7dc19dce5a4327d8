// POST /tokenize and /detokenize, in both llama.cpp's and vLLM's forms (evaluation harnesses
// count tokens and rebuild texts through them):
//   /tokenize    {"prompt" | "content": text, "add_special_tokens" | "add_special": bool (true)}
//                -> {"tokens": [ids], "count": n, "max_model_len": n_ctx}
//                   (+ "pieces": [texts] with "with_pieces": true)
//   /detokenize  {"tokens": [ids]} -> {"prompt": text, "content": text}
// Pure functions of JSON and the tokenizer.
#pragma once

#include <nlohmann/json.hpp>

#include "server/api_error.h"
#include "tokenizer/tokenizer.h"

namespace slimkv::server {

// false with *error (400 naming the field) for a bad body.
bool TokenizeResponse(const nlohmann::json& body, const tokenizer::Tokenizer& tok, int n_ctx,
                      nlohmann::json* out, ApiError* error);
bool DetokenizeResponse(const nlohmann::json& body, const tokenizer::Tokenizer& tok, nlohmann::json* out,
                        ApiError* error);

}  // namespace slimkv::server
