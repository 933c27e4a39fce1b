// Leader election on a coordination.k8s.io/v1 Lease, as client-go's leaderelection does it.
// See k8slb/cluster.hpp.
#include "k8slb/cluster.hpp"

#include <algorithm>
#include <cmath>
#include <thread>

#include <fmt/format.h>

#include "k8slb/kube.hpp"
#include "k8slb/metrics.hpp"

namespace k8slb::cluster {

namespace {

std::string text(const json& spec, const char* name) {
  auto it = spec.find(name);
  return it != spec.end() && it->is_string() ? it->get<std::string>() : std::string();
}

int number(const json& spec, const char* name) {
  auto it = spec.find(name);
  return it != spec.end() && it->is_number_integer() ? it->get<int>() : 0;
}

double seconds(Seconds value) { return value.count(); }

} // namespace

LeaseRecord lease_record_from(const json& lease) {
  LeaseRecord record;
  if (!lease.is_object() || !lease.contains("spec") || !lease["spec"].is_object()) return record;
  const json& spec = lease["spec"];
  record.holder_identity = text(spec, "holderIdentity");
  record.lease_duration_seconds = number(spec, "leaseDurationSeconds");
  record.acquire_time = text(spec, "acquireTime");
  record.renew_time = text(spec, "renewTime");
  record.lease_transitions = number(spec, "leaseTransitions");
  return record;
}

json lease_spec(const LeaseRecord& record) {
  json spec = {{"holderIdentity", record.holder_identity},
               {"leaseDurationSeconds", record.lease_duration_seconds},
               {"leaseTransitions", record.lease_transitions}};
  if (!record.acquire_time.empty()) spec["acquireTime"] = record.acquire_time;
  if (!record.renew_time.empty()) spec["renewTime"] = record.renew_time;
  return spec;
}

void validate(const ElectionConfig& config) {
  if (config.identity.empty()) fail("", "--identity", "must not be empty");
  if (config.lease_name.empty()) fail("", "--lease-name", "must not be empty");
  if (config.lease_namespace.empty()) fail("", "--lease-namespace", "must not be empty");
  double lease = seconds(config.lease_duration);
  if (lease < 1 || lease != std::floor(lease)) {
    fail("", "--lease-duration", fmt::format("{} s: must be a whole number of seconds, at least 1", lease));
  }
  if (seconds(config.retry_period) <= 0) fail("", "--retry-period", "must be more than 0");
  if (config.renew_deadline >= config.lease_duration) {
    fail("", "--renew-deadline",
         fmt::format("{} s must be less than --lease-duration {} s", seconds(config.renew_deadline), lease));
  }
  if (seconds(config.renew_deadline) <= seconds(config.retry_period) * 1.2) {
    fail("", "--renew-deadline",
         fmt::format("{} s must be more than 1.2 x --retry-period {} s", seconds(config.renew_deadline),
                     seconds(config.retry_period)));
  }
}

ElectorState observe(ElectorState state, const std::optional<LeaseRecord>& current, TimePoint now) {
  if (current != state.observed) {
    state.observed = current;
    state.observed_at = now;
  }
  return state;
}

std::string_view to_string(Action action) {
  switch (action) {
  case Action::create: return "create";
  case Action::take: return "take";
  case Action::renew: return "renew";
  case Action::wait: return "wait";
  case Action::stop: return "stop";
  }
  return "?";
}

bool may_lead(const ElectorState& state, TimePoint now, const ElectionConfig& config) {
  return state.leading && now - state.renewed_at < config.renew_deadline;
}

Decision decide(const ElectorState& state, TimePoint now, const std::string& wall_now,
                const ElectionConfig& config) {
  Decision decision;
  int duration = static_cast<int>(seconds(config.lease_duration));
  if (state.leading && !may_lead(state, now, config)) {
    decision.action = Action::stop;
    decision.reason = fmt::format("not renewed for {:.1f} s (deadline {} s)",
                                  seconds(now - state.renewed_at), seconds(config.renew_deadline));
    return decision;
  }
  if (!state.observed) {
    if (state.leading) {
      decision.action = Action::stop;
      decision.reason = "the lease was deleted";
      return decision;
    }
    decision.action = Action::create;
    decision.record = LeaseRecord{config.identity, duration, wall_now, wall_now, 0};
    decision.reason = "no lease yet";
    return decision;
  }
  const LeaseRecord& seen = *state.observed;
  bool ours = seen.holder_identity == config.identity;
  if (state.leading && !ours) {
    decision.action = Action::stop;
    decision.reason = seen.holder_identity.empty()
                          ? std::string("the lease was released")
                          : fmt::format("the lease is held by {}", seen.holder_identity);
    return decision;
  }
  if (ours) {
    decision.action = Action::renew;
    decision.record = LeaseRecord{config.identity, duration,
                                  seen.acquire_time.empty() ? wall_now : seen.acquire_time, wall_now,
                                  seen.lease_transitions};
    decision.reason = state.leading ? "ours" : "ours (resumed)";
    return decision;
  }
  // Someone else's, or nobody's. Valid while its duration has not passed since we saw it
  // change (our own clock: the holder's clock is not comparable to ours).
  auto valid_for = std::chrono::seconds(seen.lease_duration_seconds) - (now - state.observed_at);
  if (!seen.holder_identity.empty() && valid_for > Clock::duration::zero()) {
    decision.action = Action::wait;
    decision.reason = fmt::format("held by {} for {:.1f} s more at most", seen.holder_identity,
                                  seconds(std::chrono::duration_cast<Seconds>(valid_for)));
    return decision;
  }
  decision.action = Action::take;
  decision.record = LeaseRecord{config.identity, duration, wall_now, wall_now, seen.lease_transitions + 1};
  decision.reason = seen.holder_identity.empty()
                        ? std::string("free")
                        : fmt::format("{} did not renew for {} s", seen.holder_identity,
                                      seen.lease_duration_seconds);
  return decision;
}

ElectorState wrote(ElectorState state, const LeaseRecord& record, TimePoint now) {
  state.observed = record;
  state.observed_at = now;
  state.leading = true;
  state.renewed_at = now;
  return state;
}

// ---------------------------------------------------------------------------------------
// Elector

namespace {
metrics::Family& leader_gauge() {
  static auto& leader = metrics::process_registry().gauge("k8slb_leader", "1 while this replica holds the watcher's Lease.");
  return leader;
}

// k8slb_leader follows whether this replica leads after every round; a change is counted.
class LeadershipMetrics {
public:
  LeadershipMetrics(const bool& leading) : leading_(leading), was_(leading) {}
  ~LeadershipMetrics() {
    static auto& transitions = metrics::process_registry().counter(
        "k8slb_leader_transitions_total", "Times this replica started or stopped leading.");
    leader_gauge().set(leading_ ? 1 : 0);
    if (leading_ != was_) transitions.add();
  }

private:
  const bool& leading_;
  bool was_;
};
} // namespace

Elector::Elector(kube::Client& client, ElectionConfig config, Log log)
    : client_(client), config_(std::move(config)), log_(std::move(log)) {
  validate(config_);
  leader_gauge().set(0); // until the first round says otherwise
}

bool Elector::leading() const {
  std::lock_guard lock(mutex_);
  return may_lead(state_, Clock::now(), config_);
}

Action Elector::try_acquire_or_renew() {
  std::lock_guard lock(mutex_);
  const kube::ResourceKind& leases = kube::find_kind("leases");
  std::string path = kube::object_path(leases, config_.lease_namespace, config_.lease_name);
  std::string name = config_.lease_namespace + "/" + config_.lease_name;
  bool was_leading = state_.leading;
  LeadershipMetrics reported(state_.leading);
  last_round_failed_ = false;
  try {
    // The leader's fast path (client-go's since 1.27): renew with one PUT on the Lease as last
    // read or written, no GET first. A 409 (someone wrote it since) falls back to the full
    // round; any other failure is a failed round. One request instead of two halves what an
    // error storm takes from a leader's renewals. The same when the last read showed this
    // identity holding it (a pipeline resuming after the gate, whose first PUT failed): the
    // resourceVersion precondition makes the PUT succeed only if nobody wrote it since.
    if (lease_.is_object() && !resource_version_.empty() && state_.observed &&
        state_.observed->holder_identity == config_.identity &&
        (!was_leading || may_lead(state_, Clock::now(), config_))) {
      std::string wall_now = rfc3339_micro(std::chrono::system_clock::now());
      Decision decision = decide(state_, Clock::now(), wall_now, config_);
      if (decision.action == Action::renew) {
        json object = lease_;
        object["metadata"]["resourceVersion"] = resource_version_;
        object["spec"] = lease_spec(decision.record);
        const TimePoint sent = Clock::now();
        kube::Response answer = client_.request("PUT", path, object.dump());
        if (answer.ok()) {
          json written = json::parse(answer.body, nullptr, false);
          if (written.is_object()) {
            lease_ = written;
            resource_version_ = written.value(json::json_pointer("/metadata/resourceVersion"), resource_version_);
          }
          state_ = wrote(state_, decision.record, sent);
          if (!was_leading) {
            log_(fmt::format("lease {}: leading as {} ({}; transitions {})", name, config_.identity,
                             decision.reason, decision.record.lease_transitions));
          }
          return Action::renew;
        }
        if (answer.status != 409) {
          throw kube::ApiError("PUT", client_.url(path), answer.status, answer.status_message());
        }
      }
    }
    kube::Response got = client_.request("GET", path);
    TimePoint now = Clock::now();
    std::optional<LeaseRecord> current;
    json lease;
    if (got.ok()) {
      lease = json::parse(got.body);
      current = lease_record_from(lease);
      resource_version_ = lease.value(json::json_pointer("/metadata/resourceVersion"), std::string());
      lease_ = lease;
    } else if (got.status != 404) {
      throw kube::ApiError("GET", client_.url(path), got.status, got.status_message());
    }
    state_ = observe(state_, current, now);
    std::string wall_now = rfc3339_micro(std::chrono::system_clock::now());
    Decision decision = decide(state_, now, wall_now, config_);
    if (decision.action == Action::stop) {
      state_.leading = false;
      log_(fmt::format("lease {}: stopped leading: {}", name, decision.reason));
      return Action::stop;
    }
    if (decision.action == Action::wait) return Action::wait;

    kube::Response answer;
    // The lease runs from when the write was sent, not from when its answer came back: a slow
    // answer must not stretch how long this replica believes it leads.
    const TimePoint sent = Clock::now();
    if (decision.action == Action::create) {
      json object = {{"apiVersion", leases.api_version()},
                     {"kind", leases.kind},
                     {"metadata", {{"name", config_.lease_name}, {"namespace", config_.lease_namespace}}},
                     {"spec", lease_spec(decision.record)}};
      answer = client_.request("POST", kube::collection_path(leases, config_.lease_namespace), object.dump());
    } else {
      json object = lease.is_object() ? lease : json::object();
      object["apiVersion"] = leases.api_version();
      object["kind"] = leases.kind;
      object["metadata"]["name"] = config_.lease_name;
      object["metadata"]["namespace"] = config_.lease_namespace;
      object["metadata"]["resourceVersion"] = resource_version_;
      object["spec"] = lease_spec(decision.record);
      answer = client_.request("PUT", path, object.dump());
    }
    if (answer.ok()) {
      json written = json::parse(answer.body, nullptr, false);
      if (written.is_object()) {
        resource_version_ = written.value(json::json_pointer("/metadata/resourceVersion"), resource_version_);
        lease_ = written;
      }
      state_ = wrote(state_, decision.record, sent);
      if (!was_leading) {
        log_(fmt::format("lease {}: leading as {} ({}; transitions {})", name, config_.identity,
                         decision.reason, decision.record.lease_transitions));
      }
      return decision.action;
    }
    if (answer.status == 409) {
      // Lost the race: someone wrote the lease since we read it.
      if (!was_leading) return Action::wait;
      last_round_failed_ = true;
    } else {
      last_round_failed_ = true;
      log_(fmt::format("lease {}: {} answered {}: {}", name, to_string(decision.action), answer.status,
                       answer.status_message()));
    }
  } catch (const std::exception& error) {
    last_round_failed_ = true;
    log_(fmt::format("lease {}: {}", name, error.what()));
  }
  // The round failed. A leader keeps leading until renew_deadline has passed.
  if (was_leading && !may_lead(state_, Clock::now(), config_)) {
    state_.leading = false;
    log_(fmt::format("lease {}: stopped leading: not renewed for {} s", name,
                     seconds(config_.renew_deadline)));
    return Action::stop;
  }
  return Action::wait;
}

bool Elector::last_round_failed() const {
  std::lock_guard lock(mutex_);
  return last_round_failed_;
}

Seconds Elector::next_round_in() const {
  if (!last_round_failed()) return config_.retry_period;
  return std::min(config_.retry_period, std::max(config_.retry_period / 4, Seconds(0.25)));
}

std::optional<Action> Elector::resume(const std::atomic<bool>& cancelled) {
  const TimePoint deadline =
      Clock::now() + std::chrono::duration_cast<Clock::duration>(config_.renew_deadline);
  while (!cancelled) {
    Action action = try_acquire_or_renew();
    if (!last_round_failed()) return action;
    auto until = std::min(deadline, Clock::now() + std::chrono::duration_cast<Clock::duration>(
                                                       next_round_in()));
    if (until >= deadline) break;
    while (!cancelled && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  if (!cancelled) {
    log_(fmt::format("lease {}/{}: stopped leading: not renewed for {} s", config_.lease_namespace,
                     config_.lease_name, seconds(config_.renew_deadline)));
  }
  return std::nullopt;
}

bool Elector::acquire(const std::atomic<bool>& cancelled) {
  while (!cancelled) {
    Action action = try_acquire_or_renew();
    if ((action == Action::create || action == Action::take || action == Action::renew) && leading()) {
      return true;
    }
    auto until = Clock::now() + std::chrono::duration_cast<Clock::duration>(config_.retry_period);
    while (!cancelled && Clock::now() < until) {
      std::this_thread::sleep_for(std::chrono::milliseconds(50));
    }
  }
  return false;
}

void Elector::release() {
  std::lock_guard lock(mutex_);
  if (!state_.leading) return;
  LeadershipMetrics reported(state_.leading);
  const kube::ResourceKind& leases = kube::find_kind("leases");
  std::string path = kube::object_path(leases, config_.lease_namespace, config_.lease_name);
  std::string wall_now = rfc3339_micro(std::chrono::system_clock::now());
  LeaseRecord record{"", 1, wall_now, wall_now,
                     state_.observed ? state_.observed->lease_transitions : 0};
  json object = {{"apiVersion", leases.api_version()},
                 {"kind", leases.kind},
                 {"metadata",
                  {{"name", config_.lease_name},
                   {"namespace", config_.lease_namespace},
                   {"resourceVersion", resource_version_}}},
                 {"spec", lease_spec(record)}};
  state_.leading = false;
  try {
    kube::Response answer = client_.request("PUT", path, object.dump());
    if (answer.ok()) {
      log_(fmt::format("lease {}/{}: released", config_.lease_namespace, config_.lease_name));
    } else {
      log_(fmt::format("lease {}/{}: release answered {}", config_.lease_namespace, config_.lease_name,
                       answer.status));
    }
  } catch (const std::exception& error) {
    log_(fmt::format("lease {}/{}: release: {}", config_.lease_namespace, config_.lease_name, error.what()));
  }
}

} // namespace k8slb::cluster
