// Log lines: levels and logfmt, as tables.

#include <chrono>
#include <optional>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "k8slb/tool.hpp"

namespace k8slb::tool {
namespace {

TEST(LogLevel, Parsed) {
  struct Case {
    std::string text;
    std::optional<Level> level;
  };
  const std::vector<Case> cases = {
      {"error", Level::error}, {"warn", Level::warn},   {"warning", Level::warn}, {"info", Level::info},
      {"debug", Level::debug}, {"DEBUG", Level::debug}, {"Info", Level::info},    {"", std::nullopt},
      {"trace", std::nullopt}, {"info ", std::nullopt}, {"3", std::nullopt},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    EXPECT_EQ(parse_level(c.text), c.level);
  }
}

TEST(Logfmt, Values) {
  struct Case {
    std::string value, printed;
  };
  const std::vector<Case> cases = {
      {"k8slb-render", "k8slb-render"},
      {"", "\"\""},
      {"two words", "\"two words\""},
      {"a=b", "\"a=b\""},
      {"say \"hi\"", "\"say \\\"hi\\\"\""},
      {"back\\slash", "\"back\\\\slash\""},
      {"line\nbreak", "\"line\\nbreak\""},
      {"tab\there", "\"tab\\there\""},
      {std::string("nul\0x", 5), "\"nul\\u0000x\""},
      {"no interface named 'eth9'", "\"no interface named 'eth9'\""},
      {"ünïcode", "ünïcode"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.value);
    EXPECT_EQ(logfmt_value(c.value), c.printed);
  }
}

TEST(Logfmt, Line) {
  auto time = std::chrono::system_clock::from_time_t(1795600000) + std::chrono::milliseconds(42);
  EXPECT_EQ(logfmt_line(time, Level::warn, "k8slb-apply", "default/web: spec.ports[1]: no certificate"),
            "time=2026-11-25T09:46:40.042Z level=warn component=k8slb-apply "
            "msg=\"default/web: spec.ports[1]: no certificate\"");
  EXPECT_EQ(logfmt_line(time, Level::debug, "actor.sh", "ok"),
            "time=2026-11-25T09:46:40.042Z level=debug component=actor.sh msg=ok");
}

} // namespace
} // namespace k8slb::tool
