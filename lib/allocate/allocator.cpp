#include "allocator.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

#include "request.hpp"

namespace k8slb::allocate::detail {

bool may_share(const Claim& a, const Claim& b) {
  if (a.pool != b.pool) return false;
  if (a.is_static && b.is_static) return true;
  return !a.share_key.empty() && a.share_key == b.share_key;
}

std::optional<std::string> Allocator::conflict(const ip::Address& address,
                                               const Claim& claim) const {
  auto it = holdings_.find(address);
  if (it == holdings_.end()) return std::nullopt;
  const Holding& holding = it->second;
  bool only_this_service = holding.claims.size() == 1 && holding.claims.count(claim.service);
  if (!only_this_service) {
    // The holders may share with each other, so `claim` may share with all of them exactly
    // when it is static and so are they all, or it carries the key they all carry.
    bool shares = holding.pool == claim.pool &&
                  ((claim.is_static && holding.all_static) ||
                   (!claim.share_key.empty() && claim.share_key == holding.common_share_key));
    if (!shares) {
      auto first = holding.claims.begin();
      if (first->first == claim.service) ++first;
      return fmt::format("IP {} already held by {}", address.to_string(), first->first);
    }
  }
  for (const PortKey& port : claim.ports) {
    auto used = holding.ports.find(PortRef(port.first, port.second));
    if (used != holding.ports.end() && used->second != claim.service)
      return fmt::format("IP {} already serves {}/{} for {}", address.to_string(), port.first,
                         port.second, used->second);
  }
  return std::nullopt;
}

void Allocator::Holding::summarise() {
  all_static = true;
  common_share_key = {};
  bool first = true;
  for (const auto& [service, claim] : claims) {
    pool = claim.pool;
    all_static = all_static && claim.is_static;
    if (first)
      common_share_key = claim.share_key;
    else if (common_share_key != claim.share_key)
      common_share_key = {};
    first = false;
  }
}

std::optional<std::pair<ip::u128, ip::u128>> dynamic_bounds(const pool::Pool& pool) {
  ip::u128 low = pool.range.first().value();
  ip::u128 high = pool.range.last().value();
  const ip::Range& network = pool.network;
  ip::u128 span = network.size_minus_one(); // 2^k - 1 for a CIDR
  bool is_cidr = (span & (span + 1)) == 0 && (network.first().value() & span) == 0;
  if (is_cidr) {
    if (pool.family() == ip::Family::v4 && span >= 3) {
      low = std::max(low, network.first().value() + 1);
      high = std::min(high, network.last().value() - 1);
    } else if (pool.family() == ip::Family::v6 && span >= 3) {
      low = std::max(low, network.first().value() + 1);
    }
  }
  if (low > high) return std::nullopt;
  return std::make_pair(low, high);
}

std::optional<ip::Address> Allocator::first_free(const pool::Pool& pool) const {
  auto bounds = dynamic_bounds(pool);
  if (!bounds) return std::nullopt;
  auto used = used_.find(pool.family());
  ip::u128 low = bounds->first;
  // avoidBuggyIPs: a free .0 or .255 is stepped over; at most two per /24 of the range.
  while (low <= bounds->second) {
    std::optional<ip::u128> value = low;
    if (used != used_.end()) value = used->second.first_free(low, bounds->second);
    if (!value) return std::nullopt;
    ip::Address address(pool.family(), *value);
    if (!pool.avoid_buggy_ips || !is_buggy(address)) return address;
    if (*value == bounds->second) return std::nullopt;
    low = *value + 1;
  }
  return std::nullopt;
}

std::optional<ip::Address> Allocator::shared_address(const Claim& claim) const {
  if (claim.share_key.empty()) return std::nullopt;
  auto group = share_groups_.find(group_key(claim.pool, claim.share_key));
  if (group == share_groups_.end()) return std::nullopt;
  for (const ip::Address& address : group->second)
    if (!conflict(address, claim)) return address;
  return std::nullopt;
}

std::vector<std::string> Allocator::holders(const ip::Address& address) const {
  std::vector<std::string> services;
  auto it = holdings_.find(address);
  if (it != holdings_.end())
    for (const auto& [service, claim] : it->second.claims) services.emplace_back(service);
  return services;
}

bool Allocator::is_held(const ip::Address& address) const {
  return holdings_.count(address) != 0;
}

void Allocator::assign(const ip::Address& address, const Claim& claim) {
  Holding& holding = holdings_[address];
  if (holding.claims.count(claim.service)) return; // held already
  // When every holder carries the claim's key, the address is in that sharing group already.
  bool in_group = !holding.claims.empty() && holding.common_share_key == claim.share_key;
  if (holding.claims.empty()) {
    used_[address.family()].insert(address.value());
    holding.pool = claim.pool;
    holding.all_static = claim.is_static;
    holding.common_share_key = claim.share_key;
  } else {
    holding.all_static = holding.all_static && claim.is_static;
    if (holding.common_share_key != claim.share_key) holding.common_share_key = {};
  }
  holding.claims.emplace(claim.service, claim);
  for (const PortKey& port : claim.ports)
    holding.ports.emplace(PortRef(port.first, port.second), claim.service);
  if (!claim.share_key.empty() && !in_group) {
    auto& group = share_groups_[group_key(claim.pool, claim.share_key)];
    group.insert(address);
  }
}

void Allocator::unassign(const ip::Address& address, std::string_view service) {
  auto it = holdings_.find(address);
  if (it == holdings_.end()) return;
  Holding& holding = it->second;
  auto claim = holding.claims.find(service);
  if (claim == holding.claims.end()) return;
  Claim gone = claim->second;
  holding.claims.erase(claim);
  std::erase_if(holding.ports, [&](const auto& entry) { return entry.second == service; });
  holding.summarise();
  bool group_still_here =
      gone.share_key.empty() ||
      std::any_of(holding.claims.begin(), holding.claims.end(), [&](const auto& entry) {
        return entry.second.share_key == gone.share_key;
      });
  if (!group_still_here) {
    auto group = share_groups_.find(group_key(gone.pool, gone.share_key));
    if (group != share_groups_.end()) {
      group->second.erase(address);
      if (group->second.empty()) share_groups_.erase(group);
    }
  }
  if (holding.claims.empty()) {
    holdings_.erase(it);
    used_[address.family()].erase(address.value());
  }
}

} // namespace k8slb::allocate::detail
