#pragma once
// The allocator's state: which Service holds which address, with which ports, under which
// sharing rule. Internal to lib/allocate: allocate() drives it phase by phase. It does no I/O
// and knows nothing of Kubernetes objects beyond a Service's key and ports.
//
// Cost: every verb and noun is O(log n) in the number of held addresses, except that joining
// a sharing group tries the group's addresses in turn (O(k) for a group of k addresses) and
// a Service leaving a shared address costs O(s) in the number of Services sharing it.

#include <map>
#include <optional>
#include <set>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "k8slb/ip.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::allocate::detail {

// A protocol/port pair a Service listens on: ("TCP", 443).
using PortKey = std::pair<std::string, int>;
using PortRef = std::pair<std::string_view, int>; // a PortKey the allocator refers to

// One Service's claim on one address. The views refer to the caller's requests and the pool
// config, which outlive the Allocator (one allocate() run); nothing is copied per claim.
struct Claim {
  std::string_view service;   // namespace/name
  std::string_view pool;      // the pool the address is held in ("" when the Service's pool is unknown)
  bool is_static = false;     // the Service asked for exactly this address (spec.loadBalancerIP)
  std::string_view share_key; // loadbalancer/share annotation, "" when absent
  std::span<const PortKey> ports;
};

// Two claims may hold one address together when they are in the same pool and either both
// asked for the address statically or both carry the same non-empty sharing key.
bool may_share(const Claim& a, const Claim& b);

class Allocator {
public:
  // Nouns.

  // Why `claim` cannot hold `address` next to its current holders ("IP x already held by
  // ns/other", "IP x already serves TCP/80 for ns/other"), or nullopt when it can.
  std::optional<std::string> conflict(const ip::Address& address, const Claim& claim) const;
  // The lowest address of the pool's dynamic range that nobody holds.
  std::optional<ip::Address> first_free(const pool::Pool& pool) const;
  // The lowest address of the sharing group (pool, claim.share_key) that `claim` may join.
  std::optional<ip::Address> shared_address(const Claim& claim) const;
  // The Services holding `address`, in namespace/name order.
  std::vector<std::string> holders(const ip::Address& address) const;
  bool is_held(const ip::Address& address) const;

  // Verbs.

  // Records the claim. The caller has checked conflict() first.
  void assign(const ip::Address& address, const Claim& claim);
  // Drops `service`'s claim on `address`; the address is free again once nobody holds it.
  void unassign(const ip::Address& address, std::string_view service);

private:
  struct Holding {
    std::map<std::string_view, Claim> claims;    // namespace/name -> that Service's claim on the address
    std::map<PortRef, std::string_view> ports; // protocol/port -> the Service using it here
    // What every claim has in common, so that a new claim is checked in O(1) instead of
    // against each holder: may_share() with all of them (they may share with each other)
    // comes down to these. Recomputed when a claim leaves.
    std::string_view pool;
    bool all_static = true;
    std::string_view common_share_key; // the sharing key of every claim, "" when they differ or lack one
    void summarise();
  };

  // family -> every address some Service holds (the pools never overlap, so one set per
  // family serves every pool, and also blocks addresses held outside their Service's pool)
  std::map<ip::Family, ip::IntervalSet> used_;
  // address -> the claims on it and the ports they use
  std::map<ip::Address, Holding> holdings_;
  // (pool, sharing key) -> the addresses that sharing group holds, lowest first: a Service
  // joining the group takes the lowest it may, whatever order the group got them in (so that
  // Tracker, which keeps the allocator across changes, finds what allocate() finds).
  // The key owns its sharing key: the claim that made the group may leave before the group
  // does (Tracker keeps an Allocator across changes). The pool names the config's string.
  using GroupKey = std::pair<std::string_view, std::string>;
  static GroupKey group_key(std::string_view pool, std::string_view share_key) {
    return {pool, std::string(share_key)};
  }
  std::map<GroupKey, std::set<ip::Address>> share_groups_;
};

// The part of a pool's range that is handed out dynamically: the range, less the network's
// own network and broadcast addresses when the network is an IPv4 CIDR of /30 or wider, and
// less the subnet-router anycast address (the first) when it is an IPv6 CIDR of /126 or wider.
// nullopt when nothing is left.
std::optional<std::pair<ip::u128, ip::u128>> dynamic_bounds(const pool::Pool& pool);

} // namespace k8slb::allocate::detail
