// List+watch cache (informer) of one resource: the I/O loop around Store.
#include "k8slb/kube.hpp"

#include "k8slb/documents.hpp"
#include "k8slb/metrics.hpp"

#include <condition_variable>

namespace k8slb::kube {
namespace {
// Families of the watch loop, by resource ("services", "configmap/k8slb-system/global").
struct WatchMetrics {
  metrics::Family& reconnects = metrics::process_registry().counter(
      "k8slb_watch_reconnects_total", "Watch streams started again after one ended or failed.", {"resource"});
  metrics::Family& relists = metrics::process_registry().counter(
      "k8slb_watch_relists_total", "Full lists after the server no longer had the resourceVersion (410 Gone).",
      {"resource"});
  metrics::Family& events = metrics::process_registry().counter(
      "k8slb_watch_events_total", "Watch events received.", {"resource"});
};
WatchMetrics& watch_metrics() {
  static WatchMetrics families;
  return families;
}

// How many times a paged list restarts because its continue token expired.
constexpr int kMaxListRestarts = 5;

bool is_transient(const std::exception& e) {
  if (dynamic_cast<const TransportError*>(&e)) return true;
  if (auto* api = dynamic_cast<const ApiError*>(&e)) return is_retryable_status(api->status());
  return false;
}

// Sleeps for `delay` or until stop is requested; false when stopped.
bool sleep_for(std::chrono::milliseconds delay, std::stop_token stop) {
  std::mutex mutex;
  std::condition_variable_any cv;
  std::unique_lock lock(mutex);
  cv.wait_for(lock, stop, delay, [] { return false; });
  return !stop.stop_requested();
}

} // namespace

Cache::Cache(Client& client, CacheOptions options, ChangeHandler on_change, ErrorHandler on_error,
             ErrorHandler on_warning)
    : client_(client), options_(std::move(options)), on_change_(std::move(on_change)),
      on_error_(std::move(on_error)), on_warning_(std::move(on_warning)), store_(options_.resource.kind),
      rng_(std::random_device{}()) {
  if (!options_.resource.name.empty()) {
    std::string by_name = "metadata.name=" + options_.resource.name;
    options_.field_selector =
        options_.field_selector.empty() ? by_name : options_.field_selector + "," + by_name;
  }
}

Cache::~Cache() { stop(); }

void Cache::stop() {
  if (thread_.joinable()) {
    thread_.request_stop();
    thread_.join();
  }
}

void Cache::report(std::vector<Change> changes) {
  if (!changes.empty() && on_change_) on_change_(store_.kind(), changes);
}

void Cache::start(bool watch) {
  list_all(std::stop_token{});
  if (watch) thread_ = std::jthread([this](std::stop_token stop) { watch_loop(stop); });
}

void Cache::list_all(std::stop_token stop) {
  const std::string path = collection_path(options_.resource.kind, options_.resource.ns);
  for (int restart = 0;; ++restart) {
    std::vector<json> items;
    std::string resource_version;
    ListOptions list;
    list.label_selector = options_.label_selector;
    list.field_selector = options_.field_selector;
    list.limit = options_.page_size;
    bool expired = false;
    while (true) {
      const std::string target = path + query_string(list);
      Response response = client_.request("GET", target);
      if (response.status == 410 && !list.continue_token.empty()) {
        expired = true; // the continue token expired: start the list again
        break;
      }
      if (!response.ok())
        throw ApiError("GET", client_.url(target), response.status, response.status_message());
      json page = parse_json(response.body, "GET " + client_.url(target));
      if (!page.is_object() || !page.contains("items"))
        throw Error("GET " + client_.url(target) + ": response is not a list");
      if (page["items"].is_array())
        for (auto& item : page["items"]) items.push_back(std::move(item));
      const json metadata = page["metadata"].is_object() ? page["metadata"] : json::object();
      auto text = [&](const char* key) {
        return metadata.contains(key) && metadata[key].is_string() ? metadata[key].get<std::string>() : std::string();
      };
      resource_version = text("resourceVersion");
      list.continue_token = text("continue");
      if (list.continue_token.empty()) break;
      if (stop.stop_requested()) return;
    }
    if (expired) {
      if (restart + 1 >= kMaxListRestarts)
        throw Error("GET " + client_.url(path) + ": the list's continue token expired " +
                    std::to_string(kMaxListRestarts) + " times in a row");
      continue;
    }
    std::vector<Change> changes;
    {
      std::lock_guard lock(mutex_);
      changes = store_.replace(std::move(items), std::move(resource_version));
      ++stats_.lists;
    }
    report(std::move(changes));
    return;
  }
}

void Cache::watch_loop(std::stop_token stop) {
  const std::string path = collection_path(options_.resource.kind, options_.resource.ns);
  const RetryPolicy& policy = client_.config().retry;
  int failures = 0;
  bool need_list = false;
  bool first = true;
  while (!stop.stop_requested()) {
    if (failures > 0) {
      if (!sleep_for(backoff_delay(policy, std::min(failures, 30), rng_), stop)) return;
    }
    try {
      if (need_list) {
        list_all(stop);
        {
          std::lock_guard lock(mutex_);
          ++stats_.relists;
          watch_metrics().relists.add({options_.resource.to_string()});
        }
        need_list = false;
      }
      ListOptions watch;
      watch.label_selector = options_.label_selector;
      watch.field_selector = options_.field_selector;
      watch.watch = true;
      watch.allow_watch_bookmarks = true;
      watch.timeout_seconds = options_.watch_timeout_seconds;
      {
        std::lock_guard lock(mutex_);
        watch.resource_version = store_.resource_version();
        ++stats_.watches;
        if (!first) {
          ++stats_.reconnects;
          watch_metrics().reconnects.add({options_.resource.to_string()});
        }
      }
      first = false;
      bool gone = false;
      bool server_error = false;
      int lines = 0;
      const std::string target = path + query_string(watch);
      Response response = client_.stream_lines(
          target,
          [&](std::string_view line) {
            WatchEvent event;
            try {
              event = decode_watch_event(line);
            } catch (const Error& e) {
              // An event whose object k8slb cannot use (no name, metadata not an object): it
              // is skipped, the stream goes on. A line that is not an event at all ends the
              // watch and relists (below).
              if (std::string_view(e.what()).rfind("watch event: object", 0) != 0) throw;
              if (on_warning_) on_warning_(options_.resource.to_string() + ": skipped: " + e.what());
              ++lines;
              return true;
            }
            ++lines;
            if (event.type == EventType::error) {
              auto code = event.object.find("code");
              if (code != event.object.end() && code->is_number_integer() && *code == 410) gone = true;
              else server_error = true;
              return false;
            }
            std::optional<Change> change;
            {
              std::lock_guard lock(mutex_);
              change = store_.apply(event);
              ++stats_.events;
              watch_metrics().events.add({options_.resource.to_string()});
            }
            if (change) report({std::move(*change)});
            return true;
          },
          stop);
      if (stop.stop_requested()) return;
      if (gone || response.status == 410) {
        need_list = true;
        failures = 0;
        continue;
      }
      if (!response.ok()) {
        ApiError error("GET", client_.url(target), response.status, response.status_message());
        if (!is_retryable_status(response.status)) throw error;
        ++failures;
        continue;
      }
      // A stream that ended after events reconnects at once from the last resourceVersion;
      // one that ended with nothing (or with an ERROR) backs off.
      failures = (lines == 0 || server_error) ? failures + 1 : 0;
    } catch (const std::exception& e) {
      if (stop.stop_requested()) return;
      const bool decode_error = dynamic_cast<const Error*>(&e) && !dynamic_cast<const ApiError*>(&e) &&
                                !dynamic_cast<const TransportError*>(&e) &&
                                std::string_view(e.what()).rfind("watch event", 0) == 0;
      if (decode_error) {
        // A line that is not a watch event (malformed, too long): the stream cannot be
        // trusted from here; list again and watch from the list's resourceVersion.
        if (on_warning_) on_warning_(options_.resource.to_string() + ": " + e.what() + " (listing again)");
        need_list = true;
        ++failures;
        continue;
      }
      if (is_transient(e)) {
        ++failures;
        continue;
      }
      if (on_error_) on_error_(options_.resource.to_string() + ": " + e.what());
      return;
    }
  }
}

std::string Cache::resource_version() const {
  std::lock_guard lock(mutex_);
  return store_.resource_version();
}

Cache::Stats Cache::stats() const {
  std::lock_guard lock(mutex_);
  return stats_;
}

} // namespace k8slb::kube
