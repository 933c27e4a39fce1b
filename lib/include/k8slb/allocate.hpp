#pragma once
// IP allocation: a pure function from (Services, pools) to assignments. The assignments
// already published in status.loadBalancer.ingress are inputs (Service::ingress_ips) and are
// kept. Deterministic whatever the order of the Services; O(log n) per assignment.

#include <cstddef>
#include <map>
#include <memory>
#include <optional>
#include <set>
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
  skipped,  // not ours (not type LoadBalancer, other loadBalancerClass) and holds no IP
  released, // not ours any more (type changed, class changed) but still holds IPs: free them
};
std::string_view to_string(Outcome outcome);

struct Result {
  std::string service;          // namespace/name
  Outcome outcome = Outcome::skipped;
  std::vector<ip::Address> ips; // one per family, IPv4 first; empty when failed/skipped
  std::vector<std::string> pools; // pool per IP
  // Set when failed (reason AllocationFailed / InvalidService). Also set, as a warning, on a
  // kept or assigned Service that got less than it asked for: an address it holds lies outside
  // its pool (reason IPOutsidePool; the address is kept, never moved silently), a new
  // spec.loadBalancerIP could not be had (the old address is kept), or a PreferDualStack
  // Service got one family only. publish() turns it into a Warning Event either way.
  std::optional<Problem> problem;
  std::vector<std::string> released; // IPs the Service held before and no longer holds
  // More to tell, each an Event of its own (publish()): the Service moved to a new IP because
  // the old one no longer fits what it asks for (reason IPMoved, Normal, naming both), an
  // annotation read as a k8slb one (AnnotationMapped, Normal), an unknown annotation key
  // (UnknownAnnotation, Warning). Empty for Services that are not ours. publish() posts the
  // Normal ones only with a change of status, the Warnings on every run (as `problem`).
  struct Note {
    std::string type; // "Normal" or "Warning"
    Problem problem;  // object, field, reason, message
  };
  std::vector<Note> notes;
};

struct Options {
  std::string lb_class; // our loadBalancerClass; Services with another class are skipped
  // Whether the proxy connects to the pods whatever the VIP's family (haproxy, nginx): then a
  // Service's VIP family follows its pool and static IP, not spec.ipFamilies. kube-proxy
  // (ipMode VIP) cannot: a VIP of another family than spec.ipFamilies is refused.
  bool families_bridged = true;
};

// Results sorted by namespace/name, one per input Service.
std::vector<Result> allocate(const std::vector<model::Service>& services,
                             const pool::Config& config, const Options& options = {});

// Whether two results say the same: outcome, addresses, pools, problem, releases and notes.
bool same_result(const Result& a, const Result& b);

// What the allocator's gauges count, over a set of results (record_metrics): the addresses
// held (by how many Services: sharing), Services holding an IP, failures by reason.
struct Tally {
  std::map<ip::Address, std::size_t> held; // of results not released
  std::size_t allocated = 0;               // results holding at least one IP, not released
  std::map<std::string, std::size_t> failures; // failed results by problem reason
  void add(const Result& result);
  void remove(const Result& result);
  static Tally of(const std::vector<Result>& results);
  bool operator==(const Tally&) const = default;
};

// Allocation kept across changes (k8slb-allocate reading watch events). It holds the Services
// and, after each change, has the results allocate() would give for all of them, at the cost
// of the change rather than of the cluster: the Service that changed is allocated again,
// together with the Services still waiting for something (an address, the one they ask for,
// a move to their pool; an assignment not yet in their status), against the addresses every
// other Service holds. Those others are settled: they hold what their status says and what
// they ask for, so no run over other Services changes their result. Everything is allocated
// again, as allocate() does, on a new config and when a changed Service's status collides
// with a settled Service's address (who keeps it then depends on namespace/name order).
// Cost: O(w log n) per change for w waiting Services; a full run is O(n log n).
class Tracker {
public:
  explicit Tracker(Options options = {});
  ~Tracker();
  Tracker(Tracker&&) noexcept;
  Tracker& operator=(Tracker&&) noexcept;

  // Every Service under `config`: a full run. Returns every result, in namespace/name order.
  std::vector<Result> reset(const pool::Config& config, std::vector<model::Service> services);
  // A new config: a full run. Returns the results that changed.
  std::vector<Result> set_config(const pool::Config& config);
  // A Service added or changed (found by namespace and name). Returns its result and those of
  // other Services whose result changed, in namespace/name order.
  std::vector<Result> upsert(model::Service service);
  // A Service deleted. Returns the results of other Services that changed (e.g. one that
  // waited for an address gets the one freed).
  std::vector<Result> erase(const std::string& ns, const std::string& name);
  // Several changes as one: the Services (namespace, name) in `erased` deleted, then those in
  // `upserted` added or changed. One run for all of them: a burst of k new Services costs
  // O(k log n), where k upserts one by one would allocate the waiting ones again each time.
  std::vector<Result> update(std::vector<model::Service> upserted,
                             const std::vector<std::pair<std::string, std::string>>& erased);

  std::vector<Result> results() const; // every result, in namespace/name order
  const Result* result(const std::string& ns, const std::string& name) const;
  const model::Service* find(const std::string& ns, const std::string& name) const;
  std::size_t size() const;
  std::size_t waiting() const;   // Services allocated again with every change
  std::size_t full_runs() const; // full runs so far, reset() included
  // The gauges' counts over results(), kept with every change: no pass over the Services.
  const Tally& tally() const;

private:
  struct State;
  std::unique_ptr<State> state_;
};

// k8slb-allocate's streaming mode on watch events (k8slb-watch --events): the Services and
// the config kept between documents, each change allocated at its own cost (Tracker), and
// only what changed published. Pure: documents in, documents out.
//
// A status it publishes is taken as written at once (so that the next change allocates
// around it), and the Service is not published again at the same resourceVersion: k8slb-apply
// cluster would skip the whole document, since it wrote that version already. The Service's
// next event (our write coming back, or a change) shows what the cluster holds.
class Feed {
public:
  // What a batch of events asks to publish: publish() over these, plus `events`.
  struct Change {
    std::vector<nlohmann::json> items; // the Services, as last seen
    std::vector<model::Service> services;
    std::vector<Result> results;
    std::vector<nlohmann::json> events; // Events of their own (an invalid ConfigMap)
  };

  Feed(std::string config_map_key, Options options);

  // A whole List (the first document; a resync): its Services (as read, and parsed) and the
  // config to allocate them with (nullopt: none yet; `stale`: the List's ConfigMap was refused
  // and this is the last good one). Returns every result, as allocate(); none without a config.
  std::vector<Result> load(const std::vector<nlohmann::json>& items, std::vector<model::Service> services,
                           const std::optional<pool::Config>& config, bool stale = false);
  bool loaded() const { return loaded_; }

  // One watch event: {"type": "ADDED|MODIFIED|DELETED|BOOKMARK", "object": {...}}. Throws
  // Error naming the object and field when it cannot be used: a Service that cannot be read
  // is left out (as from a List); an invalid ConfigMap leaves the last good config in use
  // and queues a Warning Event on it.
  void apply(const nlohmann::json& event);

  // What the events since the last call changed: the Services an event touched and those whose
  // result changed; nullopt when there is nothing (or no config yet).
  std::optional<Change> take();

  // The document printed (a List's, or a Change's published): the statuses it sets are taken
  // as written.
  void published(const nlohmann::json& document);

  // A Change's document keeps only the Events and the Services whose status they write
  // (IPAllocated, IPReleased, StatusUpdated: k8slb-apply cluster needs the item); false when
  // there is no Event (nothing to print).
  static bool trim(nlohmann::json& document);

  const std::optional<pool::Config>& config() const { return config_; }
  // The ConfigMap's last version was refused: the config in use is an older one.
  bool config_stale() const { return config_stale_; }
  const Tracker& tracker() const { return tracker_; }

private:
  using Key = std::pair<std::string, std::string>;
  void reallocate(const pool::Config& config);
  void flush();
  void note(const std::vector<Result>& results);

  std::string config_map_key_;
  Tracker tracker_;
  std::optional<pool::Config> config_;
  bool config_stale_ = false;
  bool loaded_ = false;
  std::map<Key, nlohmann::json> items_;   // every Service, as last seen (or as we wrote it)
  std::map<Key, std::string> in_flight_;  // Service -> the resourceVersion we published a status for
  std::map<Key, std::optional<model::Service>> pending_; // read, not yet allocated (nullopt: deleted)
  std::set<Key> touched_;                 // Services an event named since the last take()
  std::set<Key> changed_;                 // Services whose result changed since then
  std::vector<nlohmann::json> events_;
};

// Publishing: turns results into the document k8slb-allocate prints and k8slb-apply cluster
// reads. Returns a `v1 List` holding every input item, with each Service's
// status.loadBalancer.ingress set to its desired value ([{ip, ipMode}] per IP; [] when
// released), followed by one core/v1 Event per Service whose desired status differs from the
// status it came in with (reason IPAllocated or IPReleased, type Normal; or StatusUpdated when
// only ipMode changed) and one per failed Service (reason AllocationFailed / InvalidService,
// type Warning, message = Problem::to_string()). Event shape:
//   {apiVersion: v1, kind: Event, metadata: {namespace, generateName: "<svc>."},
//    involvedObject: {apiVersion: v1, kind: Service, namespace, name, uid, resourceVersion},
//    reason, message, type, source: {component: "k8slb"}, reportingComponent: "k8slb"}
// k8slb-apply cluster writes the status of every Service that has an IPAllocated, IPReleased
// or StatusUpdated Event in the same document, then posts the Events.
struct PublishOptions {
  std::string ip_mode = "Proxy"; // "Proxy" (haproxy, nginx) or "VIP" (kube-proxy)
};
// A core/v1 Event about a Service, in the shape publish() writes (type Normal or Warning).
nlohmann::json make_event(const model::Service& service, const std::string& reason,
                          const std::string& type, const std::string& message);

// The same about any object (its apiVersion, kind and metadata): e.g. the ConfigMap.
nlohmann::json make_object_event(const nlohmann::json& object, const std::string& reason,
                                 const std::string& type, const std::string& message);

// When the config cannot be read (the ConfigMap is invalid or absent) and there is no last
// good one: one Warning Event (reason AllocationFailed) on each Service of ours still waiting
// for an IP, saying why none is assigned (`why`, e.g. "no valid config: ConfigMap ...:
// data.config: ..."). Services that hold IPs keep them and get none. Pure.
std::vector<nlohmann::json> no_config_events(const std::vector<model::Service>& services,
                                             const std::string& why, const Options& options = {});

nlohmann::json publish(const std::vector<nlohmann::json>& items,
                       const std::vector<model::Service>& services,
                       const std::vector<Result>& results, const PublishOptions& options = {});
// The same, editing `items` in place instead of copying them.
nlohmann::json publish(std::vector<nlohmann::json>&& items,
                       const std::vector<model::Service>& services,
                       const std::vector<Result>& results, const PublishOptions& options = {});

// The allocator's state as Prometheus gauges in the process registry (docs/observability.md),
// set again after every document: the pools' addresses, those in use and free (as
// report::pool_usage, kubectl k8slb pools, counts them), the Services
// allocated, those that failed by reason, and whether the config in use is the newest one.
void record_metrics(const pool::Config* config, const std::vector<Result>& results, bool config_stale);
// The same from a tally (Tracker::tally()): O(addresses held), no copy of the results.
void record_metrics(const pool::Config* config, const Tally& tally, bool config_stale);

} // namespace k8slb::allocate
