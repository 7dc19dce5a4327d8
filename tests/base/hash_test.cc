#include "base/hash.h"

#include <gtest/gtest.h>

#include <cstdint>
#include <vector>

namespace slimkv {
namespace {

// Test vectors of the SipHash-2-4 reference implementation (key 00..0f, message 00..n-1).
TEST(SipHashTest, ReferenceVectors) {
  const SipKey key{0x0706050403020100ull, 0x0f0e0d0c0b0a0908ull};
  std::vector<uint8_t> msg;
  for (int i = 0; i < 16; ++i) msg.push_back(static_cast<uint8_t>(i));
  EXPECT_EQ(SipHash24(msg.data(), 0, key), 0x726fdb47dd0e0e31ull);
  EXPECT_EQ(SipHash24(msg.data(), 1, key), 0x74f839c593dc67fdull);
  EXPECT_EQ(SipHash24(msg.data(), 8, key), 0x93f5f5799a932462ull);
  EXPECT_EQ(SipHash24(msg.data(), 15, key), 0xa129ca6149be45e5ull);
}

TEST(SipHashTest, KeyChangesTheHash) {
  const char m[] = "prefix";
  EXPECT_NE(SipHash24(m, 6), SipHash24(m, 6, SipKey{1, 2}));
  EXPECT_EQ(SipHash24(m, 6), SipHash24(m, 6));
}

}  // namespace
}  // namespace slimkv
