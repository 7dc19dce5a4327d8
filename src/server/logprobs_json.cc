#include "server/logprobs_json.h"

namespace slimkv::server {

using nlohmann::json;

namespace {

json Bytes(const std::string& s) {
  json b = json::array();
  for (unsigned char c : s) b.push_back(static_cast<int>(c));
  return b;
}

json TopMap(const tokenizer::Tokenizer& tok, const engine::TokenLogprob& lp) {
  json m = json::object();
  // Two tokens with the same text (rare: special tokens rendered alike) keep the likelier.
  for (const engine::TopLogprob& t : lp.top) {
    const std::string piece = tok.TokenToPiece(t.token);
    if (!m.contains(piece)) m[piece] = t.logprob;
  }
  return m;
}

}  // namespace

json CompletionLogprobsJson(const tokenizer::Tokenizer& tok, const std::vector<int32_t>& prompt,
                            const std::vector<engine::TokenLogprob>& prompt_logprobs,
                            const std::vector<engine::TokenLogprob>& generated, size_t first_offset) {
  json tokens = json::array(), token_logprobs = json::array(), top = json::array(), offsets = json::array();
  size_t offset = first_offset;
  const auto add = [&](int32_t token, const engine::TokenLogprob* lp) {
    const std::string piece = tok.TokenToPiece(token);
    tokens.push_back(piece);
    token_logprobs.push_back(lp ? json(lp->logprob) : json(nullptr));
    top.push_back(lp ? TopMap(tok, *lp) : json(nullptr));
    offsets.push_back(offset);
    offset += piece.size();
  };
  if (!prompt.empty()) {
    add(prompt[0], nullptr);
    for (size_t i = 1; i < prompt.size(); ++i)
      add(prompt[i], i - 1 < prompt_logprobs.size() ? &prompt_logprobs[i - 1] : nullptr);
  }
  for (const engine::TokenLogprob& lp : generated) add(lp.token, &lp);
  return {{"tokens", std::move(tokens)},
          {"token_logprobs", std::move(token_logprobs)},
          {"top_logprobs", std::move(top)},
          {"text_offset", std::move(offsets)}};
}

json ChatLogprobsJson(const tokenizer::Tokenizer& tok, const std::vector<engine::TokenLogprob>& generated) {
  json content = json::array();
  for (const engine::TokenLogprob& lp : generated) {
    const std::string piece = tok.TokenToPiece(lp.token);
    json top = json::array();
    for (const engine::TopLogprob& t : lp.top) {
      const std::string p = tok.TokenToPiece(t.token);
      top.push_back({{"token", p}, {"logprob", t.logprob}, {"bytes", Bytes(p)}});
    }
    content.push_back({{"token", piece},
                       {"logprob", lp.logprob},
                       {"bytes", Bytes(piece)},
                       {"top_logprobs", std::move(top)}});
  }
  return {{"content", std::move(content)}};
}

}  // namespace slimkv::server
