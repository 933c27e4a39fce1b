#pragma once
// What `kubectl k8slb status` and `kubectl k8slb pools` show (k8slb-allocate --report): rows
// computed from the documents the cluster already holds (Services, Events, the config
// ConfigMap), with the allocator's own rules (lib/allocate), so that the figures match what
// the watcher does. Pure: no I/O, no clock (the caller passes the time).

#include <chrono>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/allocate.hpp"
#include "k8slb/ip.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::report {

// --- kubectl k8slb pools -------------------------------------------------------------------

// One pool (a pool holds one family). The counts are those of the allocator:
struct PoolUsage {
  std::string pool;
  ip::Family family = ip::Family::v4;
  std::string network; // every address of the pool (static IPs may come from anywhere in it)
  std::string range;   // the dynamic addresses
  // Addresses the allocator hands out from `range`: the range less the network's own first
  // (and, for IPv4, last) address when the network is a CIDR, less the .0 and .255 addresses
  // with avoidBuggyIPs.
  ip::u128 size = 0;
  // Distinct addresses of `network` that Services of ours hold (status.loadBalancer.ingress),
  // static ones outside `range` included.
  ip::u128 in_use = 0;
  // Addresses of `size` that nobody holds: what new Services can still get.
  ip::u128 free = 0;
};

// One row per pool, in the config's (name) order. `services` as model::make_snapshot reads
// them; only those the allocator serves (type LoadBalancer, options.lb_class) count.
std::vector<PoolUsage> pool_usage(const std::vector<model::Service>& services, const pool::Config& config,
                                  const allocate::Options& options = {});
// The same from the addresses held (the allocator's results, for its metrics).
std::vector<PoolUsage> pool_usage(const std::set<ip::Address>& held, const pool::Config& config);
// The same from addresses with the number of Services holding each (allocate::Tally::held).
std::vector<PoolUsage> pool_usage(const std::map<ip::Address, std::size_t>& held, const pool::Config& config);

// --- kubectl k8slb status ------------------------------------------------------------------

// One IP of one Service (a Service without an IP yet: one row with `ip` empty).
struct VipStatus {
  std::string ns;
  std::string name;
  std::string ip;    // empty: no IP yet (pending)
  std::string pool;  // the pool whose network holds `ip`; empty: unknown (no config, or in no pool)
  std::string node;  // the node that last took the VIP (a NodeAssigned Event); empty: unknown
  std::string since; // when it took it (that Event's last time, RFC 3339); empty: unknown
  std::optional<std::chrono::system_clock::time_point> since_time;
};

// Rows in namespace/name order, then the Service's IP order. `events` are core/v1 Events
// (others are ignored); a NodeAssigned Event ("<vip> is served by node <node>", as
// k8slb-apply events posts it) counts for a Service when it names the Service (and its uid,
// when both carry one) and one of its current IPs; the newest (lastTimestamp, eventTime,
// series.lastObservedTime, firstTimestamp) wins. `config` may be null (no ConfigMap): pools
// are then unknown.
std::vector<VipStatus> service_status(const std::vector<model::Service>& services,
                                      const std::vector<nlohmann::json>& events, const pool::Config* config,
                                      const allocate::Options& options = {});

// "<vip> is served by node <node>" -> (vip, node); nullopt for any other text, a vip that is
// not an IP address or a node name that is not a DNS subdomain.
std::optional<std::pair<std::string, std::string>> parse_node_assigned(std::string_view message);

// RFC 3339 ("2026-11-28T12:00:00Z", "2026-11-28T12:00:00.123456+01:00"); nullopt otherwise.
std::optional<std::chrono::system_clock::time_point> parse_time(std::string_view text);

// --- output --------------------------------------------------------------------------------

// A cell of a table on a terminal: control characters (C0, DEL, C1) and bytes that are not
// UTF-8 are shown escaped (\x1b), never sent; spaces become '_' (they would shift the
// columns); long values are cut (k8slb::shorten). Empty text is `empty`.
std::string cell(std::string_view text, std::string_view empty = "");

// Columns padded as kubectl pads them (three spaces between columns); first row the header.
std::string table(const std::vector<std::vector<std::string>>& rows);

// kubectl's AGE: "45s", "3m12s", "25m", "5h3m", "2d4h", "30d", ...
std::string age(std::chrono::system_clock::duration duration);

// A count in decimal (IPv6 ranges exceed 64 bits).
std::string decimal(ip::u128 value);

// The tables (`kubectl k8slb status`, `pools`) and their -o json documents:
//   status: {"items": [{"namespace", "name", "ip", "pool", "node", "since"}]}, null for unknown
//   pools:  {"items": [{"pool", "family", "network", "range", "size", "inUse", "free"}]},
//           counts as numbers (as decimal strings when above 2^53, which JSON readers lose)
std::string status_table(const std::vector<VipStatus>& rows, std::chrono::system_clock::time_point now);
nlohmann::json status_json(const std::vector<VipStatus>& rows);
std::string pools_table(const std::vector<PoolUsage>& rows);
nlohmann::json pools_json(const std::vector<PoolUsage>& rows);

} // namespace k8slb::report
