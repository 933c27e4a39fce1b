#pragma once
// The cluster side of k8slb-apply: writing what k8slb-allocate decided back to the API
// (status.loadBalancer.ingress through the status subresource, Events) and electing the one
// watcher replica that may write (a coordination.k8s.io/v1 Lease, client-go's algorithm).
//
// The decisions are pure and tested without a cluster: which writes a document asks for
// (plan_document), whether a Service that changed underneath may still be written
// (may_reapply), how an Event is completed and rate-limited (complete_event, EventLimiter,
// TokenBucket), and what a candidate does with the Lease it just read (observe, decide).
// ClusterWriter and Elector are the I/O edges, on a kube::Client.

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/error.hpp"

namespace k8slb::kube {
class Client;
}

namespace k8slb::cluster {

using json = nlohmann::json;
using Clock = std::chrono::steady_clock;
using TimePoint = Clock::time_point;
using Seconds = std::chrono::duration<double>;

// ---------------------------------------------------------------------------------------
// Plan: what one document from k8slb-allocate asks to write

// The Event reasons that come with a status write.
inline constexpr const char* kReasonAllocated = "IPAllocated";
inline constexpr const char* kReasonReleased = "IPReleased";
inline constexpr const char* kReasonStatusUpdated = "StatusUpdated";
bool is_status_reason(std::string_view reason);

// One status write: the Service as the allocator saw it and the ingress it wants.
struct StatusWrite {
  std::string ns, name, uid;
  std::string resource_version; // the precondition: the version the allocator saw
  json ingress = json::array();  // desired status.loadBalancer.ingress
  json service;                  // the Service item as it came in the document (desired status)
  // The ingress the allocator based its decision on, when the document says so (the
  // annotation kPreviousIngressAnnotation on the item); nullopt when unknown.
  std::optional<json> previous_ingress;
  std::string key() const { return ns + "/" + name; }
};

// An annotation k8slb-allocate may set on a Service item of its output (never written to the
// cluster) to say which ingress its decision was based on.
inline constexpr const char* kPreviousIngressAnnotation = "k8slb.io/previous-ingress";

struct Plan {
  std::vector<StatusWrite> writes; // sorted by namespace/name
  std::vector<json> events;        // in document order
  std::vector<std::string> errors; // malformed items, "object: field: message"
  std::vector<std::string> shown;  // namespace/name of every Service in the document
};

// Reads one document (a v1 List, or a single object): every Service that has an IPAllocated,
// IPReleased or StatusUpdated Event in the same document gets a StatusWrite; every Event is
// kept. Items that are neither are ignored. Pure.
Plan plan_document(const json& document);

// "[192.0.2.10, 2001:db8::10 (VIP)]": an ingress list the way the log line shows it.
std::string describe_ingress(const json& ingress);

// Two ingress lists mean the same (same ip, hostname and ipMode, in order; absent ipMode and
// ports ignored only when both lack them).
bool same_ingress(const json& a, const json& b);

// After a 409: may the write be applied again to `fresh` (the Service as it is now)? Only
// when the inputs of the allocator's decision still hold: same spec and annotations as the
// document's item, and the ingress it based its decision on is still the one in status.
// Unknown previous ingress: no (the next document from the watch carries the fresh state).
enum class Recheck { reapply, already_current, changed };
Recheck may_reapply(const StatusWrite& write, const json& fresh);
std::string_view to_string(Recheck recheck);

// The merge patch for the status subresource: {metadata: {resourceVersion}, status:
// {loadBalancer: {ingress}}}. An empty resource_version leaves the precondition out.
json status_patch(const json& ingress, const std::string& resource_version);

// Read-your-writes barrier. The documents lag behind our own writes (the watch has not yet
// delivered them), and an allocator that does not see an IP we just wrote may give it to
// another Service, whose write would then succeed: two Services, one IP. `superseded` maps
// namespace/name to a resourceVersion we know is older than the Service's status (the one
// our write replaced). Returns the first Service the document still shows at such a version
// (the whole document is stale: skip it, the watch brings a newer one); forgets the entries
// the document shows past (or without the Service). Pure.
std::optional<std::string> predates_writes(const json& document,
                                           std::map<std::string, std::string>& superseded);

// ---------------------------------------------------------------------------------------
// Events

// "2026-11-26T10:03:20Z" and "2026-11-26T10:03:20.123456Z" for a wall-clock time.
std::string rfc3339(std::chrono::system_clock::time_point time);
std::string rfc3339_micro(std::chrono::system_clock::time_point time);

// The action core/v1 asks for once eventTime is set: Allocate, Release, UpdateStatus, or
// Report for anything else.
std::string action_for(std::string_view reason);

// Completes an Event from k8slb-allocate for posting: a name (`<service>.<hex nanoseconds>`,
// as client-go names them), firstTimestamp, lastTimestamp, eventTime, count 1, action,
// reportingComponent "k8slb" and reportingInstance, source.host; message cut to 1024 bytes.
json complete_event(json event, std::chrono::system_clock::time_point now,
                    const std::string& instance);

// "namespace/name/reason/message" of the object an Event is about: the key of the rate limit.
std::string event_key(const json& event);

// The name every node gives the same Event (WriterOptions::shared_event_names):
// "<object name>.k8slb-<16 hex>", the hash over the object's uid, namespace, name, the reason
// and the message. Pure.
std::string shared_event_name(const json& event);

// A token bucket: `burst` tokens, refilled at `per_second`. Pure (time is passed in).
class TokenBucket {
public:
  TokenBucket(double burst, double per_second);
  bool take(TimePoint now); // false when empty
  double tokens() const { return tokens_; }

private:
  double burst_, per_second_, tokens_;
  std::optional<TimePoint> last_;
};

struct EventLimits {
  Seconds interval{300}; // the same event is written at most once per interval
  double burst = 100;    // global token bucket over all Event writes
  double per_second = 5;
};

// The rate limit on Events, per event_key and global. check() says what to do with one
// occurrence; the caller reports the outcome with created() / updated() / failed().
// Occurrences suppressed within the interval are counted and carried by the next update.
class EventLimiter {
public:
  explicit EventLimiter(EventLimits limits);

  enum class Verdict {
    create,   // first occurrence (or the last Event is gone): POST a new Event
    update,   // interval passed: PATCH the existing Event's count and lastTimestamp
    suppress, // written less than an interval ago: only counted
    drop,     // the global bucket is empty: not written, not counted as written
  };
  struct Decision {
    Verdict verdict = Verdict::create;
    std::string name;  // the existing Event's name (update)
    std::int64_t count = 1; // the count to write (update), occurrences so far
    std::string first_timestamp; // the existing Event's firstTimestamp (update)
  };
  Decision check(const std::string& key, TimePoint now);
  void created(const std::string& key, const std::string& name, const std::string& first_timestamp,
               TimePoint now);
  void updated(const std::string& key, std::int64_t count, TimePoint now);
  void forget(const std::string& key); // the Event is gone (404 on update): create next time
  // Drops records not written for `age` (bounded memory for Services long gone).
  void expire(TimePoint now, Seconds age);
  std::size_t size() const { return records_.size(); }

private:
  struct Record {
    std::string name;
    std::string first_timestamp;
    std::int64_t count = 0;   // occurrences written so far
    std::int64_t pending = 0; // occurrences suppressed since the last write
    TimePoint written;
  };
  EventLimits limits_;
  TokenBucket bucket_;
  std::map<std::string, Record> records_; // event_key -> the Event written for it
};
std::string_view to_string(EventLimiter::Verdict verdict);

// The failover notice (k8slb-apply events --node): which VIPs a node holds that it did not
// report yet, each as a Normal Event NodeAssigned ("<vip> is served by node <node>") on the
// Services holding it. `vips` is k8slb-render --events' map: VIP -> [{namespace, name, uid}].
// A VIP reported once is reported again only after the node lost it. Pure (no I/O, no clock).
class TakeoverTracker {
public:
  explicit TakeoverTracker(std::string node) : node_(std::move(node)) {}
  void set_vips(json vips) { vips_ = vips.is_object() ? std::move(vips) : json::object(); }
  // The Events for the VIPs among `held` (the node's addresses) newly held since the last call.
  std::vector<json> taken(const std::set<std::string>& held);

private:
  std::string node_;
  json vips_ = json::object();
  std::set<std::string> reported_;
};

// ---------------------------------------------------------------------------------------
// Writing a document

struct WriterOptions {
  bool dry_run = false;     // print the requests on stdout (NDJSON) instead of sending them
  std::string instance;     // reportingInstance: POD_NAME or the host name
  EventLimits event_limits;
  // Events every node may report alike (k8slb-apply events): each is created under
  // shared_event_name(), so the first node's POST creates it and the others' answer 409 and
  // count as written: one Event however many nodes see the problem.
  bool shared_event_names = false;
};

struct WriteSummary {
  int written = 0;   // status writes that reached the API
  int current = 0;   // already as desired (after a 409)
  int skipped = 0;   // changed underneath, or gone
  int failed = 0;
  int events_created = 0, events_updated = 0, events_suppressed = 0, events_dropped = 0;
  int events_shared = 0; // shared_event_names: another node had created it (409)
  std::optional<std::string> stale; // the document predates our writes to this Service: skipped
};
// Adds a document's counts to k8slb_status_writes_total and k8slb_events_written_total
// (ClusterWriter::write does, after each document).
void record_metrics(const WriteSummary& summary);


// Writes the status and Events a document asks for. Never throws for one Service: a failure
// is logged (`log`) and counted, and the others go on. `may_write` is asked before every
// request (leader election); when it says no, the writer stops and throws Error.
class ClusterWriter {
public:
  using Log = std::function<void(const std::string& line)>;
  // `client` may be null with dry_run.
  ClusterWriter(kube::Client* client, WriterOptions options, Log log,
                std::function<bool()> may_write = {});

  WriteSummary write(const json& document);

  // A status write that failed (the API answered 5xx or 429 once the client's own retries
  // were used up, or could not be reached; not another 4xx) is tried again later, with its Events, until it
  // goes through or a later document shows that Service: first after 1 s, then twice as
  // long each time, up to 5 s. The input need not bring the Service again (watch events
  // carry only changes). When the next one is due (nullopt: none waiting).
  std::optional<TimePoint> next_retry() const;
  // Tries the writes that are due.
  WriteSummary retry_due();

private:
  // failed: worth trying again (5xx, 429, no answer); refused: not (another 4xx: the request
  // itself is wrong, or not allowed).
  enum class StatusOutcome { written, current, skipped, failed, refused };
  struct Retry {
    StatusWrite write;
    std::vector<json> events; // posted when the write goes through
    TimePoint due;
    Seconds backoff;
  };
  void schedule_retry(const StatusWrite& write, std::vector<json> events, Seconds backoff);
  // Writes one status; on success posts its Events. Records the version as superseded.
  StatusOutcome write_with_events(const StatusWrite& write, const std::vector<json>& events,
                                  WriteSummary& summary);
  StatusOutcome write_status(const StatusWrite& write);
  void write_event(const json& event, WriteSummary& summary);
  void check_may_write() const;
  json send(std::string_view method, const std::string& path, const json& body,
            std::string_view content_type, int& status);

  kube::Client* client_;
  WriterOptions options_;
  Log log_;
  std::function<bool()> may_write_;
  EventLimiter limiter_;
  std::map<std::string, std::string> superseded_; // see predates_writes
  std::map<std::string, Retry> retries_;           // namespace/name -> the write to try again
};

// ---------------------------------------------------------------------------------------
// Leader election (coordination.k8s.io/v1 Lease), as client-go's leaderelection

struct LeaseRecord {
  std::string holder_identity;
  int lease_duration_seconds = 0;
  std::string acquire_time; // MicroTime as written, "2026-11-26T10:03:20.123456Z"
  std::string renew_time;
  int lease_transitions = 0;
  bool operator==(const LeaseRecord&) const = default;
};

LeaseRecord lease_record_from(const json& lease); // from a Lease object's spec
json lease_spec(const LeaseRecord& record);

struct ElectionConfig {
  std::string identity;
  std::string lease_name = "k8slb-watcher";
  std::string lease_namespace = "k8slb-system";
  Seconds lease_duration{15}; // whole seconds (the Lease field is an integer)
  Seconds renew_deadline{10}; // a leader that has not renewed for this long stops
  Seconds retry_period{2};    // how often a candidate tries and a leader renews
};
// Throws Error naming the option: identity set, lease_duration >= 1 s and whole,
// lease_duration > renew_deadline > retry_period * 1.2 > 0 (client-go's rule).
void validate(const ElectionConfig& config);

// What a candidate knows: the last record it saw and when (its own clock) it saw it change.
struct ElectorState {
  std::optional<LeaseRecord> observed;
  TimePoint observed_at{};
  bool leading = false;
  TimePoint renewed_at{}; // our last successful acquire or renew
};

// Takes in the record just read (nullopt: no Lease object). A record that differs from the
// one observed before restarts the local expiry clock. Pure.
ElectorState observe(ElectorState state, const std::optional<LeaseRecord>& current, TimePoint now);

enum class Action {
  create, // no Lease yet: create it holding it
  take,   // free or expired: update it to hold it (transitions + 1)
  renew,  // ours: update renewTime
  wait,   // someone else holds a valid lease
  stop,   // we were leading and can no longer claim to be (deadline passed or taken)
};
std::string_view to_string(Action action);

struct Decision {
  Action action = Action::wait;
  LeaseRecord record; // what to write for create / take / renew
  std::string reason; // a readable why, for logs and tests
};

// The decision after observe(): `wall_now` is written as acquireTime / renewTime. Pure.
Decision decide(const ElectorState& state, TimePoint now, const std::string& wall_now,
                const ElectionConfig& config);

// After a successful write of `record` (create, take, renew). Pure.
ElectorState wrote(ElectorState state, const LeaseRecord& record, TimePoint now);

// A leader may write while it has renewed within renew_deadline. Pure.
bool may_lead(const ElectorState& state, TimePoint now, const ElectionConfig& config);

// The I/O side: reads and writes the Lease through `client`. Thread-safe.
class Elector {
public:
  using Log = std::function<void(const std::string& line)>;
  Elector(kube::Client& client, ElectionConfig config, Log log);

  // One round: GET, observe, decide, write (a leader renews with the PUT alone, on the Lease
  // it last read or wrote, and falls back to the full round on 409). Returns the action taken
  // (stop included). A round that got no answer it could act on (a transport error, a timeout,
  // 5xx, 429) returns wait (or stop once a leader's renew_deadline has passed) and sets
  // last_round_failed().
  Action try_acquire_or_renew();
  bool last_round_failed() const;
  // How long to wait before the next round: retry_period, or a quarter of it (at least
  // 250 ms) after a failed round, so that an error storm (90 % 429s) costs a leader its lease
  // only when some 20 rounds in a row fail within the renew deadline, not 5.
  Seconds next_round_in() const;
  // The first round of a process started while this identity may hold the lease (the
  // pipeline after --acquire-only): a failed round is retried every retry_period, as a
  // leader's renewal is, until one gets an answer or renew_deadline has passed. Returns the
  // action of that round (renew: still ours); nullopt when the deadline passed (or
  // `cancelled`) without an answer.
  std::optional<Action> resume(const std::atomic<bool>& cancelled);
  // Blocks, trying every retry_period, until this identity holds the lease (true), or
  // `cancelled` becomes true (false).
  bool acquire(const std::atomic<bool>& cancelled);
  bool leading() const; // holds the lease and renewed within renew_deadline
  // Gives the lease up (holderIdentity empty, leaseDuration 1 s) if we hold it.
  void release();
  const ElectionConfig& config() const { return config_; }

private:
  kube::Client& client_;
  ElectionConfig config_;
  Log log_;
  mutable std::mutex mutex_;
  ElectorState state_;
  std::string resource_version_; // of the Lease last read or written
  json lease_;                   // the Lease last read or written (the leader's fast path)
  bool last_round_failed_ = false;
};

} // namespace k8slb::cluster
