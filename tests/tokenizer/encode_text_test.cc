// Text from a request reaches the tokenizer through EncodeText, which refuses a text Encode
// cannot take (more than kMaxTextBytes) with a Status instead of stopping the program
// (issue 12: a 1.07 GiB chunked body killed `serve` at Encode's CHECK).
#include <gtest/gtest.h>
#include <sys/mman.h>

#include "test_util.h"
#include "tokenizer/tokenizer_test_util.h"

namespace slimkv::tokenizer {
namespace {

TEST(EncodeTextTest, RefusesATextLongerThanTheLimitWithoutReadingIt) {
  SLIMKV_REQUIRE_MODEL(path, ::slimkv::testing::DefaultModelFile());
  const Tokenizer& tok = testing::CachedTokenizer(path);
  // 1 GiB + 1 of address space that is never touched: no memory is used.
  const size_t n = Tokenizer::kMaxTextBytes + 2;
  void* p = mmap(nullptr, n, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  ASSERT_NE(p, MAP_FAILED);
  const auto ids = tok.EncodeText(std::string_view(static_cast<const char*>(p), n), true, false);
  munmap(p, n);
  ASSERT_FALSE(ids.ok());
  EXPECT_EQ(ids.status().code(), StatusCode::kInvalidArgument);
  EXPECT_NE(ids.status().message().find(std::to_string(n)), std::string::npos) << ids.status().message();
}

TEST(EncodeTextTest, EqualsEncodeBelowTheLimit) {
  SLIMKV_REQUIRE_MODEL(path, ::slimkv::testing::DefaultModelFile());
  const Tokenizer& tok = testing::CachedTokenizer(path);
  const auto ids = tok.EncodeText("Hello <|im_start|> world", true, true);
  ASSERT_TRUE(ids.ok());
  EXPECT_EQ(*ids, tok.Encode("Hello <|im_start|> world", true, true));
}

}  // namespace
}  // namespace slimkv::tokenizer
