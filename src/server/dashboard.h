// The dashboard page served at "/": static HTML and JavaScript compiled into the binary.
#pragma once

namespace slimkv::server {

const char* DashboardHtml();

}  // namespace slimkv::server
