#include "detail.hpp"
#include "k8slb/hash.hpp"

#include <algorithm>
#include <cstdint>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace k8slb::render::detail {

namespace {
bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }
bool is_alnum(char c) { return is_lower_alnum(c) || (c >= 'A' && c <= 'Z'); }
} // namespace

bool is_dns_subdomain(std::string_view text) {
  if (text.empty() || text.size() > 253) return false;
  std::size_t start = 0;
  while (true) {
    auto dot = text.find('.', start);
    auto label = text.substr(start, dot == std::string_view::npos ? std::string_view::npos : dot - start);
    if (!is_dns_label(label)) return false;
    if (dot == std::string_view::npos) return true;
    start = dot + 1;
  }
}

bool is_pool_name(std::string_view text) {
  if (text.empty() || text.size() > 63 || !is_alnum(text.front())) return false;
  return std::all_of(text.begin(), text.end(),
                     [](char c) { return is_alnum(c) || c == '.' || c == '_' || c == '-'; });
}

bool is_safe_path(std::string_view text) {
  if (text.empty() || text.front() != '/' || text.size() > 1024) return false;
  if (!std::all_of(text.begin(), text.end(), [](char c) {
        return is_alnum(c) || c == '/' || c == '.' || c == '_' || c == '+' || c == '-';
      }))
    return false;
  std::size_t start = 0;
  while (start <= text.size()) {
    auto slash = text.find('/', start);
    auto part = text.substr(start, slash == std::string_view::npos ? std::string_view::npos : slash - start);
    if (part == "..") return false;
    if (slash == std::string_view::npos) break;
    start = slash + 1;
  }
  return true;
}

std::string host_port(const ip::Address& address, int port) {
  if (address.family() == ip::Family::v6) return fmt::format("[{}]:{}", address.to_string(), port);
  return fmt::format("{}:{}", address.to_string(), port);
}

std::string_view family_suffix(ip::Family family) { return family == ip::Family::v4 ? "v4" : "v6"; }

std::uint64_t stable_hash(std::string_view text) { return k8slb::stable_hash(text); }

std::vector<std::string> rendezvous_order(std::string_view key,
                                          const std::vector<std::string>& node_names) {
  std::vector<std::pair<std::uint64_t, std::string>> scored;
  scored.reserve(node_names.size());
  for (const auto& name : node_names) {
    std::string joined = name;
    joined += '\0';
    joined += key;
    scored.emplace_back(stable_hash(joined), name);
  }
  std::sort(scored.begin(), scored.end(), [](const auto& a, const auto& b) {
    if (a.first != b.first) return a.first > b.first;
    return a.second < b.second;
  });
  std::vector<std::string> order;
  order.reserve(scored.size());
  for (auto& entry : scored) order.push_back(std::move(entry.second));
  return order;
}

} // namespace k8slb::render::detail
