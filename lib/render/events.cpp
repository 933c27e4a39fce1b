// The problems of a rendering, by the Service they concern (Events from the node).
#include <algorithm>
#include <cassert>
#include <map>
#include <string>

#include "k8slb/render.hpp"
#include "services.hpp"

namespace k8slb::render {

namespace {
constexpr std::string_view kPoolPrefix = "pools.";
}

std::vector<ServiceProblem> service_problems(const Input& input, const Output& output) {
  std::map<std::string, std::size_t> index_of; // namespace/name -> index into input.services
  for (std::size_t i = 0; i < input.services.size(); ++i) index_of.emplace(input.services[i].key(), i);

  // Pool -> the Services with a VIP in it, only when a pool has a problem.
  std::map<std::string, std::vector<std::size_t>> services_of_pool;
  const bool pool_problems = std::any_of(output.problems.begin(), output.problems.end(), [](const Problem& p) {
    return p.object.compare(0, kPoolPrefix.size(), kPoolPrefix) == 0;
  });
  if (pool_problems) {
    std::vector<Problem> ignored;
    for (const auto& checked : detail::checked_services(input, ignored)) {
      auto index = index_of.find(checked.service->key());
      if (index == index_of.end()) continue;
      for (const auto& vip : checked.vips) {
        auto& list = services_of_pool[vip.pool];
        if (std::find(list.begin(), list.end(), index->second) == list.end()) list.push_back(index->second);
      }
    }
  }

  std::vector<ServiceProblem> out;
  for (const Problem& problem : output.problems) {
    // Reported elsewhere: by the watcher (InvalidService), about Nodes, not Services.
    if (problem.reason == "InvalidService" || problem.reason == "InvalidNode" || problem.reason == "NoUnicastAddress")
      continue;
    if (problem.object.compare(0, kPoolPrefix.size(), kPoolPrefix) == 0) {
      auto services = services_of_pool.find(problem.object.substr(kPoolPrefix.size()));
      if (services == services_of_pool.end()) continue;
      for (std::size_t index : services->second) out.push_back({index, problem});
      continue;
    }
    auto index = index_of.find(problem.object);
    if (index != index_of.end()) out.push_back({index->second, problem});
  }
  std::stable_sort(out.begin(), out.end(), [&](const ServiceProblem& a, const ServiceProblem& b) {
    return input.services[a.service].key() < input.services[b.service].key();
  });
  return out;
}

std::map<std::string, std::vector<std::size_t>> services_by_vip(const Input& input) {
  return detail::services_by_vip(input, detail::check_services(input));
}

std::map<std::string, std::vector<std::size_t>> detail::services_by_vip(const Input& input,
                                                                       const CheckedServices& check) {
  std::map<std::string, std::vector<std::size_t>> out;
  for (const auto& checked : check.services) {
    // checked_services points into input.services: the index is the distance from the first.
    const auto index = static_cast<std::size_t>(checked.service - input.services.data());
    assert(index < input.services.size());
    for (const auto& vip : checked.vips) out[vip.address.to_string()].push_back(index);
  }
  return out;
}

} // namespace k8slb::render
