#pragma once
// What every k8slb tool shares: the top-level catch, exit codes and diagnostics on stderr.

#include <chrono>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

#include <CLI/CLI.hpp>

namespace k8slb::tool {

inline constexpr int kExitOk = 0;
inline constexpr int kExitFailure = 1;
inline constexpr int kExitUsage = 2;
inline constexpr int kExitPartial = 3;

// kExitPartial: the output was written (or applied) but some objects were left out, each
// named on stderr. kExitFailure: nothing was written.

// Sets the program name used in diagnostics.
void set_program(std::string name);
const std::string& program();

// Diagnostics on stderr, one line each: "k8slb-render: error: message", "k8slb-render:
// warning: message", "k8slb-render: message" (info), "k8slb-render: debug: message". With
// LOG_FORMAT=logfmt (the entrypoints set it) the same as logfmt, one format for every tool
// and script in a pod's log:
//   time=2026-11-28T10:03:20.123Z level=error component=k8slb-render msg="default/web: ..."
// LOG_LEVEL (error, warn, info, debug; default info) drops the lines below it. Data on stdout
// is never touched. An unknown value of either is said once, as a warning.
enum class Level { error, warn, info, debug };
void error(std::string_view message);
void warning(std::string_view message);
void info(std::string_view message);
void debug(std::string_view message);
bool enabled(Level level); // whether lines of `level` are printed (skip building costly ones)
// A line on behalf of another program (a daemon's own output): "haproxy: warning: message", or
// logfmt with component=haproxy. LOG_LEVEL applies.
void print_as(std::string_view component, Level level, std::string_view message);

// "error", "warn"/"warning", "info", "debug", in any case; nullopt for anything else.
std::optional<Level> parse_level(std::string_view text);
// A logfmt value: bare when it holds no space, '=', '"', '\\' or control character, else
// quoted with those escaped.
std::string logfmt_value(std::string_view value);
std::string logfmt_line(std::chrono::system_clock::time_point time, Level level, std::string_view component,
                        std::string_view message);

// Parses options with `app` (CLI11: --help, --version handled), then calls `run`, which
// returns the exit code. Catches everything: CLI errors exit 2, k8slb::Error and other
// exceptions exit 1 with one "program: error: ..." line. A closed stdout (EPIPE) is a normal
// end. Flushes stdout.
int run_main(CLI::App& app, int argc, char** argv, const std::function<int()>& run);

// Who reports: $POD_NAME, else the host name, else "k8slb" (an Event's reportingInstance, a
// Lease's holder).
std::string instance_name();

// Writes a line to stdout and flushes; returns false when stdout is closed.
bool write_line(std::string_view line);

// Whether input arrives on standard input (or it ends) within `wait` (at most a minute), for a
// tool that has work to do when its input is idle.
bool stdin_readable_within(std::chrono::milliseconds wait);

// K8SLB_TIMING=1 in the environment: one line per document on stderr with the time of each
// stage since the last ("timing: read 3.1 ms render 180.2 ms ... (4861234 bytes out)"), to see
// where the time goes in a pipeline (docs/figures.md). Off, it costs a branch per mark.
class StageTimer {
public:
  StageTimer();
  void restart();                 // a new document: stages marked and not flushed are dropped
  void mark(std::string_view stage);
  void flush(std::size_t bytes);  // prints the line, then restarts

private:
  using Clock = std::chrono::steady_clock;
  bool enabled_;
  Clock::time_point last_;
  std::string line_;
};

} // namespace k8slb::tool
