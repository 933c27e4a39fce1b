#pragma once
// The config document, as the original's users bring it: pools, keepalived mail settings and
// raw haproxy / nginx lines. See ORIGINAL-CONFIG.md and docs/configuration.md.

#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/documents.hpp"
#include "k8slb/ip.hpp"

namespace k8slb::pool {

struct Pool {
  std::string name;
  ip::Range network;     // every IP of the pool, static and dynamic
  ip::Range range;       // the dynamic IPs, inside network
  std::string interface; // empty: detect per node
  // Additions to the original's pool object (docs/configuration.md):
  bool avoid_buggy_ips = false; // avoidBuggyIPs: never hand out x.y.z.0 or x.y.z.255 (IPv4)
  bool auto_assign = true;      // autoAssign: false: used only by Services that name it
  std::vector<std::string> namespaces = {}; // Services there without a pool annotation use this pool
  ip::Family family() const { return network.family(); }
};

struct KeepalivedSettings {
  std::string email;       // recipient; empty: no mail
  std::string email_from;
  std::string email_server;
  int email_server_timeout = 30; // seconds
};

struct HaproxyLines {
  std::vector<std::string> global, defaults, tcpfront, httpfront, tcpback, httpback;
};

struct NginxLines {
  std::vector<std::string> global, http, proxy;
};

struct Config {
  std::vector<Pool> pools; // sorted by name
  KeepalivedSettings keepalived;
  HaproxyLines haproxy;
  NginxLines nginx;

  const Pool* find(std::string_view name) const; // nullptr when absent
};

// The config document is small (pools and raw lines) and reaches every watcher and actor: it is
// held to tighter limits than the objects (a few MiB, a million values aliases expanded).
inline constexpr Limits kConfigLimits{4u << 20, 1'000'000, 64};

// Parses and validates the document. Throws Error naming the field, e.g.
// "pools.ipv6.range: 2001:468:101::/96 is not inside network 2001:468::/64".
// Checks: required fields, parsable addresses, range inside network, one family per pool,
// no two pools overlapping, raw lines without newlines or NUL.
Config parse_config(const nlohmann::json& document);
// From text (JSON, or YAML that holds the same document); `source` names it in errors.
Config parse_config_text(std::string_view text, std::string_view source);
// From the ConfigMap that carries the document in data.config.
Config parse_config_map(const nlohmann::json& config_map);
// Reads a file ("-": stdin, named <stdin> in errors) that holds either the document itself or
// a ConfigMap carrying it.
Config load_config_file(const std::string& path);

} // namespace k8slb::pool
