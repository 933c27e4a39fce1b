#pragma once
// Small text helpers shared by the kube sources (not part of the public API).

#include <algorithm>
#include <cctype>
#include <string>
#include <string_view>

namespace k8slb::kube::detail {

// ASCII lower case: HTTP header names and user-facing resource names are case-insensitive.
inline std::string lower(std::string_view text) {
  std::string out(text);
  std::transform(out.begin(), out.end(), out.begin(),
                 [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
  return out;
}

} // namespace k8slb::kube::detail
