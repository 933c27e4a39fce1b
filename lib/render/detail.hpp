#pragma once
// Internals of lib/render shared by the planner and the printers.

#include <string>
#include <string_view>
#include <vector>

#include "k8slb/ip.hpp"
#include "k8slb/validate.hpp"

namespace k8slb::render::detail {

// Grammars of the strings that may reach a config file.
using validate::is_dns_label; // RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, <= 63
bool is_dns_subdomain(std::string_view text); // dot-separated labels, <= 253
bool is_pool_name(std::string_view text);     // [A-Za-z0-9][A-Za-z0-9._-]*, <= 63
bool is_safe_path(std::string_view text);     // absolute, [A-Za-z0-9/._+-], no ".." part

// A value quoted for a message, whatever bytes it holds: "\"a\\nb\"".
using validate::quote;

// "192.0.2.1:80", "[2001:db8::1]:80".
std::string host_port(const ip::Address& address, int port);
// "v4" / "v6".
std::string_view family_suffix(ip::Family family);

// Stable 64-bit hash (FNV-1a followed by a splitmix64 finaliser): the same on every machine
// and every build, unlike std::hash.
std::uint64_t stable_hash(std::string_view text);

// Nodes ordered by rendezvous score for `key`, highest first (ties by name).
std::vector<std::string> rendezvous_order(std::string_view key,
                                          const std::vector<std::string>& node_names);

} // namespace k8slb::render::detail
