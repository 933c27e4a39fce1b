// Metrics kept in files (one per process of a pipeline) and the options every tool takes.
#include "k8slb/metrics.hpp"

#include <algorithm>
#include <condition_variable>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <sstream>
#include <thread>

#include <CLI/CLI.hpp>
#include <fmt/format.h>
#include <unistd.h>

#include "k8slb/error.hpp"
#include "k8slb/tool.hpp"

namespace k8slb::metrics {
namespace {

constexpr auto kRefresh = std::chrono::seconds(10); // a live writer rewrites at least this often
constexpr auto kStale = std::chrono::seconds(60);   // a file older than this has no live writer

// Writes `text` to `path` through a temporary file in the same directory and a rename, so a
// reader sees the old text or the new one, never half of one.
bool write_atomically(const std::string& path, const std::string& text) {
  auto temporary = fmt::format("{}.tmp{}", path, ::getpid());
  {
    std::ofstream out(temporary, std::ios::trunc);
    out << text;
    if (!out.flush())
      return false;
  }
  return std::rename(temporary.c_str(), path.c_str()) == 0;
}

} // namespace

struct FileWriter::State {
  Registry& registry;
  std::string path;
  std::chrono::milliseconds interval;
  std::mutex mutex;
  std::condition_variable wake;
  bool stopping = false;
  std::thread thread;

  void loop() {
    std::uint64_t written = 0;
    auto last = std::chrono::steady_clock::time_point{};
    bool warned = false;
    std::unique_lock lock(mutex);
    while (!stopping) {
      auto now = std::chrono::steady_clock::now();
      auto version = registry.version();
      if (version != written || now - last >= kRefresh) {
        lock.unlock();
        bool ok = write_atomically(path, registry.exposition());
        lock.lock();
        if (!ok && !warned)
          tool::warning(describe("--metrics-file", path, "cannot be written; metrics are not kept there"));
        warned = warned || !ok;
        written = version;
        last = now;
      }
      wake.wait_for(lock, interval, [this] { return stopping; });
    }
  }
};

FileWriter::FileWriter(Registry& registry, std::string path, std::chrono::milliseconds interval)
    : state_(new State{registry, std::move(path), interval, {}, {}, false, {}}) {
  state_->thread = std::thread([state = state_.get()] { state->loop(); });
}

FileWriter::~FileWriter() {
  {
    std::lock_guard lock(state_->mutex);
    state_->stopping = true;
  }
  state_->wake.notify_all();
  state_->thread.join();
  std::remove(state_->path.c_str());
}

std::vector<std::string> read_directory(const std::string& directory) {
  namespace fs = std::filesystem;
  std::vector<fs::path> files;
  std::error_code error;
  for (fs::directory_iterator it(directory, error), end; !error && it != end; it.increment(error))
    if (it->path().extension() == ".prom" && it->is_regular_file(error))
      files.push_back(it->path());
  std::sort(files.begin(), files.end());
  std::vector<std::string> texts;
  std::string ages = "# HELP k8slb_metrics_file_age_seconds Seconds since a pipeline process last wrote its "
                     "metrics file (rewritten at least every 10 s; files older than 60 s are left out).\n"
                     "# TYPE k8slb_metrics_file_age_seconds gauge\n";
  auto now = fs::file_time_type::clock::now();
  for (const auto& file : files) {
    auto modified = fs::last_write_time(file, error);
    if (error)
      continue;
    auto age = std::chrono::duration<double>(now - modified);
    if (age > kStale)
      continue;
    std::ifstream in(file);
    std::stringstream text;
    text << in.rdbuf();
    if (!in)
      continue;
    texts.push_back(text.str());
    ages += fmt::format("k8slb_metrics_file_age_seconds{{file=\"{}\"}} {:.3f}\n", file.filename().string(),
                        std::max(0.0, age.count()));
  }
  texts.push_back(ages);
  return texts;
}

void add_options(CLI::App& app, Options& options) {
  app.add_option("--metrics-addr", options.address,
                 "Serve Prometheus metrics on this address (:9402, 127.0.0.1:9402, [::1]:9402); default: off");
  app.add_option("--metrics-file", options.file,
                 "Keep Prometheus metrics in this file (for k8slb-apply metrics); default: off");
}

Publisher::Publisher(const Options& options) {
  auto& registry = process_registry();
  if (!options.address.empty()) {
    try {
      server_ = std::make_unique<Server>(options.address, [&registry] { return registry.exposition(); });
    } catch (const Error& error) {
      throw Error("--metrics-addr: " + std::string(error.what()));
    }
  }
  if (!options.file.empty())
    writer_ = std::make_unique<FileWriter>(registry, options.file);
}

Publisher::~Publisher() = default;

} // namespace k8slb::metrics
