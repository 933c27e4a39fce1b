#include "allocator.hpp"

#include <algorithm>
#include <bit>

#include <fmt/format.h>

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
  for (const Claim& other : holding.claims) {
    if (other.service == claim.service) continue;
    if (!may_share(claim, other))
      return fmt::format("IP {} already held by {}", address.to_string(), other.service);
  }
  for (const PortKey& port : claim.ports) {
    auto used = holding.ports.find(port);
    if (used != holding.ports.end() && used->second != claim.service)
      return fmt::format("IP {} already serves {}/{} for {}", address.to_string(), port.first,
                         port.second, used->second);
  }
  return std::nullopt;
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
  if (used == used_.end()) return ip::Address(pool.family(), bounds->first);
  auto value = used->second.first_free(bounds->first, bounds->second);
  if (!value) return std::nullopt;
  return ip::Address(pool.family(), *value);
}

std::optional<ip::Address> Allocator::shared_address(const Claim& claim) const {
  if (claim.share_key.empty()) return std::nullopt;
  auto group = share_groups_.find({claim.pool, claim.share_key});
  if (group == share_groups_.end()) return std::nullopt;
  for (const ip::Address& address : group->second)
    if (!conflict(address, claim)) return address;
  return std::nullopt;
}

std::vector<std::string> Allocator::holders(const ip::Address& address) const {
  std::vector<std::string> services;
  auto it = holdings_.find(address);
  if (it != holdings_.end())
    for (const Claim& claim : it->second.claims) services.push_back(claim.service);
  return services;
}

bool Allocator::is_held(const ip::Address& address) const {
  return holdings_.count(address) != 0;
}

void Allocator::assign(const ip::Address& address, const Claim& claim) {
  Holding& holding = holdings_[address];
  if (holding.claims.empty()) used_[address.family()].insert(address.value());
  for (const Claim& other : holding.claims)
    if (other.service == claim.service) return; // already held by this Service
  holding.claims.push_back(claim);
  for (const PortKey& port : claim.ports) holding.ports.emplace(port, claim.service);
  if (!claim.share_key.empty()) {
    auto& group = share_groups_[{claim.pool, claim.share_key}];
    if (std::find(group.begin(), group.end(), address) == group.end()) group.push_back(address);
  }
}

void Allocator::unassign(const ip::Address& address, const std::string& service) {
  auto it = holdings_.find(address);
  if (it == holdings_.end()) return;
  Holding& holding = it->second;
  auto claim = std::find_if(holding.claims.begin(), holding.claims.end(),
                            [&](const Claim& c) { return c.service == service; });
  if (claim == holding.claims.end()) return;
  Claim gone = *claim;
  holding.claims.erase(claim);
  std::erase_if(holding.ports, [&](const auto& entry) { return entry.second == service; });
  bool group_still_here =
      gone.share_key.empty() ||
      std::any_of(holding.claims.begin(), holding.claims.end(), [&](const Claim& c) {
        return c.pool == gone.pool && c.share_key == gone.share_key;
      });
  if (!group_still_here) {
    auto group = share_groups_.find({gone.pool, gone.share_key});
    if (group != share_groups_.end()) {
      std::erase(group->second, address);
      if (group->second.empty()) share_groups_.erase(group);
    }
  }
  if (holding.claims.empty()) {
    holdings_.erase(it);
    used_[address.family()].erase(address.value());
  }
}

} // namespace k8slb::allocate::detail
