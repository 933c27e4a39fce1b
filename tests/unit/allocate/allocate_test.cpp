// allocate(): one run over a set of Services, as a table of cases. Each case lists every
// Service of the run and what each one must end with.

#include "k8slb/allocate.hpp"

#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::allocate {
namespace {

using testing::Svc;
using testing::show;
using testing::test_pools;
using testing::texts;

struct Expect {
  std::string service;
  Outcome outcome;
  std::vector<std::string> ips = {};
  std::vector<std::string> pools = {};
  // When the result must carry a problem: its reason, field and a part of its message.
  std::string reason = "";
  std::string field = "";
  std::string message_part = "";
  std::vector<std::string> released = {};
  // The result's notes (Events of their own), each "<type> <reason> <part of the message>",
  // in order; none when empty.
  std::vector<std::string> notes = {};
};

struct Case {
  std::string description;
  std::vector<Svc> services;
  std::vector<Expect> expected; // in namespace/name order, one per Service
  Options options = {};
  const char* pools = nullptr; // a config document instead of test_pools()
};

void check(const Case& c) {
  SCOPED_TRACE(c.description);
  std::vector<model::Service> services;
  for (const Svc& svc : c.services) services.push_back(svc);
  pool::Config config = c.pools ? pool::parse_config(nlohmann::json::parse(c.pools)) : test_pools();
  std::vector<Result> results = allocate(services, config, c.options);
  ASSERT_EQ(results.size(), c.expected.size());
  for (std::size_t i = 0; i < results.size(); ++i) {
    const Result& result = results[i];
    const Expect& expect = c.expected[i];
    SCOPED_TRACE(show(result));
    EXPECT_EQ(result.service, expect.service);
    EXPECT_EQ(result.outcome, expect.outcome);
    EXPECT_EQ(texts(result.ips), expect.ips);
    if (!expect.pools.empty()) {
      EXPECT_EQ(result.pools, expect.pools);
    } else {
      EXPECT_EQ(result.pools.size(), result.ips.size());
    }
    EXPECT_EQ(result.released, expect.released);
    if (expect.reason.empty()) {
      EXPECT_FALSE(result.problem.has_value());
    } else if (!result.problem) {
      ADD_FAILURE() << "expected a problem: " << expect.reason << " " << expect.message_part;
    } else {
      EXPECT_EQ(result.problem->object, expect.service);
      EXPECT_EQ(result.problem->reason, expect.reason);
      EXPECT_EQ(result.problem->field, expect.field);
      EXPECT_NE(result.problem->message.find(expect.message_part), std::string::npos)
          << "message: " << result.problem->message;
    }
    std::vector<std::string> notes = testing::note_texts(result);
    ASSERT_EQ(notes.size(), expect.notes.size()) << fmt::format("{}", fmt::join(notes, " | "));
    for (std::size_t n = 0; n < notes.size(); ++n) {
      auto space = expect.notes[n].find(' ', expect.notes[n].find(' ') + 1);
      std::string head = expect.notes[n].substr(0, space); // "<type> <reason>"
      std::string part = expect.notes[n].substr(space + 1);
      EXPECT_EQ(notes[n].substr(0, head.size()), head) << notes[n];
      EXPECT_NE(notes[n].find(part), std::string::npos) << notes[n];
    }
  }
}

const Options kKubeProxy{"", false}; // ipMode VIP: no bridging of families

const char* kPool = "metadata.annotations[loadbalancer/pool]";
const char* kRequested = "spec.loadBalancerIP";
const char* kStatus = "status.loadBalancer.ingress";

TEST(Allocate, PoolsAndStaticRequests) {
  const std::vector<Case> cases = {
      {"no annotation: the lowest free address of pool default's range",
       {Svc("default/a")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {"default"}}}},
      {"Services are served in namespace/name order, whatever the input order",
       {Svc("ns2/a"), Svc("ns1/b"), Svc("ns1/a")},
       {{"ns1/a", Outcome::assigned, {"192.0.2.8"}},
        {"ns1/b", Outcome::assigned, {"192.0.2.9"}},
        {"ns2/a", Outcome::assigned, {"192.0.2.10"}}}},
      {"loadbalancer/pool picks the pool",
       {Svc("default/a").pool("external")},
       {{"default/a", Outcome::assigned, {"198.51.100.16"}, {"external"}}}},
      {"a static request may lie outside the range, inside the network",
       {Svc("default/a").ip("192.0.2.100")},
       {{"default/a", Outcome::assigned, {"192.0.2.100"}, {"default"}}}},
      {"a static request without a pool annotation comes from the pool that holds it",
       {Svc("default/a").ip("198.51.100.5")},
       {{"default/a", Outcome::assigned, {"198.51.100.5"}, {"external"}}}},
      {"a static request in no pool fails, naming the pool it would come from",
       {Svc("default/a").ip("203.0.113.100")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kRequested,
         "203.0.113.100 is outside pool default (192.0.2.0/24)"}}},
      {"a static request in the network of another pool than the annotated one fails",
       {Svc("default/a").pool("external").ip("192.0.2.20")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kRequested,
         "outside pool external"}}},
      {"an unknown pool fails, the others are served",
       {Svc("default/a").pool("nosuch"), Svc("default/b")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kPool,
         "pool 'nosuch' is not configured"},
        {"default/b", Outcome::assigned, {"192.0.2.8"}}}},
      {"a blank annotation means pool default",
       {Svc("default/a").pool(" ")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}}}},
      {"an unparsable loadBalancerIP is an invalid Service",
       {Svc("default/a").ip("192.0.2.300")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kRequested,
         "'192.0.2.300' is not an IP address"}}},
      {"values from the cluster reach messages without control characters",
       {Svc("default/a").ip("192.0.2.1\n\x1b[31m")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kRequested,
         "'192.0.2.1??[31m' is not an IP address"}}},
      {"a Service without ports is invalid",
       {Svc("default/a").ports({})},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", "spec.ports",
         "a LoadBalancer Service needs at least one port"}}},
      {"an annotation with an empty pool name is invalid",
       {Svc("default/a").pool("default,")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kPool, "empty pool name"}}},
      {"an annotation naming three pools is invalid",
       {Svc("default/a").pool("default,ipv6,external")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kPool, "names 3 pools"}}},
      {"an annotation naming two pools of one family is invalid",
       {Svc("default/a").pool("default,external")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kPool,
         "names two IPv4 pools: default and external"}}},
      // What render refuses for a whole Service gets no address either (the same checks,
      // k8slb/validate.hpp): an IP no node would serve.
      {"an annotation value render refuses is an invalid Service",
       {Svc("default/a").annotate("loadbalancer/mode", "tcp")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService",
         "metadata.annotations[loadbalancer/mode]", "\"tcp\" is not one of \"\", \"http\", \"false\""}}},
      {"an unparsable loadBalancerSourceRanges entry is an invalid Service",
       {Svc("default/a").source_ranges({"192.0.2.0/24", "10.0.0.0/33"})},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", "spec.loadBalancerSourceRanges[1]",
         "\"10.0.0.0/33\" is not a CIDR"}}},
      {"a name that is not a DNS label is an invalid Service",
       {Svc("default/Upper_case")},
       {{"default/Upper_case", Outcome::failed, {}, {}, "InvalidService", "metadata.name",
         "not a DNS label"}}},
      {"a Service that holds an address and becomes invalid keeps it, with the problem",
       {Svc("default/a").holds({"192.0.2.10"}).annotate("loadbalancer/ssl", "yes")},
       {{"default/a", Outcome::kept, {"192.0.2.10"}, {"default"}, "InvalidService",
         "metadata.annotations[loadbalancer/ssl]", "\"yes\" is not one of"}}},
      {"an invalid Service takes no address from the others",
       {Svc("default/a").annotate("loadbalancer/nocheck", "maybe"), Svc("default/b")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService",
         "metadata.annotations[loadbalancer/nocheck]", "\"maybe\""},
        {"default/b", Outcome::assigned, {"192.0.2.8"}}}},
      {"dynamic Services never get an address a static request holds, whatever the order",
       {Svc("default/a"), Svc("default/z").ip("192.0.2.8")},
       {{"default/a", Outcome::assigned, {"192.0.2.9"}},
        {"default/z", Outcome::assigned, {"192.0.2.8"}}}},
      {"dynamic Services never get an address another Service holds",
       {Svc("default/a"), Svc("default/z").holds({"192.0.2.8"})},
       {{"default/a", Outcome::assigned, {"192.0.2.9"}},
        {"default/z", Outcome::kept, {"192.0.2.8"}}}},
      {"the network and broadcast addresses of an IPv4 CIDR network are not handed out",
       {Svc("default/a").pool("edge"), Svc("default/b").pool("edge")},
       {{"default/a", Outcome::assigned, {"203.0.113.1"}},
        {"default/b", Outcome::assigned, {"203.0.113.2"}}}},
  };
  for (const Case& c : cases) check(c);
}

TEST(Allocate, ExistingAssignments) {
  const std::vector<Case> cases = {
      {"an address in status is kept",
       {Svc("default/a").holds({"192.0.2.10"})},
       {{"default/a", Outcome::kept, {"192.0.2.10"}, {"default"}}}},
      {"an address outside the range but inside the network is kept without a word",
       {Svc("default/a").holds({"192.0.2.200"})},
       {{"default/a", Outcome::kept, {"192.0.2.200"}}}},
      {"two holders of one address: the first in namespace/name order keeps it",
       {Svc("ns/b").holds({"192.0.2.10"}), Svc("ns/a").holds({"192.0.2.10"})},
       {{"ns/a", Outcome::kept, {"192.0.2.10"}},
        {"ns/b", Outcome::failed, {}, {}, "AllocationFailed", kStatus,
         "IP 192.0.2.10 already held by ns/a", {"192.0.2.10"}}}},
      {"an address in no pool (the config changed, not the Service) is kept, with a warning",
       {Svc("default/a").holds({"203.0.113.100"})},
       {{"default/a", Outcome::kept, {"203.0.113.100"}, {"default"}, "IPOutsidePool", kStatus,
         "keeping 203.0.113.100 although it is outside pool default (192.0.2.0/24) and every other pool"}}},
      {"an address whose pool is gone from the config is kept, with a warning",
       {Svc("default/a").pool("gone").holds({"192.0.2.10"})},
       {{"default/a", Outcome::kept, {"192.0.2.10"}, {"default"}, "IPOutsidePool", kPool,
         "keeping 192.0.2.10: pool 'gone' is not configured"}}},
      {"an address a Service leaves for another pool stays blocked in the run that moves it",
       {Svc("default/a").pool("external"), Svc("default/b").pool("external"),
        Svc("default/z").holds({"198.51.100.16"})},
       {{"default/a", Outcome::assigned, {"198.51.100.17"}},
        {"default/b", Outcome::assigned, {"198.51.100.18"}},
        {"default/z", Outcome::assigned, {"192.0.2.8"}, {"default"}, "", "", "", {"198.51.100.16"},
         {"Normal IPMoved moved from 198.51.100.16 to 192.0.2.8 (pool default)"}}}},
      {"a new loadBalancerIP moves the Service: the user asked for it",
       {Svc("default/a").holds({"192.0.2.10"}).ip("192.0.2.20")},
       {{"default/a", Outcome::assigned, {"192.0.2.20"}, {}, "", "", "", {"192.0.2.10"},
         {"Normal IPMoved moved from 192.0.2.10 to 192.0.2.20 (pool default): spec.loadBalancerIP "
          "asks for 192.0.2.20"}}}},
      {"the old address of a moved Service is free for others in the same run",
       {Svc("default/a").holds({"192.0.2.8"}).ip("192.0.2.20"), Svc("default/b")},
       {{"default/a", Outcome::assigned, {"192.0.2.20"}, {}, "", "", "", {"192.0.2.8"},
         {"Normal IPMoved moved from 192.0.2.8 to 192.0.2.20"}},
        {"default/b", Outcome::assigned, {"192.0.2.8"}}}},
      {"a new loadBalancerIP that cannot be had: the old address is kept, with the reason",
       {Svc("default/a").holds({"192.0.2.10"}).ip("192.0.2.20"),
        Svc("default/b").holds({"192.0.2.20"})},
       {{"default/a", Outcome::kept, {"192.0.2.10"}, {}, "AllocationFailed", kRequested,
         "IP 192.0.2.20 already held by default/b; keeping 192.0.2.10"},
        {"default/b", Outcome::kept, {"192.0.2.20"}}}},
      {"a Service earlier in order gets the address a later one leaves for its loadBalancerIP",
       {Svc("default/a").ip("192.0.2.10"), Svc("default/z").holds({"192.0.2.10"}).ip("192.0.2.20")},
       {{"default/a", Outcome::assigned, {"192.0.2.10"}},
        {"default/z", Outcome::assigned, {"192.0.2.20"}, {}, "", "", "", {"192.0.2.10"},
         {"Normal IPMoved moved from 192.0.2.10 to 192.0.2.20"}}}},
      {"two Services asking for each other's address both keep theirs (a swap takes two steps)",
       {Svc("default/a").holds({"192.0.2.10"}).ip("192.0.2.20"),
        Svc("default/b").holds({"192.0.2.20"}).ip("192.0.2.10")},
       {{"default/a", Outcome::kept, {"192.0.2.10"}, {}, "AllocationFailed", kRequested,
         "IP 192.0.2.20 already held by default/b; keeping 192.0.2.10"},
        {"default/b", Outcome::kept, {"192.0.2.20"}, {}, "AllocationFailed", kRequested,
         "IP 192.0.2.10 already held by default/a; keeping 192.0.2.20"}}},
      {"a broken spec does not take away a held address",
       {Svc("default/a").holds({"192.0.2.10"}).ip("not-an-ip")},
       {{"default/a", Outcome::kept, {"192.0.2.10"}, {"default"}, "InvalidService", kRequested,
         "'not-an-ip' is not an IP address"}}},
      {"an unparsable address in status is dropped and a new one assigned",
       {Svc("default/a").holds({"garbage"})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {}, "", "", "", {"garbage"}}}},
      {"a second address of the same family in status is released",
       {Svc("default/a").holds({"192.0.2.10", "192.0.2.11"})},
       {{"default/a", Outcome::assigned, {"192.0.2.10"}, {}, "", "", "", {"192.0.2.11"}}}},
  };
  for (const Case& c : cases) check(c);
}

TEST(Allocate, Sharing) {
  const std::vector<Case> cases = {
      {"the same loadBalancerIP with different ports: shared",
       {Svc("default/a").ip("192.0.2.20"), Svc("default/b").ip("192.0.2.20").ports({{"TCP", 443}})},
       {{"default/a", Outcome::assigned, {"192.0.2.20"}},
        {"default/b", Outcome::assigned, {"192.0.2.20"}}}},
      {"the same loadBalancerIP with a colliding port: the second fails",
       {Svc("default/a").ip("192.0.2.20"), Svc("default/b").ip("192.0.2.20").ports({{"TCP", 443}, {"TCP", 80}})},
       {{"default/a", Outcome::assigned, {"192.0.2.20"}},
        {"default/b", Outcome::failed, {}, {}, "AllocationFailed", kRequested,
         "IP 192.0.2.20 already serves TCP/80 for default/a"}}},
      {"the same port number over TCP and UDP does not collide",
       {Svc("default/a").ip("192.0.2.20").ports({{"TCP", 53}}),
        Svc("default/b").ip("192.0.2.20").ports({{"UDP", 53}})},
       {{"default/a", Outcome::assigned, {"192.0.2.20"}},
        {"default/b", Outcome::assigned, {"192.0.2.20"}}}},
      {"a static request cannot take an address held dynamically",
       {Svc("default/a").holds({"192.0.2.8"}), Svc("default/b").ip("192.0.2.8").ports({{"TCP", 443}})},
       {{"default/a", Outcome::kept, {"192.0.2.8"}},
        {"default/b", Outcome::failed, {}, {}, "AllocationFailed", kRequested,
         "IP 192.0.2.8 already held by default/a"}}},
      {"a static request joins a Service that holds the address it asked for too",
       {Svc("default/a").ip("192.0.2.20").holds({"192.0.2.20"}),
        Svc("default/b").ip("192.0.2.20").ports({{"TCP", 443}})},
       {{"default/a", Outcome::kept, {"192.0.2.20"}},
        {"default/b", Outcome::assigned, {"192.0.2.20"}}}},
      {"one sharing key, different ports: one address; without the key: another",
       {Svc("default/a").share("web"), Svc("default/b").share("web").ports({{"TCP", 443}}),
        Svc("default/c")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}},
        {"default/b", Outcome::assigned, {"192.0.2.8"}},
        {"default/c", Outcome::assigned, {"192.0.2.9"}}}},
      {"one sharing key, colliding ports: a second address",
       {Svc("default/a").share("web"), Svc("default/b").share("web"),
        Svc("default/c").share("web").ports({{"TCP", 443}})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}},
        {"default/b", Outcome::assigned, {"192.0.2.9"}},
        {"default/c", Outcome::assigned, {"192.0.2.8"}}}},
      {"different sharing keys never share",
       {Svc("default/a").share("web"), Svc("default/b").share("mail").ports({{"TCP", 25}})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}},
        {"default/b", Outcome::assigned, {"192.0.2.9"}}}},
      {"one sharing key in two pools: no sharing across pools",
       {Svc("default/a").share("web"), Svc("default/b").share("web").pool("external").ports({{"TCP", 443}})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}},
        {"default/b", Outcome::assigned, {"198.51.100.16"}}}},
      {"a dynamic Service joins its sharing group's held address",
       {Svc("default/a").share("web").holds({"192.0.2.10"}), Svc("default/b").share("web").ports({{"TCP", 443}})},
       {{"default/a", Outcome::kept, {"192.0.2.10"}},
        {"default/b", Outcome::assigned, {"192.0.2.10"}}}},
      {"two holders of one address with one sharing key and distinct ports both keep it",
       {Svc("default/a").share("web").holds({"192.0.2.10"}),
        Svc("default/b").share("web").holds({"192.0.2.10"}).ports({{"TCP", 443}})},
       {{"default/a", Outcome::kept, {"192.0.2.10"}},
        {"default/b", Outcome::kept, {"192.0.2.10"}}}},
  };
  for (const Case& c : cases) check(c);
}

TEST(Allocate, ClassesAndTypes) {
  const std::vector<Case> cases = {
      {"not a LoadBalancer and holding nothing: skipped",
       {Svc("default/a").type("ClusterIP")},
       {{"default/a", Outcome::skipped}}},
      {"no longer a LoadBalancer: its addresses are released and free in the same run",
       {Svc("default/a").type("NodePort").holds({"192.0.2.8"}), Svc("default/b")},
       {{"default/a", Outcome::released, {}, {}, "", "", "", {"192.0.2.8"}},
        {"default/b", Outcome::assigned, {"192.0.2.8"}}}},
      {"another loadBalancerClass is not ours",
       {Svc("default/a").lb_class("example.com/other")},
       {{"default/a", Outcome::skipped}}},
      {"a class changed away from ours: released",
       {Svc("default/a").lb_class("example.com/other").holds({"192.0.2.9"})},
       {{"default/a", Outcome::released, {}, {}, "", "", "", {"192.0.2.9"}}}},
      {"our class, when we have one, is ours; no class then is not",
       {Svc("default/a").lb_class("k8slb.example.com/lb"), Svc("default/b")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}}, {"default/b", Outcome::skipped}},
       Options{"k8slb.example.com/lb"}},
  };
  for (const Case& c : cases) check(c);
}

TEST(Allocate, Exhaustion) {
  // default's range is 192.0.2.8/30: four addresses, then nothing.
  std::vector<Svc> services;
  std::vector<Expect> expected;
  for (int i = 0; i < 4; ++i) {
    std::string key = fmt::format("default/s{}", i);
    services.push_back(Svc(key));
    expected.push_back({key, Outcome::assigned, {fmt::format("192.0.2.{}", 8 + i)}});
  }
  services.push_back(Svc("default/s4"));
  expected.push_back({"default/s4", Outcome::failed, {}, {}, "AllocationFailed", "",
                      "pool default has no free IPv4 address left in range 192.0.2.8/30"});
  services.push_back(Svc("default/s5").ip("192.0.2.50"));
  expected.push_back({"default/s5", Outcome::assigned, {"192.0.2.50"}});
  check({"a /30 range hands out four addresses; static requests still work", services, expected});

  std::vector<Svc> edge;
  std::vector<Expect> edge_expected;
  for (int i = 1; i <= 7; ++i) {
    std::string key = fmt::format("default/e{}", i);
    edge.push_back(Svc(key).pool("edge"));
    if (i <= 6)
      edge_expected.push_back({key, Outcome::assigned, {fmt::format("203.0.113.{}", i)}});
    else
      edge_expected.push_back({key, Outcome::failed, {}, {}, "AllocationFailed", "",
                               "pool edge has no free IPv4 address"});
  }
  check({"a /29 network used whole: six addresses, not .0 or .7", edge, edge_expected});
}

TEST(Allocate, IPv6AndDualStack) {
  const std::vector<Case> cases = {
      {"IPv6 pool: the first address of the /96 range",
       {Svc("default/a").pool("ipv6"), Svc("default/b").pool("ipv6")},
       {{"default/a", Outcome::assigned, {"2001:db8:1::1:0:0"}, {"ipv6"}},
        {"default/b", Outcome::assigned, {"2001:db8:1::1:0:1"}, {"ipv6"}}}},
      {"the subnet-router anycast address of an IPv6 CIDR network is not handed out",
       {Svc("default/a").pool("whole6")},
       {{"default/a", Outcome::assigned, {"2001:db8:3::1"}}}},
      {"IPv6 static request inside the /64, outside the /96 range",
       {Svc("default/a").pool("ipv6").ip("2001:db8:1::ffff")},
       {{"default/a", Outcome::assigned, {"2001:db8:1::ffff"}}}},
      {"IPv6 static request outside the /64",
       {Svc("default/a").pool("ipv6").ip("2001:db8:9::1")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kRequested,
         "2001:db8:9::1 is outside pool ipv6 (2001:db8:1::/64)"}}},
      {"IPv6 held addresses compare by value, not by spelling",
       {Svc("default/a").pool("ipv6").holds({"2001:DB8:1::1:0:0"}), Svc("default/b").pool("ipv6")},
       {{"default/a", Outcome::kept, {"2001:db8:1::1:0:0"}},
        {"default/b", Outcome::assigned, {"2001:db8:1::1:0:1"}}}},
      {"single stack: the family comes from ipFamilies[0]",
       {Svc("default/a").pool("default,ipv6").families({"IPv6"})},
       {{"default/a", Outcome::assigned, {"2001:db8:1::1:0:0"}, {"ipv6"}}}},
      {"single stack without ipFamilies: the family of the first pool named",
       {Svc("default/a").pool("ipv6,default")},
       {{"default/a", Outcome::assigned, {"2001:db8:1::1:0:0"}}}},
      {"single stack without ipFamilies: the family of the loadBalancerIP",
       {Svc("default/a").pool("default,ipv6").ip("2001:db8:1::5")},
       {{"default/a", Outcome::assigned, {"2001:db8:1::5"}}}},
      {"kube-proxy: IPv6 asked, no IPv6 pool",
       {Svc("default/a").families({"IPv6"})},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kPool,
         "no IPv6 pool: the default pool is default (IPv4) (the Service is IPv6 by spec.ipFamilies; "
         "kube-proxy cannot carry one family to the other)"}},
       kKubeProxy},
      {"kube-proxy: loadBalancerIP of another family than ipFamilies[0]",
       {Svc("default/a").pool("default,ipv6").families({"IPv6"}).ip("192.0.2.20")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kRequested,
         "192.0.2.20 is IPv4 but the Service is IPv6 (spec.ipFamilies): kube-proxy (ipMode VIP) "
         "cannot carry one family to the other"}},
       kKubeProxy},
      {"an unknown family or policy is invalid",
       {Svc("default/a").families({"IPv5"}), Svc("default/b").policy("MaybeDualStack")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", "spec.ipFamilies[0]", "'IPv5'"},
        {"default/b", Outcome::failed, {}, {}, "InvalidService", "spec.ipFamilyPolicy",
         "'MaybeDualStack'"}}},
      {"RequireDualStack: one address per family, IPv4 first",
       {Svc("default/a").pool("ipv6,default").families({"IPv6", "IPv4"}, "RequireDualStack")},
       {{"default/a", Outcome::assigned, {"192.0.2.8", "2001:db8:1::1:0:0"}, {"default", "ipv6"}}}},
      {"RequireDualStack without an IPv6 pool fails",
       {Svc("default/a").families({"IPv4", "IPv6"}, "RequireDualStack")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kPool, "no IPv6 pool"}}},
      {"PreferDualStack without an IPv6 pool takes IPv4 and says nothing",
       {Svc("default/a").families({"IPv4", "IPv6"}, "PreferDualStack")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}}}},
      {"PreferDualStack with an unknown second pool takes IPv4 and warns",
       {Svc("default/a").pool("default,typo").policy("PreferDualStack")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {}, "AllocationFailed", kPool,
         "pool 'typo' is not configured"}}},
      {"RequireDualStack, IPv6 exhausted: the second gets nothing and gives its IPv4 back",
       {Svc("default/a").pool("default,tiny6").policy("RequireDualStack"),
        Svc("default/b").pool("default,tiny6").policy("RequireDualStack"), Svc("default/c")},
       {{"default/a", Outcome::assigned, {"192.0.2.8", "2001:db8:2::10"}},
        {"default/b", Outcome::failed, {}, {}, "AllocationFailed", "",
         "pool tiny6 has no free IPv6 address"},
        {"default/c", Outcome::assigned, {"192.0.2.9"}}}},
      {"PreferDualStack, IPv6 exhausted: IPv4 only, with a warning",
       {Svc("default/a").pool("default,tiny6").policy("RequireDualStack"),
        Svc("default/b").pool("default,tiny6").policy("PreferDualStack")},
       {{"default/a", Outcome::assigned, {"192.0.2.8", "2001:db8:2::10"}},
        {"default/b", Outcome::assigned, {"192.0.2.9"}, {}, "AllocationFailed", "",
         "pool tiny6 has no free IPv6 address"}}},
      {"RequireDualStack holding IPv4, IPv6 exhausted: keeps IPv4, with a warning",
       {Svc("default/a").pool("default,tiny6").policy("RequireDualStack").holds({"2001:db8:2::10"}),
        Svc("default/b").pool("default,tiny6").policy("RequireDualStack").holds({"192.0.2.11"})},
       {{"default/a", Outcome::assigned, {"192.0.2.8", "2001:db8:2::10"}},
        {"default/b", Outcome::kept, {"192.0.2.11"}, {}, "AllocationFailed", "",
         "pool tiny6 has no free IPv6 address"}}},
      {"dual stack with a static IPv6 request and a dynamic IPv4",
       {Svc("default/a").pool("default,ipv6").policy("RequireDualStack").ip("2001:db8:1::80")},
       {{"default/a", Outcome::assigned, {"192.0.2.8", "2001:db8:1::80"}}}},
      {"from dual stack back to single stack: the other family's address is released",
       {Svc("default/a").pool("default,ipv6").families({"IPv4"}).holds({"192.0.2.8", "2001:db8:1::1:0:0"})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {}, "", "", "", {"2001:db8:1::1:0:0"}}}},
  };
  for (const Case& c : cases) check(c);
}

// Issue 8 item 1: haproxy and nginx connect to the pods whatever the VIP's family, so the pool
// and the static IP choose the family; spec.ipFamilies (which a single-stack API server
// defaults to [IPv4] on every Service) only breaks a tie. kube-proxy cannot bridge.
TEST(Allocate, FamiliesWithABridgingProxy) {
  const std::vector<Case> cases = {
      {"the seed's simulated dual stack: an IPv6 pool and IPv6 loadBalancerIP on an IPv4 Service",
       {Svc("default/myapp").pool("external").ip("198.51.100.4").families({"IPv4"}, "SingleStack"),
        Svc("default/myapp6").pool("ipv6").ip("2001:db8:1::4").families({"IPv4"}, "SingleStack")},
       {{"default/myapp", Outcome::assigned, {"198.51.100.4"}, {"external"}},
        {"default/myapp6", Outcome::assigned, {"2001:db8:1::4"}, {"ipv6"}}}},
      {"an IPv6 pool alone gives an IPv6 address to an IPv4 Service",
       {Svc("default/a").pool("ipv6").families({"IPv4"})},
       {{"default/a", Outcome::assigned, {"2001:db8:1::1:0:0"}, {"ipv6"}}}},
      {"kube-proxy: the same Service is refused, naming spec.ipFamilies",
       {Svc("default/a").pool("ipv6").families({"IPv4"})},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kPool,
         "no IPv4 pool: loadbalancer/pool names ipv6 (IPv6) (the Service is IPv4 by spec.ipFamilies"}},
       kKubeProxy},
      {"kube-proxy: the seed's IPv6 Service is refused, the IPv4 one served",
       {Svc("default/myapp").pool("external").ip("198.51.100.4").families({"IPv4"}),
        Svc("default/myapp6").pool("ipv6").ip("2001:db8:1::4").families({"IPv4"})},
       {{"default/myapp", Outcome::assigned, {"198.51.100.4"}},
        {"default/myapp6", Outcome::failed, {}, {}, "InvalidService", kRequested,
         "2001:db8:1::4 is IPv6 but the Service is IPv4 (spec.ipFamilies)"}},
       kKubeProxy},
      {"two pools, one per family: spec.ipFamilies breaks the tie",
       {Svc("default/a").pool("default,ipv6").families({"IPv6"}),
        Svc("default/b").pool("ipv6,default").families({"IPv4"})},
       {{"default/a", Outcome::assigned, {"2001:db8:1::1:0:0"}},
        {"default/b", Outcome::assigned, {"192.0.2.8"}}}},
      {"the loadBalancerIP's family wins over spec.ipFamilies",
       {Svc("default/a").pool("default,ipv6").families({"IPv6"}).ip("192.0.2.20")},
       {{"default/a", Outcome::assigned, {"192.0.2.20"}, {"default"}}}},
      {"without an IPv6 pool an IPv6 Service gets IPv4 (the default pool)",
       {Svc("default/a").families({"IPv6"})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}}}},
      {"a held IPv6 address of an IPv4 Service in an IPv6 pool is kept (a restart moves nothing)",
       {Svc("default/a").pool("ipv6").families({"IPv4"}).holds({"2001:db8:1::9"})},
       {{"default/a", Outcome::kept, {"2001:db8:1::9"}}}},
  };
  for (const Case& c : cases) check(c);
}

// Issue 8 item 7: loadbalancer/ips, at most one address per family; spec.loadBalancerIP keeps
// working; both set must agree.
TEST(Allocate, StaticIpsAnnotation) {
  const char* kIps = "metadata.annotations[loadbalancer/ips]";
  const std::vector<Case> cases = {
      {"one address",
       {Svc("default/a").annotate("loadbalancer/ips", "192.0.2.30")},
       {{"default/a", Outcome::assigned, {"192.0.2.30"}, {"default"}}}},
      {"one per family, IPv6 written first: dual stack on a single-stack Service",
       {Svc("default/a").pool("default,ipv6").annotate("loadbalancer/ips", " 2001:db8:1::30 , 192.0.2.30")},
       {{"default/a", Outcome::assigned, {"192.0.2.30", "2001:db8:1::30"}, {"default", "ipv6"}}}},
      {"spec.loadBalancerIP alone still works",
       {Svc("default/a").ip("192.0.2.31")},
       {{"default/a", Outcome::assigned, {"192.0.2.31"}}}},
      {"both set and agreeing",
       {Svc("default/a").ip("192.0.2.32").annotate("loadbalancer/ips", "192.0.2.32")},
       {{"default/a", Outcome::assigned, {"192.0.2.32"}}}},
      {"both set and disagreeing: an error on the Service",
       {Svc("default/a").ip("192.0.2.33").annotate("loadbalancer/ips", "192.0.2.34")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kRequested,
         "192.0.2.33 disagrees with loadbalancer/ips '192.0.2.34'"}}},
      {"disagreeing while holding an address: kept, with the error",
       {Svc("default/a").holds({"192.0.2.9"}).ip("192.0.2.33").annotate("loadbalancer/ips", "192.0.2.34")},
       {{"default/a", Outcome::kept, {"192.0.2.9"}, {}, "InvalidService", kRequested, "disagrees"}}},
      {"two addresses of one family",
       {Svc("default/a").annotate("loadbalancer/ips", "192.0.2.35,192.0.2.36")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kIps,
         "names two IPv4 addresses: at most one per family"}}},
      {"not an address",
       {Svc("default/a").annotate("loadbalancer/ips", "192.0.2.35,")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kIps, "'' is not an IP address"}}},
      {"outside the pool: the annotation is named",
       {Svc("default/a").pool("default").annotate("loadbalancer/ips", "198.51.100.9")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kIps,
         "198.51.100.9 is outside pool default"}}},
      {"a changed annotation moves the Service, naming old and new",
       {Svc("default/a").holds({"192.0.2.9"}).annotate("loadbalancer/ips", "192.0.2.40")},
       {{"default/a", Outcome::assigned, {"192.0.2.40"}, {}, "", "", "", {"192.0.2.9"},
         {"Normal IPMoved moved from 192.0.2.9 to 192.0.2.40 (pool default): "
          "metadata.annotations[loadbalancer/ips] asks for 192.0.2.40"}}}},
      {"kube-proxy: an address of the other family than spec.ipFamilies is refused",
       {Svc("default/a").pool("default,ipv6").families({"IPv4"}).annotate("loadbalancer/ips",
                                                                          "192.0.2.41,2001:db8:1::41")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService", kIps,
         "2001:db8:1::41 is IPv6 but the Service is IPv4 (spec.ipFamilies)"}},
       kKubeProxy},
  };
  for (const Case& c : cases) check(c);
}

// Issue 8 items 6 and 8: the original's spelling loadBalancer/..., MetalLB's keys, typos.
TEST(Allocate, AnnotationSpellingsAndMetalLB) {
  const std::vector<Case> cases = {
      {"loadBalancer/pool, as the seed's prose writes it, is loadbalancer/pool",
       {Svc("default/a").written("loadBalancer/pool", "external")},
       {{"default/a", Outcome::assigned, {"198.51.100.16"}, {"external"}, "", "", "", {},
         {"Normal AnnotationMapped metadata.annotations[loadBalancer/pool]: read as loadbalancer/pool"}}}},
      {"both spellings with one value: fine",
       {Svc("default/a").written("loadBalancer/pool", "external").written("loadbalancer/pool", "external")},
       {{"default/a", Outcome::assigned, {"198.51.100.16"}, {}, "", "", "", {},
         {"Normal AnnotationMapped"}}}},
      {"both spellings disagreeing: the Service is refused, naming both",
       {Svc("default/a").written("loadBalancer/pool", "external").written("loadbalancer/pool", "default")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService",
         "metadata.annotations[loadBalancer/pool]",
         "\"external\" disagrees with loadbalancer/pool \"default\"", {},
         {"Normal AnnotationMapped"}}}},
      {"a typo gets a Warning naming the key and the nearest known one; the Service is served",
       {Svc("default/a").written("loadbalancer/pol", "external")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {"default"}, "", "", "", {},
         {"Warning UnknownAnnotation metadata.annotations[loadbalancer/pol]: \"loadbalancer/pol\" is "
          "not a k8slb annotation and is ignored; the nearest known one is loadbalancer/pool"}}}},
      {"the nearest known key, whatever the case",
       {Svc("default/a").written("LoadBalancer/sslRedirct", "false")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {}, "", "", "", {},
         {"Warning UnknownAnnotation the nearest known one is loadbalancer/sslredirect"}}}},
      {"MetalLB's address-pool is the pool, with a Normal note",
       {Svc("default/a").written("metallb.io/address-pool", "external")},
       {{"default/a", Outcome::assigned, {"198.51.100.16"}, {"external"}, "", "", "", {},
         {"Normal AnnotationMapped metadata.annotations[metallb.io/address-pool]: MetalLB's "
          "metallb.io/address-pool is read as loadbalancer/pool"}}}},
      {"MetalLB's loadBalancerIPs are the static IPs; errors name the key as written",
       {Svc("default/a").written("metallb.universe.tf/loadBalancerIPs", "192.0.2.50"),
        Svc("default/b").written("metallb.io/loadBalancerIPs", "203.0.113.100")},
       {{"default/a", Outcome::assigned, {"192.0.2.50"}, {}, "", "", "", {},
         {"Normal AnnotationMapped metadata.annotations[metallb.universe.tf/loadBalancerIPs]: "
          "MetalLB's metallb.universe.tf/loadBalancerIPs is read as loadbalancer/ips"}},
        {"default/b", Outcome::failed, {}, {}, "AllocationFailed",
         "metadata.annotations[metallb.io/loadBalancerIPs]", "203.0.113.100 is outside pool default",
         {}, {"Normal AnnotationMapped"}}}},
      {"MetalLB's allow-shared-ip is the sharing key",
       {Svc("default/a").written("metallb.io/allow-shared-ip", "web"),
        Svc("default/b").written("metallb.universe.tf/allow-shared-ip", "web").ports({{"TCP", 443}})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {}, "", "", "", {},
         {"Normal AnnotationMapped metadata.annotations[metallb.io/allow-shared-ip]: MetalLB's "
          "metallb.io/allow-shared-ip is read as loadbalancer/share"}},
        {"default/b", Outcome::assigned, {"192.0.2.8"}, {}, "", "", "", {},
         {"Normal AnnotationMapped"}}}},
      {"a MetalLB key and ours disagreeing: refused",
       {Svc("default/a").written("metallb.io/address-pool", "external").written("loadbalancer/pool", "default")},
       {{"default/a", Outcome::failed, {}, {}, "InvalidService",
         "metadata.annotations[metallb.io/address-pool]", "disagrees with loadbalancer/pool", {},
         {"Normal AnnotationMapped"}}}},
      {"other keys are no business of ours",
       {Svc("default/a").written("metallb.io/ip-allocated-from-pool", "x").written("example.com/pool", "x")},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}}}},
  };
  for (const Case& c : cases) check(c);
}

// Issue 8 item 9: pool options avoidBuggyIPs, autoAssign, namespaces.
TEST(Allocate, PoolOptions) {
  // Networks given as start-stop ranges that are not CIDRs: no network or broadcast address is
  // left out, so only avoidBuggyIPs keeps .0 and .255 from being handed out.
  const char* pools = R"({"pools": {
      "default": {"network": "192.0.2.0/25", "range": "192.0.2.100-192.0.2.101"},
      "buggy":   {"network": "198.51.100.0-198.51.100.254", "range": "198.51.100.0-198.51.100.1",
                  "avoidBuggyIPs": true},
      "buggy255": {"network": "192.0.2.129-192.0.2.255", "range": "192.0.2.254-192.0.2.255",
                  "avoidBuggyIPs": true},
      "plain":   {"network": "203.0.113.32-203.0.113.255", "range": "203.0.113.254-203.0.113.255"},
      "manual":  {"network": "203.0.113.0/28", "range": "203.0.113.1-203.0.113.4", "autoAssign": false},
      "team":    {"network": "203.0.113.16/28", "range": "203.0.113.17-203.0.113.20",
                  "namespaces": ["team-a", "team-b"]},
      "team6":   {"network": "2001:db8:6::/64", "range": "2001:db8:6::10-2001:db8:6::1f",
                  "namespaces": ["team-b"]}
  }})";
  const char* manual_default = R"({"pools": {
      "default": {"network": "192.0.2.0/24", "range": "192.0.2.8/30", "autoAssign": false},
      "other":   {"network": "198.51.100.0/24", "range": "198.51.100.8/30"}
  }})";
  const std::vector<Case> cases = {
      {"avoidBuggyIPs: never .0 (nor .255)",
       {Svc("default/a").pool("buggy"), Svc("default/b").pool("buggy"),
        Svc("default/c").pool("buggy255"), Svc("default/d").pool("buggy255")},
       {{"default/a", Outcome::assigned, {"198.51.100.1"}},
        {"default/b", Outcome::failed, {}, {}, "AllocationFailed", "", "pool buggy has no free IPv4 address"},
        {"default/c", Outcome::assigned, {"192.0.2.254"}},
        {"default/d", Outcome::failed, {}, {}, "AllocationFailed", "", "pool buggy255 has no free IPv4 address"}},
       {}, pools},
      {"without avoidBuggyIPs .255 is handed out",
       {Svc("default/a").pool("plain"), Svc("default/b").pool("plain")},
       {{"default/a", Outcome::assigned, {"203.0.113.254"}},
        {"default/b", Outcome::assigned, {"203.0.113.255"}}},
       {}, pools},
      {"avoidBuggyIPs: a static request for .0 is refused",
       {Svc("default/a").pool("buggy").ip("198.51.100.0")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kRequested,
         "198.51.100.0 ends in .0 or .255, which pool buggy avoids (avoidBuggyIPs)"}},
       {}, pools},
      {"autoAssign: false: served when named",
       {Svc("default/a").pool("manual")},
       {{"default/a", Outcome::assigned, {"203.0.113.1"}, {"manual"}}},
       {}, pools},
      {"autoAssign: false on default: a Service without a pool gets none, and is told why",
       {Svc("default/a"), Svc("default/b").pool("default"), Svc("default/c").pool("other")},
       {{"default/a", Outcome::failed, {}, {}, "AllocationFailed", kPool,
         "pool default has autoAssign: false: it serves only Services that name it"},
        {"default/b", Outcome::assigned, {"192.0.2.8"}},
        {"default/c", Outcome::assigned, {"198.51.100.8"}}},
       {}, manual_default},
      {"namespaces: a Service there without a pool annotation uses that pool before default",
       {Svc("team-a/web"), Svc("other/web"), Svc("team-a/named").pool("default")},
       {{"other/web", Outcome::assigned, {"192.0.2.100"}, {"default"}},
        {"team-a/named", Outcome::assigned, {"192.0.2.101"}, {"default"}},
        {"team-a/web", Outcome::assigned, {"203.0.113.17"}, {"team"}}},
       {}, pools},
      {"namespaces: one pool per family; dual stack takes both",
       {Svc("team-b/web").policy("RequireDualStack"), Svc("team-b/v4").families({"IPv4"})},
       {{"team-b/v4", Outcome::assigned, {"203.0.113.17"}, {"team"}},
        {"team-b/web", Outcome::assigned, {"203.0.113.18", "2001:db8:6::10"}, {"team", "team6"}}},
       {}, pools},
  };
  for (const Case& c : cases) check(c);
}

// Issue 8 item 5: a Service whose address no longer fits what it asks for gets a new one, with
// a Normal Event naming both; what it holds is never lost for nothing.
TEST(Allocate, MovesWhenTheAskChanges) {
  const std::vector<Case> cases = {
      {"pool annotation changed: a new address from the new pool, naming old and new",
       {Svc("default/a").pool("external").holds({"192.0.2.9"})},
       {{"default/a", Outcome::assigned, {"198.51.100.16"}, {"external"}, "", "", "", {"192.0.2.9"},
         {"Normal IPMoved default/a: moved from 192.0.2.9 to 198.51.100.16 (pool external): 192.0.2.9 "
          "is outside pool external (198.51.100.0/24), the pool the Service asks for"}}}},
      {"pool annotation removed: back to default",
       {Svc("default/a").holds({"198.51.100.20"})},
       {{"default/a", Outcome::assigned, {"192.0.2.8"}, {"default"}, "", "", "", {"198.51.100.20"},
         {"Normal IPMoved moved from 198.51.100.20 to 192.0.2.8"}}}},
      {"moving with a sharing key: the old address is not offered to the new pool's sharing group",
       {Svc("a/first").share("db"), Svc("b/moving").share("db").ports({{"TCP", 443}}).holds({"198.51.100.20"})},
       {{"a/first", Outcome::assigned, {"192.0.2.8"}, {"default"}},
        {"b/moving", Outcome::assigned, {"192.0.2.8"}, {"default"}, "", "", "", {"198.51.100.20"},
         {"Normal IPMoved moved from 198.51.100.20 to 192.0.2.8"}}}},
      {"the new pool is full: the old address is kept, with a warning",
       {Svc("default/a").pool("tiny6"), Svc("default/b").pool("tiny6").holds({"2001:db8:1::5"})},
       {{"default/a", Outcome::assigned, {"2001:db8:2::10"}},
        {"default/b", Outcome::kept, {"2001:db8:1::5"}, {"ipv6"}, "IPOutsidePool", kPool,
         "keeping 2001:db8:1::5 although it is outside pool tiny6 (2001:db8:2::/64): that pool has "
         "no free IPv6 address left"}}},
      {"family changed by the pool annotation: the IPv4 address goes, an IPv6 one comes",
       {Svc("default/a").pool("ipv6").families({"IPv4"}).holds({"192.0.2.9"})},
       {{"default/a", Outcome::assigned, {"2001:db8:1::1:0:0"}, {"ipv6"}, "", "", "", {"192.0.2.9"},
         {"Normal IPMoved moved from 192.0.2.9 to 2001:db8:1::1:0:0 (pool ipv6): the Service is IPv6 "
          "now, by its pool"}}}},
      {"family changed by the static IP",
       {Svc("default/a").pool("default,ipv6").holds({"192.0.2.9"}).ip("2001:db8:1::7")},
       {{"default/a", Outcome::assigned, {"2001:db8:1::7"}, {}, "", "", "", {"192.0.2.9"},
         {"Normal IPMoved moved from 192.0.2.9 to 2001:db8:1::7 (pool ipv6): the Service is IPv6 now, "
          "by spec.loadBalancerIP"}}}},
      {"an unknown pool (a typo) moves nothing",
       {Svc("default/a").pool("extrenal").holds({"192.0.2.9"})},
       {{"default/a", Outcome::kept, {"192.0.2.9"}, {}, "IPOutsidePool", kPool,
         "keeping 192.0.2.9: pool 'extrenal' is not configured"}}},
      {"nothing changed: nothing moves (what a restart sees)",
       {Svc("default/a").pool("external").holds({"198.51.100.20"}),
        Svc("default/b").holds({"192.0.2.200"}), Svc("default/c").ip("192.0.2.30").holds({"192.0.2.30"})},
       {{"default/a", Outcome::kept, {"198.51.100.20"}},
        {"default/b", Outcome::kept, {"192.0.2.200"}},
        {"default/c", Outcome::kept, {"192.0.2.30"}}}},
  };
  for (const Case& c : cases) check(c);
}

} // namespace
} // namespace k8slb::allocate
