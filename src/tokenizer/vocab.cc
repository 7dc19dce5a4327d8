#include "tokenizer/vocab.h"

#include <algorithm>
#include <cmath>
#include <span>
#include <optional>

#include "base/log.h"
#include "gguf/gguf_file.h"
#include "tokenizer/unicode.h"

namespace slimkv::tokenizer {

namespace {

// Special tokens are cut out of every input by a trie of their texts (special_split.h). Real
// vocabularies hold well under 1 MiB of such text (Gemma-3: 6,414 tokens, 75,784 bytes); a
// file with more is refused rather than left to size the trie.
constexpr size_t kMaxSpecialTextBytes = size_t{4} << 20;

constexpr std::string_view kModelKey = "tokenizer.ggml.model";
constexpr std::string_view kPreKey = "tokenizer.ggml.pre";
constexpr std::string_view kTokensKey = "tokenizer.ggml.tokens";
constexpr std::string_view kScoresKey = "tokenizer.ggml.scores";
constexpr std::string_view kTypesKey = "tokenizer.ggml.token_type";

// Texts llama.cpp recognises tokens by (llama-vocab.cpp, llama_vocab::impl::load). They
// are facts about published vocabularies, so they are data here.
constexpr std::string_view kEotTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<end_of_turn>", "<|endoftext|>", "<|end_of_text|>",
    "<EOT>", "_<EOT>", "[EOT]", "<｜end▁of▁sentence｜>", "<end_of_utterance>"};
constexpr std::string_view kEomTexts[] = {"<|eom_id|>"};
constexpr std::string_view kFimPreTexts[] = {
    "<|fim_prefix|>", "<fim-prefix>", "<fim_prefix>", "<｜fim▁begin｜>", "<PRE>", "▁<PRE>",
    "<|code_prefix|>", "<|prefix|>"};
constexpr std::string_view kFimSufTexts[] = {
    "<|fim_suffix|>", "<fim-suffix>", "<fim_suffix>", "<｜fim▁hole｜>", "<SUF>", "▁<SUF>",
    "<|code_suffix|>", "<|suffix|>"};
constexpr std::string_view kFimMidTexts[] = {
    "<|fim_middle|>", "<fim-middle>", "<fim_middle>", "<｜fim▁end｜>", "<MID>", "▁<MID>",
    "<|code_middle|>", "<|middle|>"};
constexpr std::string_view kFimPadTexts[] = {
    "<|fim_pad|>", "<fim-pad>", "<fim_pad>", "<PAD>", "[PAD]"};
constexpr std::string_view kFimRepTexts[] = {
    "<|fim_repo|>", "<|repo_name|>", "<fim-repo>", "<REPO>", "<reponame>"};
constexpr std::string_view kFimSepTexts[] = {"<|file_sep|>"};
constexpr std::string_view kEogTexts[] = {
    "<|eot_id|>", "<|im_end|>", "<|end|>", "<|return|>", "<|call|>", "<|flush|>", "<|calls|>",
    "<end_of_turn>", "<|endoftext|>", "</s>", "<|eom_id|>", "<EOT>", "_<EOT>", "[EOT]", "[EOS]",
    "<|end_of_text|>", "<end_of_utterance>", "<eos>", "<turn|>", "<|tool_response>",
    "<｜end▁of▁sentence｜>", "[e~["};
// gpt-oss renders these even though they are control tokens.
constexpr std::string_view kAlwaysRenderedTexts[] = {
    "<|channel|>", "<|message|>", "<|start|>", "<|constrain|>"};

uint32_t AttrFromType(int64_t type) {
  switch (type) {
    case 1: return kAttrNormal;
    case 2: return kAttrUnknown;
    case 3: return kAttrControl;
    case 4: return kAttrUserDefined;
    case 5: return kAttrUnused;
    case 6: return kAttrByte;
    default: return kAttrUndefined;
  }
}

// An optional key: nullopt when absent, an error when present with the wrong type.
template <typename T>
Result<std::optional<T>> Optional(Result<T> r) {
  if (r.ok()) return std::optional<T>(std::move(r).value());
  if (r.status().code() == StatusCode::kNotFound) return std::optional<T>();
  return r.status();
}

}  // namespace

Status Vocab::LoadTokens(const gguf::GgufFile& file) {
  const std::string& name = file.name();
  const gguf::MetaArray* tokens = file.GetArray(kTokensKey);
  if (tokens == nullptr) {
    return DataLoss("{}: {} is missing (or not an array): the file has no vocabulary", name,
                    kTokensKey);
  }
  const size_t n = tokens->items.size();
  if (n == 0 || n > static_cast<size_t>(INT32_MAX)) {
    return DataLoss("{}: {} has {} entries", name, kTokensKey, n);
  }
  const gguf::MetaArray* scores = file.GetArray(kScoresKey);
  if (file.Find(kScoresKey) != nullptr && scores == nullptr) {
    return DataLoss("{}: {} is not an array", name, kScoresKey);
  }
  if (scores != nullptr && scores->items.size() < n) {
    return DataLoss("{}: {} has {} entries for {} tokens", name, kScoresKey, scores->items.size(), n);
  }
  const gguf::MetaArray* types = file.GetArray(kTypesKey);
  if (file.Find(kTypesKey) != nullptr && types == nullptr) {
    return DataLoss("{}: {} is not an array", name, kTypesKey);
  }
  if (types != nullptr && types->items.size() < n) {
    return DataLoss("{}: {} has {} entries for {} tokens", name, kTypesKey, types->items.size(), n);
  }

  texts_.resize(n);
  scores_.assign(n, 0.0f);
  types_.assign(n, TokenType::kNormal);
  attrs_.assign(n, kAttrNormal);
  for (size_t i = 0; i < n; ++i) {
    const std::string* text = tokens->items[i].AsString();
    if (text == nullptr) return DataLoss("{}: {}[{}] is not a string", name, kTokensKey, i);
    // llama.cpp renames empty tokens rather than rejecting the file.
    texts_[i] = text->empty() ? fmt::format("[EMPTY_{}]", i) : *text;
    if (scores != nullptr) {
      const auto s = scores->items[i].AsFloat();
      if (!s || std::isnan(*s)) return DataLoss("{}: {}[{}] is not a number", name, kScoresKey, i);
      scores_[i] = static_cast<float>(*s);
    }
    if (types != nullptr) {
      const auto t = types->items[i].AsInt();
      if (!t) return DataLoss("{}: {}[{}] is not an integer", name, kTypesKey, i);
      attrs_[i] = AttrFromType(*t);
      types_[i] = attrs_[i] == kAttrUndefined ? TokenType::kUndefined : static_cast<TokenType>(*t);
    }
  }
  if (const auto dup = index_.Build(&texts_)) {
    return DataLoss("{}: {}[{}] repeats the text of token {}", name, kTokensKey, dup->second,
                    dup->first);
  }
  return Status::Ok();
}

Status Vocab::LoadSpecialIds(const gguf::GgufFile& file) {
  const std::string& name = file.name();
  const int32_t n = size();
  // Defaults by model kind, as llama.cpp; a default outside the vocabulary means none.
  if (kind_ == Kind::kSpm) {
    bos_ = 1, eos_ = 2, unk_ = 0;
  } else {
    bos_ = 11, eos_ = 11, unk_ = -1;
  }
  for (TokenId* id : {&bos_, &eos_, &unk_}) {
    if (!Valid(*id)) *id = -1;
  }
  struct Key {
    std::string_view key;
    TokenId* id;
    bool required_valid;  // out of range is an error (else a warning, as in llama.cpp)
  };
  TokenId unused_id = -1;
  const Key keys[] = {
      {"tokenizer.ggml.bos_token_id", &bos_, true},
      {"tokenizer.ggml.eos_token_id", &eos_, true},
      {"tokenizer.ggml.eot_token_id", &eot_, true},
      {"tokenizer.ggml.eom_token_id", &eom_, true},
      {"tokenizer.ggml.unknown_token_id", &unk_, true},
      {"tokenizer.ggml.padding_token_id", &pad_, false},
      {"tokenizer.ggml.fim_pad_token_id", &fim_pad_, false},
      {"tokenizer.ggml.fim_rep_token_id", &fim_rep_, false},
      {"tokenizer.ggml.fim_sep_token_id", &fim_sep_, false},
      {"tokenizer.ggml.seperator_token_id", &unused_id, false},
      {"tokenizer.ggml.mask_token_id", &unused_id, false},
  };
  for (const Key& k : keys) {
    ASSIGN_OR_RETURN(const std::optional<int64_t> v, Optional(file.GetInt(k.key)));
    if (!v) continue;
    if (*v == -1) {  // some converters write -1 for "none"
      *k.id = -1;
    } else if (*v >= 0 && *v < n) {
      *k.id = static_cast<TokenId>(*v);
    } else if (k.required_valid) {
      return DataLoss("{}: {} = {} is outside the vocabulary [0, {})", name, k.key, *v, n);
    } else {
      SPDLOG_WARN("{}: {} = {} is outside the vocabulary [0, {}); ignored", name, k.key, *v, n);
    }
  }

  add_space_prefix_ = kind_ == Kind::kSpm;
  add_bos_ = kind_ == Kind::kSpm || pre_.add_bos;
  add_eos_ = false;
  struct Flag {
    std::string_view key;
    bool* value;
  };
  for (const Flag& f : {Flag{"tokenizer.ggml.add_bos_token", &add_bos_},
                        Flag{"tokenizer.ggml.add_eos_token", &add_eos_},
                        Flag{"tokenizer.ggml.add_space_prefix", &add_space_prefix_}}) {
    ASSIGN_OR_RETURN(const std::optional<bool> v, Optional(file.GetBool(f.key)));
    if (v) *f.value = *v;
  }
  if (add_bos_ && bos_ < 0) {
    return DataLoss("{}: tokenizer.ggml.add_bos_token is set but there is no BOS token", name);
  }
  return Status::Ok();
}

void Vocab::DeriveAttributes() {
  // The lowest id among tokens with one of `texts` (llama.cpp takes the first it meets in
  // a hash map; the order only matters for vocabularies with several such tokens).
  auto find_first = [&](std::span<const std::string_view> texts) {
    TokenId best = -1;
    for (std::string_view t : texts) {
      const TokenId id = Find(t);
      if (id >= 0 && (best < 0 || id < best)) best = id;
    }
    return best;
  };
  TokenId fim_pre = -1, fim_suf = -1, fim_mid = -1;
  using Texts = std::span<const std::string_view>;
  const std::pair<TokenId*, Texts> detected[] = {
      {&eot_, kEotTexts},        {&eom_, kEomTexts},        {&fim_pre, kFimPreTexts},
      {&fim_suf, kFimSufTexts},  {&fim_mid, kFimMidTexts},  {&fim_pad_, kFimPadTexts},
      {&fim_rep_, kFimRepTexts}, {&fim_sep_, kFimSepTexts}};
  for (const auto& [id, texts] : detected) {
    if (*id >= 0) continue;
    *id = find_first(texts);
    if (*id >= 0) attrs_[*id] |= kAttrControl;
  }
  for (TokenId id = 0; id < size(); ++id) {
    if ((attrs_[id] & kAttrControl) && texts_[id].find("unused") != std::string::npos) {
      attrs_[id] |= kAttrUnused;
    }
  }

  std::vector<TokenId> eog;
  for (TokenId id : {fim_pad_, fim_rep_, fim_sep_}) {
    if (id >= 0) eog.push_back(id);
  }
  for (std::string_view t : kEogTexts) {
    const TokenId id = Find(t);
    if (id < 0) continue;
    eog.push_back(id);
    attrs_[id] |= kAttrControl;
  }
  for (std::string_view t : kAlwaysRenderedTexts) {
    const TokenId id = Find(t);
    if (id >= 0) attrs_[id] = kAttrUserDefined;
  }
  for (TokenId id : {eos_, eot_, eom_}) {
    if (id >= 0) eog.push_back(id);
  }
  std::sort(eog.begin(), eog.end());
  eog.erase(std::unique(eog.begin(), eog.end()), eog.end());
  auto eog_has = [&](std::string_view t) {
    const TokenId id = Find(t);
    return id >= 0 && std::binary_search(eog.begin(), eog.end(), id);
  };
  auto eog_remove = [&](std::string_view t, uint32_t new_attr) {
    const TokenId id = Find(t);
    eog.erase(std::remove(eog.begin(), eog.end(), id), eog.end());
    attrs_[id] = new_attr;
  };
  // gpt-oss / solar-open: "<|end|>" ends a message, not the generation.
  const bool has_call = eog_has("<|call|>") || eog_has("<|calls|>");
  if (eog_has("<|end|>") &&
      ((eog_has("<|return|>") && has_call) || (has_call && eog_has("<|flush|>")))) {
    eog_remove("<|end|>", kAttrUserDefined);
  }
  // Vocabularies where "</s>" is ordinary text.
  if (eog_has("</s>") && (eog_has("<|tool_response>") || eog_has("<|plamo:eos|>"))) {
    eog_remove("</s>", kAttrNormal);
  }
  eog_ids_ = std::move(eog);

  for (TokenId id = 0; id < size(); ++id) {
    if (attrs_[id] & (kAttrControl | kAttrUserDefined | kAttrUnknown)) special_tokens_.push_back(id);
  }
  std::stable_sort(special_tokens_.begin(), special_tokens_.end(), [&](TokenId a, TokenId b) {
    return texts_[a].size() > texts_[b].size();
  });
}

bool Vocab::IsEog(TokenId id) const {
  return std::binary_search(eog_ids_.begin(), eog_ids_.end(), id);
}

Result<std::unique_ptr<Vocab>> Vocab::Load(const gguf::GgufFile& file) {
  const std::string& name = file.name();
  std::unique_ptr<Vocab> v(new Vocab());
  auto model = file.GetString(kModelKey);
  if (!model.ok()) {
    if (model.status().code() == StatusCode::kNotFound) {
      return DataLoss("{}: {} is missing: the file has no tokenizer", name, kModelKey);
    }
    return model.status();
  }
  if (*model == "gpt2") {
    v->kind_ = Kind::kBpe;
    ASSIGN_OR_RETURN(const std::optional<std::string> pre, Optional(file.GetString(kPreKey)));
    auto info = PreTypeFromName(pre.value_or(""));
    if (!info.ok()) return Unimplemented("{}: {}", name, info.status().message());
    v->pre_ = *info;
  } else if (*model == "llama") {
    v->kind_ = Kind::kSpm;
  } else {
    return Unimplemented("{}: {} '{}' is not supported (slimkv knows 'gpt2' and 'llama')", name,
                         kModelKey, *model);
  }
  RETURN_IF_ERROR(v->LoadTokens(file));
  RETURN_IF_ERROR(v->LoadSpecialIds(file));
  v->DeriveAttributes();
  size_t special_bytes = 0;
  for (TokenId id : v->special_tokens_) special_bytes += v->texts_[id].size();
  if (special_bytes > kMaxSpecialTextBytes) {
    return DataLoss("{}: {}: the {} control, user-defined and unknown tokens hold {} bytes of text, more than the {} "
                    "slimkv accepts",
                    name, kTokensKey, v->special_tokens_.size(), special_bytes, kMaxSpecialTextBytes);
  }

  for (int b = 0; b < 256; ++b) {
    TokenId id = -1;
    if (v->kind_ == Kind::kSpm) {
      id = v->Find(fmt::format("<0x{:02X}>", b));
      if (id < 0) id = v->Find(std::string(1, static_cast<char>(b)));
    } else {
      id = v->Find(ByteLevelChar(static_cast<uint8_t>(b)));
    }
    v->byte_tokens_[b] = id;
  }
  ASSIGN_OR_RETURN(const std::optional<std::string> tmpl,
                   Optional(file.GetString("tokenizer.chat_template")));
  v->chat_template_ = tmpl.value_or("");
  return v;
}

}  // namespace slimkv::tokenizer
