#pragma once
// Service-level checks shared by the proxy, keepalived and BIRD planners.

#include <map>
#include <string>
#include <vector>

#include "k8slb/error.hpp"
#include "k8slb/render.hpp"
#include "k8slb/render_model.hpp"

namespace k8slb::render::detail {

// A Service that passed the Service-level checks: names, annotations, source ranges, VIPs.
struct CheckedService {
  const model::Service* service = nullptr;
  std::vector<Vip> vips;                // IPv4 first, each in a pool
  std::vector<ip::Range> source_ranges; // sorted, deduplicated
};

// The Services to render (type LoadBalancer, our class, with ingress IPs), sorted by
// namespace/name, with the problems of those left out (or of VIPs left out) appended.
std::vector<CheckedService> checked_services(const Input& input, std::vector<Problem>& problems);

// checked_services once for a whole rendering (render_all): the proxy's, keepalived's and
// BIRD's planners and the VIP holders take it instead of checking every Service again.
struct CheckedServices {
  std::vector<CheckedService> services;
  std::vector<Problem> problems;
};
CheckedServices check_services(const Input& input);
ProxyPlan plan_proxy(const Input& input, const CheckedServices& checked);
KeepalivedPlan plan_keepalived(const Input& input, const CheckedServices& checked);
BirdPlan plan_bird(const Input& input, const CheckedServices& checked);
Output bird_output(const Input& input, const CheckedServices& checked); // render_bird's
std::map<std::string, std::vector<std::size_t>> services_by_vip(const Input& input, const CheckedServices& checked);

// The cert dir's certificates to offer by SNI, checked; those refused are named in `problems`.
// nginx: `names_bucket` gets the server_names_hash_bucket_size the names need when nginx.http
// does not set one and nginx's default (64) is too small; else 0.
std::vector<SniCertificate> sni_certificates(const Input& input, std::vector<Problem>& problems,
                                             int* names_bucket = nullptr);

// Throws Error for settings that would put unsafe text into a config.
void check_settings(const Settings& settings);
// Throws Error for a pool name outside [A-Za-z0-9._-].
void check_pool_names(const pool::Config& config);

} // namespace k8slb::render::detail
