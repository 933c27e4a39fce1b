#include "request.hpp"

#include <algorithm>
#include <functional>

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

// The pools the loadbalancer/pool annotation names ("default" without it).
struct PoolChoice {
  std::vector<std::string> names;     // as written
  std::vector<const pool::Pool*> known;
  std::vector<std::string> unknown;
  std::vector<std::string> manual; // pools with autoAssign: false that were not named
  bool annotated = false;
};

// The key a canonical annotation was written as (loadbalancer/ips, metallb.io/loadBalancerIPs).
std::string written_key(const model::Service& service, const std::string& key) {
  auto it = service.annotation_keys.find(key);
  return it == service.annotation_keys.end() ? key : it->second;
}

// The addresses a Service asks for: spec.loadBalancerIP and loadbalancer/ips (or MetalLB's
// loadBalancerIPs), at most one per family. Both set: the annotation must list the spec's.
struct Requested {
  std::vector<ip::Address> addresses; // IPv4 first
  std::vector<std::string> fields;    // where each was written
};

Requested read_requested(const model::Service& service,
                         const std::function<void(std::string, std::string)>& invalid) {
  Requested out;
  std::optional<ip::Address> spec;
  if (!service.load_balancer_ip.empty()) {
    spec = ip::Address::try_parse(service.load_balancer_ip);
    if (!spec)
      invalid(kFieldRequested, fmt::format("'{}' is not an IP address", shown(service.load_balancer_ip)));
  }
  std::string annotation(trim(service.annotation(model::kAnnotationIps)));
  std::string field = service.annotation_field(model::kAnnotationIps);
  if (annotation.empty()) {
    if (spec) {
      out.addresses.push_back(*spec);
      out.fields.push_back(kFieldRequested);
    }
    return out;
  }
  std::string_view rest = annotation;
  while (true) {
    auto comma = rest.find(',');
    std::string_view text = trim(rest.substr(0, comma));
    auto address = ip::Address::try_parse(std::string(text));
    if (!address) {
      invalid(field, fmt::format("'{}' is not an IP address", shown(text)));
      return {};
    }
    for (const ip::Address& other : out.addresses)
      if (other.family() == address->family()) {
        invalid(field, fmt::format("'{}' names two {} addresses: at most one per family",
                                   shown(annotation), ip::to_string(address->family())));
        return {};
      }
    out.addresses.push_back(*address);
    out.fields.push_back(field);
    if (comma == std::string_view::npos) break;
    rest.remove_prefix(comma + 1);
  }
  if (out.addresses.size() == 2 && out.addresses[0].family() == ip::Family::v6) {
    std::swap(out.addresses[0], out.addresses[1]);
    std::swap(out.fields[0], out.fields[1]);
  }
  if (spec && std::find(out.addresses.begin(), out.addresses.end(), *spec) == out.addresses.end()) {
    invalid(kFieldRequested, fmt::format("{} disagrees with {} '{}': set the same address in both, "
                                         "or only one of them",
                                         spec->to_string(), written_key(service, model::kAnnotationIps),
                                         shown(annotation)));
    return {};
  }
  return out;
}

// The pools a Service without a pool annotation uses: the pools listing its namespace (one per
// family), else pool default; pools with autoAssign: false only when named.
void choose_unnamed(const model::Service& service, const pool::Config& config, PoolChoice& choice) {
  for (const pool::Pool& pool : config.pools) {
    if (!pool.auto_assign) continue;
    if (std::binary_search(pool.namespaces.begin(), pool.namespaces.end(), service.ns)) {
      choice.names.push_back(pool.name);
      choice.known.push_back(&pool);
    }
  }
  if (!choice.known.empty()) return;
  choice.names.push_back("default");
  const pool::Pool* pool = config.find("default");
  if (!pool) choice.unknown.push_back("default");
  else if (!pool->auto_assign) choice.manual.push_back(pool->name);
  else choice.known.push_back(pool);
}

} // namespace

std::string Slot::pool_name() const { return pool ? pool->name : std::string(); }

const pool::Pool* pool_holding(const pool::Config& config, const ip::Address& address) {
  for (const pool::Pool& pool : config.pools)
    if (pool.network.contains(address)) return &pool;
  return nullptr;
}

bool is_buggy(const ip::Address& address) {
  if (address.family() != ip::Family::v4) return false;
  auto last = static_cast<unsigned>(address.value() & 0xff);
  return last == 0 || last == 255;
}

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
  for (const model::AnnotationNote& note : service.annotation_notes)
    if (note.reason != kReasonInvalid)
      request.notes.push_back({note.type, Problem{request.key, note.field, note.reason, note.message}});
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

  Requested requested = read_requested(service, invalid);

  request.share_key = std::string(trim(service.annotation(model::kAnnotationShare)));

  PoolChoice choice;
  const std::string pool_field = service.annotation_field(model::kAnnotationPool);
  std::string annotation(trim(service.annotation(model::kAnnotationPool)));
  choice.annotated = !annotation.empty();
  if (!choice.annotated) {
    choose_unnamed(service, config, choice);
  } else {
    std::string_view rest = annotation;
    while (true) {
      auto comma = rest.find(',');
      std::string_view name = trim(rest.substr(0, comma));
      if (name.empty()) {
        invalid(pool_field, fmt::format("'{}' has an empty pool name", shown(annotation)));
        break;
      }
      choice.names.emplace_back(name);
      if (comma == std::string_view::npos) break;
      rest.remove_prefix(comma + 1);
    }
    if (choice.names.size() > 2)
      invalid(pool_field, fmt::format("'{}' names {} pools; at most two, one per family",
                                      shown(annotation), choice.names.size()));
    for (const std::string& name : choice.names) {
      const pool::Pool* pool = config.find(name);
      if (!pool) {
        choice.unknown.push_back(shown(name));
        continue;
      }
      for (const pool::Pool* other : choice.known)
        if (other->family() == pool->family())
          invalid(pool_field, fmt::format("'{}' names two {} pools: {} and {}", shown(annotation),
                                          ip::to_string(pool->family()), other->name, pool->name));
      choice.known.push_back(pool);
    }
  }
  // A static IP without a pool annotation comes from the pool whose network holds it (as
  // MetalLB does), whatever its autoAssign.
  if (!choice.annotated) {
    for (const ip::Address& address : requested.addresses) {
      const pool::Pool* holder = pool_holding(config, address);
      if (!holder) continue;
      std::erase_if(choice.known, [&](const pool::Pool* pool) { return pool->family() == holder->family(); });
      choice.known.push_back(holder);
    }
  }
  auto no_pool_message = [&]() {
    if (!choice.unknown.empty())
      return fmt::format("pool '{}' is not configured", fmt::join(choice.unknown, "', '"));
    return fmt::format("pool {} has autoAssign: false: it serves only Services that name it in "
                       "loadbalancer/pool",
                       fmt::join(choice.manual, ", "));
  };

  // Which families the Service wants. With a proxy that bridges families (haproxy, nginx),
  // the pools and the static IPs decide, spec.ipFamilies only breaks a tie between two pools;
  // kube-proxy (ipMode VIP) serves the families of spec.ipFamilies only.
  std::vector<ip::Family> offered;
  for (const pool::Pool* pool : choice.known)
    if (std::find(offered.begin(), offered.end(), pool->family()) == offered.end())
      offered.push_back(pool->family());
  std::vector<ip::Family> families;
  if (!request.problem) {
    if (dual) {
      families = {ip::Family::v4, ip::Family::v6};
    } else if (!options.families_bridged && !families_asked.empty()) {
      families = {families_asked.front()};
      request.family_reason = "spec.ipFamilies";
    } else if (!requested.addresses.empty()) {
      for (const ip::Address& address : requested.addresses) families.push_back(address.family());
    } else if (offered.size() == 1) {
      families = offered;
    } else if (!families_asked.empty()) {
      families = {families_asked.front()};
    } else if (first_existing_family && (offered.empty() ||
                                         std::find(offered.begin(), offered.end(),
                                                   *first_existing_family) != offered.end())) {
      families = {*first_existing_family};
    } else if (!offered.empty()) {
      families = {offered.front()};
    } else {
      failed(pool_field, no_pool_message());
    }
  }
  if (!request.problem) {
    for (std::size_t i = 0; i < requested.addresses.size(); ++i) {
      const ip::Address& address = requested.addresses[i];
      if (std::find(families.begin(), families.end(), address.family()) != families.end()) continue;
      invalid(requested.fields[i],
              fmt::format("{} is {} but the Service is {} (spec.ipFamilies): kube-proxy (ipMode "
                          "VIP) cannot carry one family to the other; use PROXY haproxy or nginx, "
                          "or an address of the Service's family",
                          address.to_string(), ip::to_string(address.family()),
                          ip::to_string(families.front())));
      break;
    }
  }

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
    for (std::size_t i = 0; i < requested.addresses.size(); ++i)
      if (requested.addresses[i].family() == family) {
        slot.requested = requested.addresses[i];
        slot.requested_field = requested.fields[i];
      }
    for (const pool::Pool* pool : choice.known)
      if (pool->family() == family) slot.pool = pool;
    if (!slot.pool) {
      std::string message;
      if (!choice.unknown.empty() || !choice.manual.empty()) {
        message = no_pool_message();
      } else {
        std::vector<std::string> named;
        for (const pool::Pool* pool : choice.known)
          named.push_back(fmt::format("{} ({})", pool->name, ip::to_string(pool->family())));
        message = fmt::format("no {} pool: {} {}", ip::to_string(family),
                              choice.annotated ? "loadbalancer/pool names"
                              : choice.names.size() == 1 && choice.names.front() == "default"
                                  ? "the default pool is"
                                  : "the pools of the namespace are",
                              fmt::join(named, ", "));
        if (!request.family_reason.empty())
          message += fmt::format(" (the Service is {} by {}; kube-proxy cannot carry one family "
                                 "to the other)",
                                 ip::to_string(family), request.family_reason);
        // PreferDualStack takes what the pools offer: a family without a pool is no problem
        // unless the Service holds or asks for an address of it.
        if (!request.require_every_slot && !slot.existing && !slot.requested) continue;
      }
      slot.pool_problem = Problem{request.key, pool_field, kReasonFailed, message};
    }
    request.slots.push_back(slot);
  }
  return request;
}

} // namespace k8slb::allocate::detail
