#pragma once
// What every k8slb tool shares: the top-level catch, exit codes and diagnostics on stderr.

#include <functional>
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

// "k8slb-render: error: message" / "k8slb-render: warning: message" on stderr.
void error(std::string_view message);
void warning(std::string_view message);
void info(std::string_view message);

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

} // namespace k8slb::tool
