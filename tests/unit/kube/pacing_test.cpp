// k8slb-watch's pacing: --debounce durations and when a document is printed.
#include <gtest/gtest.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {
namespace {

using std::chrono::milliseconds;

TEST(Pacing, Durations) {
  const std::vector<std::pair<std::string, milliseconds>> good = {
      {"0", milliseconds(0)}, {"0ms", milliseconds(0)}, {"50ms", milliseconds(50)},
      {"2s", milliseconds(2000)}, {"1m", milliseconds(60000)}, {"10080m", milliseconds(604800000)}};
  for (const auto& [text, expected] : good) EXPECT_EQ(parse_duration(text, "--debounce"), expected) << text;
  for (const std::string text : {"", "5", "-1s", "1h", "ms", "1.5s", "2 s", "10msx", "10081m", "200000000m",
                                 "99999999999999999999ms"}) {
    SCOPED_TRACE(text);
    try {
      parse_duration(text, "--debounce");
      ADD_FAILURE() << "accepted";
    } catch (const Error& error) {
      EXPECT_EQ(std::string(error.what()), "--debounce: \"" + text + "\" is not a duration like 200ms or 1s (at most a week)");
    }
  }
}

TEST(Pacing, ALoneChangeGoesOutAtOnceABurstOncePerWindow) {
  using Clock = std::chrono::steady_clock;
  const Clock::time_point t0{};
  const milliseconds window(50);
  struct Case {
    const char* description;
    milliseconds first_change;
    std::optional<milliseconds> last_printed; // since t0
    milliseconds expected;
  };
  const std::vector<Case> cases = {
      {"nothing printed yet: at once", milliseconds(10), std::nullopt, milliseconds(10)},
      {"after a quiet window: at once", milliseconds(500), milliseconds(100), milliseconds(500)},
      {"exactly a window later: at once", milliseconds(150), milliseconds(100), milliseconds(150)},
      {"within the window: when it ends", milliseconds(120), milliseconds(100), milliseconds(150)},
      {"right after printing: a whole window", milliseconds(100), milliseconds(100), milliseconds(150)},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    std::optional<Clock::time_point> last;
    if (c.last_printed) last = t0 + *c.last_printed;
    EXPECT_EQ(print_at(t0 + c.first_change, last, window), t0 + c.expected);
  }
  EXPECT_EQ(print_at(t0 + milliseconds(100), t0 + milliseconds(100), milliseconds(0)), t0 + milliseconds(100))
      << "--debounce 0 prints every change at once";
}

} // namespace
} // namespace k8slb::kube
