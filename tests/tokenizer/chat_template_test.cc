// Chat template detection (llama.cpp's marker order) and rendering (the models' Jinja
// templates, rendered by Jinja2 in tools/gen_tokenizer_golden.py).
#include "tokenizer/chat_template.h"

#include <gtest/gtest.h>

#include "tokenizer_test_util.h"

namespace slimkv::tokenizer {
namespace {

using testing::CachedTokenizer;

std::vector<ChatMessage> Messages(const nlohmann::json& j) {
  std::vector<ChatMessage> out;
  for (const auto& m : j) out.push_back({m.at("role").get<std::string>(), m.at("content").get<std::string>()});
  return out;
}

constexpr char kLlama3Template[] =
    "{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = "
    "'<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim "
    "+ '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + content %}{% endif %}"
    "{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant"
    "<|end_header_id|>\\n\\n' }}{% endif %}";
constexpr char kLlama2Template[] =
    "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set "
    "system_message = messages[0]['content'] %}{% else %}{% set loop_messages = messages %}{% set "
    "system_message = false %}{% endif %}{% for message in loop_messages %}{% if loop.index0 == 0 and "
    "system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + "
    "message['content'] %}{% else %}{% set content = message['content'] %}{% endif %}{% if "
    "message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}{% elif "
    "message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";
// Zephyr as llama.cpp recognises it: "<|user|>" and "<|endoftext|>" but no "<|assistant|>"
// (a template naming "<|assistant|>" too is taken for falcon3 / glmedge, which come first).
constexpr char kZephyrTemplate[] =
    "{% for message in messages %}{% if message['role'] == 'user' %}{{ '<|user|>\\n' + "
    "message['content'] + '<|endoftext|>\\n' }}{% else %}{{ '<|' + message['role'] + '|>\\n' + "
    "message['content'] + '<|endoftext|>\\n' }}{% endif %}{% endfor %}";
constexpr char kPhi3Template[] =
    "{% for message in messages %}{{'<|' + message['role'] + '|>' + '\\n' + message['content'] + "
    "'<|end|>\\n' }}{% endfor %}{% if add_generation_prompt %}{{ '<|assistant|>\\n' }}{% endif %}";

TEST(ChatTemplateTest, DetectsStylesByMarkersInLlamaCppOrder) {
  const std::string gemma = testing::ReadFile(::slimkv::testing::SourceDir() +
                                              "/tests/data/tokenizer/gemma3_chat_template.jinja");
  ASSERT_FALSE(gemma.empty());
  EXPECT_EQ(*DetectChatStyle(gemma), ChatStyle::kGemma);
  EXPECT_EQ(*DetectChatStyle(kLlama3Template), ChatStyle::kLlama3);
  EXPECT_EQ(*DetectChatStyle(kLlama2Template), ChatStyle::kLlama2);
  EXPECT_EQ(*DetectChatStyle(kZephyrTemplate), ChatStyle::kZephyr);
  EXPECT_EQ(*DetectChatStyle("{{ '<|im_start|>' + message['role'] }}"), ChatStyle::kChatMl);
  EXPECT_EQ(*DetectChatStyle(""), ChatStyle::kChatMl);
  for (ChatStyle s : {ChatStyle::kChatMl, ChatStyle::kGemma, ChatStyle::kLlama2, ChatStyle::kLlama3,
                      ChatStyle::kZephyr, ChatStyle::kPhi3, ChatStyle::kMistralV1, ChatStyle::kMistralV3,
                      ChatStyle::kMistralV3Tekken, ChatStyle::kMistralV7}) {
    EXPECT_EQ(*DetectChatStyle(ChatStyleName(s)), s);
  }
  EXPECT_EQ(*DetectChatStyle(kPhi3Template), ChatStyle::kPhi3);
  // Mistral's official templates, told apart by llama.cpp's markers (v1: "' [INST] ' +
  // system_message"; v3: [AVAILABLE_TOOLS] with '[INST]'; v3-tekken: "[INST]" in double
  // quotes; v7: [SYSTEM_PROMPT]).
  EXPECT_EQ(*DetectChatStyle("{{ ' [INST] ' + system_message }}"), ChatStyle::kMistralV1);
  EXPECT_EQ(*DetectChatStyle("{{ '[AVAILABLE_TOOLS]' }}{{ '[INST]' + m }}"), ChatStyle::kMistralV3);
  EXPECT_EQ(*DetectChatStyle("{{- \"[AVAILABLE_TOOLS][\" }}{{- \"[INST]\" + m }}"),
            ChatStyle::kMistralV3Tekken);
  EXPECT_EQ(*DetectChatStyle("{{ '[SYSTEM_PROMPT]' + s }}{{ '[INST]' }}"), ChatStyle::kMistralV7);
  // Known to llama.cpp but not rendered by slimkv: the message names llama.cpp's style.
  const auto phi4 = DetectChatStyle("{{ '<|im_start|>' + role + '<|im_sep|>' }}");
  ASSERT_FALSE(phi4.ok());
  EXPECT_EQ(phi4.status().code(), StatusCode::kUnimplemented);
  EXPECT_NE(phi4.status().message().find("phi4"), std::string::npos) << phi4.status().message();
  const auto unknown = DetectChatStyle("Q: {{ messages }}\nA:");
  ASSERT_FALSE(unknown.ok());
  EXPECT_NE(unknown.status().message().find("Q: {{ messages }}"), std::string::npos)
      << unknown.status().message();
}

TEST(ChatTemplateTest, DetectsFromTheModelFile) {
  SLIMKV_REQUIRE_MODEL(smol, testing::kSmolLm2File);
  EXPECT_EQ(*DetectChatStyle(CachedTokenizer(smol)), ChatStyle::kChatMl);
  // The Gemma-3 270M GGUF carries no template: the vocabulary's turn tokens decide.
  SLIMKV_REQUIRE_MODEL(gemma, testing::kGemma3File);
  EXPECT_TRUE(CachedTokenizer(gemma).chat_template().empty());
  EXPECT_EQ(*DetectChatStyle(CachedTokenizer(gemma)), ChatStyle::kGemma);
}

// Every conversation renders exactly as the model's Jinja template does, and encodes to the
// ids llama.cpp gives for that rendering.
TEST(ChatTemplateTest, RendersLikeTheJinjaTemplates) {
  const auto golden = testing::LoadGolden("chat_templates.json").at("models");
  int checked = 0;
  for (const auto& [key, model] : golden.items()) {
    const std::string file = model.at("model").get<std::string>();
    auto path = ::slimkv::testing::ModelPath(file);
    if (!path) {
      if (::slimkv::testing::ModelsRequired()) FAIL() << "model file missing: " << file;
      continue;
    }
    const Tokenizer& tok = CachedTokenizer(*path);
    const std::string source = model.at("template_source").get<std::string>();
    const std::string tmpl = source == "gguf" ? tok.chat_template()
                                              : testing::ReadFile(::slimkv::testing::SourceDir() + "/" + source);
    const auto style = DetectChatStyle(tmpl);
    ASSERT_TRUE(style.ok()) << style.status().ToString();
    for (const auto& conv : model.at("conversations")) {
      SCOPED_TRACE(key + "/" + conv.at("name").get<std::string>());
      const std::string rendered = ApplyChatTemplate(*style, tmpl, Messages(conv.at("messages")),
                                                     conv.at("add_generation_prompt").get<bool>());
      EXPECT_EQ(rendered, conv.at("rendered").get<std::string>());
      EXPECT_EQ(tok.Encode(rendered, tok.add_bos_default(), /*parse_special=*/true),
                conv.at("ids").get<std::vector<TokenId>>());
      ++checked;
    }
  }
  std::printf("[ chat ] %d conversations checked\n", checked);
}

TEST(ChatTemplateTest, SmolLm2DefaultSystemMessageComesFromTheTemplate) {
  const std::string tmpl =
      "{% for message in messages %}{% if loop.first and messages[0]['role'] != 'system' %}"
      "{{ '<|im_start|>system\\nCustom default \\'quoted\\'<|im_end|>\\n' }}{% endif %}"
      "{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}"
      "{% endfor %}";
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kChatMl, tmpl, {{"user", "hi"}}, false),
            "<|im_start|>system\nCustom default 'quoted'<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n");
  // A system message replaces it; a plain ChatML template has none.
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kChatMl, tmpl, {{"system", "S"}, {"user", "hi"}}, true),
            "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kChatMl, "chatml", {{"user", "hi"}}, true),
            "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kChatMl, tmpl, {}, true), "<|im_start|>assistant\n");
}

TEST(ChatTemplateTest, GemmaMergesSystemIntoFirstTurnAndTrims) {
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kGemma, "", {{"system", " Sys "}, {"user", "  Q  "},
                                                      {"assistant", "\tA\n"}}, true),
            "<start_of_turn>user\n Sys \n\nQ<end_of_turn>\n<start_of_turn>model\nA<end_of_turn>\n"
            "<start_of_turn>model\n");
  // Trimming follows Python's str.strip: non-ASCII spaces go too.
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kGemma, "", {{"user", "\u3000x\u00a0\u2029"}}, false),
            "<start_of_turn>user\nx<end_of_turn>\n");
  // An older template with a single newline after the system text.
  const std::string one_newline = "{%- set first_user_prefix = messages[0]['content'] + '\\n' -%}<start_of_turn>";
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kGemma, one_newline, {{"system", "S"}, {"user", "U"}}, false),
            "<start_of_turn>user\nS\nU<end_of_turn>\n");
}

TEST(ChatTemplateTest, Llama3Llama2AndZephyrRenderAsLlamaCpp) {
  const std::vector<ChatMessage> chat = {{"system", "Be brief."}, {"user", " Hi "}, {"assistant", "Hello"},
                                         {"user", "Bye"}};
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kLlama3, kLlama3Template, chat, true),
            "<|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nHi<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\nHello<|eot_id|>"
            "<|start_header_id|>user<|end_header_id|>\n\nBye<|eot_id|>"
            "<|start_header_id|>assistant<|end_header_id|>\n\n");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kLlama2, kLlama2Template, chat, true),
            "[INST] <<SYS>>\nBe brief.\n<</SYS>>\n\nHi [/INST]Hello</s>[INST] Bye [/INST]");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kZephyr, kZephyrTemplate, chat, true),
            "<|system|>\nBe brief.<|endoftext|>\n<|user|>\n Hi <|endoftext|>\n<|assistant|>\nHello"
            "<|endoftext|>\n<|user|>\nBye<|endoftext|>\n<|assistant|>\n");
}

// llama.cpp's renderings (llm_chat_apply_template) of Phi-3 and Mistral's official
// templates, which agree with the models' Jinja templates on these conversations.
TEST(ChatTemplateTest, Phi3AndMistralRenderAsLlamaCpp) {
  const std::vector<ChatMessage> chat = {
      {"system", "Be brief."}, {"user", " Hi "}, {"assistant", " Hello "}, {"user", "Bye"}};
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kPhi3, kPhi3Template, chat, true),
            "<|system|>\nBe brief.<|end|>\n<|user|>\n Hi <|end|>\n<|assistant|>\n Hello <|end|>\n"
            "<|user|>\nBye<|end|>\n<|assistant|>\n");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kMistralV1, "", chat, true),
            " [INST] Be brief.\n\n Hi  [/INST]  Hello </s> [INST] Bye [/INST]");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kMistralV3, "", chat, true),
            "[INST] Be brief.\n\n Hi [/INST] Hello</s>[INST] Bye[/INST]");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kMistralV3Tekken, "", chat, true),
            "[INST]Be brief.\n\n Hi [/INST] Hello </s>[INST]Bye[/INST]");
  EXPECT_EQ(ApplyChatTemplate(ChatStyle::kMistralV7, "", chat, true),
            "[SYSTEM_PROMPT] Be brief.[/SYSTEM_PROMPT][INST]  Hi [/INST]  Hello </s>[INST] Bye[/INST]");
}

}  // namespace
}  // namespace slimkv::tokenizer
