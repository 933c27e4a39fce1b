// The allocator's state in numbers: pools' fill, Services served and refused (Prometheus).
#include <map>
#include <set>

#include "k8slb/allocate.hpp"
#include "k8slb/metrics.hpp"

namespace k8slb::allocate {

std::vector<PoolUsage> pool_usage(const pool::Config& config, const std::vector<Result>& results) {
  // An address shared by several Services (loadbalancer/share) counts once.
  std::map<std::string, std::set<ip::Address>> in_use;
  for (const auto& result : results)
    for (std::size_t i = 0; i < result.pools.size() && i < result.ips.size(); ++i)
      in_use[result.pools[i]].insert(result.ips[i]);
  std::vector<PoolUsage> rows;
  for (const auto& pool : config.pools) {
    PoolUsage row;
    row.pool = pool.name;
    row.family = std::string(ip::to_string(pool.family()));
    row.size = static_cast<double>(pool.network.size_minus_one()) + 1;
    row.in_use = in_use[pool.name].size();
    rows.push_back(std::move(row));
  }
  return rows;
}

namespace {
struct AllocateMetrics {
  metrics::Registry& registry = metrics::process_registry();
  metrics::Family& addresses =
      registry.gauge("k8slb_pool_addresses", "Addresses in the pool's network (static and dynamic).", {"pool", "family"});
  metrics::Family& in_use = registry.gauge("k8slb_pool_addresses_in_use", "Addresses of the pool held by Services.",
                                           {"pool", "family"});
  metrics::Family& allocated =
      registry.gauge("k8slb_services_allocated", "Services of k8slb holding at least one IP.");
  metrics::Family& failures = registry.gauge(
      "k8slb_allocation_failures", "Services of k8slb that get no IP now, by reason (AllocationFailed, InvalidService).",
      {"reason"});
  metrics::Family& loaded = registry.gauge("k8slb_config_loaded", "1 when a valid config is in use.");
  metrics::Family& stale = registry.gauge(
      "k8slb_config_stale", "1 when the newest config was refused and the last good one is in use.");
};
} // namespace

void record_metrics(const pool::Config* config, const std::vector<Result>& results, bool config_stale) {
  static AllocateMetrics families;
  families.loaded.set(config ? 1 : 0);
  families.stale.set(config_stale ? 1 : 0);
  families.addresses.clear();
  families.in_use.clear();
  if (config)
    for (const auto& row : pool_usage(*config, results)) {
      families.addresses.set({row.pool, row.family}, row.size);
      families.in_use.set({row.pool, row.family}, static_cast<double>(row.in_use));
    }
  std::size_t allocated = 0;
  std::map<std::string, std::size_t> failures = {{"AllocationFailed", 0}, {"InvalidService", 0}};
  for (const auto& result : results) {
    if (!result.ips.empty() && result.outcome != Outcome::released)
      ++allocated;
    if (result.outcome == Outcome::failed && result.problem)
      ++failures[result.problem->reason];
  }
  families.allocated.set(static_cast<double>(allocated));
  families.failures.clear();
  for (const auto& [reason, count] : failures)
    families.failures.set({reason}, static_cast<double>(count));
}

} // namespace k8slb::allocate
