// Writing k8slb-allocate's decisions to the API: the plan of a document, Events and their rate
// limit, and the writer that sends them. See k8slb/cluster.hpp.
#include "k8slb/cluster.hpp"
#include "k8slb/metrics.hpp"
#include "k8slb/hash.hpp"

#include <algorithm>
#include <cstdio>
#include <ctime>
#include <iostream>
#include <set>

#include <fmt/format.h>

#include "k8slb/kube.hpp"

namespace k8slb::cluster {

namespace {

const json& field(const json& object, std::initializer_list<const char*> path) {
  static const json null_value;
  const json* at = &object;
  for (const char* name : path) {
    if (!at->is_object()) return null_value;
    auto it = at->find(name);
    if (it == at->end()) return null_value;
    at = &*it;
  }
  return *at;
}

std::string string_field(const json& object, std::initializer_list<const char*> path) {
  const json& value = field(object, path);
  return value.is_string() ? value.get<std::string>() : std::string();
}

bool is_list(const json& document) {
  if (!document.is_object()) return false;
  std::string kind = string_field(document, {"kind"});
  return kind.size() >= 4 && kind.compare(kind.size() - 4, 4, "List") == 0;
}

json ingress_of(const json& service) {
  const json& ingress = field(service, {"status", "loadBalancer", "ingress"});
  return ingress.is_array() ? ingress : json::array();
}

json annotations_without_ours(const json& service) {
  json annotations = field(service, {"metadata", "annotations"});
  if (!annotations.is_object()) return json::object();
  annotations.erase(kPreviousIngressAnnotation);
  // k8slb-watch leaves this one out of its documents; a fresh GET still carries it.
  annotations.erase(kube::kLastAppliedAnnotation);
  return annotations;
}

json normalised_entry(const json& entry) {
  json out = json::object();
  for (const char* name : {"ip", "hostname", "ipMode"}) {
    std::string value = string_field(entry, {name});
    if (!value.empty()) out[name] = value;
  }
  const json& ports = field(entry, {"ports"});
  if (ports.is_array() && !ports.empty()) out["ports"] = ports;
  return out;
}

} // namespace

bool is_status_reason(std::string_view reason) {
  return reason == kReasonAllocated || reason == kReasonReleased || reason == kReasonStatusUpdated;
}

Plan plan_document(const json& document) {
  Plan plan;
  std::vector<const json*> items; // no copies: a document may hold 10,000 Services
  if (is_list(document)) {
    const json& list = field(document, {"items"});
    if (list.is_array()) {
      items.reserve(list.size());
      for (const json& item : list) items.push_back(&item);
    }
  } else if (document.is_object()) {
    items.push_back(&document);
  }

  std::map<std::string, const json*> services; // namespace/name -> the Service item
  for (const json* item_pointer : items) {
    const json& item = *item_pointer;
    if (!item.is_object()) continue;
    std::string kind = string_field(item, {"kind"});
    if (kind == "Service") {
      std::string key =
          string_field(item, {"metadata", "namespace"}) + "/" + string_field(item, {"metadata", "name"});
      services[key] = &item;
      plan.shown.push_back(key);
    } else if (kind == "Event") {
      plan.events.push_back(item);
    }
  }

  std::set<std::string> planned;
  for (const json& event : plan.events) {
    std::string reason = string_field(event, {"reason"});
    if (!is_status_reason(reason)) continue;
    if (string_field(event, {"involvedObject", "kind"}) != "Service") continue;
    std::string key = string_field(event, {"involvedObject", "namespace"}) + "/" +
                      string_field(event, {"involvedObject", "name"});
    if (!planned.insert(key).second) continue;
    auto it = services.find(key);
    if (it == services.end()) {
      plan.errors.push_back(describe(key, "", fmt::format("Event {} names a Service that is not "
                                                          "in the document",
                                                          reason)));
      continue;
    }
    const json& service = *it->second;
    StatusWrite write;
    write.ns = string_field(service, {"metadata", "namespace"});
    write.name = string_field(service, {"metadata", "name"});
    write.uid = string_field(service, {"metadata", "uid"});
    write.resource_version = string_field(service, {"metadata", "resourceVersion"});
    write.ingress = ingress_of(service);
    write.service = service;
    std::string previous = string_field(service, {"metadata", "annotations", kPreviousIngressAnnotation});
    if (!previous.empty()) {
      json parsed = json::parse(previous, nullptr, false);
      if (parsed.is_array()) write.previous_ingress = parsed;
    }
    plan.writes.push_back(std::move(write));
  }
  std::sort(plan.writes.begin(), plan.writes.end(),
            [](const StatusWrite& a, const StatusWrite& b) {
              return std::tie(a.ns, a.name) < std::tie(b.ns, b.name);
            });
  return plan;
}

std::string describe_ingress(const json& ingress) {
  std::string out = "[";
  bool first = true;
  if (ingress.is_array()) {
    for (const json& entry : ingress) {
      if (!first) out += ", ";
      first = false;
      std::string ip = string_field(entry, {"ip"});
      out += ip.empty() ? string_field(entry, {"hostname"}) : ip;
      std::string mode = string_field(entry, {"ipMode"});
      if (!mode.empty() && mode != "Proxy") out += " (" + mode + ")";
    }
  }
  return out + "]";
}

bool same_ingress(const json& a, const json& b) {
  json left = a.is_array() ? a : json::array();
  json right = b.is_array() ? b : json::array();
  if (left.size() != right.size()) return false;
  for (std::size_t i = 0; i < left.size(); ++i) {
    if (normalised_entry(left[i]) != normalised_entry(right[i])) return false;
  }
  return true;
}

std::string_view to_string(Recheck recheck) {
  switch (recheck) {
  case Recheck::reapply: return "reapply";
  case Recheck::already_current: return "already current";
  case Recheck::changed: return "changed";
  }
  return "?";
}

Recheck may_reapply(const StatusWrite& write, const json& fresh) {
  json fresh_ingress = ingress_of(fresh);
  if (same_ingress(fresh_ingress, write.ingress)) return Recheck::already_current;
  if (!write.previous_ingress) return Recheck::changed;
  if (!same_ingress(fresh_ingress, *write.previous_ingress)) return Recheck::changed;
  if (string_field(fresh, {"metadata", "uid"}) != write.uid) return Recheck::changed;
  if (field(fresh, {"spec"}) != field(write.service, {"spec"})) return Recheck::changed;
  if (annotations_without_ours(fresh) != annotations_without_ours(write.service)) {
    return Recheck::changed;
  }
  return Recheck::reapply;
}

std::optional<std::string> predates_writes(const json& document,
                                           std::map<std::string, std::string>& superseded) {
  if (superseded.empty()) return std::nullopt;
  std::map<std::string, std::string> shown; // namespace/name -> resourceVersion in the document
  const json* items = &document;
  json single = json::array();
  if (is_list(document)) {
    items = &field(document, {"items"});
  } else {
    single.push_back(document);
    items = &single;
  }
  if (items->is_array()) {
    for (const json& item : *items) {
      if (string_field(item, {"kind"}) != "Service") continue;
      shown[string_field(item, {"metadata", "namespace"}) + "/" + string_field(item, {"metadata", "name"})] =
          string_field(item, {"metadata", "resourceVersion"});
    }
  }
  std::optional<std::string> stale;
  for (auto it = superseded.begin(); it != superseded.end();) {
    auto found = shown.find(it->first);
    if (found != shown.end() && found->second == it->second) {
      if (!stale) stale = it->first;
      ++it;
    } else {
      it = superseded.erase(it);
    }
  }
  return stale;
}

json status_patch(const json& ingress, const std::string& resource_version) {
  json patch = {{"status", {{"loadBalancer", {{"ingress", ingress.is_array() ? ingress : json::array()}}}}}};
  if (!resource_version.empty()) patch["metadata"] = {{"resourceVersion", resource_version}};
  return patch;
}

// ---------------------------------------------------------------------------------------
// Events

namespace {
std::tm utc(std::chrono::system_clock::time_point time) {
  std::time_t seconds = std::chrono::system_clock::to_time_t(time);
  std::tm out{};
  gmtime_r(&seconds, &out);
  return out;
}
} // namespace

std::string rfc3339(std::chrono::system_clock::time_point time) {
  std::tm t = utc(time);
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec);
}

std::string rfc3339_micro(std::chrono::system_clock::time_point time) {
  std::tm t = utc(time);
  auto micros = std::chrono::duration_cast<std::chrono::microseconds>(time.time_since_epoch()).count();
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:06}Z", t.tm_year + 1900, t.tm_mon + 1,
                     t.tm_mday, t.tm_hour, t.tm_min, t.tm_sec,
                     static_cast<long long>(((micros % 1000000) + 1000000) % 1000000));
}

std::string action_for(std::string_view reason) {
  if (reason == kReasonAllocated || reason == "AllocationFailed" || reason == "InvalidService") {
    return "Allocate";
  }
  if (reason == kReasonReleased) return "Release";
  if (reason == kReasonStatusUpdated) return "UpdateStatus";
  return "Report";
}

json complete_event(json event, std::chrono::system_clock::time_point now,
                    const std::string& instance) {
  std::string ns = string_field(event, {"involvedObject", "namespace"});
  std::string name = string_field(event, {"involvedObject", "name"});
  auto nanos = std::chrono::duration_cast<std::chrono::nanoseconds>(now.time_since_epoch()).count();
  json& metadata = event["metadata"];
  if (!metadata.is_object()) metadata = json::object();
  metadata.erase("generateName");
  if (string_field(metadata, {"namespace"}).empty()) metadata["namespace"] = ns.empty() ? "default" : ns;
  metadata["name"] = fmt::format("{}.{:x}", name.empty() ? std::string("k8slb") : name,
                                 static_cast<unsigned long long>(nanos));
  event["apiVersion"] = "v1";
  event["kind"] = "Event";
  event["firstTimestamp"] = rfc3339(now);
  event["lastTimestamp"] = rfc3339(now);
  event["eventTime"] = rfc3339_micro(now);
  event["count"] = 1;
  if (string_field(event, {"type"}).empty()) event["type"] = "Normal";
  event["action"] = action_for(string_field(event, {"reason"}));
  if (string_field(event, {"reportingComponent"}).empty()) event["reportingComponent"] = "k8slb";
  event["reportingInstance"] = instance.substr(0, 128);
  if (!event["source"].is_object()) event["source"] = json::object();
  if (string_field(event, {"source", "component"}).empty()) event["source"]["component"] = "k8slb";
  std::string message = string_field(event, {"message"});
  if (message.size() > 1024) {
    std::size_t cut = 1021;
    while (cut > 0 && (static_cast<unsigned char>(message[cut]) & 0xC0) == 0x80) --cut; // UTF-8
    event["message"] = message.substr(0, cut) + "...";
  }
  return event;
}

std::string event_key(const json& event) {
  return fmt::format("{}/{}/{}/{}", string_field(event, {"involvedObject", "namespace"}),
                     string_field(event, {"involvedObject", "name"}),
                     string_field(event, {"reason"}), string_field(event, {"message"}));
}

std::string shared_event_name(const json& event) {
  std::string name = string_field(event, {"involvedObject", "name"});
  std::string identity = fmt::format("{}\n{}\n{}", string_field(event, {"involvedObject", "uid"}), event_key(event),
                                     string_field(event, {"type"}));
  // Object names are at most 253 characters; keep the Event's name within that too.
  return fmt::format("{}.k8slb-{:016x}", name.empty() ? std::string("k8slb") : name.substr(0, 200),
                     static_cast<unsigned long long>(stable_hash(identity)));
}

std::vector<json> TakeoverTracker::taken(const std::set<std::string>& held) {
  for (auto it = reported_.begin(); it != reported_.end();) it = held.count(*it) ? std::next(it) : reported_.erase(it);
  std::vector<json> events;
  for (const std::string& vip : held) {
    auto services = vips_.find(vip);
    if (services == vips_.end() || !services->is_array() || reported_.count(vip)) continue;
    reported_.insert(vip);
    for (const json& service : *services) {
      if (!service.is_object()) continue;
      const std::string ns = string_field(service, {"namespace"}), name = string_field(service, {"name"});
      if (ns.empty() || name.empty()) continue;
      events.push_back({{"apiVersion", "v1"},
                        {"kind", "Event"},
                        {"metadata", {{"namespace", ns}, {"generateName", name + "."}}},
                        {"involvedObject",
                         {{"apiVersion", "v1"}, {"kind", "Service"}, {"namespace", ns}, {"name", name},
                          {"uid", string_field(service, {"uid"})}}},
                        {"reason", "NodeAssigned"},
                        {"message", fmt::format("{} is served by node {}", vip, node_)},
                        {"type", "Normal"},
                        {"source", {{"component", "k8slb"}, {"host", node_}}},
                        {"reportingComponent", "k8slb"}});
    }
  }
  return events;
}

TokenBucket::TokenBucket(double burst, double per_second)
    : burst_(burst), per_second_(per_second), tokens_(burst) {}

bool TokenBucket::take(TimePoint now) {
  if (last_) {
    double elapsed = std::chrono::duration_cast<Seconds>(now - *last_).count();
    if (elapsed > 0) tokens_ = std::min(burst_, tokens_ + elapsed * per_second_);
  }
  if (!last_ || now > *last_) last_ = now;
  if (tokens_ < 1.0) return false;
  tokens_ -= 1.0;
  return true;
}

std::string_view to_string(EventLimiter::Verdict verdict) {
  switch (verdict) {
  case EventLimiter::Verdict::create: return "create";
  case EventLimiter::Verdict::update: return "update";
  case EventLimiter::Verdict::suppress: return "suppress";
  case EventLimiter::Verdict::drop: return "drop";
  }
  return "?";
}

EventLimiter::EventLimiter(EventLimits limits)
    : limits_(limits), bucket_(limits.burst, limits.per_second) {}

EventLimiter::Decision EventLimiter::check(const std::string& key, TimePoint now) {
  Decision decision;
  auto it = records_.find(key);
  if (it == records_.end()) {
    decision.verdict = bucket_.take(now) ? Verdict::create : Verdict::drop;
    return decision;
  }
  Record& record = it->second;
  if (now - record.written < limits_.interval) {
    ++record.pending;
    decision.verdict = Verdict::suppress;
    return decision;
  }
  if (!bucket_.take(now)) {
    ++record.pending;
    decision.verdict = Verdict::drop;
    return decision;
  }
  decision.verdict = Verdict::update;
  decision.name = record.name;
  decision.first_timestamp = record.first_timestamp;
  decision.count = record.count + record.pending + 1;
  return decision;
}

void EventLimiter::created(const std::string& key, const std::string& name,
                           const std::string& first_timestamp, TimePoint now) {
  records_[key] = Record{name, first_timestamp, 1, 0, now};
}

void EventLimiter::updated(const std::string& key, std::int64_t count, TimePoint now) {
  auto it = records_.find(key);
  if (it == records_.end()) return;
  it->second.count = count;
  it->second.pending = 0;
  it->second.written = now;
}

void EventLimiter::forget(const std::string& key) { records_.erase(key); }

void EventLimiter::expire(TimePoint now, Seconds age) {
  for (auto it = records_.begin(); it != records_.end();) {
    if (now - it->second.written > age) {
      it = records_.erase(it);
    } else {
      ++it;
    }
  }
}

// ---------------------------------------------------------------------------------------
// The writer

ClusterWriter::ClusterWriter(kube::Client* client, WriterOptions options, Log log,
                             std::function<bool()> may_write)
    : client_(client), options_(std::move(options)), log_(std::move(log)),
      may_write_(std::move(may_write)), limiter_(options_.event_limits) {}

void ClusterWriter::check_may_write() const {
  if (may_write_ && !may_write_()) {
    throw Error("no longer the leader: stopped writing");
  }
}

// Sends one request (or prints it with dry_run, answering 200 with the body). `status`
// receives the HTTP status; the answer's body is returned as json (null when not JSON).
json ClusterWriter::send(std::string_view method, const std::string& path, const json& body,
                         std::string_view content_type, int& status) {
  check_may_write();
  if (options_.dry_run || client_ == nullptr) {
    json request = {{"method", method}, {"path", path}, {"body", body}};
    std::cout << request.dump() << '\n' << std::flush;
    status = 200;
    return body;
  }
  kube::Response response = client_->request(method, path, body.dump(), content_type);
  status = response.status;
  return json::parse(response.body, nullptr, false);
}

ClusterWriter::StatusOutcome ClusterWriter::write_status(const StatusWrite& write) {
  const kube::ResourceKind& services = kube::find_kind("services");
  std::string path = kube::object_path(services, write.ns, write.name, "status");
  std::string key = write.key();
  try {
    int status = 0;
    send("PATCH", path, status_patch(write.ingress, write.resource_version),
         "application/merge-patch+json", status);
    if (status >= 200 && status < 300) {
      log_(fmt::format("{}: status.loadBalancer.ingress = {}", key, describe_ingress(write.ingress)));
      return StatusOutcome::written;
    }
    if (status == 404) {
      log_(fmt::format("{}: gone; status not written", key));
      return StatusOutcome::skipped;
    }
    if (status != 409) {
      log_(fmt::format("{}: status.loadBalancer.ingress: PATCH answered {}", key, status));
      return status >= 400 && status < 500 && status != 429 ? StatusOutcome::refused : StatusOutcome::failed;
    }
    // 409: the Service changed since the allocator saw it.
    check_may_write();
    std::optional<json> fresh = client_->get_optional(kube::object_path(services, write.ns, write.name));
    if (!fresh) {
      log_(fmt::format("{}: gone; status not written", key));
      return StatusOutcome::skipped;
    }
    std::string fresh_version = string_field(*fresh, {"metadata", "resourceVersion"});
    switch (may_reapply(write, *fresh)) {
    case Recheck::already_current:
      log_(fmt::format("{}: status.loadBalancer.ingress is already {}", key,
                       describe_ingress(write.ingress)));
      return StatusOutcome::current;
    case Recheck::changed:
      log_(fmt::format("{}: changed since the allocator saw it (resourceVersion {} -> {}); left to "
                       "the next document",
                       key, write.resource_version, fresh_version));
      return StatusOutcome::skipped;
    case Recheck::reapply:
      break;
    }
    send("PATCH", path, status_patch(write.ingress, fresh_version), "application/merge-patch+json",
         status);
    if (status >= 200 && status < 300) {
      log_(fmt::format("{}: status.loadBalancer.ingress = {}", key, describe_ingress(write.ingress)));
      return StatusOutcome::written;
    }
    log_(fmt::format("{}: status.loadBalancer.ingress: PATCH answered {} after a conflict; left to "
                     "the next document",
                     key, status));
    return status == 409 || status == 404 ? StatusOutcome::skipped : StatusOutcome::failed;
  } catch (const Error& error) {
    if (may_write_ && !may_write_()) throw;
    log_(fmt::format("{}: status.loadBalancer.ingress: {}", key, error.what()));
    return StatusOutcome::failed;
  }
}

void ClusterWriter::write_event(const json& incoming, WriteSummary& summary) {
  const kube::ResourceKind& events = kube::find_kind("events");
  auto wall = std::chrono::system_clock::now();
  TimePoint now = Clock::now();
  std::string key = event_key(incoming);
  std::string object = string_field(incoming, {"involvedObject", "namespace"}) + "/" +
                       string_field(incoming, {"involvedObject", "name"});
  std::string reason = string_field(incoming, {"reason"});
  EventLimiter::Decision decision = limiter_.check(key, now);
  try {
    int status = 0;
    if (decision.verdict == EventLimiter::Verdict::suppress) {
      ++summary.events_suppressed;
      return;
    }
    if (decision.verdict == EventLimiter::Verdict::drop) {
      ++summary.events_dropped;
      return;
    }
    if (decision.verdict == EventLimiter::Verdict::update) {
      json patch = {{"count", decision.count}, {"lastTimestamp", rfc3339(wall)}};
      std::string ns = string_field(incoming, {"involvedObject", "namespace"});
      send("PATCH", kube::object_path(events, ns, decision.name), patch,
           "application/merge-patch+json", status);
      if (status >= 200 && status < 300) {
        limiter_.updated(key, decision.count, now);
        ++summary.events_updated;
        log_(fmt::format("{}: Event {} (count {})", object, reason, decision.count));
        return;
      }
      limiter_.forget(key); // gone (Events expire): post a new one
      if (status != 404) {
        log_(fmt::format("{}: Event {}: PATCH answered {}", object, reason, status));
        return;
      }
    }
    for (int attempt = 0; attempt < 2; ++attempt) {
      json event = complete_event(incoming, wall + std::chrono::nanoseconds(attempt), options_.instance);
      if (options_.shared_event_names) event["metadata"]["name"] = shared_event_name(incoming);
      std::string ns = string_field(event, {"metadata", "namespace"});
      send("POST", kube::collection_path(events, ns), event, "application/json", status);
      if (status >= 200 && status < 300) {
        limiter_.created(key, event["metadata"]["name"].get<std::string>(),
                         event["firstTimestamp"].get<std::string>(), now);
        ++summary.events_created;
        log_(fmt::format("{}: Event {} {}: {}", object, string_field(event, {"type"}), reason,
                         string_field(event, {"message"})));
        return;
      }
      if (status == 409 && options_.shared_event_names) {
        // Another node reported the same: its Event stands for ours; updates go to it.
        limiter_.created(key, event["metadata"]["name"].get<std::string>(),
                         event["firstTimestamp"].get<std::string>(), now);
        ++summary.events_shared;
        return;
      }
      if (status != 409) break; // 409: the name was taken; once more with another
    }
    log_(fmt::format("{}: Event {}: POST answered {}", object, reason, status));
  } catch (const Error& error) {
    if (may_write_ && !may_write_()) throw;
    log_(fmt::format("{}: Event {}: {}", object, reason, error.what()));
  }
}

ClusterWriter::StatusOutcome ClusterWriter::write_with_events(const StatusWrite& write,
                                                             const std::vector<json>& events,
                                                             WriteSummary& summary) {
  StatusOutcome outcome = write_status(write);
  // Written, found current or changed: the version the allocator saw is superseded.
  if (outcome != StatusOutcome::failed && outcome != StatusOutcome::refused && !write.resource_version.empty() && !options_.dry_run) {
    superseded_[write.key()] = write.resource_version;
  }
  switch (outcome) {
  case StatusOutcome::written: ++summary.written; break;
  case StatusOutcome::current: ++summary.current; break;
  case StatusOutcome::skipped: ++summary.skipped; break;
  case StatusOutcome::failed:
  case StatusOutcome::refused: ++summary.failed; break;
  }
  // An Event that comes with a status write is posted only when the write went through:
  // otherwise it would tell of an assignment that is not in the cluster.
  if (outcome == StatusOutcome::written)
    for (const json& event : events) write_event(event, summary);
  return outcome;
}

void ClusterWriter::schedule_retry(const StatusWrite& write, std::vector<json> events, Seconds backoff) {
  retries_[write.key()] = Retry{write, std::move(events), Clock::now() + std::chrono::duration_cast<Clock::duration>(backoff), backoff};
}

std::optional<TimePoint> ClusterWriter::next_retry() const {
  std::optional<TimePoint> next;
  for (const auto& [key, retry] : retries_)
    if (!next || retry.due < *next) next = retry.due;
  return next;
}

WriteSummary ClusterWriter::retry_due() {
  WriteSummary summary;
  const TimePoint now = Clock::now();
  std::vector<Retry> due;
  for (auto it = retries_.begin(); it != retries_.end();) {
    if (it->second.due <= now) {
      due.push_back(std::move(it->second));
      it = retries_.erase(it);
    } else {
      ++it;
    }
  }
  for (Retry& retry : due) {
    log_(fmt::format("{}: trying the status write again", retry.write.key()));
    if (write_with_events(retry.write, retry.events, summary) == StatusOutcome::failed)
      schedule_retry(retry.write, std::move(retry.events), std::min(retry.backoff * 2, Seconds(5)));
  }
  record_metrics(summary);
  return summary;
}

WriteSummary ClusterWriter::write(const json& document) {
  WriteSummary summary;
  summary.stale = predates_writes(document, superseded_);
  if (summary.stale) {
    log_(fmt::format("document skipped: it shows {} at resourceVersion {}, before our write",
                     *summary.stale, superseded_[*summary.stale]));
    return summary;
  }
  Plan plan = plan_document(document);
  for (const std::string& error : plan.errors) log_(error);
  // A write waiting to be tried again is dropped when a later document shows its Service:
  // that document's decision replaces it, even when it writes nothing (the allocator may have
  // given the address to another Service meanwhile).
  if (!retries_.empty()) {
    for (const std::string& key : plan.shown) {
      if (retries_.erase(key)) log_(fmt::format("{}: a newer decision replaces the status write waiting to be tried again", key));
    }
  }

  std::set<std::string> written; // Services whose status this document wrote
  std::vector<const StatusWrite*> failed;
  for (const StatusWrite& write : plan.writes) {
    StatusOutcome outcome = write_with_events(write, {}, summary);
    if (outcome == StatusOutcome::written) written.insert(write.key());
    if (outcome == StatusOutcome::failed) failed.push_back(&write);
  }
  // An Event that comes with a status write is posted only when the write went through:
  // otherwise it would tell of an assignment that is not in the cluster. A failed write's
  // Events wait with it for its next try.
  std::map<std::string, std::vector<json>> waiting_events;
  for (const json& event : plan.events) {
    if (is_status_reason(string_field(event, {"reason"}))) {
      std::string key = string_field(event, {"involvedObject", "namespace"}) + "/" +
                        string_field(event, {"involvedObject", "name"});
      if (!written.count(key)) {
        waiting_events[key].push_back(event);
        continue;
      }
    }
    write_event(event, summary);
  }
  for (const StatusWrite* write : failed) schedule_retry(*write, std::move(waiting_events[write->key()]), Seconds(1));
  if (summary.events_dropped > 0) {
    log_(fmt::format("{} Event(s) not written: rate limit ({} per second, burst {})",
                     summary.events_dropped, options_.event_limits.per_second,
                     options_.event_limits.burst));
  }
  limiter_.expire(Clock::now(), std::max(options_.event_limits.interval * 2, Seconds(3600)));
  record_metrics(summary);
  return summary;
}

void record_metrics(const WriteSummary& summary) {
  static auto& registry = metrics::process_registry();
  static auto& statuses = registry.counter(
      "k8slb_status_writes_total",
      "Service status writes by result: written, current (already so), skipped (changed underneath or gone), failed.",
      {"result"});
  static auto& events = registry.counter(
      "k8slb_events_written_total",
      "Events by result: created, updated (count raised), shared (another node created it), suppressed (written "
      "within the interval), dropped (rate limit).",
      {"result"});
  const std::pair<const char*, int> status_counts[] = {
      {"written", summary.written}, {"current", summary.current}, {"skipped", summary.skipped}, {"failed", summary.failed}};
  for (const auto& [result, count] : status_counts) statuses.add({result}, count);
  const std::pair<const char*, int> event_counts[] = {{"created", summary.events_created},
                                                      {"updated", summary.events_updated},
                                                      {"shared", summary.events_shared},
                                                      {"suppressed", summary.events_suppressed},
                                                      {"dropped", summary.events_dropped}};
  for (const auto& [result, count] : event_counts) events.add({result}, count);
}

} // namespace k8slb::cluster
