#include "k8slb/tool.hpp"

#include <algorithm>
#include <cerrno>
#include <ctime>
#include <csignal>
#include <poll.h>
#include <cstdio>
#include <cstdlib>
#include <iostream>
#include <mutex>

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

// LOG_LEVEL and LOG_FORMAT, read once (see tool.hpp).
struct LogSettings {
  Level level = Level::info;
  bool logfmt = false;
  std::string problem; // an unknown value, said once with the first line
};

const LogSettings& log_settings() {
  static const LogSettings settings = [] {
    LogSettings out;
    if (const char* text = std::getenv("LOG_LEVEL"); text != nullptr && *text != '\0') {
      if (auto level = parse_level(text)) out.level = *level;
      else out.problem = fmt::format("LOG_LEVEL: '{}' is not error, warn, info or debug; using info", shorten(text, 40));
    }
    if (const char* text = std::getenv("LOG_FORMAT"); text != nullptr && *text != '\0') {
      std::string_view format = text;
      if (format == "logfmt") out.logfmt = true;
      else if (format != "text")
        out.problem = fmt::format("LOG_FORMAT: '{}' is not text or logfmt; using text", shorten(text, 40));
    }
    return out;
  }();
  return settings;
}

std::string_view level_name(Level level) {
  switch (level) {
  case Level::error: return "error";
  case Level::warn: return "warn";
  case Level::info: return "info";
  case Level::debug: return "debug";
  }
  return "info";
}

void emit(Level level, std::string_view message, std::string_view component) {
  const LogSettings& settings = log_settings();
  if (level > settings.level) return;
  // Messages are built from shortened parts (describe); a message built otherwise (a library's
  // text quoting its input) is cut here.
  const std::string text = shorten(message, 3 * kMaxShown);
  if (settings.logfmt) {
    fmt::print(stderr, "{}\n", logfmt_line(std::chrono::system_clock::now(), level, component, text));
  } else {
    std::string_view prefix = level == Level::error ? "error: " : level == Level::warn ? "warning: "
                              : level == Level::debug ? "debug: " : "";
    fmt::print(stderr, "{}: {}{}\n", component, prefix, text);
  }
  std::fflush(stderr);
}

void print(Level level, std::string_view message, std::string_view component = program_name()) {
  // Tools log from several threads (k8slb-apply cluster, events): said once, whichever is first.
  static std::once_flag said;
  std::call_once(said, [] {
    if (!log_settings().problem.empty()) emit(Level::warn, log_settings().problem, program_name());
  });
  emit(level, message, component);
}
} // namespace

std::optional<Level> parse_level(std::string_view text) {
  std::string lower;
  for (char c : text) lower += static_cast<char>(c >= 'A' && c <= 'Z' ? c - 'A' + 'a' : c);
  if (lower == "error") return Level::error;
  if (lower == "warn" || lower == "warning") return Level::warn;
  if (lower == "info") return Level::info;
  if (lower == "debug") return Level::debug;
  return std::nullopt;
}

std::string logfmt_value(std::string_view value) {
  const bool bare = !value.empty() && value.find_first_of(" =\"\\") == std::string_view::npos &&
                    std::none_of(value.begin(), value.end(), [](char c) { return static_cast<unsigned char>(c) < 0x20; });
  if (bare) return std::string(value);
  std::string out = "\"";
  for (char c : value) {
    switch (c) {
    case '"': out += "\\\""; break;
    case '\\': out += "\\\\"; break;
    case '\n': out += "\\n"; break;
    case '\t': out += "\\t"; break;
    case '\r': out += "\\r"; break;
    default:
      if (static_cast<unsigned char>(c) < 0x20) out += fmt::format("\\u{:04x}", static_cast<unsigned char>(c));
      else out += c;
    }
  }
  return out + "\"";
}

std::string logfmt_line(std::chrono::system_clock::time_point time, Level level, std::string_view component,
                        std::string_view message) {
  const auto millis = std::chrono::duration_cast<std::chrono::milliseconds>(time.time_since_epoch()).count();
  const std::time_t seconds = static_cast<std::time_t>(millis / 1000);
  std::tm utc{};
  gmtime_r(&seconds, &utc);
  return fmt::format("time={:04}-{:02}-{:02}T{:02}:{:02}:{:02}.{:03}Z level={} component={} msg={}", utc.tm_year + 1900,
                     utc.tm_mon + 1, utc.tm_mday, utc.tm_hour, utc.tm_min, utc.tm_sec, millis % 1000,
                     level_name(level), logfmt_value(component), logfmt_value(message));
}

void set_program(std::string name) { program_name() = std::move(name); }
const std::string& program() { return program_name(); }

void error(std::string_view message) { print(Level::error, message); }
void warning(std::string_view message) { print(Level::warn, message); }
void info(std::string_view message) { print(Level::info, message); }
void debug(std::string_view message) { print(Level::debug, message); }
bool enabled(Level level) { return level <= log_settings().level; }
void print_as(std::string_view component, Level level, std::string_view message) { print(level, message, component); }

bool write_line(std::string_view line) {
  std::cout.clear(); // a reader that went away may have come back (a FIFO reopened)
  std::cout.write(line.data(), static_cast<std::streamsize>(line.size()));
  std::cout.put('\n');
  std::cout.flush();
  return static_cast<bool>(std::cout);
}

bool stdin_readable_within(std::chrono::milliseconds wait) {
  pollfd fd{0, POLLIN, 0};
  return ::poll(&fd, 1, static_cast<int>(std::clamp<long long>(wait.count(), 0, 60'000))) > 0;
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

StageTimer::StageTimer() : enabled_(std::getenv("K8SLB_TIMING") != nullptr), last_(Clock::now()) {}

void StageTimer::restart() {
  line_.clear(); // the stages of a document that failed before its flush
  last_ = Clock::now();
}

void StageTimer::mark(std::string_view stage) {
  if (!enabled_) return;
  auto now = Clock::now();
  line_ += fmt::format(" {} {:.1f} ms", stage, std::chrono::duration<double, std::milli>(now - last_).count());
  last_ = now;
}

void StageTimer::flush(std::size_t bytes) {
  if (!enabled_) return;
  info(fmt::format("timing:{} ({} bytes out)", line_, bytes));
  line_.clear();
  last_ = Clock::now();
}

} // namespace k8slb::tool
