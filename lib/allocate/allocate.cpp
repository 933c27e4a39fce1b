#include "k8slb/allocate.hpp"

#include <algorithm>
#include <cassert>

#include <fmt/format.h>

#include "allocator.hpp"
#include "request.hpp"

namespace k8slb::allocate {

std::string_view to_string(Outcome outcome) {
  switch (outcome) {
  case Outcome::kept: return "kept";
  case Outcome::assigned: return "assigned";
  case Outcome::failed: return "failed";
  case Outcome::skipped: return "skipped";
  case Outcome::released: return "released";
  }
  return "unknown";
}

namespace {

using detail::Allocator;
using detail::Claim;
using detail::Request;
using detail::Slot;

Claim claim_for(const Request& request, const Slot& slot, bool is_static) {
  std::string_view pool = slot.pool ? std::string_view(slot.pool->name) : std::string_view();
  return Claim{request.key, pool, is_static, request.share_key, request.ports};
}

std::string describe_pool(const pool::Pool& pool) {
  return fmt::format("pool {} ({})", pool.name, pool.network.to_string());
}

// Phase 1: the addresses Services already hold stay theirs. Two holders of one address that
// may not share it: the first in namespace/name order keeps it, the other loses it. An address
// in another configured pool than the one the Service asks for (its pool annotation changed)
// is held until phase 3 finds it a new one.
void keep_existing(Allocator& allocator, Request& request, const pool::Config& config) {
  for (Slot& slot : request.slots) {
    if (!slot.existing) continue;
    const ip::Address& address = *slot.existing;
    Claim claim = claim_for(request, slot, slot.requested == slot.existing);
    if (auto conflict = allocator.conflict(address, claim)) {
      slot.problem = Problem{request.key, detail::kFieldStatus, detail::kReasonFailed, *conflict};
      continue;
    }
    allocator.assign(address, claim);
    slot.held = address;
    slot.held_is_existing = true;
    if (request.problem) continue; // the Service's own problem is the warning
    if (slot.pool_problem) {
      slot.problem = Problem{request.key, detail::kFieldPool, detail::kReasonOutsidePool,
                             fmt::format("keeping {}: {}", address.to_string(),
                                         slot.pool_problem->message)};
    } else if (!slot.pool->network.contains(address)) {
      if (detail::pool_holding(config, address) && !slot.requested) {
        slot.misfit = true;
        continue;
      }
      // In no pool at all: the config changed, not the Service. Never moved for that.
      slot.problem = Problem{
          request.key, detail::kFieldStatus, detail::kReasonOutsidePool,
          fmt::format("keeping {} although it is outside {} and every other pool; set "
                      "spec.loadBalancerIP, or clear the status, to move the Service",
                      address.to_string(), describe_pool(*slot.pool))};
    }
  }
}

// A failure of a slot; when the slot still holds its old address, that address is kept and
// the failure becomes a warning.
void record(Slot& slot, Problem problem) {
  if (slot.held) problem.message += fmt::format("; keeping {}", slot.held->to_string());
  slot.problem = std::move(problem);
}

bool wants_requested(const Request& request) {
  return std::any_of(request.slots.begin(), request.slots.end(), [](const Slot& slot) {
    return slot.requested && slot.held != slot.requested;
  });
}

// Phase 2: spec.loadBalancerIP. The address must lie in the pool's network (not necessarily
// in its dynamic range) and be free, or held by Services that asked for it too. Returns how
// many addresses the Service gave up by moving to the one it asked for.
int assign_requested(Allocator& allocator, Request& request) {
  int moved = 0;
  for (Slot& slot : request.slots) {
    if (!slot.requested || slot.held == slot.requested) continue;
    const ip::Address& address = *slot.requested;
    if (!slot.pool) {
      record(slot, *slot.pool_problem);
      continue;
    }
    if (!slot.pool->network.contains(address)) {
      record(slot, Problem{request.key, slot.requested_field, detail::kReasonFailed,
                           fmt::format("{} is outside {}", address.to_string(),
                                       describe_pool(*slot.pool))});
      continue;
    }
    if (slot.pool->avoid_buggy_ips && detail::is_buggy(address)) {
      record(slot, Problem{request.key, slot.requested_field, detail::kReasonFailed,
                           fmt::format("{} ends in .0 or .255, which pool {} avoids (avoidBuggyIPs)",
                                       address.to_string(), slot.pool->name)});
      continue;
    }
    Claim claim = claim_for(request, slot, true);
    if (auto conflict = allocator.conflict(address, claim)) {
      record(slot, Problem{request.key, slot.requested_field, detail::kReasonFailed, *conflict});
      continue;
    }
    if (slot.held) { // the user asked for a move
      allocator.unassign(*slot.held, request.key);
      slot.moved_from = slot.held;
      slot.move_reason = fmt::format("{} asks for {}",
                                     slot.requested_field.empty() ? detail::kFieldRequested
                                                                  : slot.requested_field,
                                     address.to_string());
      ++moved;
    }
    allocator.assign(address, claim);
    slot.held = address;
    slot.held_is_existing = false;
    slot.problem.reset();
  }
  return moved;
}

// A held address in another pool than the one the Service asks for: a new one from that pool,
// then the old one goes. Without a free one, the old one is kept, with a warning.
void move_to_pool(Allocator& allocator, Request& request, Slot& slot) {
  const ip::Address old = *slot.held;
  Claim claim = claim_for(request, slot, false);
  std::optional<ip::Address> address = allocator.shared_address(claim);
  if (!address) address = allocator.first_free(*slot.pool);
  if (!address) {
    slot.problem = Problem{request.key, detail::kFieldPool, detail::kReasonOutsidePool,
                           fmt::format("keeping {} although it is outside {}: that pool has no "
                                       "free {} address left in range {}",
                                       old.to_string(), describe_pool(*slot.pool),
                                       ip::to_string(slot.family), slot.pool->range.to_string())};
    return;
  }
  allocator.unassign(old, request.key);
  allocator.assign(*address, claim);
  slot.held = address;
  slot.held_is_existing = false;
  slot.moved_from = old;
  slot.move_reason = fmt::format("{} is outside {}, the pool the Service asks for", old.to_string(),
                                 describe_pool(*slot.pool));
}

// Phase 3: an address from the pool's range: one the Service's sharing group holds and may
// take its ports, else the lowest free one.
void assign_dynamic(Allocator& allocator, Request& request) {
  for (Slot& slot : request.slots) {
    if (slot.misfit) {
      move_to_pool(allocator, request, slot);
      continue;
    }
    if (slot.held || slot.requested || slot.problem) continue;
    if (!slot.pool) {
      slot.problem = slot.pool_problem;
      continue;
    }
    Claim claim = claim_for(request, slot, false);
    std::optional<ip::Address> address = allocator.shared_address(claim);
    if (!address) address = allocator.first_free(*slot.pool);
    if (!address) {
      slot.problem = Problem{request.key, "", detail::kReasonFailed,
                             fmt::format("pool {} has no free {} address left in range {}",
                                         slot.pool->name, ip::to_string(slot.family),
                                         slot.pool->range.to_string())};
      continue;
    }
    allocator.assign(*address, claim);
    slot.held = address;
  }
}

// All or nothing for single-stack and RequireDualStack Services: a Service that got only part
// of what it needs gives the new addresses back. Addresses it held before stay (never moved).
void undo_partial(Allocator& allocator, Request& request) {
  if (!request.require_every_slot) return;
  bool complete = std::all_of(request.slots.begin(), request.slots.end(),
                              [](const Slot& slot) { return slot.held.has_value(); });
  bool holds_existing = std::any_of(request.slots.begin(), request.slots.end(), [](const Slot& slot) {
    return slot.held_is_existing || slot.moved_from;
  });
  if (complete || holds_existing) return;
  for (Slot& slot : request.slots) {
    if (!slot.held) continue;
    allocator.unassign(*slot.held, request.key);
    slot.held.reset();
  }
}

std::string pool_of(const pool::Config& config, const Slot& slot, const ip::Address& address) {
  if (slot.pool && slot.pool->network.contains(address)) return slot.pool->name;
  for (const pool::Pool& pool : config.pools)
    if (pool.network.contains(address)) return pool.name;
  return slot.pool_name();
}

// A single-stack Service whose family changed (its pool or static IP is of the other family
// now): the old address is released and a new one assigned; say so, naming both.
void note_family_change(const Request& request, const pool::Config& config, Result& result) {
  if (request.problem || request.slots.size() != 1) return;
  const Slot& slot = request.slots.front();
  if (!slot.held || slot.held_is_existing || slot.moved_from) return;
  std::vector<std::string> gone;
  for (const std::string& text : result.released) {
    auto address = ip::Address::try_parse(text);
    if (address && address->family() != slot.family) gone.push_back(address->to_string());
  }
  if (gone.size() != 1) return;
  result.notes.push_back(
      {"Normal", Problem{request.key, "", detail::kReasonMoved,
                         fmt::format("moved from {} to {} (pool {}): the Service is {} now, by {}",
                                     gone.front(), slot.held->to_string(),
                                     pool_of(config, slot, *slot.held), ip::to_string(slot.family),
                                     slot.requested ? slot.requested_field : "its pool")}});
}

Result finish(const Request& request, const pool::Config& config) {
  const model::Service& service = *request.service;
  Result result;
  result.service = request.key;
  if (!request.ours) {
    result.outcome = service.ingress_ips.empty() ? Outcome::skipped : Outcome::released;
    result.released = service.ingress_ips;
    return result;
  }
  result.problem = request.problem;
  result.notes = request.notes;
  for (const Slot& slot : request.slots) {
    if (slot.moved_from && slot.held)
      result.notes.push_back({"Normal", Problem{request.key, "", detail::kReasonMoved,
                                                fmt::format("moved from {} to {} (pool {}): {}",
                                                            slot.moved_from->to_string(),
                                                            slot.held->to_string(),
                                                            pool_of(config, slot, *slot.held),
                                                            slot.move_reason)}});
  }
  for (const Slot& slot : request.slots) {
    if (!result.problem && slot.problem) result.problem = slot.problem;
    if (!slot.held) continue;
    result.ips.push_back(*slot.held);
    result.pools.push_back(pool_of(config, slot, *slot.held));
  }
  for (const std::string& text : service.ingress_ips) {
    auto address = ip::Address::try_parse(text);
    if (!address || std::find(result.ips.begin(), result.ips.end(), *address) == result.ips.end())
      result.released.push_back(text);
  }
  if (result.ips.empty()) {
    result.outcome = Outcome::failed;
    result.pools.clear();
    if (!result.problem) // every path that leaves a Service without an address records why
      result.problem = Problem{request.key, "", detail::kReasonFailed, "no address assigned"};
    return result;
  }
  note_family_change(request, config, result);
  bool unchanged = result.released.empty() && result.ips.size() == service.ingress_ips.size();
  result.outcome = unchanged ? Outcome::kept : Outcome::assigned;
  return result;
}

} // namespace

std::vector<Result> allocate(const std::vector<model::Service>& services,
                             const pool::Config& config, const Options& options) {
  std::vector<const model::Service*> ordered;
  ordered.reserve(services.size());
  for (const model::Service& service : services) ordered.push_back(&service);
  std::stable_sort(ordered.begin(), ordered.end(), [](const auto* a, const auto* b) {
    return std::tie(a->ns, a->name, a->uid) < std::tie(b->ns, b->name, b->uid);
  });

  // The allocator's claims refer to the requests' strings: reserve so they never move.
  std::vector<Request> requests;
  requests.reserve(ordered.size());
  for (const model::Service* service : ordered)
    requests.push_back(detail::make_request(*service, config, options));

  Allocator allocator;
  for (Request& request : requests)
    if (request.ours) keep_existing(allocator, request, config);
  // Phase 2 runs again over the requests still waiting as long as a pass freed addresses: a
  // Service that moves to its new loadBalancerIP frees its old one, which a Service earlier in
  // namespace/name order may have asked for. Each pass but the last frees at least one address,
  // and a slot moves once, so the passes are bounded by the number of moves.
  std::vector<Request*> waiting;
  for (Request& request : requests)
    if (request.ours && wants_requested(request)) waiting.push_back(&request);
  for (int moved = 1; moved > 0 && !waiting.empty();) {
    moved = 0;
    for (Request* request : waiting) moved += assign_requested(allocator, *request);
    std::erase_if(waiting, [](const Request* request) { return !wants_requested(*request); });
  }
  for (Request& request : requests) {
    if (!request.ours) continue;
    assign_dynamic(allocator, request);
    undo_partial(allocator, request); // at once, so the next Service may take what it gave back
  }

  std::vector<Result> results;
  results.reserve(requests.size());
  for (const Request& request : requests) results.push_back(finish(request, config));
  return results;
}

} // namespace k8slb::allocate
