// OpenAI-style errors: an HTTP status and {"error": {"message", "type", "param", "code"}}.
#pragma once

#include <string>

#include "base/status.h"

namespace slimkv::server {

struct ApiError {
  int http_status = 400;
  std::string message;
  std::string type = "invalid_request_error";
  std::string param;  // the request field at fault, "" for none (null in JSON)
  std::string code;   // a machine-readable reason, "" for none (null in JSON)

  std::string ToJson() const;
};

ApiError BadRequest(std::string message, std::string param = "", std::string code = "");
// The HTTP status and type for an engine Status: InvalidArgument/OutOfRange -> 400,
// ResourceExhausted -> 429 (the queue is full), Cancelled -> 503 (shutting down), others 500.
ApiError FromStatus(const Status& st, std::string param = "");
// The error for a status code the HTTP layer produced itself (404, 405, 413, ...).
ApiError ForHttpStatus(int http_status);

}  // namespace slimkv::server
