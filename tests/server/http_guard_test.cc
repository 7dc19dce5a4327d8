// The checks made from a request's header (issue 12, finding 10): Host names against DNS
// rebinding, origins, bearer credentials with several keys, the JSON media type; request ids
// and access log lines that a client cannot use to forge log lines.
#include "server/http_guard.h"

#include <gtest/gtest.h>

namespace slimkv::server {
namespace {

TEST(HttpGuardTest, LoopbackHostNames) {
  for (const char* h : {"localhost", "LOCALHOST:8080", "localhost.", "app.localhost:3000", "127.0.0.1",
                        "127.0.0.1:8080", "127.1.2.3", "[::1]", "[::1]:8080", "::1"}) {
    EXPECT_TRUE(IsLoopbackHostName(h)) << h;
  }
  for (const char* h : {"", "evil.com", "evil.com:8080", "localhost.evil.com", "127.0.0.1.evil.com",
                        "128.0.0.1", "127.0.0.256", "127.0.0", "127.0.0.1:", "127.0.0.1:99999x", "[::1",
                        "0.0.0.0", "[::2]", "2130706433", "0x7f.0.0.1"}) {
    EXPECT_FALSE(IsLoopbackHostName(h)) << h;
  }
}

TEST(HttpGuardTest, HostPolicy) {
  const HostPolicy loopback{.loopback_only = true, .allowed = {}};
  EXPECT_TRUE(HostAllowed("127.0.0.1:8080", loopback));
  EXPECT_TRUE(HostAllowed("localhost:8080", loopback));
  EXPECT_FALSE(HostAllowed("rebind.attacker.example:8080", loopback));  // DNS rebinding
  EXPECT_TRUE(HostAllowed("", loopback));  // no Host: not a browser, so not a rebinding page
  const HostPolicy listed{.loopback_only = true, .allowed = {"my-box.lan"}};
  EXPECT_TRUE(HostAllowed("MY-BOX.lan:8080", listed));
  EXPECT_TRUE(HostAllowed("localhost", listed));
  EXPECT_FALSE(HostAllowed("other.lan", listed));
  const HostPolicy exposed{.loopback_only = false, .allowed = {}};
  EXPECT_TRUE(HostAllowed("10.0.0.5:8080", exposed));
  const HostPolicy exposed_listed{.loopback_only = false, .allowed = {"api.example.com"}};
  EXPECT_TRUE(HostAllowed("api.example.com", exposed_listed));
  EXPECT_FALSE(HostAllowed("10.0.0.5:8080", exposed_listed));
  const HostPolicy any{.loopback_only = true, .allowed = {"*"}};
  EXPECT_TRUE(HostAllowed("anything.example", any));
}

TEST(HttpGuardTest, Origins) {
  EXPECT_TRUE(SameOrigin("http://127.0.0.1:8080", "127.0.0.1:8080"));
  EXPECT_FALSE(SameOrigin("http://evil.com", "127.0.0.1:8080"));
  EXPECT_FALSE(SameOrigin("http://127.0.0.1:9999", "127.0.0.1:8080"));
  EXPECT_FALSE(SameOrigin("null", "127.0.0.1:8080"));
  EXPECT_TRUE(SameOrigin("https://llm.example.com", "llm.example.com"));  // behind a TLS proxy
  EXPECT_FALSE(SameOrigin("ftp://127.0.0.1:8080", "127.0.0.1:8080"));
  EXPECT_TRUE(OriginListed("http://localhost:3000", {"http://localhost:3000/"}));
  EXPECT_FALSE(OriginListed("http://localhost:3001", {"http://localhost:3000"}));
  EXPECT_TRUE(OriginListed("https://x.example", {"*"}));
  EXPECT_FALSE(OriginListed("http://evil.com", {}));
}

TEST(HttpGuardTest, BearerTokensAndSeveralKeys) {
  EXPECT_EQ(BearerToken("Bearer abc"), "abc");
  EXPECT_EQ(BearerToken("bearer abc"), "abc");  // the scheme is case-insensitive (RFC 9110)
  EXPECT_EQ(BearerToken("BEARER   abc  "), "abc");
  EXPECT_EQ(BearerToken("Basic abc"), "");
  EXPECT_EQ(BearerToken("Bearerabc"), "");
  EXPECT_EQ(BearerToken(""), "");
  const std::vector<std::string> keys = {"key-one", "key-two"};
  EXPECT_EQ(MatchApiKey("key-one", keys), 0);
  EXPECT_EQ(MatchApiKey("key-two", keys), 1);
  EXPECT_EQ(MatchApiKey("key-on", keys), -1);
  EXPECT_EQ(MatchApiKey("key-one-", keys), -1);
  EXPECT_EQ(MatchApiKey("", keys), -1);
  EXPECT_EQ(MatchApiKey("", {""}), -1);  // an empty key never matches
  EXPECT_EQ(MatchApiKey("KEY-ONE", keys), -1);
}

TEST(HttpGuardTest, JsonMediaType) {
  EXPECT_TRUE(IsJsonMediaType("application/json"));
  EXPECT_TRUE(IsJsonMediaType("Application/JSON; charset=utf-8"));
  EXPECT_FALSE(IsJsonMediaType("text/plain"));  // a CORS "simple" type: no preflight
  EXPECT_FALSE(IsJsonMediaType("application/x-www-form-urlencoded"));
  EXPECT_FALSE(IsJsonMediaType(""));
  EXPECT_FALSE(IsJsonMediaType("application/jsonx"));
}

TEST(HttpGuardTest, RequestIdsAndLogLines) {
  EXPECT_EQ(SanitizeRequestId("abc-123_X.y:z"), "abc-123_X.y:z");
  EXPECT_EQ(SanitizeRequestId("has space"), "");
  EXPECT_EQ(SanitizeRequestId("line\nbreak"), "");
  EXPECT_EQ(SanitizeRequestId(std::string(129, 'a')), "");
  const std::string line = AccessLogLine("rid", "127.0.0.1", "GET", "/x\n\"fake\" 200", 404, 10, 0.0125);
  EXPECT_EQ(line, "rid 127.0.0.1 \"GET /x\\x0a\\x22fake\\x22 200\" 404 10 12.5ms");
  EXPECT_EQ(line.find('\n'), std::string::npos);
}

}  // namespace
}  // namespace slimkv::server
