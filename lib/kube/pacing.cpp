// k8slb-watch's pacing: the --debounce duration and the rule for when a document is printed.
#include <algorithm>
#include <charconv>

#include <fmt/format.h>

#include "k8slb/kube.hpp"

namespace k8slb::kube {

std::chrono::milliseconds parse_duration(std::string_view text, std::string_view option) {
  long long value = 0;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), value);
  const std::string_view unit(end, static_cast<std::size_t>(text.data() + text.size() - end));
  // At most a week: a longer one would overflow the clock it is added to.
  constexpr long long kWeekMs = 7LL * 24 * 3600 * 1000;
  if (ec == std::errc() && value >= 0 && value <= kWeekMs) {
    std::chrono::milliseconds duration(-1);
    if (unit == "ms" || (unit.empty() && value == 0)) duration = std::chrono::milliseconds(value);
    if (unit == "s") duration = std::chrono::seconds(value);
    if (unit == "m") duration = std::chrono::minutes(value);
    if (duration.count() >= 0 && duration.count() <= kWeekMs) return duration;
  }
  fail(option, "", fmt::format("\"{}\" is not a duration like 200ms or 1s (at most a week)", text));
}

std::chrono::steady_clock::time_point print_at(std::chrono::steady_clock::time_point first_change,
                                               std::optional<std::chrono::steady_clock::time_point> last_printed,
                                               std::chrono::milliseconds window) {
  if (!last_printed) return first_change;
  return std::max(first_change, *last_printed + window);
}

} // namespace k8slb::kube
