#pragma once
// Test helpers for lib/allocate: a Service builder, the pools the tests use, and a readable
// rendering of a result.

#include <map>
#include <ostream>
#include <string>
#include <utility>
#include <vector>

#include <fmt/format.h>
#include <fmt/ranges.h>
#include <nlohmann/json.hpp>

#include "k8slb/allocate.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::allocate {
// gtest prints outcomes by name.
inline void PrintTo(Outcome outcome, std::ostream* out) { *out << to_string(outcome); }
} // namespace k8slb::allocate

namespace k8slb::allocate::testing {

// Pools: default is an IPv4 /24 whose dynamic range is a /30 (4 addresses); external a second
// IPv4 pool; ipv6 a /64 whose dynamic range is a /96; tiny6 an IPv6 pool with one dynamic
// address; edge an IPv4 /29 and whole6 an IPv6 /120 whose ranges are the whole network.
inline pool::Config test_pools() {
  return pool::parse_config(nlohmann::json::parse(R"({
    "pools": {
      "default":  {"network": "192.0.2.0/24",       "range": "192.0.2.8/30"},
      "external": {"network": "198.51.100.0/24",    "range": "198.51.100.16-198.51.100.31"},
      "ipv6":     {"network": "2001:db8:1::/64",    "range": "2001:db8:1:0:0:1::/96"},
      "tiny6":    {"network": "2001:db8:2::/64",    "range": "2001:db8:2::10-2001:db8:2::10"},
      "edge":     {"network": "203.0.113.0/29",     "range": "203.0.113.0/29"},
      "whole6":   {"network": "2001:db8:3::/120",   "range": "2001:db8:3::/120"}
    }
  })"));
}

// A LoadBalancer Service listening on TCP/80, built field by field.
class Svc {
public:
  explicit Svc(const std::string& key) {
    auto slash = key.find('/');
    service_.ns = key.substr(0, slash);
    service_.name = key.substr(slash + 1);
    service_.uid = "uid-" + service_.name;
    service_.resource_version = "7";
    service_.type = "LoadBalancer";
    service_.ports = {port("TCP", 80)};
  }
  Svc& pool(const std::string& names) { return annotate(model::kAnnotationPool, names); }
  Svc& share(const std::string& key) { return annotate(model::kAnnotationShare, key); }
  Svc& annotate(const std::string& key, const std::string& value) {
    service_.annotations[key] = value;
    return *this;
  }
  // An annotation as parse_service reads it from the cluster: through model::read_annotations
  // (spellings, MetalLB keys, unknown keys).
  Svc& written(const std::string& key, const std::string& value) {
    written_[key] = value;
    model::Annotations read = model::read_annotations(written_);
    service_.annotations = std::move(read.values);
    service_.annotation_keys = std::move(read.written_as);
    service_.annotation_notes = std::move(read.notes);
    return *this;
  }
  Svc& ip(const std::string& address) {
    service_.load_balancer_ip = address;
    return *this;
  }
  Svc& holds(std::vector<std::string> addresses) {
    service_.ingress_ips = std::move(addresses);
    return *this;
  }
  Svc& families(std::vector<std::string> families, std::string policy = "") {
    service_.ip_families = std::move(families);
    service_.ip_family_policy = std::move(policy);
    return *this;
  }
  Svc& policy(std::string policy) {
    service_.ip_family_policy = std::move(policy);
    return *this;
  }
  Svc& ports(std::vector<std::pair<std::string, int>> ports) {
    service_.ports.clear();
    for (const auto& [protocol, number] : ports) service_.ports.push_back(port(protocol, number));
    return *this;
  }
  Svc& type(std::string type) {
    service_.type = std::move(type);
    return *this;
  }
  Svc& source_ranges(std::vector<std::string> ranges) {
    service_.source_ranges = std::move(ranges);
    return *this;
  }
  Svc& lb_class(std::string lb_class) {
    service_.lb_class = std::move(lb_class);
    return *this;
  }
  operator model::Service() const { return service_; }
  const model::Service& get() const { return service_; }

private:
  static model::ServicePort port(const std::string& protocol, int number) {
    model::ServicePort p;
    p.protocol = protocol;
    p.port = number;
    p.target_port = number;
    return p;
  }
  model::Service service_;
  std::map<std::string, std::string> written_;
};

inline std::vector<std::string> texts(const std::vector<ip::Address>& addresses) {
  std::vector<std::string> out;
  for (const auto& address : addresses) out.push_back(address.to_string());
  return out;
}

// "IPMoved default/a: moved from ... to ..."
inline std::vector<std::string> note_texts(const Result& result) {
  std::vector<std::string> out;
  for (const auto& note : result.notes)
    out.push_back(fmt::format("{} {} {}", note.type, note.problem.reason, note.problem.to_string()));
  return out;
}

// "default/a: assigned [192.0.2.8] pools [default] released [] problem <...> notes <...>"
inline std::string show(const Result& result) {
  return fmt::format("{}: {} [{}] pools [{}] released [{}] problem <{}> notes <{}>", result.service,
                     to_string(result.outcome), fmt::join(texts(result.ips), ", "),
                     fmt::join(result.pools, ", "), fmt::join(result.released, ", "),
                     result.problem ? result.problem->reason + " " + result.problem->to_string()
                                    : "",
                     fmt::join(note_texts(result), " | "));
}

} // namespace k8slb::allocate::testing
