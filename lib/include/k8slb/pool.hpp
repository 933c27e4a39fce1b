#pragma once
// The config document, as the original's users bring it: pools, keepalived mail settings and
// raw haproxy / nginx lines. See ORIGINAL-CONFIG.md and docs/configuration.md.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/documents.hpp"
#include "k8slb/ip.hpp"

namespace k8slb::pool {

// How a pool's VIPs reach the network: VRRP (keepalived holds each VIP on one node) or BGP
// (every load-balancer node announces every VIP to the routers, which spread it by ECMP).
enum class Announce { vrrp, bgp };
std::string_view to_string(Announce announce); // "vrrp", "bgp"

struct Pool {
  std::string name;
  ip::Range network;     // every IP of the pool, static and dynamic
  ip::Range range;       // the dynamic IPs, inside network
  std::string interface; // empty: detect per node
  // Additions to the original's pool object (docs/configuration.md):
  bool avoid_buggy_ips = false; // avoidBuggyIPs: never hand out x.y.z.0 or x.y.z.255 (IPv4)
  bool auto_assign = true;      // autoAssign: false: used only by Services that name it
  std::vector<std::string> namespaces = {}; // Services there without a pool annotation use this pool
  Announce announce = Announce::vrrp;       // announce: vrrp (default) | bgp
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

// A BGP neighbour every load-balancer node peers with (docs/bgp.md).
struct BgpPeer {
  ip::Address address;
  std::uint32_t asn = 0;
  int port = 179;
  std::string password_file; // absolute path of a file holding the TCP-MD5 password (a
                             // mounted Secret); empty: none
  bool bfd = false;          // BFD on the session
  int hold_time = 0;         // seconds (3..65535); 0: the daemon's default (240)
};

struct BgpSettings {
  std::uint32_t asn = 0;       // this cluster's (every load-balancer node's) ASN
  std::vector<BgpPeer> peers;  // sorted by address, at least one
};

struct Config {
  std::vector<Pool> pools; // sorted by name
  std::optional<BgpSettings> bgp; // the `bgp` section; set when present
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
// no two pools overlapping, raw lines without newlines or NUL, the bgp section (ASNs, peer
// addresses, ports, password file paths) and `announce: bgp` only with a bgp section.
Config parse_config(const nlohmann::json& document);
// From text (JSON, or YAML that holds the same document); `source` names it in errors.
Config parse_config_text(std::string_view text, std::string_view source);
// From the ConfigMap that carries the document in data.config.
Config parse_config_map(const nlohmann::json& config_map);
// Reads a file ("-": stdin, named <stdin> in errors) that holds either the document itself or
// a ConfigMap carrying it.
Config load_config_file(const std::string& path);

} // namespace k8slb::pool
