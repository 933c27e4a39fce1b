#include "request.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "k8slb/validate.hpp"

namespace k8slb::allocate::detail {

namespace {

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

std::optional<ip::Family> family_named(std::string_view name) {
  if (name == "IPv4") return ip::Family::v4;
  if (name == "IPv6") return ip::Family::v6;
  return std::nullopt;
}

// A value from the cluster as it may appear in a message (stderr, Event): control characters
// replaced, at most 64 characters.
std::string shown(std::string_view text) {
  std::string out;
  for (char c : text.substr(0, 64)) out += static_cast<unsigned char>(c) < 0x20 || c == 0x7f ? '?' : c;
  if (text.size() > 64) out += "...";
  return out;
}

// The pool a held address lies in, if any.
const pool::Pool* pool_holding(const pool::Config& config, const ip::Address& address) {
  for (const pool::Pool& pool : config.pools)
    if (pool.network.contains(address)) return &pool;
  return nullptr;
}

// The pools the loadbalancer/pool annotation names ("default" without it).
struct PoolChoice {
  std::vector<std::string> names;     // as written
  std::vector<const pool::Pool*> known;
  std::vector<std::string> unknown;
  bool annotated = false;
};

} // namespace

std::string Slot::pool_name() const { return pool ? pool->name : std::string(); }

Request make_request(const model::Service& service, const pool::Config& config,
                     const Options& options) {
  Request request;
  request.service = &service;
  request.key = service.key();
  request.ours = service.is_load_balancer() && service.lb_class == options.lb_class;
  if (!request.ours) return request;

  auto invalid = [&](std::string field, std::string message) {
    if (!request.problem)
      request.problem = Problem{request.key, std::move(field), kReasonInvalid, std::move(message)};
  };
  auto failed = [&](std::string field, std::string message) {
    if (!request.problem)
      request.problem = Problem{request.key, std::move(field), kReasonFailed, std::move(message)};
  };

  // What render refuses for a whole Service gets no IP either: no node would serve it.
  for (const Problem& problem : validate::service_problems(service)) invalid(problem.field, problem.message);
  for (const model::ServicePort& port : service.ports)
    request.ports.emplace_back(port.protocol, port.port);
  if (service.ports.empty())
    invalid("spec.ports", "a LoadBalancer Service needs at least one port");

  // The addresses held before: the first of each family counts, the rest are let go.
  std::optional<ip::Address> existing_v4, existing_v6;
  std::optional<ip::Family> first_existing_family;
  for (const std::string& text : service.ingress_ips) {
    auto address = ip::Address::try_parse(text);
    if (!address) continue;
    auto& slot = address->family() == ip::Family::v4 ? existing_v4 : existing_v6;
    if (!slot) slot = address;
    if (!first_existing_family) first_existing_family = address->family();
  }

  std::string policy = service.ip_family_policy;
  bool dual = policy == "PreferDualStack" || policy == "RequireDualStack";
  if (!policy.empty() && policy != "SingleStack" && !dual)
    invalid("spec.ipFamilyPolicy",
            fmt::format("'{}' is not SingleStack, PreferDualStack or RequireDualStack", shown(policy)));
  request.require_every_slot = !dual || policy == "RequireDualStack";

  std::vector<ip::Family> families_asked;
  for (std::size_t i = 0; i < service.ip_families.size(); ++i) {
    auto family = family_named(service.ip_families[i]);
    if (!family)
      invalid(fmt::format("spec.ipFamilies[{}]", i),
              fmt::format("'{}' is not IPv4 or IPv6", shown(service.ip_families[i])));
    else
      families_asked.push_back(*family);
  }

  std::optional<ip::Address> requested;
  if (!service.load_balancer_ip.empty()) {
    requested = ip::Address::try_parse(service.load_balancer_ip);
    if (!requested)
      invalid(kFieldRequested, fmt::format("'{}' is not an IP address", shown(service.load_balancer_ip)));
  }

  request.share_key = std::string(trim(service.annotation(model::kAnnotationShare)));

  PoolChoice choice;
  std::string annotation(trim(service.annotation(model::kAnnotationPool)));
  choice.annotated = !annotation.empty();
  if (!choice.annotated) {
    choice.names.push_back("default");
  } else {
    std::string_view rest = annotation;
    while (true) {
      auto comma = rest.find(',');
      std::string_view name = trim(rest.substr(0, comma));
      if (name.empty()) {
        invalid(kFieldPool, fmt::format("'{}' has an empty pool name", shown(annotation)));
        break;
      }
      choice.names.emplace_back(name);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    if (choice.names.size() > 2)
      invalid(kFieldPool, fmt::format("'{}' names {} pools; at most two, one per family",
                                      shown(annotation), choice.names.size()));
  }
  for (const std::string& name : choice.names) {
    const pool::Pool* pool = config.find(name);
    if (!pool) {
      choice.unknown.push_back(shown(name));
      continue;
    }
    for (const pool::Pool* other : choice.known)
      if (other->family() == pool->family())
        invalid(kFieldPool, fmt::format("'{}' names two {} pools: {} and {}", shown(annotation),
                                        ip::to_string(pool->family()), other->name, pool->name));
    choice.known.push_back(pool);
  }

  // Which families the Service wants.
  std::vector<ip::Family> families;
  if (!request.problem) {
    if (dual) {
      families = {ip::Family::v4, ip::Family::v6};
    } else if (!families_asked.empty()) {
      families = {families_asked.front()};
    } else if (requested) {
      families = {requested->family()};
    } else if (first_existing_family) {
      families = {*first_existing_family};
    } else if (!choice.known.empty()) {
      families = {choice.known.front()->family()};
    } else {
      failed(kFieldPool, fmt::format("pool '{}' is not configured", fmt::join(choice.unknown, "', '")));
    }
  }
  if (!request.problem && requested &&
      std::find(families.begin(), families.end(), requested->family()) == families.end())
    invalid(kFieldRequested,
            fmt::format("{} is {} but the Service is {} (spec.ipFamilies)", requested->to_string(),
                        ip::to_string(requested->family()), ip::to_string(families.front())));

  if (request.problem) {
    // The intent cannot be read: keep what the Service holds, each address in the pool it
    // lies in, and let the problem stand as a warning (or as the failure, if it holds none).
    request.require_every_slot = false;
    for (const auto& existing : {existing_v4, existing_v6}) {
      if (!existing) continue;
      Slot slot;
      slot.family = existing->family();
      slot.pool = pool_holding(config, *existing);
      slot.existing = existing;
      request.slots.push_back(slot);
    }
    return request;
  }

  for (ip::Family family : families) {
    Slot slot;
    slot.family = family;
    slot.existing = family == ip::Family::v4 ? existing_v4 : existing_v6;
    if (requested && requested->family() == family) slot.requested = requested;
    for (const pool::Pool* pool : choice.known)
      if (pool->family() == family) slot.pool = pool;
    if (!slot.pool) {
      std::string message;
      if (!choice.unknown.empty()) {
        message = fmt::format("pool '{}' is not configured", fmt::join(choice.unknown, "', '"));
      } else {
        std::vector<std::string> named;
        for (const pool::Pool* pool : choice.known)
          named.push_back(fmt::format("{} ({})", pool->name, ip::to_string(pool->family())));
        message = fmt::format("no {} pool: {} {}", ip::to_string(family),
                              choice.annotated ? "loadbalancer/pool names" : "the default pool is",
                              fmt::join(named, ", "));
        // PreferDualStack takes what the pools offer: a family without a pool is no problem
        // unless the Service holds or asks for an address of it.
        if (!request.require_every_slot && !slot.existing && !slot.requested) continue;
      }
      slot.pool_problem = Problem{request.key, kFieldPool, kReasonFailed, message};
    }
    request.slots.push_back(slot);
  }
  return request;
}

} // namespace k8slb::allocate::detail
