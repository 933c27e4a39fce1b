#include "k8slb/node.hpp"

#include <gtest/gtest.h>

#include "k8slb/error.hpp"

namespace k8slb::node {
namespace {

using nlohmann::json;

// Two uplinks and a loopback, as `ip -j addr` prints them.
const char* kIpJson = R"([
  {"ifindex": 1, "ifname": "lo", "flags": ["LOOPBACK", "UP"], "addr_info": [
    {"family": "inet", "local": "127.0.0.1", "prefixlen": 8}, {"family": "inet6", "local": "::1", "prefixlen": 128}]},
  {"ifindex": 2, "ifname": "eth0", "flags": ["BROADCAST", "UP"], "addr_info": [
    {"family": "inet", "local": "192.0.2.11", "prefixlen": 24},
    {"family": "inet6", "local": "2001:db8:1::11", "prefixlen": 64}]},
  {"ifindex": 3, "ifname": "eth1", "flags": ["BROADCAST", "UP"], "addr_info": [
    {"family": "inet", "local": "198.51.100.11", "prefixlen": 22}]},
  {"ifindex": 4, "ifname": "eth2", "flags": ["BROADCAST"], "addr_info": [
    {"family": "inet", "local": "203.0.113.11", "prefixlen": 24}]}
])";

pool::Pool make_pool(const char* network, const char* interface = "") {
  pool::Pool p;
  p.name = "test";
  p.network = ip::Range::parse(network);
  p.range = p.network;
  p.interface = interface;
  return p;
}

TEST(SelectInterface, PicksTheInterfaceWhosePrefixHoldsThePool) {
  auto interfaces = interfaces_from_ip_json(json::parse(kIpJson));
  struct Case {
    const char* description;
    const char* network;
    const char* interface;
    const char* expected;
  };
  const Case cases[] = {
      {"pool inside eth0's /24", "192.0.2.200-192.0.2.254", "", "eth0"},
      {"pool inside eth1's /22", "198.51.101.0/24", "", "eth1"},
      {"IPv6 pool inside eth0's /64", "2001:db8:1::1:0/112", "", "eth0"},
      {"pool larger than the prefix, overlapping it", "198.51.100.0/21", "", "eth1"},
      {"interface set in the pool wins", "192.0.2.0/24", "eth1", "eth1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(select_interface(make_pool(c.network, c.interface), interfaces), c.expected);
  }
}

TEST(SelectInterface, ReportsWhenNoInterfaceServesThePool) {
  auto interfaces = interfaces_from_ip_json(json::parse(kIpJson));
  struct Case {
    const char* description;
    const char* network;
    const char* interface;
    const char* error;
  };
  const Case cases[] = {
      {"an interface that is down does not count", "203.0.113.0/24", "",
       "pools.test: interface: no interface on this node has an address in 203.0.113.0/24 (IPv4); set the pool's interface"},
      {"an IPv6 pool with no IPv6 address around", "2001:db8:99::/64", "",
       "pools.test: interface: no interface on this node has an address in 2001:db8:99::/64 (IPv6); set the pool's interface"},
      {"a named interface that does not exist", "192.0.2.0/24", "bond0",
       "pools.test: interface: no interface named 'bond0' on this node"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    try {
      select_interface(make_pool(c.network, c.interface), interfaces);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.error);
    }
  }
}

TEST(SelectInterface, TrustsTheConfiguredNameWhenNothingIsKnownOfTheNode) {
  EXPECT_EQ(select_interface(make_pool("192.0.2.0/24", "em1"), {}), "em1");
}

TEST(Interfaces, ReadsTheRunningSystem) {
  // Every Linux system has a loopback interface with 127.0.0.1.
  auto interfaces = read_interfaces();
  auto lo = std::find_if(interfaces.begin(), interfaces.end(), [](const Interface& i) { return i.name == "lo"; });
  ASSERT_NE(lo, interfaces.end());
  bool has_loopback_address = false;
  for (const auto& prefix : lo->addresses)
    has_loopback_address |= prefix.address.to_string() == "127.0.0.1" && prefix.length == 8;
  EXPECT_TRUE(has_loopback_address);
}

TEST(Interfaces, RejectsMalformedIpJson) {
  EXPECT_THROW(interfaces_from_ip_json(json::parse(R"({"ifname": "eth0"})")), Error);
  EXPECT_THROW(interfaces_from_ip_json(json::parse(R"([{"addr_info": []}])")), Error);
  EXPECT_THROW(interfaces_from_ip_json(json::parse(
                   R"([{"ifname": "eth0", "addr_info": [{"family": "inet", "local": "x", "prefixlen": 24}]}])")),
               Error);
}

} // namespace
} // namespace k8slb::node
