#pragma once
// Turning a Service into what the allocator needs: which families, from which pools, which
// address it asks for, which it already holds. Internal to lib/allocate.

#include <optional>
#include <string>
#include <vector>

#include "allocator.hpp"
#include "k8slb/allocate.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::allocate::detail {

// One address family of one Service: where its address comes from and what it got.
struct Slot {
  ip::Family family = ip::Family::v4;
  const pool::Pool* pool = nullptr;    // nullptr: no usable pool (pool_problem says why)
  std::optional<Problem> pool_problem; // why there is no pool
  std::optional<ip::Address> existing;  // held before this run (status.loadBalancer.ingress)
  std::optional<ip::Address> requested; // spec.loadBalancerIP or loadbalancer/ips, of this family
  std::string requested_field;          // where `requested` was written
  // Outcome of the phases.
  std::optional<ip::Address> held;
  bool held_is_existing = false;
  // The address held before lies in another configured pool than the one the Service asks
  // for: it is held (so nobody else takes it) until a new one is had, then let go.
  bool misfit = false;
  std::optional<ip::Address> moved_from; // the address the slot left for `held`
  std::string move_reason;               // why, for the IPMoved Event
  std::optional<Problem> problem; // why the slot has no address, or a warning about it

  std::string pool_name() const;
};

struct Request {
  const model::Service* service = nullptr;
  std::string key;
  bool ours = false;               // type LoadBalancer and our loadBalancerClass
  bool require_every_slot = true;  // single stack and RequireDualStack: all or nothing
  std::string share_key;
  std::vector<PortKey> ports;
  std::vector<Slot> slots;         // IPv4 first
  std::optional<Problem> problem;  // a problem with the Service as a whole
  std::vector<Result::Note> notes; // from reading the annotations
  std::string family_reason;       // what chose the family, for messages ("spec.ipFamilies")
};

// Reads the Service's intent. Never throws: problems are recorded in the request. A Service
// whose intent cannot be read still gets slots for the addresses it holds, so that they are
// kept (with the problem as a warning) rather than moved.
Request make_request(const model::Service& service, const pool::Config& config,
                     const Options& options);

// The pool whose network holds `address`, if any.
const pool::Pool* pool_holding(const pool::Config& config, const ip::Address& address);

// An IPv4 address ending in .0 or .255, which some old clients take for a network or broadcast
// address whatever the prefix (what avoidBuggyIPs avoids).
bool is_buggy(const ip::Address& address);

// Field names used in problems.
inline constexpr const char* kFieldPool = "metadata.annotations[loadbalancer/pool]";
inline constexpr const char* kFieldShare = "metadata.annotations[loadbalancer/share]";
inline constexpr const char* kFieldRequested = "spec.loadBalancerIP";
inline constexpr const char* kFieldIps = "metadata.annotations[loadbalancer/ips]";
inline constexpr const char* kFieldStatus = "status.loadBalancer.ingress";

// Problem reasons (Event reasons).
inline constexpr const char* kReasonFailed = "AllocationFailed";
inline constexpr const char* kReasonInvalid = "InvalidService";
inline constexpr const char* kReasonOutsidePool = "IPOutsidePool";
inline constexpr const char* kReasonMoved = "IPMoved";

} // namespace k8slb::allocate::detail
