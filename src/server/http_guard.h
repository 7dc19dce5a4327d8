// What the server checks in a request's header before it reads the body, as pure functions
// of strings: the Host (DNS rebinding), the Origin (cross-site requests from a browser), the
// API key, the media type; and the request id and the access log line.
//
// Why: a web page the operator visits can send requests to a server on the operator's
// machine. Cross-origin "simple" requests (text/plain bodies, no custom headers) are sent by
// the browser without asking first; DNS rebinding makes a hostile name resolve to 127.0.0.1,
// and then even same-origin reads work. So: only loopback host names reach a server bound to
// loopback, a request from another origin is refused unless --cors-origin lists it, and a
// JSON body must say application/json (which forces the browser's preflight).
#pragma once

#include <string>
#include <string_view>
#include <vector>

namespace slimkv::server {

// "localhost", "*.localhost", "127.x.y.z", "::1" ("[::1]" in a Host header), with or
// without a trailing dot or ":port".
bool IsLoopbackHostName(std::string_view host);
// The host part of a Host header value or an origin's authority: "[::1]:8080" -> "::1",
// "Example.COM:80" -> "example.com". "" when malformed.
std::string HostOf(std::string_view authority);

struct HostPolicy {
  bool loopback_only = true;         // the server is bound to a loopback address
  std::vector<std::string> allowed;  // --allow-host names; "*" allows any
};
// Loopback names always pass; listed names pass; any name passes when the server is not
// bound to loopback and nothing is listed; a request without a Host (not a browser's) passes.
bool HostAllowed(std::string_view host_header, const HostPolicy& policy);

// An Origin header is allowed when it is the server's own origin (its authority equals the
// Host header) or --cors-origin lists it ("*": any). No Origin header: not a browser's
// cross-site request, allowed.
bool OriginListed(std::string_view origin, const std::vector<std::string>& cors_origins);
bool SameOrigin(std::string_view origin, std::string_view host_header);

// The credential of "Authorization: Bearer KEY" (the scheme in any case, RFC 9110 11.1),
// "" when the header is not a bearer credential.
std::string_view BearerToken(std::string_view authorization);
// The index of the key equal to `token`, -1 for none. Each comparison takes the same time
// whatever the position of the first difference.
int MatchApiKey(std::string_view token, const std::vector<std::string>& keys);

// "application/json" with any parameters (charset), in any case.
bool IsJsonMediaType(std::string_view content_type);

// A client's X-Request-Id kept when it is 1-128 characters of [A-Za-z0-9._:-], else "".
std::string SanitizeRequestId(std::string_view id);

// One access log line: request id, peer, method, target (control characters escaped, long
// targets cut), status, response bytes, milliseconds.
std::string AccessLogLine(std::string_view request_id, std::string_view peer, std::string_view method,
                          std::string_view target, int status, size_t bytes, double seconds);

}  // namespace slimkv::server
