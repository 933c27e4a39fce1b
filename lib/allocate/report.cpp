#include "k8slb/report.hpp"

#include <algorithm>
#include <limits>
#include <map>
#include <regex>
#include <set>

#include <fmt/format.h>

#include "allocator.hpp"
#include "k8slb/error.hpp"
#include "request.hpp"

namespace k8slb::report {

namespace {

using nlohmann::json;
using Clock = std::chrono::system_clock;

bool ours(const model::Service& service, const allocate::Options& options) {
  return service.is_load_balancer() && service.lb_class == options.lb_class;
}

// Values in [low, high] whose last byte is `byte`.
ip::u128 count_with_last_byte(ip::u128 low, ip::u128 high, unsigned byte) {
  auto upto = [byte](ip::u128 x) -> ip::u128 { // in [0, x]
    return x < byte ? 0 : (x - byte) / 256 + 1;
  };
  return upto(high) - (low == 0 ? 0 : upto(low - 1));
}

std::string string_at(const json& object, std::initializer_list<const char*> path) {
  const json* at = &object;
  for (const char* key : path) {
    if (!at->is_object()) return {};
    auto it = at->find(key);
    if (it == at->end()) return {};
    at = &*it;
  }
  return at->is_string() ? at->get<std::string>() : std::string();
}

// The newest of the times an Event carries.
std::optional<Clock::time_point> event_time(const json& event) {
  std::optional<Clock::time_point> newest;
  for (const auto& path : {std::vector<const char*>{"lastTimestamp"}, {"eventTime"},
                           {"series", "lastObservedTime"}, {"firstTimestamp"}}) {
    const json* at = &event;
    for (const char* key : path) at = at && at->is_object() && at->contains(key) ? &(*at)[key] : nullptr;
    if (!at || !at->is_string()) continue;
    auto time = parse_time(at->get<std::string>());
    if (time && (!newest || *time > *newest)) newest = time;
  }
  return newest;
}

std::string rfc3339(Clock::time_point time) {
  auto seconds = std::chrono::floor<std::chrono::seconds>(time);
  auto days = std::chrono::floor<std::chrono::days>(seconds);
  std::chrono::year_month_day date{days};
  std::chrono::hh_mm_ss clock{seconds - days};
  return fmt::format("{:04}-{:02}-{:02}T{:02}:{:02}:{:02}Z", static_cast<int>(date.year()),
                     static_cast<unsigned>(date.month()), static_cast<unsigned>(date.day()), clock.hours().count(),
                     clock.minutes().count(), clock.seconds().count());
}

// Up to 2^53 a JSON number is exact in every reader; above, a decimal string.
json count_json(ip::u128 value) {
  if (value <= (ip::u128{1} << 53)) return static_cast<std::uint64_t>(value);
  return decimal(value);
}

json or_null(const std::string& text) { return text.empty() ? json(nullptr) : json(text); }

} // namespace

std::vector<PoolUsage> pool_usage(const std::vector<model::Service>& services, const pool::Config& config,
                                  const allocate::Options& options) {
  std::set<ip::Address> held;
  for (const model::Service& service : services) {
    if (!ours(service, options)) continue;
    for (const std::string& text : service.ingress_ips)
      if (auto address = ip::Address::try_parse(text)) held.insert(*address);
  }
  return pool_usage(held, config);
}

namespace {
const ip::Address& address_of(const ip::Address& address) { return address; }
const ip::Address& address_of(const std::pair<const ip::Address, std::size_t>& entry) { return entry.first; }

// `held`: a sorted container of addresses (a set, or a map from address to count).
template <typename Held>
std::vector<PoolUsage> usage_of(const Held& held, const pool::Config& config) {
  std::vector<PoolUsage> rows;
  for (const pool::Pool& pool : config.pools) {
    PoolUsage row;
    row.pool = pool.name;
    row.family = pool.family();
    row.network = pool.network.to_string();
    row.range = pool.range.to_string();
    auto bounds = allocate::detail::dynamic_bounds(pool);
    auto handed_out = [&](const ip::Address& address) {
      return bounds && address.family() == pool.family() && address.value() >= bounds->first &&
             address.value() <= bounds->second && !(pool.avoid_buggy_ips && allocate::detail::is_buggy(address));
    };
    if (bounds) {
      row.size = bounds->second - bounds->first + 1; // a whole ::/0 would overflow: no pool is (reserved blocks)
      if (pool.avoid_buggy_ips && pool.family() == ip::Family::v4)
        row.size -= count_with_last_byte(bounds->first, bounds->second, 0) +
                    count_with_last_byte(bounds->first, bounds->second, 255);
    }
    ip::u128 held_handed_out = 0;
    auto from = held.lower_bound(pool.network.first());
    for (auto it = from; it != held.end() && pool.network.contains(address_of(*it)); ++it) {
      ++row.in_use;
      if (handed_out(address_of(*it))) ++held_handed_out;
    }
    row.free = row.size - held_handed_out;
    rows.push_back(std::move(row));
  }
  return rows;
}
} // namespace

std::vector<PoolUsage> pool_usage(const std::set<ip::Address>& held, const pool::Config& config) {
  return usage_of(held, config);
}

std::vector<PoolUsage> pool_usage(const std::map<ip::Address, std::size_t>& held, const pool::Config& config) {
  return usage_of(held, config);
}

std::optional<std::pair<std::string, std::string>> parse_node_assigned(std::string_view message) {
  static const std::regex kMessage{"([0-9A-Fa-f:.]+) is served by node ([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?)"};
  std::match_results<std::string_view::const_iterator> match;
  if (!std::regex_match(message.begin(), message.end(), match, kMessage)) return std::nullopt;
  auto address = ip::Address::try_parse(match[1].str());
  if (!address) return std::nullopt;
  return std::make_pair(address->to_string(), match[2].str());
}

std::optional<Clock::time_point> parse_time(std::string_view text) {
  static const std::regex kTime{
      R"((\d{4})-(\d{2})-(\d{2})[Tt](\d{2}):(\d{2}):(\d{2})(\.\d{1,9})?([Zz]|([+-])(\d{2}):(\d{2})))"};
  std::match_results<std::string_view::const_iterator> m;
  if (!std::regex_match(text.begin(), text.end(), m, kTime)) return std::nullopt;
  auto number = [&](int i) { return std::stoi(m[i].str()); };
  std::chrono::year_month_day date{std::chrono::year{number(1)}, std::chrono::month(number(2)),
                                   std::chrono::day(number(3))};
  if (!date.ok() || number(4) > 23 || number(5) > 59 || number(6) > 60) return std::nullopt;
  Clock::time_point time = std::chrono::sys_days{date};
  time += std::chrono::hours(number(4)) + std::chrono::minutes(number(5)) + std::chrono::seconds(number(6));
  if (m[7].matched) {
    std::string digits = m[7].str().substr(1);
    digits.resize(9, '0');
    time += std::chrono::duration_cast<Clock::duration>(std::chrono::nanoseconds(std::stoll(digits)));
  }
  if (m[9].matched) {
    auto offset = std::chrono::hours(number(10)) + std::chrono::minutes(number(11));
    time += m[9].str() == "+" ? -offset : offset;
  }
  return time;
}

std::vector<VipStatus> service_status(const std::vector<model::Service>& services, const std::vector<json>& events,
                                      const pool::Config* config, const allocate::Options& options) {
  // (namespace/name, vip) -> the newest NodeAssigned Event's node and time, with its uid.
  struct Notice {
    std::string uid;
    std::string node;
    Clock::time_point time;
  };
  std::multimap<std::pair<std::string, std::string>, Notice> notices;
  for (const json& event : events) {
    if (!event.is_object() || string_at(event, {"kind"}) != "Event" || string_at(event, {"reason"}) != "NodeAssigned" ||
        string_at(event, {"involvedObject", "kind"}) != "Service")
      continue;
    auto parsed = parse_node_assigned(string_at(event, {"message"}));
    auto time = event_time(event);
    if (!parsed || !time) continue;
    std::string key =
        string_at(event, {"involvedObject", "namespace"}) + "/" + string_at(event, {"involvedObject", "name"});
    notices.emplace(std::make_pair(key, parsed->first),
                    Notice{string_at(event, {"involvedObject", "uid"}), parsed->second, *time});
  }
  std::vector<const model::Service*> sorted;
  for (const model::Service& service : services)
    if (ours(service, options)) sorted.push_back(&service);
  std::sort(sorted.begin(), sorted.end(), [](const model::Service* a, const model::Service* b) {
    return std::tie(a->ns, a->name) < std::tie(b->ns, b->name);
  });
  std::vector<VipStatus> rows;
  for (const model::Service* service : sorted) {
    std::vector<std::string> ips;
    for (const std::string& text : service->ingress_ips)
      if (auto address = ip::Address::try_parse(text)) ips.push_back(address->to_string());
    if (ips.empty()) ips.emplace_back(); // pending
    for (const std::string& vip : ips) {
      VipStatus row;
      row.ns = service->ns;
      row.name = service->name;
      row.ip = vip;
      if (!vip.empty() && config) {
        if (const pool::Pool* pool = allocate::detail::pool_holding(*config, ip::Address::parse(vip)))
          row.pool = pool->name;
      }
      auto [first, last] = notices.equal_range({service->key(), vip});
      for (auto it = first; it != last; ++it) {
        const Notice& notice = it->second;
        // An Event about an earlier Service of the same name does not count.
        if (!notice.uid.empty() && !service->uid.empty() && notice.uid != service->uid) continue;
        if (row.since_time && notice.time < *row.since_time) continue;
        row.node = notice.node;
        row.since_time = notice.time;
        row.since = rfc3339(notice.time);
      }
      rows.push_back(std::move(row));
    }
  }
  return rows;
}

std::string cell(std::string_view text, std::string_view empty) {
  if (text.empty()) return std::string(empty);
  std::string shown = shorten(text, 253);
  std::string out;
  auto escape = [&out](unsigned char c) { out += fmt::format("\\x{:02x}", c); };
  for (std::size_t i = 0; i < shown.size();) {
    auto c = static_cast<unsigned char>(shown[i]);
    if (c < 0x80) {
      if (c < 0x20 || c == 0x7f) escape(c);
      else out += c == ' ' ? '_' : static_cast<char>(c);
      ++i;
      continue;
    }
    // A UTF-8 sequence: its length, and whether it is well formed and not a C1 control.
    std::size_t length = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
    if (c >= 0xf5) length = 0;
    bool valid = length != 0 && i + length <= shown.size();
    for (std::size_t k = 1; valid && k < length; ++k)
      valid = (static_cast<unsigned char>(shown[i + k]) & 0xc0) == 0x80;
    if (valid && length == 2 && c == 0xc2 && static_cast<unsigned char>(shown[i + 1]) < 0xa0) valid = false; // C1
    if (valid && length == 3) { // no overlong forms, no surrogates
      auto next = static_cast<unsigned char>(shown[i + 1]);
      valid = !(c == 0xe0 && next < 0xa0) && !(c == 0xed && next >= 0xa0);
    }
    if (valid && length == 4) {
      auto next = static_cast<unsigned char>(shown[i + 1]);
      valid = !(c == 0xf0 && next < 0x90) && !(c == 0xf4 && next >= 0x90);
    }
    if (!valid) {
      escape(c);
      ++i;
      continue;
    }
    out.append(shown, i, length);
    i += length;
  }
  return out;
}

std::string table(const std::vector<std::vector<std::string>>& rows) {
  // Widths in characters (UTF-8 continuation bytes do not count).
  auto width = [](const std::string& text) {
    return static_cast<std::size_t>(std::count_if(text.begin(), text.end(), [](char c) {
      return (static_cast<unsigned char>(c) & 0xc0) != 0x80;
    }));
  };
  std::vector<std::size_t> widths;
  for (const auto& row : rows) {
    if (widths.size() < row.size()) widths.resize(row.size(), 0);
    for (std::size_t i = 0; i < row.size(); ++i) widths[i] = std::max(widths[i], width(row[i]));
  }
  std::string out;
  for (const auto& row : rows) {
    std::string line;
    for (std::size_t i = 0; i < row.size(); ++i) {
      line += row[i];
      if (i + 1 < row.size()) line.append(widths[i] - width(row[i]) + 3, ' ');
    }
    out += line + "\n";
  }
  return out;
}

std::string age(Clock::duration duration) {
  long long s = std::chrono::duration_cast<std::chrono::seconds>(duration).count();
  if (s < 0) s = 0;
  long long m = s / 60, h = s / 3600, d = s / 86400;
  if (s < 120) return fmt::format("{}s", s);
  if (m < 10) return s % 60 == 0 ? fmt::format("{}m", m) : fmt::format("{}m{}s", m, s % 60);
  if (h < 3) return fmt::format("{}m", m);
  if (h < 8) return m % 60 == 0 ? fmt::format("{}h", h) : fmt::format("{}h{}m", h, m % 60);
  if (h < 48) return fmt::format("{}h", h);
  if (h < 192) return h % 24 == 0 ? fmt::format("{}d", d) : fmt::format("{}d{}h", d, h % 24);
  if (d < 365 * 2) return fmt::format("{}d", d);
  if (d < 365 * 8) return d % 365 == 0 ? fmt::format("{}y", d / 365) : fmt::format("{}y{}d", d / 365, d % 365);
  return fmt::format("{}y", d / 365);
}

std::string decimal(ip::u128 value) {
  if (value == 0) return "0";
  std::string digits;
  while (value != 0) {
    digits.insert(digits.begin(), static_cast<char>('0' + static_cast<int>(value % 10)));
    value /= 10;
  }
  return digits;
}

std::string status_table(const std::vector<VipStatus>& rows, Clock::time_point now) {
  std::vector<std::vector<std::string>> cells{{"NAMESPACE", "NAME", "IP", "POOL", "NODE", "SINCE", "AGE"}};
  for (const VipStatus& row : rows)
    cells.push_back({cell(row.ns), cell(row.name), cell(row.ip, "<pending>"), cell(row.pool, row.ip.empty() ? "-" : "unknown"),
                     cell(row.node, row.ip.empty() ? "-" : "unknown"), cell(row.since, row.ip.empty() ? "-" : "unknown"),
                     row.since_time ? age(now - *row.since_time) : "-"});
  return table(cells);
}

json status_json(const std::vector<VipStatus>& rows) {
  json items = json::array();
  for (const VipStatus& row : rows)
    items.push_back({{"namespace", row.ns},
                     {"name", row.name},
                     {"ip", or_null(row.ip)},
                     {"pool", or_null(row.pool)},
                     {"node", or_null(row.node)},
                     {"since", or_null(row.since)}});
  return {{"items", std::move(items)}};
}

std::string pools_table(const std::vector<PoolUsage>& rows) {
  std::vector<std::vector<std::string>> cells{{"POOL", "FAMILY", "NETWORK", "RANGE", "SIZE", "IN-USE", "FREE"}};
  for (const PoolUsage& row : rows)
    cells.push_back({cell(row.pool), std::string(ip::to_string(row.family)), row.network, row.range, decimal(row.size),
                     decimal(row.in_use), decimal(row.free)});
  return table(cells);
}

json pools_json(const std::vector<PoolUsage>& rows) {
  json items = json::array();
  for (const PoolUsage& row : rows)
    items.push_back({{"pool", row.pool},
                     {"family", ip::to_string(row.family)},
                     {"network", row.network},
                     {"range", row.range},
                     {"size", count_json(row.size)},
                     {"inUse", count_json(row.in_use)},
                     {"free", count_json(row.free)}});
  return {{"items", std::move(items)}};
}

} // namespace k8slb::report
