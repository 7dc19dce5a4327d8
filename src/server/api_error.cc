#include "server/api_error.h"

#include <nlohmann/json.hpp>

namespace slimkv::server {

std::string ApiError::ToJson() const {
  nlohmann::json e = {{"message", message}, {"type", type}, {"param", nullptr}, {"code", nullptr}};
  if (!param.empty()) e["param"] = param;
  if (!code.empty()) e["code"] = code;
  return nlohmann::json{{"error", e}}.dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

ApiError BadRequest(std::string message, std::string param, std::string code) {
  return ApiError{400, std::move(message), "invalid_request_error", std::move(param), std::move(code)};
}

ApiError FromStatus(const Status& st, std::string param) {
  switch (st.code()) {
    case StatusCode::kInvalidArgument:
      return BadRequest(st.message(), std::move(param));
    case StatusCode::kOutOfRange:
      return BadRequest(st.message(), std::move(param), "context_length_exceeded");
    case StatusCode::kResourceExhausted:
      return ApiError{429, st.message(), "rate_limit_error", "", "queue_full"};
    case StatusCode::kCancelled:
      return ApiError{503, st.message(), "server_error", "", "shutting_down"};
    default:
      return ApiError{500, st.message(), "server_error", "", ""};
  }
}

ApiError ForHttpStatus(int s) {
  switch (s) {
    case 400:
      return BadRequest("malformed HTTP request");
    case 401:
      return ApiError{401, "invalid or missing API key", "authentication_error", "", "invalid_api_key"};
    case 403:
      return ApiError{403, "forbidden", "permission_error", "", "forbidden"};
    case 404:
      return ApiError{404, "no such route", "not_found_error", "", "not_found"};
    case 405:
      return ApiError{405, "method not allowed", "invalid_request_error", "", "method_not_allowed"};
    case 408:
      return ApiError{408, "the request was not received in time", "invalid_request_error", "",
                      "request_timeout"};
    case 413:
      return ApiError{413, "request body too large", "invalid_request_error", "", "payload_too_large"};
    case 414:
      return ApiError{414, "request URI too long", "invalid_request_error", "", "uri_too_long"};
    case 415:
      return ApiError{415, "unsupported media type", "invalid_request_error", "", "unsupported_media_type"};
    case 431:
      return ApiError{431, "request header fields too large", "invalid_request_error", "",
                      "header_fields_too_large"};
    case 503:
      return ApiError{503, "the server is shutting down", "server_error", "", "shutting_down"};
    default:
      return ApiError{s, "HTTP error " + std::to_string(s),
                      s >= 500 ? "server_error" : "invalid_request_error", "", ""};
  }
}

}  // namespace slimkv::server
