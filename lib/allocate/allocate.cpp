#include "k8slb/allocate.hpp"

#include <algorithm>
#include <cassert>
#include <map>
#include <set>

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

// The pool of the address a slot holds (its status) when that is another configured pool than
// the one the Service asks for, which it did not ask for by address: the Service is moving.
const pool::Pool* misfit_pool_of(const Request& request, const Slot& slot, const pool::Config& config) {
  if (request.problem || slot.pool_problem || !slot.pool || !slot.existing || slot.requested ||
      slot.pool->network.contains(*slot.existing))
    return nullptr;
  return detail::pool_holding(config, *slot.existing);
}

// The claim on the address a slot holds. A moving Service's address is held as its own
// pool's until the move, so it never joins the new pool's sharing group.
Claim existing_claim(const Request& request, const Slot& slot, const pool::Config& config) {
  Claim claim = claim_for(request, slot, slot.requested == slot.existing);
  if (const pool::Pool* pool = misfit_pool_of(request, slot, config)) claim.pool = pool->name;
  return claim;
}

// Phase 1: the addresses Services already hold stay theirs. Two holders of one address that
// may not share it: the first in namespace/name order keeps it, the other loses it. An address
// in another configured pool than the one the Service asks for (its pool annotation changed)
// is held until phase 3 finds it a new one.
void keep_existing(Allocator& allocator, Request& request, const pool::Config& config) {
  for (Slot& slot : request.slots) {
    if (!slot.existing) continue;
    const ip::Address& address = *slot.existing;
    const pool::Pool* misfit_pool = misfit_pool_of(request, slot, config);
    Claim claim = existing_claim(request, slot, config);
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
      if (misfit_pool) {
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

// The phases over `batch` (in namespace/name order), with `allocator` holding the claims of
// every other Service.
void run_phases(Allocator& allocator, const std::vector<Request*>& batch, const pool::Config& config) {
  for (Request* request : batch)
    if (request->ours) keep_existing(allocator, *request, config);
  // Phase 2 runs again over the requests still waiting as long as a pass freed addresses: a
  // Service that moves to its new loadBalancerIP frees its old one, which a Service earlier in
  // namespace/name order may have asked for. Each pass but the last frees at least one address,
  // and a slot moves once, so the passes are bounded by the number of moves.
  std::vector<Request*> waiting;
  for (Request* request : batch)
    if (request->ours && wants_requested(*request)) waiting.push_back(request);
  for (int moved = 1; moved > 0 && !waiting.empty();) {
    moved = 0;
    for (Request* request : waiting) moved += assign_requested(allocator, *request);
    std::erase_if(waiting, [](const Request* request) { return !wants_requested(*request); });
  }
  for (Request* request : batch) {
    if (!request->ours) continue;
    assign_dynamic(allocator, *request);
    undo_partial(allocator, *request); // at once, so the next Service may take what it gave back
  }
}

// A request whose result no run over other Services can change: every address it has is the
// one its status shows and the one it asks for. Its claims conflict with nobody's (the
// allocator took them), so a full run keeps them in phase 1 and leaves it alone after.
bool settled(const Request& request) {
  if (!request.ours) return true;
  return std::all_of(request.slots.begin(), request.slots.end(), [](const Slot& slot) {
    return slot.held && slot.held_is_existing && !slot.misfit && !slot.moved_from &&
           (!slot.requested || slot.held == slot.requested);
  });
}

bool same_notes(const std::vector<Result::Note>& a, const std::vector<Result::Note>& b) {
  return std::equal(a.begin(), a.end(), b.begin(), b.end(), [](const auto& x, const auto& y) {
    return x.type == y.type && x.problem == y.problem;
  });
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
  std::vector<Request*> batch;
  batch.reserve(requests.size());
  for (Request& request : requests) batch.push_back(&request);

  Allocator allocator;
  run_phases(allocator, batch, config);

  std::vector<Result> results;
  results.reserve(requests.size());
  for (const Request& request : requests) results.push_back(finish(request, config));
  return results;
}

bool same_result(const Result& a, const Result& b) {
  return a.service == b.service && a.outcome == b.outcome && a.ips == b.ips && a.pools == b.pools &&
         a.problem == b.problem && a.released == b.released && same_notes(a.notes, b.notes);
}

// ---------------------------------------------------------------------------------------
// Tracker

void Tally::add(const Result& result) {
  if (result.outcome == Outcome::failed && result.problem) ++failures[result.problem->reason];
  if (result.outcome == Outcome::released) return;
  for (const ip::Address& address : result.ips) ++held[address];
  if (!result.ips.empty()) ++allocated;
}

void Tally::remove(const Result& result) {
  if (result.outcome == Outcome::failed && result.problem) {
    auto found = failures.find(result.problem->reason);
    if (found != failures.end() && --found->second == 0) failures.erase(found);
  }
  if (result.outcome == Outcome::released) return;
  for (const ip::Address& address : result.ips) {
    auto found = held.find(address);
    if (found != held.end() && --found->second == 0) held.erase(found);
  }
  if (!result.ips.empty()) --allocated;
}

Tally Tally::of(const std::vector<Result>& results) {
  Tally tally;
  for (const Result& result : results) tally.add(result);
  return tally;
}

struct Tracker::State {
  using Key = std::pair<std::string, std::string>; // (namespace, name): allocate()'s order
  struct Entry {
    model::Service service;
    Request request; // refers to `service`; its claims are in `allocator`
    Result result;
  };

  Options options;
  pool::Config config; // the claims refer to its pool names: replaced only with a full run
  bool configured = false;
  std::map<Key, Entry> entries; // nodes never move: the requests' pointers stay valid
  std::set<Key> waiting;        // entries whose request is not settled
  Allocator allocator;
  std::size_t full_runs = 0;
  Tally tally; // of every entry's result

  void rebuild(Entry& entry) {
    entry.request = detail::make_request(entry.service, config, options);
  }
  void release(Entry& entry) {
    for (const Slot& slot : entry.request.slots)
      if (slot.held) allocator.unassign(*slot.held, entry.request.key);
  }
  // Records the entry's new result; returns whether it changed.
  bool settle(const Key& key, Entry& entry) {
    Result result = finish(entry.request, config);
    bool changed = !same_result(result, entry.result);
    tally.remove(entry.result);
    tally.add(result);
    entry.result = std::move(result);
    if (settled(entry.request)) waiting.erase(key);
    else waiting.insert(key);
    return changed;
  }

  // Everything again, as allocate(). Returns the results that changed, and those of `always`.
  std::vector<Result> full_run(const std::set<Key>& always) {
    ++full_runs;
    allocator = Allocator();
    waiting.clear();
    std::vector<Request*> batch;
    batch.reserve(entries.size());
    for (auto& [key, entry] : entries) {
      rebuild(entry);
      batch.push_back(&entry.request);
    }
    run_phases(allocator, batch, config);
    std::vector<Result> changed;
    for (auto& [key, entry] : entries)
      if (settle(key, entry) || always.count(key)) changed.push_back(entry.result);
    return changed;
  }

  // Services replaced (a Service set) or deleted (nullopt), in order: they and the waiting
  // Services are allocated again, together, against the settled ones' claims. Returns the
  // results that changed and those of the Services replaced.
  std::vector<Result> change(std::vector<std::pair<Key, std::optional<model::Service>>> changes) {
    std::set<Key> batch_keys = waiting;
    std::set<Key> replaced;
    for (const Key& waiting_key : waiting) release(entries.at(waiting_key));
    for (auto& [key, service] : changes) {
      auto found = entries.find(key);
      if (found != entries.end() && !batch_keys.count(key)) release(found->second);
      if (service) {
        if (found == entries.end()) found = entries.try_emplace(key).first;
        found->second.service = std::move(*service);
        batch_keys.insert(key);
        replaced.insert(key);
      } else {
        if (found != entries.end()) {
          tally.remove(found->second.result);
          entries.erase(found);
        }
        waiting.erase(key);
        batch_keys.erase(key);
        replaced.erase(key);
      }
    }
    std::vector<Request*> batch;
    for (const Key& batch_key : batch_keys) {
      Entry& entry = entries.at(batch_key);
      rebuild(entry);
      batch.push_back(&entry.request);
    }
    // An address the batch's Services hold in their status that a settled Service holds too:
    // in a full run the first in namespace/name order keeps it, so run everything.
    for (const Request* request : batch) {
      if (!request->ours) continue;
      for (const Slot& slot : request->slots)
        if (slot.existing && allocator.conflict(*slot.existing, existing_claim(*request, slot, config)))
          return full_run(replaced);
    }
    run_phases(allocator, batch, config);
    std::vector<Result> changed;
    for (const Key& batch_key : batch_keys) {
      Entry& entry = entries.at(batch_key);
      if (settle(batch_key, entry) || replaced.count(batch_key)) changed.push_back(entry.result);
    }
    return changed;
  }

  void require_config() const {
    if (!configured) throw Error("allocation tracker: no config yet (reset() first)");
  }
};

Tracker::Tracker(Options options) : state_(std::make_unique<State>()) {
  state_->options = std::move(options);
}
Tracker::~Tracker() = default;
Tracker::Tracker(Tracker&&) noexcept = default;
Tracker& Tracker::operator=(Tracker&&) noexcept = default;

std::vector<Result> Tracker::reset(const pool::Config& config, std::vector<model::Service> services) {
  State& state = *state_;
  state.entries.clear();
  state.tally = Tally();
  state.config = config;
  state.configured = true;
  for (model::Service& service : services) {
    State::Key key{service.ns, service.name};
    state.entries[std::move(key)].service = std::move(service);
  }
  state.full_run({});
  return results();
}

std::vector<Result> Tracker::set_config(const pool::Config& config) {
  state_->config = config;
  state_->configured = true;
  return state_->full_run({});
}

std::vector<Result> Tracker::upsert(model::Service service) {
  std::vector<model::Service> one;
  one.push_back(std::move(service));
  return update(std::move(one), {});
}

std::vector<Result> Tracker::erase(const std::string& ns, const std::string& name) {
  return update({}, {{ns, name}});
}

std::vector<Result> Tracker::update(std::vector<model::Service> upserted,
                                    const std::vector<std::pair<std::string, std::string>>& erased) {
  state_->require_config();
  std::vector<std::pair<State::Key, std::optional<model::Service>>> changes;
  changes.reserve(upserted.size() + erased.size());
  for (const auto& key : erased) changes.emplace_back(key, std::nullopt);
  for (model::Service& service : upserted) {
    State::Key key{service.ns, service.name};
    changes.emplace_back(std::move(key), std::move(service));
  }
  return state_->change(std::move(changes));
}

std::vector<Result> Tracker::results() const {
  std::vector<Result> out;
  out.reserve(state_->entries.size());
  for (const auto& [key, entry] : state_->entries) out.push_back(entry.result);
  return out;
}

const Result* Tracker::result(const std::string& ns, const std::string& name) const {
  auto it = state_->entries.find({ns, name});
  return it == state_->entries.end() ? nullptr : &it->second.result;
}

const model::Service* Tracker::find(const std::string& ns, const std::string& name) const {
  auto it = state_->entries.find({ns, name});
  return it == state_->entries.end() ? nullptr : &it->second.service;
}

std::size_t Tracker::size() const { return state_->entries.size(); }
std::size_t Tracker::waiting() const { return state_->waiting.size(); }
std::size_t Tracker::full_runs() const { return state_->full_runs; }
const Tally& Tracker::tally() const { return state_->tally; }

} // namespace k8slb::allocate
