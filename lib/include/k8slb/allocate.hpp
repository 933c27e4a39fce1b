#pragma once
// IP allocation: a pure function from (Services, pools) to assignments. The assignments
// already published in status.loadBalancer.ingress are inputs (Service::ingress_ips) and are
// kept. Deterministic whatever the order of the Services; O(log n) per assignment.

#include <optional>
#include <string>
#include <vector>

#include "k8slb/error.hpp"
#include "k8slb/ip.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::allocate {

enum class Outcome {
  kept,     // the Service keeps the IPs it already had
  assigned, // new IPs (or changed: e.g. a second family added)
  failed,   // no IP: see problem
  skipped,  // not ours (not type LoadBalancer, other loadBalancerClass)
};
std::string_view to_string(Outcome outcome);

struct Result {
  std::string service;          // namespace/name
  Outcome outcome = Outcome::skipped;
  std::vector<ip::Address> ips; // one per family, IPv4 first; empty when failed/skipped
  std::vector<std::string> pools; // pool per IP
  std::optional<Problem> problem; // set when failed (reason AllocationFailed / InvalidService)
  std::vector<std::string> released; // IPs the Service held before and no longer holds
};

struct Options {
  std::string lb_class; // our loadBalancerClass; Services with another class are skipped
};

// Results sorted by namespace/name, one per input Service.
std::vector<Result> allocate(const std::vector<model::Service>& services,
                             const pool::Config& config, const Options& options = {});

} // namespace k8slb::allocate
