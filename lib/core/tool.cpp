#include "k8slb/tool.hpp"

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstdlib>
#include <iostream>

#include <unistd.h>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

#include "k8slb/error.hpp"

namespace k8slb::tool {

namespace {
std::string& program_name() {
  static std::string name = "k8slb";
  return name;
}

// Thrown when stdout is gone: the reader went away, which ends a tool normally.
struct StdoutClosed {};

void print(std::string_view level, std::string_view message) {
  // Messages are built from shortened parts (describe); a message built otherwise (a library's
  // text quoting its input) is cut here.
  fmt::print(stderr, "{}: {}{}\n", program_name(), level, shorten(message, 3 * kMaxShown));
  std::fflush(stderr);
}
} // namespace

void set_program(std::string name) { program_name() = std::move(name); }
const std::string& program() { return program_name(); }

void error(std::string_view message) { print("error: ", message); }
void warning(std::string_view message) { print("warning: ", message); }
void info(std::string_view message) { print("", message); }

bool write_line(std::string_view line) {
  std::cout.clear(); // a reader that went away may have come back (a FIFO reopened)
  std::cout.write(line.data(), static_cast<std::streamsize>(line.size()));
  std::cout.put('\n');
  std::cout.flush();
  return static_cast<bool>(std::cout);
}

int run_main(CLI::App& app, int argc, char** argv, const std::function<int()>& run) {
  // A closed stdout shows up as EPIPE on write, not as a signal.
  std::signal(SIGPIPE, SIG_IGN);
  std::ios::sync_with_stdio(false);
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForAllHelp& e) {
    return app.exit(e);
  } catch (const CLI::CallForVersion& e) {
    return app.exit(e);
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  }
  int code = kExitFailure;
  try {
    code = run();
  } catch (const CLI::ParseError& e) {
    app.exit(e);
    return kExitUsage;
  } catch (const Error& e) {
    error(e.what());
    code = kExitFailure;
  } catch (const nlohmann::json::exception& e) {
    error(e.what());
    code = kExitFailure;
  } catch (const std::exception& e) {
    error(e.what());
    code = kExitFailure;
  }
  std::cout.flush();
  if (!std::cout && errno == EPIPE) return code == kExitOk ? kExitOk : code;
  return code;
}

std::string instance_name() {
  if (const char* pod = std::getenv("POD_NAME"); pod != nullptr && *pod != '\0') return pod;
  char host[256] = {};
  if (gethostname(host, sizeof host - 1) == 0 && host[0] != '\0') return host;
  return "k8slb";
}

} // namespace k8slb::tool
