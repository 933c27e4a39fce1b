#pragma once
// Node facts: which local interface serves a pool. Selection is pure; reading the interface
// list is the I/O at the edge (getifaddrs), or `ip -j addr` JSON for offline rendering.

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/ip.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::node {

struct Interface {
  std::string name;
  bool up = true;
  std::vector<ip::Prefix> addresses;
};

// From `ip -j addr` output. Throws Error on a malformed document.
std::vector<Interface> interfaces_from_ip_json(const nlohmann::json& document);
// The running system's interfaces (getifaddrs), sorted by name.
std::vector<Interface> read_interfaces();

// The certificate files in `dir` that can be read and hold PEM text ("<pool>.pem",
// "<pool>.key"; other names are ignored). An absent or unreadable dir holds none.
std::set<std::string> readable_certificates(const std::string& dir);

// The interface that serves `pool`: the pool's own `interface` if set (it must exist), else
// the interface holding an address whose prefix contains the pool's network; ties go to the
// longest prefix, then the name. Throws Error naming the pool when there is none.
std::string select_interface(const pool::Pool& pool, const std::vector<Interface>& interfaces);

} // namespace k8slb::node
