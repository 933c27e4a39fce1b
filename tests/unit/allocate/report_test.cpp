// k8slb/report.hpp: the rows of `kubectl k8slb pools` and `status`, as tables of cases.

#include "k8slb/report.hpp"

#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::report {
namespace {

using allocate::testing::Svc;
using nlohmann::json;

// --- pools -----------------------------------------------------------------------------------

struct PoolCase {
  std::string description;
  const char* pools;
  std::vector<Svc> services;
  // "<pool> <family> <size> <in use> <free>" per pool, in name order
  std::vector<std::string> expected;
  allocate::Options options = {};
};

std::string show(const PoolUsage& row) {
  return fmt::format("{} {} {} {} {}", row.pool, ip::to_string(row.family), decimal(row.size), decimal(row.in_use),
                     decimal(row.free));
}

TEST(PoolUsage, Table) {
  const std::vector<PoolCase> cases = {
      {"an empty pool: every address of the range, less the network's own ones when the range touches them",
       R"({"pools": {"a": {"network": "192.0.2.0/24", "range": "192.0.2.0/24"},
                     "b": {"network": "198.51.100.0/24", "range": "198.51.100.10-198.51.100.29"}}})",
       {},
       {"a IPv4 254 0 254", "b IPv4 20 0 20"}},
      {"held addresses: in range counts against free; a static one outside the range is in use only",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.29"}}})",
       {Svc("default/a").holds({"192.0.2.10"}), Svc("default/b").holds({"192.0.2.11"}),
        Svc("default/static").holds({"192.0.2.200"})},
       {"default IPv4 20 3 18"}},
      {"an address two Services share counts once",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.29"}}})",
       {Svc("default/a").share("k").holds({"192.0.2.10"}), Svc("default/b").share("k").holds({"192.0.2.10"})},
       {"default IPv4 20 1 19"}},
      {"Services the allocator does not serve do not count (another class, not a LoadBalancer)",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.29"}}})",
       {Svc("default/other-class").lb_class("other").holds({"192.0.2.10"}),
        Svc("default/cluster-ip").type("ClusterIP").holds({"192.0.2.11"}), Svc("default/ours").holds({"192.0.2.12"})},
       {"default IPv4 20 1 19"}},
      {"with --lb-class, only that class counts",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.29"}}})",
       {Svc("default/mine").lb_class("k8slb").holds({"192.0.2.10"}), Svc("default/none").holds({"192.0.2.11"})},
       {"default IPv4 20 1 19"},
       allocate::Options{"k8slb"}},
      {"avoidBuggyIPs: .0 and .255 are never handed out, so not counted in size",
       R"({"pools": {"b": {"network": "198.51.100.0/23", "range": "198.51.100.250-198.51.101.5",
                           "avoidBuggyIPs": true}}})",
       {Svc("default/a").holds({"198.51.100.255"}), Svc("default/b").holds({"198.51.101.1"})},
       {"b IPv4 10 2 9"}},
      {"dual stack: each address in its family's pool; an address in no pool counts nowhere",
       R"({"pools": {"v4": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.11"},
                     "v6": {"network": "2001:db8::/64", "range": "2001:db8::/64"}}})",
       {Svc("default/dual").holds({"192.0.2.10", "2001:db8::5"}), Svc("default/lost").holds({"203.0.113.7"})},
       {"v4 IPv4 2 1 1", "v6 IPv6 18446744073709551615 1 18446744073709551614"}},
      {"a full pool: nothing free",
       R"({"pools": {"tiny": {"network": "203.0.113.0/24", "range": "203.0.113.10"}}})",
       {Svc("default/a").holds({"203.0.113.10"})},
       {"tiny IPv4 1 1 0"}},
  };
  for (const PoolCase& c : cases) {
    SCOPED_TRACE(c.description);
    std::vector<model::Service> services(c.services.begin(), c.services.end());
    std::vector<std::string> got;
    for (const PoolUsage& row : pool_usage(services, pool::parse_config(json::parse(c.pools)), c.options))
      got.push_back(show(row));
    EXPECT_EQ(got, c.expected);
  }
}

// The figures are the allocator's: filling a pool with allocate() leaves exactly `free` more.
TEST(PoolUsage, FreeIsWhatTheAllocatorCanStillHandOut) {
  auto config = pool::parse_config(json::parse(
      R"({"pools": {"default": {"network": "192.0.2.0/23", "range": "192.0.2.250-192.0.3.3", "avoidBuggyIPs": true}}})"));
  std::vector<model::Service> services = {Svc("default/held").holds({"192.0.2.251"})};
  auto before = pool_usage(services, config);
  ASSERT_EQ(before.size(), 1u);
  for (int i = 0; i < 20; ++i) services.push_back(Svc(fmt::format("default/s{:02}", i)));
  auto results = allocate::allocate(services, config);
  int assigned = 0;
  for (std::size_t i = 0; i < results.size(); ++i) {
    if (results[i].outcome != allocate::Outcome::assigned) continue;
    ++assigned;
    for (auto& service : services)
      if (service.key() == results[i].service) service.ingress_ips = {results[i].ips.front().to_string()};
  }
  EXPECT_EQ(static_cast<ip::u128>(assigned), before[0].free);
  auto after = pool_usage(services, config);
  EXPECT_EQ(after[0].free, 0u);
  EXPECT_EQ(after[0].in_use, before[0].in_use + assigned);
}

// --- status ----------------------------------------------------------------------------------

json node_assigned(const std::string& service, const std::string& message, const std::string& last,
                   const std::string& uid = "") {
  auto slash = service.find('/');
  json event = {{"apiVersion", "v1"},
                {"kind", "Event"},
                {"metadata", {{"namespace", service.substr(0, slash)}, {"name", "e"}}},
                {"involvedObject",
                 {{"kind", "Service"}, {"namespace", service.substr(0, slash)}, {"name", service.substr(slash + 1)}}},
                {"reason", "NodeAssigned"},
                {"message", message},
                {"type", "Normal"},
                {"lastTimestamp", last}};
  if (!uid.empty()) event["involvedObject"]["uid"] = uid;
  return event;
}

struct StatusCase {
  std::string description;
  std::vector<Svc> services;
  std::vector<json> events;
  // "<ns>/<name> <ip|-> <pool|-> <node|-> <since|->" per row
  std::vector<std::string> expected;
  bool with_config = true;
};

std::string show(const VipStatus& row) {
  auto dash = [](const std::string& text) { return text.empty() ? std::string("-") : text; };
  return fmt::format("{}/{} {} {} {} {}", row.ns, row.name, dash(row.ip), dash(row.pool), dash(row.node),
                     dash(row.since));
}

TEST(ServiceStatus, Table) {
  const char* t1 = "2026-11-28T10:00:00Z";
  const char* t2 = "2026-11-28T10:05:00Z";
  const std::vector<StatusCase> cases = {
      {"a VIP with a NodeAssigned Event: its node and since when; one without: unknown",
       {Svc("default/web").holds({"192.0.2.8"}), Svc("default/api").holds({"198.51.100.16"})},
       {node_assigned("default/web", "192.0.2.8 is served by node lb-a", t1)},
       {"default/api 198.51.100.16 external - -", "default/web 192.0.2.8 default lb-a 2026-11-28T10:00:00Z"}},
      {"after a failover the newest Event wins, whatever the order",
       {Svc("default/web").holds({"192.0.2.8"})},
       {node_assigned("default/web", "192.0.2.8 is served by node lb-b", t2),
        node_assigned("default/web", "192.0.2.8 is served by node lb-a", t1)},
       {"default/web 192.0.2.8 default lb-b 2026-11-28T10:05:00Z"}},
      {"dual stack: a row per IP, each with its own node",
       {Svc("default/dual").holds({"192.0.2.8", "2001:db8:1::1:0:0"})},
       {node_assigned("default/dual", "2001:db8:1::1:0:0 is served by node lb-b", t1),
        node_assigned("default/dual", "192.0.2.8 is served by node lb-a", t1)},
       {"default/dual 192.0.2.8 default lb-a 2026-11-28T10:00:00Z",
        "default/dual 2001:db8:1::1:0:0 ipv6 lb-b 2026-11-28T10:00:00Z"}},
      {"a pending Service: one row without an IP",
       {Svc("default/pending")},
       {},
       {"default/pending - - - -"}},
      {"an Event about an old IP, another Service, an earlier Service of the same name (uid) does not count",
       {Svc("default/web").holds({"192.0.2.8"})},
       {node_assigned("default/web", "192.0.2.9 is served by node lb-old-ip", t2),
        node_assigned("default/other", "192.0.2.8 is served by node lb-other", t2),
        node_assigned("default/web", "192.0.2.8 is served by node lb-old-uid", t2, "uid-earlier"),
        node_assigned("default/web", "192.0.2.8 is served by node lb-a", t1, "uid-web")},
       {"default/web 192.0.2.8 default lb-a 2026-11-28T10:00:00Z"}},
      {"messages that are not the actor's, or names no node can have, are ignored",
       {Svc("default/web").holds({"192.0.2.8"})},
       {node_assigned("default/web", "192.0.2.8 is served by node \x1b[31mred", t2),
        node_assigned("default/web", "192.0.2.8 is served by node lb-a and more", t2),
        node_assigned("default/web", "not-an-ip is served by node lb-a", t2),
        node_assigned("default/web", "192.0.2.8 is served by node lb-a", "yesterday")},
       {"default/web 192.0.2.8 default - -"}},
      {"Services the allocator does not serve are not listed",
       {Svc("default/cip").type("ClusterIP"), Svc("default/other").lb_class("other").holds({"192.0.2.9"})},
       {},
       {}},
      {"without a config, pools are unknown; nodes are still known",
       {Svc("default/web").holds({"192.0.2.8"})},
       {node_assigned("default/web", "192.0.2.8 is served by node lb-a", t1)},
       {"default/web 192.0.2.8 - lb-a 2026-11-28T10:00:00Z"},
       false},
  };
  auto config = allocate::testing::test_pools();
  for (const StatusCase& c : cases) {
    SCOPED_TRACE(c.description);
    std::vector<model::Service> services(c.services.begin(), c.services.end());
    std::vector<std::string> got;
    for (const VipStatus& row : service_status(services, c.events, c.with_config ? &config : nullptr))
      got.push_back(show(row));
    EXPECT_EQ(got, c.expected);
  }
}

TEST(ServiceStatus, EventTimes) {
  // A patched Event (count raised by a takeback) is newer by its lastTimestamp; a new Event's
  // eventTime carries microseconds.
  struct Case {
    std::string description;
    json a, b;
    std::string node;
  };
  json a = node_assigned("default/web", "192.0.2.8 is served by node lb-a", "2026-11-28T10:00:00Z");
  json b = node_assigned("default/web", "192.0.2.8 is served by node lb-b", "2026-11-28T10:00:00Z");
  json a_later = a, b_micro = b;
  a_later["lastTimestamp"] = "2026-11-28T10:09:00Z";
  b_micro["eventTime"] = "2026-11-28T10:00:00.500000Z";
  json a_offset = a;
  a_offset["lastTimestamp"] = "2026-11-28T11:01:00+01:00"; // 10:01Z
  const std::vector<Case> cases = {
      {"lastTimestamp", a_later, b, "lb-a"},
      {"eventTime's microseconds break a tie of seconds", a, b_micro, "lb-b"},
      {"an offset is read", a_offset, b_micro, "lb-a"},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    std::vector<model::Service> services = {Svc("default/web").holds({"192.0.2.8"})};
    auto rows = service_status(services, {c.a, c.b}, nullptr);
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].node, c.node);
  }
}

TEST(ParseTime, Table) {
  struct Case {
    std::string text;
    long long seconds; // since the epoch; -1: refused
  };
  const std::vector<Case> cases = {
      {"1970-01-01T00:00:00Z", 0},
      {"2026-11-28T10:00:00Z", 1795860000},
      {"2026-11-28T10:00:00.999999Z", 1795860000},
      {"2026-11-28T11:30:00+01:30", 1795860000},
      {"2026-11-28T08:00:00-02:00", 1795860000},
      {"2026-02-30T10:00:00Z", -1},
      {"2026-11-28 10:00:00", -1},
      {"", -1},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.text);
    auto time = parse_time(c.text);
    if (c.seconds < 0) {
      EXPECT_FALSE(time.has_value());
    } else {
      ASSERT_TRUE(time.has_value());
      EXPECT_EQ(std::chrono::floor<std::chrono::seconds>(time->time_since_epoch()).count(), c.seconds);
    }
  }
}

// --- output ----------------------------------------------------------------------------------

TEST(Cell, NothingReachesTheTerminalUnescaped) {
  const std::vector<std::pair<std::string, std::string>> cases = {
      {"lb-a", "lb-a"},
      {"", "unknown"},
      {"red\x1b[31m", "red\\x1b[31m"},
      {"bell\a and newline\n", "bell\\x07_and_newline\\x0a"},
      {"del\x7f", "del\\x7f"},
      {"c1 csi \xc2\x9b" "31m", "c1_csi_\\xc2\\x9b31m"},     // U+009B, a CSI to some terminals
      {"raw csi \x9b" "31m", "raw_csi_\\x9b31m"},            // not UTF-8
      {"overlong \xc0\xaf", "overlong_\\xc0\\xaf"},
      {"surrogate \xed\xa0\x80", "surrogate_\\xed\\xa0\\x80"},
      {"caf\xc3\xa9 \xe2\x9c\x93", "caf\xc3\xa9_\xe2\x9c\x93"}, // UTF-8 text stays
  };
  for (const auto& [text, shown] : cases) {
    SCOPED_TRACE(text);
    EXPECT_EQ(cell(text, "unknown"), shown);
  }
  EXPECT_LT(cell(std::string(100000, 'x')).size(), 300u) << "long values are cut";
}

TEST(Table, ColumnsAsKubectlPadsThem) {
  EXPECT_EQ(table({{"NAME", "IP"}, {"web", "192.0.2.8"}, {"caf\xc3\xa9-long", "-"}}),
            "NAME        IP\n"
            "web         192.0.2.8\n"
            "caf\xc3\xa9-long   -\n");
}

TEST(Age, AsKubectlShowsIt) {
  using std::chrono::seconds;
  const std::vector<std::pair<long long, std::string>> cases = {
      {-5, "0s"}, {45, "45s"}, {119, "119s"}, {192, "3m12s"}, {600, "10m"}, {1500, "25m"}, {18180, "5h3m"},
      {36000, "10h"}, {187200, "2d4h"}, {2592000, "30d"}, {86400 * 800, "2y70d"}, {86400 * 3650, "10y"},
  };
  for (const auto& [s, shown] : cases) EXPECT_EQ(age(seconds(s)), shown) << s;
}

TEST(Json, UnknownIsNullAndBigCountsAreStrings) {
  std::vector<VipStatus> status(1);
  status[0].ns = "default";
  status[0].name = "pending";
  EXPECT_EQ(status_json(status)["items"][0],
            json::parse(R"({"namespace": "default", "name": "pending", "ip": null, "pool": null, "node": null,
                            "since": null})"));
  PoolUsage big{"v6", ip::Family::v6, "2001:db8::/64", "2001:db8::/64", (ip::u128{1} << 64) - 1, 1,
                (ip::u128{1} << 64) - 2};
  PoolUsage small{"v4", ip::Family::v4, "192.0.2.0/24", "192.0.2.10-192.0.2.29", 20, 1, 19};
  json rows = pools_json({big, small})["items"];
  EXPECT_EQ(rows[0]["size"], "18446744073709551615");
  EXPECT_EQ(rows[0]["inUse"], 1);
  EXPECT_EQ(rows[1]["free"], 19);
  EXPECT_EQ(rows[1]["family"], "IPv4");
}

} // namespace
} // namespace k8slb::report
