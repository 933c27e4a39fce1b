// Decisions: which Services and ports are rendered, how, and to which endpoints.

#include <algorithm>
#include <map>
#include <set>
#include <sstream>
#include <span>
#include <tuple>

#include <fmt/format.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"
#include "k8slb/validate.hpp"
#include "services.hpp"

namespace k8slb::render {

std::string_view to_string(Protocol protocol) {
  switch (protocol) {
  case Protocol::tcp: return "TCP";
  case Protocol::udp: return "UDP";
  case Protocol::sctp: return "SCTP";
  }
  return "TCP";
}

std::string PortPlan::id() const {
  std::string id = fmt::format("{}_{}_{}", ns, name, port);
  if (protocol == Protocol::udp) id += "_udp";
  if (protocol == Protocol::sctp) id += "_sctp";
  return id;
}

std::string Redirect::id() const {
  return fmt::format("{}_{}_redirect_{}", ns, name, detail::family_suffix(vip.address.family()));
}

int server_slots(int endpoints, int min_slots) {
  int slots = 1;
  while (slots < endpoints && slots < (1 << 30)) slots *= 2;
  return std::max(slots, min_slots);
}

namespace detail {

std::vector<CheckedService> checked_services(const Input& input, std::vector<Problem>& problems) {
  std::vector<const model::Service*> services;
  for (const auto& service : input.services) {
    if (service.ingress_ips.empty() || !service.is_load_balancer()) continue;
    if (!service.lb_class.empty() && service.lb_class != input.settings.lb_class) continue;
    services.push_back(&service);
  }
  std::sort(services.begin(), services.end(), [](const auto* a, const auto* b) {
    return std::tie(a->ns, a->name) < std::tie(b->ns, b->name);
  });

  std::vector<CheckedService> checked;
  for (const auto* service : services) {
    const std::string key = service->key();
    // The checks k8slb-allocate applies too: a Service refused here holds no IP.
    std::vector<Problem> refused = validate::service_problems(*service);
    for (Problem& problem : refused) {
      problem.message += "; the Service is not rendered";
      problems.push_back(std::move(problem));
    }
    if (!validate::is_dns_label(service->ns) || !validate::is_dns_label(service->name)) continue;
    bool valid = refused.empty();
    CheckedService entry;
    entry.service = service;
    for (const std::string& text : service->source_ranges) {
      auto range = validate::parse_source_range(text);
      if (range && std::find(entry.source_ranges.begin(), entry.source_ranges.end(), *range) ==
                       entry.source_ranges.end())
        entry.source_ranges.push_back(*range);
    }
    std::sort(entry.source_ranges.begin(), entry.source_ranges.end());
    for (std::size_t i = 0; i < service->ingress_ips.size(); ++i) {
      const auto field = fmt::format("status.loadBalancer.ingress[{}].ip", i);
      auto address = ip::Address::try_parse(service->ingress_ips[i]);
      if (!address) {
        problems.push_back(Problem{key, field, "InvalidService", fmt::format("{} is not an IP address; the Service is not rendered",
                                   quote(service->ingress_ips[i]))});
        valid = false;
        continue;
      }
      const pool::Pool* holder = nullptr;
      for (const auto& pool : input.config.pools)
        if (pool.network.contains(*address)) holder = &pool;
      if (!holder) {
        problems.push_back(Problem{key, field, "NotRendered",
                                   fmt::format("{} is in no pool; this IP is not rendered",
                                               address->to_string())});
        continue;
      }
      bool same_family = std::any_of(entry.vips.begin(), entry.vips.end(), [&](const Vip& vip) {
        return vip.address.family() == address->family();
      });
      if (same_family) {
        problems.push_back(Problem{key, field, "NotRendered",
                                   fmt::format("a second {} address ({}); this IP is not rendered",
                                               ip::to_string(address->family()),
                                               address->to_string())});
        continue;
      }
      entry.vips.push_back(Vip{*address, holder->name});
    }
    std::sort(entry.vips.begin(), entry.vips.end(),
              [](const Vip& a, const Vip& b) { return a.address < b.address; });
    if (!valid || entry.vips.empty()) continue;
    checked.push_back(std::move(entry));
  }
  return checked;
}

CheckedServices check_services(const Input& input) {
  CheckedServices checked;
  checked.services = checked_services(input, checked.problems);
  return checked;
}

void check_settings(const Settings& settings) {
  if (!is_safe_path(settings.cert_dir))
    fail("settings", "cert_dir", fmt::format("{} is not a safe absolute path", quote(settings.cert_dir)));
  if (!is_safe_path(settings.runtime_dir))
    fail("settings", "runtime_dir",
         fmt::format("{} is not a safe absolute path", quote(settings.runtime_dir)));
  if (!is_safe_path(settings.stream_module))
    fail("settings", "stream_module",
         fmt::format("{} is not a safe absolute path", quote(settings.stream_module)));
  if (settings.min_server_slots < 1 || settings.min_server_slots > 4096)
    fail("settings", "min_server_slots", "must be between 1 and 4096");
  if (settings.hard_stop_after_s < 1)
    fail("settings", "hard_stop_after_s", "must be at least 1");
  if (!settings.shared_ports.empty() && settings.proxy == Proxy::kubeproxy)
    fail("settings", "shared_ports", "shared ports are for haproxy and nginx, not kubeproxy");
  for (int port : settings.shared_ports)
    if (port < 1 || port > 65535) fail("settings", "shared_ports", fmt::format("{} is not a port number 1..65535", port));
}

void check_pool_names(const pool::Config& config) {
  for (const auto& pool : config.pools)
    if (!is_pool_name(pool.name))
      fail(fmt::format("pools.{}", pool.name), "",
           "a pool name must be letters, digits, '.', '_' or '-', starting with a letter or digit");
}

namespace {

// The value of `server_names_hash_bucket_size N;` in nginx.http lines; 0 when not set.
int names_bucket_of(const std::vector<std::string>& lines) {
  for (const auto& text : lines) {
    std::istringstream in(text);
    std::string directive, value;
    if (in >> directive >> value && directive == "server_names_hash_bucket_size") {
      try {
        return std::stoi(value);
      } catch (const std::exception&) {
        return 0;
      }
    }
  }
  return 0;
}

} // namespace

std::vector<SniCertificate> sni_certificates(const Input& input, std::vector<Problem>& problems,
                                             int* names_bucket) {
  std::vector<SniCertificate> offered;
  // nginx keeps a server name in a hash bucket of server_names_hash_bucket_size bytes, with
  // 18 bytes of its own (64-bit): a name too long for the document's size fails `nginx -t`.
  const int bucket = input.settings.proxy == Proxy::nginx ? names_bucket_of(input.config.nginx.http) : 0;
  std::size_t longest = 0;
  const auto proxy = input.settings.proxy;
  if (proxy == Proxy::kubeproxy) return offered;
  const std::string& dir = input.settings.cert_dir;
  auto refuse = [&](const std::string& file, std::string why) {
    problems.push_back(Problem{dir, "", "InvalidCertificate",
                               fmt::format("{} {}", quote(file), why)});
  };
  for (const auto& found : input.certificate_files) {
    const std::string stem = found.file.size() > 4 ? found.file.substr(0, found.file.size() - 4) : "";
    if (!found.file.ends_with(".pem") || !is_pool_name(stem)) {
      refuse(found.file, "is not a safe file name (letters, digits, '.', '_', '-', ending in .pem); it is not "
                           "offered by SNI");
      continue;
    }
    if (!found.error.empty()) {
      refuse(found.file, found.error + "; it is not offered by SNI");
      continue;
    }
    if (!found.has_key) continue; // a CA or chain file: nothing to offer
    SniCertificate certificate;
    certificate.file = found.file;
    if (proxy == Proxy::haproxy) {
      if (!found.key_in_file) {
        refuse(found.file, "does not hold its private key (HAProxy needs certificate and key in one file); "
                           "it is not offered by SNI");
        continue;
      }
    } else {
      certificate.key_file = found.key_file ? stem + ".key" : found.file;
      for (const auto& name : found.names) {
        std::string lower = name;
        std::transform(lower.begin(), lower.end(), lower.begin(),
                       [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
        const bool wildcard = lower.starts_with("*.");
        if (!is_dns_subdomain(wildcard ? std::string_view(lower).substr(2) : std::string_view(lower))) {
          refuse(found.file, fmt::format("names {}, which is not a DNS name; that name is left out", quote(name)));
          continue;
        }
        if (bucket > 0 && lower.size() + 18 > static_cast<std::size_t>(bucket)) {
          refuse(found.file, fmt::format("names {}, longer than nginx.http's server_names_hash_bucket_size {} "
                                         "holds; that name is left out", quote(name), bucket));
          continue;
        }
        longest = std::max(longest, lower.size());
        if (std::find(certificate.names.begin(), certificate.names.end(), lower) == certificate.names.end())
          certificate.names.push_back(lower);
      }
      if (certificate.names.empty()) continue; // nothing nginx could select it by
    }
    if (proxy == Proxy::haproxy && offered.size() == kMaxSniCertificates) {
      refuse(found.file, fmt::format("is one more than the {} certificates HAProxy takes on a bind line; "
                                     "it is not offered by SNI", kMaxSniCertificates));
      continue;
    }
    offered.push_back(std::move(certificate));
  }
  if (names_bucket) {
    *names_bucket = 0;
    if (bucket == 0 && longest + 18 > 64) {
      *names_bucket = 64;
      while (static_cast<std::size_t>(*names_bucket) < longest + 18) *names_bucket *= 2;
    }
  }
  return offered;
}

} // namespace detail

namespace {

using detail::quote;

std::optional<Protocol> parse_protocol(std::string_view text) {
  if (text == "TCP") return Protocol::tcp;
  if (text == "UDP") return Protocol::udp;
  if (text == "SCTP") return Protocol::sctp;
  return std::nullopt;
}

bool is_port_name(std::string_view text) { return text.empty() || detail::is_dns_label(text); }

bool starts_with(std::string_view text, std::string_view prefix) {
  return text.substr(0, prefix.size()) == prefix;
}

} // namespace

ProxyPlan plan_proxy(const Input& input) { return detail::plan_proxy(input, detail::check_services(input)); }

ProxyPlan detail::plan_proxy(const Input& input, const CheckedServices& check) {
  ProxyPlan plan;
  detail::check_settings(input.settings);
  detail::check_pool_names(input.config);
  plan.problems = check.problems;
  const auto& services = check.services;
  if (input.settings.proxy == Proxy::kubeproxy) return plan;
  plan.sni = detail::sni_certificates(input, plan.problems, &plan.nginx_names_bucket);

  // (VIP, port, protocol) -> Service using it: two Services on one shared VIP and port conflict.
  std::map<std::tuple<ip::Address, int, Protocol>, std::string> listeners;
  const auto proxy = input.settings.proxy;
  // Slices by Service, so that finding endpoints costs O(log n), not a scan of every slice.
  std::map<std::pair<std::string, std::string>, std::vector<model::EndpointSlice>> slices_by_service;
  for (const auto& slice : input.slices) slices_by_service[{slice.ns, slice.service_name}].push_back(slice);
  const std::vector<model::EndpointSlice> no_slices;
  // Service -> its TLS-terminated http-mode ports, which port 80 redirects to.
  std::map<std::string, std::vector<int>> redirect_targets;

  for (const auto& checked : services) {
    const auto& service = *checked.service;
    const std::string key = service.key();
    const auto mode_annotation = service.annotation(model::kAnnotationMode);
    const auto ssl_annotation = service.annotation(model::kAnnotationSsl);
    const auto backend_annotation = service.annotation(model::kAnnotationSslBackend);
    const bool check = service.annotation(model::kAnnotationNocheck) != "true";
    auto own_slices = slices_by_service.find({service.ns, service.name});
    const auto& slices = own_slices == slices_by_service.end() ? no_slices : own_slices->second;

    for (std::size_t i = 0; i < service.ports.size(); ++i) {
      const auto& port = service.ports[i];
      const auto field = fmt::format("spec.ports[{}]", i);
      auto problem = [&](std::string sub, std::string reason, std::string message) {
        plan.problems.push_back(Problem{key, field + sub, std::move(reason), std::move(message)});
      };
      if (!is_port_name(port.name)) {
        problem(".name", "InvalidService",
                fmt::format("{} is not a DNS label; this port is not rendered", quote(port.name)));
        continue;
      }
      auto protocol = parse_protocol(port.protocol);
      if (!protocol) {
        problem(".protocol", "InvalidService",
                fmt::format("{} is not TCP, UDP or SCTP; this port is not rendered", quote(port.protocol)));
        continue;
      }
      if (port.port < 1 || port.port > 65535) {
        problem(".port", "InvalidService", fmt::format("{} is not a port number", port.port));
        continue;
      }
      if (port.target_port < 0 || port.target_port > 65535) {
        problem(".targetPort", "InvalidService", fmt::format("{} is not a port number", port.target_port));
        continue;
      }
      if (proxy == Proxy::haproxy && *protocol != Protocol::tcp) {
        problem(".protocol", "UnsupportedPort",
                fmt::format("{} is not carried by haproxy; use the nginx proxy", port.protocol));
        continue;
      }
      if (proxy == Proxy::nginx && *protocol == Protocol::sctp) {
        problem(".protocol", "UnsupportedPort",
                "SCTP is not carried by nginx; use the kubeproxy proxy");
        continue;
      }

      PortPlan entry;
      entry.ns = service.ns;
      entry.name = service.name;
      entry.index = static_cast<int>(i);
      entry.port_name = port.name;
      entry.protocol = *protocol;
      entry.port = port.port;
      entry.target_port = port.target_port_name.empty() && port.target_port == 0 ? port.port
                                                                                  : port.target_port;
      entry.source_ranges = checked.source_ranges;
      entry.check = check;
      const bool auto_http = entry.port == 80 || entry.port == 443 || entry.target_port == 80 ||
                             entry.target_port == 443;
      const bool tcp = *protocol == Protocol::tcp;
      entry.mode = tcp && (mode_annotation == "http" || (mode_annotation.empty() && auto_http))
                       ? Mode::http
                       : Mode::tcp;
      entry.tls = tcp && (ssl_annotation == "true" ||
                          (ssl_annotation.empty() && (entry.port == 443 || starts_with(port.name, "https"))));
      entry.tls_backend =
          tcp && (backend_annotation == "true" || (backend_annotation.empty() && entry.target_port == 443));

      // nginx serves a shared port from one wildcard socket in stream {} or http {} (its
      // shared_mode()); a port in the other mode would bind VIP:port beside it, which the kernel
      // refuses, and nginx with it the whole config.
      if (proxy == Proxy::nginx && tcp && entry.mode != shared_mode(entry.port) &&
          input.settings.shared_ports.contains(entry.port)) {
        auto mode = [](Mode m) { return m == Mode::http ? "http" : "layer-4"; };
        problem("", "PortConflict",
                fmt::format("port {} is a shared port (--shared-ports, SHARED_PORTS) that nginx serves in {} mode; a "
                            "{} port cannot be bound beside it; this port is not rendered",
                            entry.port, mode(shared_mode(entry.port)), mode(entry.mode)));
        continue;
      }

      // A TLS http-mode port makes port 80 redirect, also on a VIP where its certificate is
      // missing (port 80 never turns into plain http because a certificate went away).
      if (entry.mode == Mode::http && entry.tls) redirect_targets[key].push_back(entry.port);

      // The VIPs this port may listen on: not already taken by another Service, and for a TLS
      // port, whose pool has its certificate (nginx: and key) on this node.
      for (const auto& vip : checked.vips) {
        if (entry.tls && input.certificates) {
          std::string missing;
          for (const char* suffix : {".pem", ".key"}) {
            if (std::string_view(suffix) == ".key" && proxy != Proxy::nginx) continue;
            if (!input.certificates->count(vip.pool + suffix))
              missing += (missing.empty() ? "" : " and ") + input.settings.cert_dir + "/" + vip.pool + suffix;
          }
          if (!missing.empty()) {
            problem("", "MissingCertificate",
                    fmt::format("port {}: no readable certificate {} (pool {}); this TLS port is not rendered on {}",
                                entry.port, missing, vip.pool, vip.address.to_string()));
            continue;
          }
        }
        auto listener = std::make_tuple(vip.address, entry.port, entry.protocol);
        auto [it, inserted] = listeners.emplace(listener, key);
        if (!inserted && it->second != key) {
          problem("", "PortConflict",
                  fmt::format("{} {} is already used by {}; not rendered on this IP",
                              detail::host_port(vip.address, entry.port), port.protocol, it->second));
          continue;
        }
        if (!inserted) {
          problem(".port", "InvalidService", fmt::format("port {} {} appears twice", entry.port, port.protocol));
          continue;
        }
        entry.vips.push_back(vip);
      }
      if (entry.vips.empty()) continue;

      // Ready endpoints, re-printed from parsed addresses, then the slots.
      std::vector<std::pair<ip::Address, int>> endpoints;
      for (const auto& backend : model::backends_for(service, port, slices)) {
        auto address = ip::Address::try_parse(backend.address);
        if (!address || backend.port < 1 || backend.port > 65535) {
          plan.problems.push_back(Problem{key, "endpoints", "InvalidEndpoint",
                                          fmt::format("{} port {} is not an IP address and port; "
                                                      "this endpoint is not rendered",
                                                      quote(backend.address), backend.port)});
          continue;
        }
        endpoints.emplace_back(*address, backend.port);
      }
      std::sort(endpoints.begin(), endpoints.end());
      endpoints.erase(std::unique(endpoints.begin(), endpoints.end()), endpoints.end());
      const int slots = server_slots(static_cast<int>(endpoints.size()), input.settings.min_server_slots);
      const int empty_port = entry.target_port > 0 ? entry.target_port
                             : endpoints.empty()   ? entry.port
                                                   : endpoints.front().second;
      for (int slot = 0; slot < slots; ++slot) {
        Server server;
        server.name = fmt::format("s{}", slot + 1);
        if (slot < static_cast<int>(endpoints.size())) {
          server.address = endpoints[slot].first;
          server.port = endpoints[slot].second;
          server.enabled = true;
        } else {
          server.address = ip::Address(ip::Family::v4, 0);
          server.port = empty_port;
          server.enabled = false;
        }
        entry.servers.push_back(std::move(server));
      }
      entry.filled = static_cast<int>(endpoints.size());
      plan.ports.push_back(std::move(entry));
    }
  }

  // Redirects: a TLS-terminated http-mode port gets http -> https on port 80 of each of its
  // VIPs, unless the annotation says no or another Service uses port 80 of that VIP. The
  // Service's own plain http port 80 redirects too instead of forwarding (as the original
  // did); a port 80 of its own that is TLS or layer 4 stays as it is.
  // Ports were appended Service by Service, in the order of `services`.
  std::size_t first_port = 0;
  for (const auto& checked : services) {
    const auto& service = *checked.service;
    std::size_t end_port = first_port;
    while (end_port < plan.ports.size() && plan.ports[end_port].ns == service.ns &&
           plan.ports[end_port].name == service.name)
      ++end_port;
    const auto own_ports = std::span(plan.ports).subspan(first_port, end_port - first_port);
    first_port = end_port;
    if (service.annotation(model::kAnnotationSslRedirect) == "false") continue;
    std::optional<int> target;
    for (int port : redirect_targets[service.key()])
      if (!target || port == 443 || (*target != 443 && port < *target)) target = port;
    if (!target) continue;
    for (const auto& vip : checked.vips) {
      auto listener = std::make_tuple(vip.address, 80, Protocol::tcp);
      if (auto used = listeners.find(listener); used != listeners.end()) {
        if (used->second != service.key()) continue; // another Service's port 80
        auto own = std::find_if(own_ports.begin(), own_ports.end(), [&](const PortPlan& port) {
          return port.port == 80 && port.protocol == Protocol::tcp && port.mode == Mode::http && !port.tls &&
                 std::find(port.vips.begin(), port.vips.end(), vip) != port.vips.end();
        });
        if (own == own_ports.end()) continue; // its port 80 is TLS or layer 4
        own->vips.erase(std::find(own->vips.begin(), own->vips.end(), vip));
      } else {
        listeners.emplace(listener, service.key());
      }
      plan.redirects.push_back(Redirect{service.ns, service.name, vip, *target, checked.source_ranges});
    }
  }

  // A port 80 that redirects on every VIP forwards nowhere.
  std::erase_if(plan.ports, [](const PortPlan& port) { return port.vips.empty(); });
  std::sort(plan.ports.begin(), plan.ports.end(), [](const PortPlan& a, const PortPlan& b) {
    return std::tie(a.ns, a.name, a.port, a.protocol) < std::tie(b.ns, b.name, b.port, b.protocol);
  });
  return plan;
}

} // namespace k8slb::render
