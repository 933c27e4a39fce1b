#pragma once
// Kubernetes API client on libcurl: configuration (in-cluster and kubeconfig), requests with
// timeouts and retries, resource paths, watch-event decoding, and a list+watch cache
// (informer) per resource. The decoding, path, backoff and store logic is pure and tested
// without a cluster; Client and Cache are the I/O edges.
//
// Thread safety: a Client may be shared by many threads (each request uses its own curl
// handle). A Cache runs one thread of its own and calls its handlers from that thread.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <optional>
#include <random>
#include <stop_token>
#include <string>
#include <string_view>
#include <thread>
#include <tuple>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/error.hpp"

namespace k8slb::kube {

using json = nlohmann::json;

// ---------------------------------------------------------------------------------------
// Retries

// Exponential backoff with full jitter: the delay before retry n (n = 1, 2, ...) is uniform in
// [0, min(cap, base * 2^(n-1))]. A Retry-After header (on 429 and 503) replaces the drawn
// delay (capped at max_retry_after). At most max_attempts attempts in all (first included).
struct RetryPolicy {
  int max_attempts = 6;
  std::chrono::milliseconds base{100};
  std::chrono::milliseconds cap{5000};
  std::chrono::milliseconds max_retry_after{30000};
};

// Delay before retry number `retry` (1 = the first retry), drawn from `rng`.
std::chrono::milliseconds backoff_delay(const RetryPolicy& policy, int retry, std::mt19937_64& rng);

// Retry-After in delta-seconds ("3"); nullopt for an HTTP-date or garbage.
std::optional<std::chrono::milliseconds> parse_retry_after(std::string_view value);

// 429, 500, 502, 503, 504 (and any other 5xx) are worth retrying; 4xx are the caller's.
bool is_retryable_status(int status);

// ---------------------------------------------------------------------------------------
// Configuration

struct Config {
  std::string server;     // "https://host:port" (no trailing slash)
  std::string token;      // bearer token, empty when none (or when token_file is used)
  std::string token_file; // bearer token re-read whenever the file's mtime changes
  std::string ca_file;    // CA bundle path; empty: ca_data or the system CAs
  std::string ca_data;    // CA bundle, PEM (already base64-decoded)
  std::string client_cert_file, client_cert_data; // PEM
  std::string client_key_file, client_key_data;   // PEM
  bool insecure_skip_tls_verify = false; // only ever set because the kubeconfig says so
  std::string ns = "default"; // the context's (or the pod's) namespace
  std::string source;         // "in-cluster" or "kubeconfig PATH (context NAME)", for messages
  std::chrono::milliseconds connect_timeout{5000};
  std::chrono::milliseconds request_timeout{30000}; // whole request; not applied to watches
  RetryPolicy retry;
};

// Where to find the configuration: the tool's --kubeconfig and --context.
struct ConfigOptions {
  std::string kubeconfig; // empty: $KUBECONFIG, then in-cluster, then ~/.kube/config
  std::string context;    // empty: current-context
};

// The process environment that load_config looks at (a seam for tests).
struct Environment {
  std::string kubeconfig_env;  // $KUBECONFIG (only its first path is used)
  std::string home;            // $HOME
  std::string service_host;    // $KUBERNETES_SERVICE_HOST
  std::string service_port;    // $KUBERNETES_SERVICE_PORT
  std::string service_account_dir = "/var/run/secrets/kubernetes.io/serviceaccount";
  static Environment from_process();
};

// Parses a kubeconfig (YAML or JSON text). `path` names it in errors and anchors relative
// file paths (tokenFile, certificate-authority, client-certificate, client-key). `context`
// empty means current-context. Throws Error("kubeconfig PATH: contexts[NAME]: ...").
Config parse_kubeconfig(std::string_view text, std::string_view path, std::string_view context);

// In-cluster config from the service-account directory (token, ca.crt, namespace) and
// KUBERNETES_SERVICE_HOST/PORT. Throws Error when something is missing.
Config in_cluster_config(const Environment& env);

// Resolution order: options.kubeconfig; $KUBECONFIG (first file of a colon-separated list);
// in-cluster when KUBERNETES_SERVICE_HOST is set; ~/.kube/config.
Config load_config(const ConfigOptions& options, const Environment& env = Environment::from_process());

// ---------------------------------------------------------------------------------------
// Resources and paths

struct ResourceKind {
  std::string group;   // "" for the core group
  std::string version; // "v1"
  std::string plural;  // "services"
  bool namespaced = true;
  std::string kind;    // "Service"
  std::vector<std::string> names; // accepted user-facing names: singular, short names

  std::string api_version() const; // "v1", "discovery.k8s.io/v1"
};

// services, endpointslices, configmaps, nodes, events, leases.
const std::vector<ResourceKind>& known_kinds();

// By plural, singular, short name ("svc", "cm") or Kind, case-insensitive. Throws Error.
const ResourceKind& find_kind(std::string_view name);

// What a user names on the command line: "services", "svc", "endpointslices", "nodes",
// "configmap/NS/NAME", "lease/NS/NAME", "node/NAME", "services/NS" (all in one namespace).
struct ResourceRef {
  ResourceKind kind;
  std::string ns;   // "" = all namespaces (or cluster-scoped)
  std::string name; // "" = every object
  std::string to_string() const; // "configmaps/k8slb-system/global", "services"
};
ResourceRef parse_resource(std::string_view text);

// "/api/v1/services", "/api/v1/namespaces/NS/services", "/apis/coordination.k8s.io/v1/...".
std::string collection_path(const ResourceKind& kind, std::string_view ns = {});
// ".../namespaces/NS/services/NAME[/SUBRESOURCE]"
std::string object_path(const ResourceKind& kind, std::string_view ns, std::string_view name,
                        std::string_view subresource = {});

// Percent-encoding for a query value (RFC 3986 unreserved characters kept).
std::string url_encode(std::string_view value);

struct ListOptions {
  std::string label_selector;
  std::string field_selector;
  int limit = 0;                 // 0: no paging
  std::string continue_token;
  std::string resource_version;  // for watch: where to start
  bool watch = false;
  bool allow_watch_bookmarks = false;
  int timeout_seconds = 0;       // 0: server default
};
// "?labelSelector=...&limit=..." (empty when nothing is set).
std::string query_string(const ListOptions& options);

// ---------------------------------------------------------------------------------------
// Requests

struct Response {
  int status = 0;
  std::map<std::string, std::string> headers; // names lower-cased
  std::string body;

  bool ok() const { return status >= 200 && status < 300; }
  std::string header(std::string_view name) const; // "" when absent (name any case)
  // The server's Status message if the body is a Status object, else the body (shortened).
  std::string status_message() const;
};

// A request that got a final non-2xx answer. The message reads
// "PUT https://host/api/v1/...: 409 Conflict: <the server's Status message>".
class ApiError : public Error {
public:
  ApiError(std::string method, std::string url, int status, std::string server_message);
  int status() const { return status_; }
  const std::string& method() const { return method_; }
  const std::string& url() const { return url_; }
  const std::string& server_message() const { return server_message_; }

private:
  std::string method_, url_;
  int status_ = 0;
  std::string server_message_;
};

// The retry loop on its own, for tests: calls `attempt` until it returns a response that is
// not retryable or attempts run out. `attempt` returns a Response, or throws
// TransportError for a connection failure (retried too). `sleep` waits (stop-aware).
class TransportError : public Error {
public:
  using Error::Error;
};
Response run_with_retries(const RetryPolicy& policy, std::mt19937_64& rng,
                          const std::function<Response()>& attempt,
                          const std::function<void(std::chrono::milliseconds)>& sleep);

// RFC 7386 merge patch that turns `from` into `to` (null for removed fields; arrays replaced).
json make_merge_patch(const json& from, const json& to);

class Client {
public:
  explicit Client(Config config);
  ~Client();
  Client(const Client&) = delete;
  Client& operator=(const Client&) = delete;

  const Config& config() const { return config_; }

  // One request with retries (connection errors, 5xx, 429; Retry-After honoured). Returns
  // the final response for 2xx and 4xx; throws ApiError when retries run out on a 5xx/429
  // and Error("METHOD URL: <curl error>") when the server cannot be reached.
  // `path_and_query` starts with "/".
  Response request(std::string_view method, std::string_view path_and_query,
                   std::string_view body = {},
                   std::string_view content_type = "application/json");

  // Helpers: 2xx -> the body as json; anything else -> ApiError.
  json get_json(std::string_view path_and_query);
  std::optional<json> get_optional(std::string_view path_and_query); // nullopt on 404
  json create(std::string_view collection_path, const json& object);   // POST
  json update(std::string_view object_path, const json& object);       // PUT
  // PATCH application/merge-patch+json on the object, or on its subresource ("status").
  json merge_patch(std::string_view object_path, const json& patch,
                   std::string_view subresource = {});
  // DELETE; returns false when the object was already gone (404).
  bool del(std::string_view object_path);

  // Streams a response body (a watch) line by line, without a total timeout. `on_line`
  // returns false to stop. Stops early when `stop` is requested. Returns the response (body
  // only filled for a non-2xx answer). No retries: the caller (Cache) decides.
  Response stream_lines(std::string_view path_and_query,
                        const std::function<bool(std::string_view line)>& on_line,
                        std::stop_token stop = {});

  std::string url(std::string_view path_and_query) const { return config_.server + std::string(path_and_query); }

private:
  Response perform(std::string_view method, std::string_view path_and_query, std::string_view body,
                   std::string_view content_type) const;
  std::string bearer_token() const; // token, or token_file re-read on mtime change

  struct Shared; // curl share handle: connections and TLS sessions reused across requests
  std::shared_ptr<Shared> shared_; // also held by each thread's curl handle attached to it
  Config config_;
  mutable std::mutex mutex_;                  // guards token cache and rng
  mutable std::string file_token_;
  mutable std::int64_t file_token_mtime_ = -1;
  mutable std::mt19937_64 rng_;
};

// ---------------------------------------------------------------------------------------
// Watch events and the cache

enum class EventType { added, modified, deleted, bookmark, error };
std::string_view to_string(EventType type);

struct WatchEvent {
  EventType type = EventType::added;
  json object; // the object; for error, the Status object (code 410 = expired)
  std::string resource_version() const; // object.metadata.resourceVersion or ""
};

// Decodes one line of a watch stream. Throws Error for malformed JSON or an unknown type.
WatchEvent decode_watch_event(std::string_view line);

// "namespace/name" or "name" for cluster-scoped objects.
std::string object_key(const json& object);

// One change to the content of a store: the object now, or nullopt when deleted, and its
// compact JSON text (empty when deleted).
struct Change {
  std::string key;
  std::optional<json> object;
  std::string text = {}; // a default: a Change written {key, object} prints its object
  bool operator==(const Change&) const = default;
};

// The content of one resource as seen by list+watch, and its resourceVersion. Pure.
// Left out of the objects a Store keeps (with metadata.managedFields): k8slb never reads them.
inline constexpr const char* kLastAppliedAnnotation = "kubectl.kubernetes.io/last-applied-configuration";

// Objects are kept without metadata.managedFields and without the annotation
// kLastAppliedAnnotation (an annotations object left empty is removed).
class Store {
public:
  explicit Store(ResourceKind kind);

  // Applies one ADDED/MODIFIED/DELETED/BOOKMARK event; returns the change it made (nullopt
  // when the content did not change: a bookmark, a replayed event, an identical object).
  // An ERROR event is not for the store (throws, programmer error).
  std::optional<Change> apply(const WatchEvent& event);

  // Replaces the content with a fresh list (after a relist) and returns only the real
  // differences, sorted by key.
  std::vector<Change> replace(std::vector<json> items, std::string resource_version);

  // Each object as compact JSON text ("namespace/name" -> text): a parsed tree takes several
  // times the text's memory (10.7 MiB per 1,000 Services in k8slb-watch when it kept trees).
  const std::map<std::string, std::string>& objects() const { return objects_; }
  const std::string& resource_version() const { return resource_version_; }
  const ResourceKind& kind() const { return kind_; }

private:
  json normalised(json object) const; // kind and apiVersion filled in, as kubectl prints
  static std::string text_of(const json& object);

  ResourceKind kind_;
  std::map<std::string, std::string> objects_; // key "namespace/name" -> the object's text
  std::string resource_version_;
};

struct CacheOptions {
  ResourceRef resource;
  std::string label_selector;
  std::string field_selector; // combined with metadata.name=NAME when resource.name is set
  int page_size = 500;
  int watch_timeout_seconds = 300;
};

// Called from the cache's thread with the changes since the last call (never empty).
using ChangeHandler = std::function<void(const ResourceKind& kind, const std::vector<Change>& changes)>;
// Called once, from the cache's thread, when the cache gives up (e.g. 403 on the watch). The
// cache thread then ends.
using ErrorHandler = std::function<void(const std::string& message)>;

// List+watch cache (informer) of one resource. start() lists synchronously (throws on
// failure) then watches on a thread of its own: reconnects from the last resourceVersion
// after a dropped stream (with backoff), relists on 410 Gone and reports only the real
// differences. The handlers may be called until stop() returns.
class Cache {
public:
  // on_error: the cache stopped (fatal). on_warning: an event skipped or a watch dropped and
  // listed again because of what the server sent (the cache goes on).
  Cache(Client& client, CacheOptions options, ChangeHandler on_change, ErrorHandler on_error,
        ErrorHandler on_warning = {});
  ~Cache(); // stops
  Cache(const Cache&) = delete;
  Cache& operator=(const Cache&) = delete;

  // Lists (paging; restarting the list if the continue token expires) and reports the
  // initial content as one batch of changes; then, if `watch`, starts the watch thread.
  void start(bool watch = true);
  void stop();

  std::string resource_version() const;
  // Counters for tests and diagnostics.
  struct Stats {
    std::uint64_t lists = 0, watches = 0, events = 0, relists = 0, reconnects = 0;
  };
  Stats stats() const;

private:
  void list_all(std::stop_token stop);
  void watch_loop(std::stop_token stop);
  void report(std::vector<Change> changes);

  Client& client_;
  CacheOptions options_;
  ChangeHandler on_change_;
  ErrorHandler on_error_;
  ErrorHandler on_warning_;
  mutable std::mutex mutex_; // guards store_ and stats_
  Store store_;
  Stats stats_;
  std::jthread thread_;
  std::mt19937_64 rng_;
};

// ---------------------------------------------------------------------------------------
// What k8slb-watch prints: a sorted view of several caches, one `v1 List` per change.

struct ViewOptions {
  std::string lb_class; // our spec.loadBalancerClass; empty: only Services without a class
};

// Services k8slb cares about: type LoadBalancer whose spec.loadBalancerClass is ours (or
// unset); and any Service that is not (or no longer) type LoadBalancer but still carries
// status.loadBalancer.ingress, so the allocator can release its IPs. A LoadBalancer Service
// of another class belongs to another controller and is left out.
bool wanted_service(const json& service, const ViewOptions& options);

// Objects of several kinds sorted by (kind, namespace, name), each kept in its serialised
// form so that one change costs one object's serialisation.
class View {
public:
  explicit View(ViewOptions options = {});
  // Applies changes from one cache (Services are filtered); true when the view changed.
  // With `events`, each change to the view is also appended to it as one watch event line,
  // as `kubectl get -w -o json --output-watch-events` prints them:
  // {"type":"ADDED|MODIFIED|DELETED","object":{...}} (a Service the filter drops now is
  // DELETED, with its last state).
  bool apply(const ResourceKind& kind, const std::vector<Change>& changes,
             std::vector<std::string>* events = nullptr);
  // The whole view as one line: {"apiVersion":"v1","items":[...],"kind":"List","metadata":{...}},
  // with the time the change was seen (observed_at_text(), k8slb/documents.hpp) when given.
  std::string document(std::string_view observed_at = {}) const;
  std::size_t size() const { return items_.size(); }

private:
  ViewOptions options_;
  // (kind, namespace, name) -> the object as compact JSON
  std::map<std::tuple<std::string, std::string, std::string>, std::string> items_;
};

// ---- k8slb-watch's pacing --------------------------------------------------------------------

// "200ms", "2s", "1m", "0" -> milliseconds; an Error naming `option` for anything else.
std::chrono::milliseconds parse_duration(std::string_view text, std::string_view option);

// When changes first seen at `first_change` are printed: at once after a quiet window (or when
// nothing was printed yet), else when the window of the last document ends. At most one
// document per window, and a lone change waits for nothing.
std::chrono::steady_clock::time_point print_at(std::chrono::steady_clock::time_point first_change,
                                               std::optional<std::chrono::steady_clock::time_point> last_printed,
                                               std::chrono::milliseconds window);

} // namespace k8slb::kube
