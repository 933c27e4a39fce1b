#pragma once
// Prometheus metrics: a registry of metric families, its text exposition (format 0.0.4), an
// HTTP endpoint that serves it (Boost.Beast) and a writer that keeps it in a file, so that the
// tools of one pipeline can be scraped through one endpoint (`k8slb-apply metrics`), the way
// node_exporter's textfile collector reads the files of short-lived jobs.
//
// Names follow Prometheus' conventions: a `k8slb_` prefix, `_total` on counters and only on
// them, base units (`_seconds`, `_bytes`), `_seconds` histograms.

#include <chrono>
#include <cstdint>
#include <functional>
#include <map>
#include <memory>
#include <mutex>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace CLI {
class App;
}

namespace k8slb::metrics {

enum class Type { counter, gauge, histogram };

class Registry;

// One metric family: its series are told apart by their label values, given in the order of
// the family's label names. Thread-safe (the registry's lock).
class Family {
public:
  void add(const std::vector<std::string>& label_values, double delta = 1); // counter or gauge
  void set(const std::vector<std::string>& label_values, double value);     // gauge
  void observe(const std::vector<std::string>& label_values, double value); // histogram
  void clear();                                                             // drop every series
  // The same with no labels.
  void add(double delta = 1) { add({}, delta); }
  void set(double value) { set({}, value); }
  void observe(double value) { observe({}, value); }

private:
  friend class Registry;
  struct Series {
    double value = 0;                  // counter, gauge; histogram: the sum
    std::vector<std::uint64_t> counts; // histogram: per bucket (not cumulative), then +Inf
  };
  Family(Registry& registry, std::string name, std::string help, Type type, std::vector<std::string> label_names,
         std::vector<double> buckets);
  Series& series(const std::vector<std::string>& label_values); // caller holds the lock
  void write(std::string& out) const;

  Registry& registry_;
  std::string name_;
  std::string help_;
  Type type_;
  std::vector<std::string> label_names_;
  std::vector<double> buckets_;
  std::map<std::vector<std::string>, Series> series_;
};

// The families of one process. Declaring a family twice with the same name, type and labels
// returns the first; a name that breaks the conventions above is a programming error
// (std::logic_error).
class Registry {
public:
  Registry() = default;
  Registry(const Registry&) = delete;
  Registry& operator=(const Registry&) = delete;

  Family& counter(std::string name, std::string help, std::vector<std::string> label_names = {});
  Family& gauge(std::string name, std::string help, std::vector<std::string> label_names = {});
  Family& histogram(std::string name, std::string help, std::vector<double> buckets,
                    std::vector<std::string> label_names = {});

  std::string exposition() const; // the text format, families in the order declared
  std::uint64_t version() const;  // grows with every change

private:
  friend class Family;
  Family& declare(std::string name, std::string help, Type type, std::vector<std::string> label_names,
                  std::vector<double> buckets);
  mutable std::mutex mutex_;
  std::vector<std::unique_ptr<Family>> families_;
  std::uint64_t version_ = 0;
};

// The registry of this process, where the tools' metrics live.
Registry& process_registry();

// The name this process gives itself in the families that several processes of one pod
// export alike (API requests): "k8slb-watch", "k8slb-apply cluster". Default: the program's.
void set_component(std::string name);
std::string component();

// Buckets for durations of the pipeline, from 5 ms to 30 s.
std::vector<double> duration_buckets();

// Merges expositions (e.g. one file per tool) into one: each family once, with the samples of
// every input in input order; lines that are not samples or HELP/TYPE are dropped. The first
// HELP and TYPE of a family win.
std::string merge_expositions(const std::vector<std::string>& texts);

// The expositions in the files `*.prom` of `directory`, sorted by file name, plus
// k8slb_metrics_file_age_seconds{file=...} telling how old each is. A missing directory gives
// none.
std::vector<std::string> read_directory(const std::string& directory);

// Serves GET /metrics (and GET / with a link to it) over HTTP/1.1 from a thread of its own;
// every answer calls `body` for the text. `address` is "HOST:PORT" with an IPv4 address,
// "[IPv6]:PORT", or ":PORT" for every address of both families; port 0 picks a free one.
// Throws k8slb::Error when the address is malformed or cannot be listened on. A slow or stuck
// client is dropped after 10 s and at most 64 connections are served at once, so a scrape
// never holds up the caller's work.
class Server {
public:
  Server(std::string_view address, std::function<std::string()> body);
  ~Server();
  Server(const Server&) = delete;
  Server& operator=(const Server&) = delete;
  std::string local_address() const; // "127.0.0.1:41234", "[::]:9402"

private:
  struct State;
  std::unique_ptr<State> state_;
};

// Keeps `registry`'s exposition in `path`: written (to a temporary file renamed over it)
// after each change, at most once per `interval`, from a thread of its own, and at least every
// 10 s so the reader can tell a live writer from a dead one. Removed when destroyed.
class FileWriter {
public:
  FileWriter(Registry& registry, std::string path,
             std::chrono::milliseconds interval = std::chrono::milliseconds(1000));
  ~FileWriter();
  FileWriter(const FileWriter&) = delete;
  FileWriter& operator=(const FileWriter&) = delete;

private:
  struct State;
  std::unique_ptr<State> state_;
};

// The metrics options every tool takes, and what they start.
struct Options {
  std::string address; // --metrics-addr: serve this process's metrics
  std::string file;    // --metrics-file: keep them in this file
};
void add_options(CLI::App& app, Options& options);

// Starts what `options` ask for on the process registry (nothing when both are empty). Throws
// k8slb::Error naming the option when the address cannot be served.
class Publisher {
public:
  explicit Publisher(const Options& options);
  ~Publisher();

private:
  std::unique_ptr<Server> server_;
  std::unique_ptr<FileWriter> writer_;
};

} // namespace k8slb::metrics
