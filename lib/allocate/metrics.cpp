// The allocator's state in numbers: pools' fill (as kubectl k8slb pools counts it), Services
// served and refused (Prometheus).
#include <map>

#include "k8slb/allocate.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/report.hpp"

namespace k8slb::allocate {

namespace {
struct AllocateMetrics {
  metrics::Registry& registry = metrics::process_registry();
  metrics::Family& addresses = registry.gauge(
      "k8slb_pool_addresses", "Addresses the allocator hands out from the pool's range (kubectl k8slb pools: SIZE).",
      {"pool", "family"});
  metrics::Family& in_use = registry.gauge(
      "k8slb_pool_addresses_in_use", "Distinct addresses of the pool's network held by Services, static ones included.",
      {"pool", "family"});
  metrics::Family& free = registry.gauge(
      "k8slb_pool_addresses_free", "Addresses of the range nobody holds: what new Services can still get.",
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
  record_metrics(config, Tally::of(results), config_stale);
}

void record_metrics(const pool::Config* config, const Tally& tally, bool config_stale) {
  static AllocateMetrics families;
  families.loaded.set(config ? 1 : 0);
  families.stale.set(config_stale ? 1 : 0);
  families.addresses.clear();
  families.in_use.clear();
  families.free.clear();
  if (config) {
    for (const auto& row : report::pool_usage(tally.held, *config)) {
      std::vector<std::string> labels = {row.pool, std::string(ip::to_string(row.family))};
      families.addresses.set(labels, static_cast<double>(row.size));
      families.in_use.set(labels, static_cast<double>(row.in_use));
      families.free.set(labels, static_cast<double>(row.free));
    }
  }
  families.allocated.set(static_cast<double>(tally.allocated));
  families.failures.clear();
  std::map<std::string, std::size_t> failures = {{"AllocationFailed", 0}, {"InvalidService", 0}};
  for (const auto& [reason, count] : tally.failures) failures[reason] = count;
  for (const auto& [reason, count] : failures)
    families.failures.set({reason}, static_cast<double>(count));
}

} // namespace k8slb::allocate
