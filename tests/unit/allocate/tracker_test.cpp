// Tracker: allocation across changes must give, after every change, what allocate() gives for
// the Services it holds then, and return every result that changed. Checked over seeded
// random sequences of changes (adds, edits, deletes, our own status writes coming back, new
// configs), then on the cases the fast path is for: they must not allocate everything again.

#include "k8slb/allocate.hpp"

#include <map>
#include <random>
#include <set>

#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::allocate {
namespace {

using testing::Svc;
using testing::show;
using testing::test_pools;
using Key = std::pair<std::string, std::string>;

// A second config: the pools move and shrink, so that a new config moves and fails Services.
pool::Config other_pools() {
  return pool::parse_config(nlohmann::json::parse(R"({
    "pools": {
      "default":  {"network": "192.0.2.0/24",    "range": "192.0.2.8/31"},
      "external": {"network": "198.51.100.0/24", "range": "198.51.100.20-198.51.100.23"},
      "ipv6":     {"network": "2001:db8:1::/64", "range": "2001:db8:1:0:0:1::/96"}
    }
  })"));
}

std::vector<model::Service> in_order(const std::map<Key, model::Service>& services) {
  std::vector<model::Service> out;
  for (const auto& [key, service] : services) out.push_back(service);
  return out;
}

std::map<std::string, std::string> shown(const std::vector<Result>& results) {
  std::map<std::string, std::string> out;
  for (const Result& result : results) out[result.service] = show(result);
  return out;
}

// One random Service: few names (so that changes hit the same ones), namespaces whose
// "ns/name" order differs from (namespace, name) order, every kind of request the allocator
// knows, and a status that may hold an address someone else holds.
model::Service random_service(std::mt19937& random, const std::vector<std::string>& addresses) {
  auto pick = [&](int n) { return static_cast<int>(random() % static_cast<unsigned>(n)); };
  static const std::vector<std::string> namespaces = {"a", "a-b", "b"};
  static const std::vector<std::string> names = {"x", "y", "z", "w"};
  Svc svc(namespaces[pick(3)] + "/" + names[pick(4)]);
  switch (pick(8)) {
  case 0: svc.pool("external"); break;
  case 1: svc.pool("ipv6"); break;
  case 2: svc.pool("tiny6"); break;
  case 3: svc.pool("nowhere"); break;
  default: break;
  }
  if (pick(4) == 0) svc.share(pick(2) ? "web" : "db");
  if (pick(3) == 0) svc.ports({{"TCP", 80 + pick(2)}, {"UDP", 53}});
  if (pick(6) == 0) svc.ip(pick(2) ? "192.0.2.9" : "198.51.100.17");
  if (pick(8) == 0) svc.families({"IPv4", "IPv6"}, pick(2) ? "RequireDualStack" : "PreferDualStack");
  if (pick(10) == 0) svc.type("ClusterIP");
  if (pick(4) == 0 && !addresses.empty()) svc.holds({addresses[pick(static_cast<int>(addresses.size()))]});
  return svc;
}

// Addresses the random statuses use: the ranges' first ones and one outside every pool.
const std::vector<std::string> kAddresses = {"192.0.2.8", "192.0.2.9", "192.0.2.10", "198.51.100.16",
                                             "198.51.100.20", "2001:db8:2::10", "203.0.113.77"};

TEST(Tracker, GivesWhatAllocateGivesAfterEveryChange) {
  for (unsigned seed = 1; seed <= 40; ++seed) {
    SCOPED_TRACE(fmt::format("seed {}", seed));
    std::mt19937 random(seed);
    Options options;
    Tracker tracker(options);
    std::map<Key, model::Service> services;
    pool::Config config = test_pools();
    auto previous = shown(tracker.reset(config, {}));
    for (int step = 0; step < 150; ++step) {
      SCOPED_TRACE(fmt::format("step {}", step));
      std::vector<Result> returned;
      std::string what;
      int choice = static_cast<int>(random() % 22);
      if (choice >= 20) { // a burst read as one batch: a few added or edited, maybe one deleted
        what = "burst";
        std::vector<model::Service> upserted;
        std::vector<std::pair<std::string, std::string>> erased;
        if (!services.empty() && random() % 2) {
          auto it = std::next(services.begin(), static_cast<long>(random() % services.size()));
          erased.push_back(it->first);
          services.erase(it);
        }
        for (int i = 0; i < 3; ++i) {
          model::Service service = random_service(random, kAddresses);
          if (!erased.empty() && Key{service.ns, service.name} == erased.front()) continue;
          services[{service.ns, service.name}] = service;
          upserted.push_back(service);
        }
        returned = tracker.update(upserted, erased);
      } else if (choice < 9) { // a Service added or edited
        model::Service service = random_service(random, kAddresses);
        what = "upsert " + service.key();
        services[{service.ns, service.name}] = service;
        returned = tracker.upsert(service);
      } else if (choice < 12 && !services.empty()) { // a Service deleted
        auto it = std::next(services.begin(), static_cast<long>(random() % services.size()));
        what = "erase " + it->second.key();
        returned = tracker.erase(it->first.first, it->first.second);
        services.erase(it);
      } else if (choice < 19) { // our status write comes back: each changed Service holds its result
        what = "statuses written";
        for (const Result& result : tracker.results()) {
          if (result.outcome != Outcome::assigned && result.outcome != Outcome::released) continue;
          auto slash = result.service.find('/');
          model::Service& service = services.at({result.service.substr(0, slash), result.service.substr(slash + 1)});
          service.ingress_ips = testing::texts(result.ips);
          for (const Result& changed : tracker.upsert(service)) returned.push_back(changed);
        }
      } else { // a new config
        what = "new config";
        config = (random() % 2) ? other_pools() : test_pools();
        returned = tracker.set_config(config);
      }
      SCOPED_TRACE(what);
      auto expected = shown(allocate(in_order(services), config, options));
      auto now = shown(tracker.results());
      ASSERT_EQ(now, expected);
      // The gauges' counts, kept with each change, are those of a count over every result.
      ASSERT_TRUE(tracker.tally() == Tally::of(tracker.results())) << "tally off after " << what;
      // Every result that changed was returned.
      auto returned_shown = shown(returned);
      for (const auto& [service, text] : now) {
        auto before = previous.find(service);
        if (before != previous.end() && before->second == text) continue;
        EXPECT_EQ(returned_shown[service], text) << service << " changed and was not returned";
      }
      previous = std::move(now);
    }
  }
}

// The changes a running cluster makes most: a Service added, its status written back, one
// deleted, one edited. None of them allocates everything again.
TEST(Tracker, EverydayChangesCostOnlyTheChange) {
  Tracker tracker;
  std::vector<model::Service> start;
  for (const char* name : {"a/one", "a/two", "b/three"}) start.push_back(Svc(name).pool("external"));
  auto first = tracker.reset(test_pools(), start);
  ASSERT_EQ(first.size(), 3u);
  EXPECT_EQ(tracker.full_runs(), 1u);
  for (const Result& result : first) {
    auto slash = result.service.find('/');
    model::Service service = Svc(result.service).pool("external").holds(testing::texts(result.ips));
    tracker.upsert(service); // the status written
    (void)slash;
  }
  EXPECT_EQ(tracker.waiting(), 0u);

  auto added = tracker.upsert(Svc("a/four").pool("external"));
  ASSERT_EQ(added.size(), 1u);
  EXPECT_EQ(show(added[0]), "a/four: assigned [198.51.100.19] pools [external] released [] problem <> notes <>");
  EXPECT_EQ(tracker.waiting(), 1u); // until its status shows the address
  tracker.upsert(Svc("a/four").pool("external").holds({"198.51.100.19"}));
  EXPECT_EQ(tracker.waiting(), 0u);

  auto edited = tracker.upsert(Svc("a/two").pool("external").holds({"198.51.100.17"}).ports({{"TCP", 443}}));
  ASSERT_EQ(edited.size(), 1u);
  EXPECT_EQ(edited[0].outcome, Outcome::kept);

  EXPECT_TRUE(tracker.erase("a", "one").empty());
  EXPECT_EQ(tracker.size(), 3u);
  EXPECT_EQ(tracker.full_runs(), 1u);
}

// A Service that waits for an address gets the one a deleted Service frees, in the same change.
TEST(Tracker, DeleteGivesTheFreedAddressToAWaitingService) {
  Tracker tracker;
  std::vector<model::Service> start = {Svc("a/holder").pool("tiny6").holds({"2001:db8:2::10"}),
                                       Svc("b/waiter").pool("tiny6")};
  auto first = tracker.reset(test_pools(), start);
  ASSERT_EQ(first.size(), 2u);
  EXPECT_EQ(first[1].outcome, Outcome::failed);
  EXPECT_EQ(tracker.waiting(), 1u);
  auto after = tracker.erase("a", "holder");
  ASSERT_EQ(after.size(), 1u);
  EXPECT_EQ(show(after[0]), "b/waiter: assigned [2001:db8:2::10] pools [tiny6] released [] problem <> notes <>");
  EXPECT_EQ(tracker.full_runs(), 1u);
}

// A changed status that takes a settled Service's address: namespace/name order decides, as in
// allocate(), so everything is allocated again.
TEST(Tracker, StatusCollidingWithASettledAddressRunsEverything) {
  Tracker tracker;
  tracker.reset(test_pools(), {Svc("b/settled").holds({"192.0.2.8"})});
  auto changed = tracker.upsert(Svc("a/first").holds({"192.0.2.8"}));
  EXPECT_EQ(tracker.full_runs(), 2u);
  auto now = shown(tracker.results());
  EXPECT_EQ(now["a/first"], "a/first: kept [192.0.2.8] pools [default] released [] problem <> notes <>");
  EXPECT_NE(now["b/settled"].find("b/settled: failed [] pools [] released [192.0.2.8]"), std::string::npos)
      << now["b/settled"];
  EXPECT_EQ(changed.size(), 2u);
}

// A changed Service whose status holds an address of another pool (it is moving) that a
// settled Service holds: the collision is judged as allocate() judges it, with the address
// claimed as that other pool's.
TEST(Tracker, MovingServiceCollidingWithASettledOneRunsEverything) {
  Tracker tracker;
  std::vector<model::Service> start = {
      Svc("b/s").pool("external").ip("192.0.2.9").share("web").holds({"192.0.2.9"})};
  tracker.reset(test_pools(), start);
  model::Service moving = Svc("a/b").pool("external").share("web").ports({{"TCP", 81}}).holds({"192.0.2.9"});
  tracker.upsert(moving);
  start.push_back(moving);
  EXPECT_EQ(shown(tracker.results()), shown(allocate(start, test_pools())));
}

TEST(Tracker, ChangesBeforeAConfigAreRefused) {
  Tracker tracker;
  EXPECT_THROW(tracker.upsert(Svc("a/x")), Error);
  EXPECT_THROW(tracker.erase("a", "x"), Error);
}

} // namespace
} // namespace k8slb::allocate
