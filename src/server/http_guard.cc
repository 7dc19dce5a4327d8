#include "server/http_guard.h"

#include <fmt/format.h>

#include <algorithm>
#include <cctype>

#include "server/http_message.h"

namespace slimkv::server {
namespace {

char Lower(char c) { return static_cast<char>(std::tolower(static_cast<unsigned char>(c))); }

std::string ToLower(std::string_view s) {
  std::string out(s);
  for (char& c : out) c = Lower(c);
  return out;
}

std::string_view Trim(std::string_view s) {
  while (!s.empty() && (s.front() == ' ' || s.front() == '\t')) s.remove_prefix(1);
  while (!s.empty() && (s.back() == ' ' || s.back() == '\t')) s.remove_suffix(1);
  return s;
}

// Dotted-quad 127.a.b.c, each part 0-255 in decimal.
bool IsLoopbackIpv4(std::string_view s) {
  int parts = 0;
  while (parts < 4) {
    size_t n = 0;
    int value = 0;
    while (n < s.size() && n < 4 && std::isdigit(static_cast<unsigned char>(s[n])))
      value = value * 10 + (s[n++] - '0');
    if (n == 0 || n > 3 || value > 255 || (parts == 0 && value != 127)) return false;
    s.remove_prefix(n);
    if (++parts < 4) {
      if (s.empty() || s.front() != '.') return false;
      s.remove_prefix(1);
    }
  }
  return s.empty();
}

}  // namespace

bool EqualsIgnoreCase(std::string_view a, std::string_view b) {
  return a.size() == b.size() &&
         std::equal(a.begin(), a.end(), b.begin(), [](char x, char y) { return Lower(x) == Lower(y); });
}

std::string_view HttpRequest::Header(std::string_view name) const {
  for (const auto& [n, v] : headers)
    if (EqualsIgnoreCase(n, name)) return v;
  return {};
}

std::string HostOf(std::string_view authority) {
  authority = Trim(authority);
  if (authority.empty()) return {};
  if (authority.front() == '[') {  // [v6]:port
    const size_t close = authority.find(']');
    if (close == std::string_view::npos) return {};
    const std::string_view rest = authority.substr(close + 1);
    if (!rest.empty() && rest.front() != ':') return {};
    return ToLower(authority.substr(1, close - 1));
  }
  const size_t colon = authority.find(':');
  if (colon != std::string_view::npos && authority.find(':', colon + 1) != std::string_view::npos) {
    return ToLower(authority);  // a bare IPv6 address (not valid in Host, but an address)
  }
  std::string host = ToLower(authority.substr(0, colon));
  if (colon != std::string_view::npos) {
    const std::string_view port = authority.substr(colon + 1);
    if (port.empty() || port.size() > 5 || !std::all_of(port.begin(), port.end(), [](char c) {
          return std::isdigit(static_cast<unsigned char>(c));
        }))
      return {};
  }
  return host;
}

bool IsLoopbackHostName(std::string_view host) {
  std::string h = HostOf(host);
  if (!h.empty() && h.back() == '.') h.pop_back();
  if (h.empty()) return false;
  // RFC 6761 6.3: "localhost" and names under it resolve to loopback.
  if (h == "localhost" || (h.size() > 10 && h.ends_with(".localhost"))) return true;
  return h == "::1" || IsLoopbackIpv4(h);
}

bool HostAllowed(std::string_view host_header, const HostPolicy& policy) {
  // Browsers always send Host: a request without one is no DNS-rebinding page.
  if (Trim(host_header).empty()) return true;
  if (std::find(policy.allowed.begin(), policy.allowed.end(), "*") != policy.allowed.end()) return true;
  if (IsLoopbackHostName(host_header)) return true;
  const std::string host = HostOf(host_header);
  if (host.empty()) return false;
  for (const std::string& a : policy.allowed)
    if (HostOf(a) == host) return true;
  return !policy.loopback_only && policy.allowed.empty();
}

bool OriginListed(std::string_view origin, const std::vector<std::string>& cors_origins) {
  for (const std::string& o : cors_origins) {
    if (o == "*") return true;
    std::string_view listed = o;
    while (!listed.empty() && listed.back() == '/') listed.remove_suffix(1);
    if (EqualsIgnoreCase(listed, Trim(origin))) return true;
  }
  return false;
}

bool SameOrigin(std::string_view origin, std::string_view host_header) {
  origin = Trim(origin);
  for (std::string_view scheme : {"http://", "https://"}) {  // https: behind a TLS proxy
    if (origin.size() > scheme.size() && EqualsIgnoreCase(origin.substr(0, scheme.size()), scheme)) {
      return EqualsIgnoreCase(origin.substr(scheme.size()), Trim(host_header));
    }
  }
  return false;
}

std::string_view BearerToken(std::string_view authorization) {
  authorization = Trim(authorization);
  constexpr std::string_view kScheme = "bearer";
  if (authorization.size() <= kScheme.size() ||
      !EqualsIgnoreCase(authorization.substr(0, kScheme.size()), kScheme) ||
      (authorization[kScheme.size()] != ' ' && authorization[kScheme.size()] != '\t'))
    return {};
  return Trim(authorization.substr(kScheme.size()));
}

int MatchApiKey(std::string_view token, const std::vector<std::string>& keys) {
  int match = -1;
  for (size_t k = 0; k < keys.size(); ++k) {
    const std::string& key = keys[k];
    unsigned char diff = token.size() != key.size() || key.empty();
    for (size_t i = 0; i < token.size(); ++i) {
      diff |= static_cast<unsigned char>(token[i] ^ (key.empty() ? 0 : key[i % key.size()]));
    }
    if (diff == 0 && match < 0) match = static_cast<int>(k);
  }
  return match;
}

bool IsJsonMediaType(std::string_view content_type) {
  const std::string_view type = Trim(content_type.substr(0, content_type.find(';')));
  return EqualsIgnoreCase(type, "application/json");
}

std::string SanitizeRequestId(std::string_view id) {
  if (id.empty() || id.size() > 128) return {};
  for (char c : id) {
    if (!std::isalnum(static_cast<unsigned char>(c)) && c != '.' && c != '_' && c != ':' && c != '-')
      return {};
  }
  return std::string(id);
}

std::string AccessLogLine(std::string_view request_id, std::string_view peer, std::string_view method,
                          std::string_view target, int status, size_t bytes, double seconds) {
  constexpr size_t kMaxTarget = 256;
  std::string t;
  for (size_t i = 0; i < target.size() && i < kMaxTarget; ++i) {
    const unsigned char c = static_cast<unsigned char>(target[i]);
    if (c < 0x20 || c >= 0x7f || c == '"' || c == '\\') {
      t += fmt::format("\\x{:02x}", c);
    } else {
      t += static_cast<char>(c);
    }
  }
  if (target.size() > kMaxTarget) t += "...";
  std::string m(method.substr(0, 16));
  for (char& c : m)
    if (!std::isalpha(static_cast<unsigned char>(c))) c = '?';
  return fmt::format("{} {} \"{} {}\" {} {} {:.1f}ms", request_id, peer, m, t, status, bytes, seconds * 1e3);
}

}  // namespace slimkv::server
