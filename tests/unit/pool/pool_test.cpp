#include "k8slb/pool.hpp"

#include <gtest/gtest.h>

#include "k8slb/error.hpp"

namespace k8slb::pool {
namespace {

using nlohmann::json;

std::string error_of(const std::string& text) {
  try {
    parse_config(json::parse(text));
  } catch (const Error& e) {
    return e.what();
  }
  return "no error";
}

TEST(Config, ParsesTheSeedsFirstExample) {
  Config config = parse_config(json::parse(R"({
    "pools": {
      "default": {"network": "192.168.10.0/24", "range": "192.168.10.200-192.168.10.254"},
      "external": {"network": "1.2.3.0/22", "range": "1.2.3.50-1.2.3.74", "interface": "em1"}
    }})"));
  ASSERT_EQ(config.pools.size(), 2u);
  const Pool* external = config.find("external");
  ASSERT_NE(external, nullptr);
  EXPECT_EQ(external->network.to_string(), "1.2.0.0/22");
  EXPECT_EQ(external->range.to_string(), "1.2.3.50-1.2.3.74");
  EXPECT_EQ(external->interface, "em1");
  EXPECT_EQ(config.find("default")->interface, "");
  EXPECT_EQ(config.find("missing"), nullptr);
}

// Issue 8 item 9: additions to the pool object; the original's documents stay valid.
TEST(Config, ReadsPoolOptions) {
  struct Case {
    std::string description;
    std::string pool; // the "default" pool's object
    bool avoid_buggy_ips;
    bool auto_assign;
    std::vector<std::string> namespaces;
  };
  const std::vector<Case> cases = {
      {"the original's pool: no options", R"({"network": "192.0.2.0/24", "range": "192.0.2.8/30"})",
       false, true, {}},
      {"avoidBuggyIPs", R"({"network": "192.0.2.0/24", "range": "192.0.2.8/30", "avoidBuggyIPs": true})",
       true, true, {}},
      {"autoAssign false", R"({"network": "192.0.2.0/24", "range": "192.0.2.8/30", "autoAssign": false})",
       false, false, {}},
      {"namespaces, sorted, once each",
       R"({"network": "192.0.2.0/24", "range": "192.0.2.8/30", "namespaces": ["team-b", "team-a", "team-b"]})",
       false, true, {"team-a", "team-b"}},
      {"null means absent",
       R"({"network": "192.0.2.0/24", "range": "192.0.2.8/30", "avoidBuggyIPs": null, "autoAssign": null,
           "namespaces": null})",
       false, true, {}},
  };
  for (const Case& c : cases) {
    SCOPED_TRACE(c.description);
    Config config = parse_config(json::parse(R"({"pools": {"default": )" + c.pool + "}}"));
    const Pool* pool = config.find("default");
    ASSERT_NE(pool, nullptr);
    EXPECT_EQ(pool->avoid_buggy_ips, c.avoid_buggy_ips);
    EXPECT_EQ(pool->auto_assign, c.auto_assign);
    EXPECT_EQ(pool->namespaces, c.namespaces);
  }
}

TEST(Config, ReadsKeepalivedAndRawLines) {
  Config config = parse_config(json::parse(R"({
    "pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.100-192.0.2.150"}},
    "keepalived": {"email": "ops@example.com", "emailFrom": "lb@example.com",
                   "emailServer": "192.0.2.25", "emailServerTimeout": "10"},
    "haproxy": {"global": ["maxconn 4096"], "defaults": ["timeout connect 5s"],
                "tcpback": ["balance leastconn"], "httpfront": ["option forwardfor"]},
    "nginx": {"global": ["worker_processes 2;"], "http": ["server_tokens off;"], "proxy": ["proxy_buffering off;"]}
  })"));
  EXPECT_EQ(config.keepalived.email, "ops@example.com");
  EXPECT_EQ(config.keepalived.email_server_timeout, 10);
  EXPECT_EQ(config.haproxy.global, std::vector<std::string>{"maxconn 4096"});
  EXPECT_EQ(config.haproxy.tcpback, std::vector<std::string>{"balance leastconn"});
  EXPECT_EQ(config.nginx.proxy, std::vector<std::string>{"proxy_buffering off;"});
}

TEST(Config, RejectsBadDocumentsNamingPoolAndField) {
  struct Case {
    const char* description;
    const char* document;
    const char* error;
  };
  const Case cases[] = {
      {"the seed's IPv6 example puts its range outside its network",
       R"({"pools": {"ipv6": {"network": "2001:468::/64", "range": "2001:468:101::/96"}}})",
       "pools.ipv6.range: 2001:468:101::/96 is not inside network 2001:468::/64 (range holds the "
       "dynamic IPs and must lie inside network, which holds every IP of the pool)"},
      {"unparsable network", R"({"pools": {"default": {"network": "192.0.2.0/40", "range": "192.0.2.1"}}})",
       "pools.default.network: '192.0.2.0/40': prefix length must be 0-32"},
      {"unparsable range", R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.x-192.0.2.9"}}})",
       "pools.default.range: '192.0.2.x' is not an IP address"},
      {"missing network", R"({"pools": {"default": {"range": "192.0.2.1"}}})",
       "pools.default.network: is required"},
      {"missing range", R"({"pools": {"default": {"network": "192.0.2.0/24"}}})",
       "pools.default.range: is required"},
      {"families mixed", R"({"pools": {"mixed": {"network": "192.0.2.0/24", "range": "2001:db8::/120"}}})",
       "pools.mixed: network 192.0.2.0/24 is IPv4 but range 2001:db8::/120 is IPv6: a pool holds one family"},
      {"overlapping pools",
       R"({"pools": {"a": {"network": "192.0.2.0/24", "range": "192.0.2.1"},
                     "b": {"network": "192.0.2.128/25", "range": "192.0.2.200"}}})",
       "pools.b.network: 192.0.2.128/25 overlaps pool 'a' (192.0.2.0/24)"},
      {"no pools", R"({"pools": {}})", "pools: at least one pool is required"},
      {"every IPv4 address", R"({"pools": {"all": {"network": "0.0.0.0/0", "range": "192.0.2.1"}}})",
       "pools.all.network: 0.0.0.0/0 holds unspecified addresses (0.0.0.0/8): they cannot be load-balancer IPs"},
      {"loopback", R"({"pools": {"lo": {"network": "127.0.0.0/24", "range": "127.0.0.10"}}})",
       "pools.lo.network: 127.0.0.0/24 holds loopback addresses (127.0.0.0/8): they cannot be load-balancer IPs"},
      {"IPv6 multicast", R"({"pools": {"m": {"network": "ff02::/16", "range": "ff02::1"}}})",
       "pools.m.network: ff02::/16 holds multicast addresses (ff00::/8): they cannot be load-balancer IPs"},
      {"IPv6 link-local", R"({"pools": {"ll": {"network": "fe80::/64", "range": "fe80::10"}}})",
       "pools.ll.network: fe80::/64 holds link-local addresses (fe80::/10): they cannot be load-balancer IPs"},
      {"pool name with a slash", R"({"pools": {"../etc": {"network": "192.0.2.0/24", "range": "192.0.2.1"}}})",
       "pools.../etc: a pool name is letters, digits, '-', '_' and '.', up to 63, starting with a letter or digit"},
      {"interface name that would inject",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1", "interface": "eth0 }\nvrrp"}}})",
       "pools.default.interface: 'eth0 }\\nvrrp' is not an interface name"},
      {"raw line with a newline",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1"}}, "haproxy": {"global": ["a", "b\nc"]}})",
       "haproxy.global[1]: a config line cannot hold a newline or NUL"},
      {"email without server",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1"}}, "keepalived": {"email": "a@b.c"}})",
       "keepalived.emailServer: is required when keepalived.email is set"},
      {"bad timeout",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1"}},
           "keepalived": {"email": "a@b.c", "emailServer": "192.0.2.25", "emailServerTimeout": "soon"}})",
       "keepalived.emailServerTimeout: 'soon' is not a number of seconds"},
      {"avoidBuggyIPs not a boolean",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1", "avoidBuggyIPs": "yes"}}})",
       "pools.default.avoidBuggyIPs: must be true or false"},
      {"autoAssign not a boolean",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1", "autoAssign": 0}}})",
       "pools.default.autoAssign: must be true or false"},
      {"namespaces not a list",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1", "namespaces": "team-a"}}})",
       "pools.default.namespaces: must be a list of namespace names"},
      {"a namespace that is not a DNS label",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1", "namespaces": ["ok", "Team_A"]}}})",
       "pools.default.namespaces[1]: \"Team_A\" is not a namespace name"},
      {"one namespace in two pools of one family",
       R"({"pools": {"a": {"network": "192.0.2.0/25", "range": "192.0.2.1", "namespaces": ["team"]},
                     "b": {"network": "192.0.2.128/25", "range": "192.0.2.129", "namespaces": ["team"]}}})",
       "pools.b.namespaces: namespace team is listed by pool 'a' too, of the same family (IPv4): a "
       "namespace may name one pool per family"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    EXPECT_EQ(error_of(c.document), c.error);
  }
}

// Issue 12: the bgp section and `announce` per pool; documents without them stay as they were.
TEST(Config, ReadsTheBgpSectionAndAnnounce) {
  Config plain = parse_config(json::parse(R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.8/30"}}})"));
  EXPECT_FALSE(plain.bgp.has_value());
  EXPECT_EQ(plain.pools[0].announce, Announce::vrrp);

  Config config = parse_config(json::parse(R"({
    "pools": {
      "vrrp": {"network": "192.0.2.0/24", "range": "192.0.2.8/30", "announce": "vrrp"},
      "wide": {"network": "198.51.100.0/24", "range": "198.51.100.8/30", "announce": "bgp"}
    },
    "bgp": {"asn": 64512, "peers": [
      {"address": "2001:db8::1", "asn": "65000", "bfd": true, "holdTime": 9},
      {"address": "203.0.113.1", "asn": 4200000000, "port": 1179, "passwordFile": "/etc/k8slb/bgp/peer1"}
    ]}})"));
  EXPECT_EQ(config.find("vrrp")->announce, Announce::vrrp);
  EXPECT_EQ(config.find("wide")->announce, Announce::bgp);
  ASSERT_TRUE(config.bgp.has_value());
  EXPECT_EQ(config.bgp->asn, 64512u);
  ASSERT_EQ(config.bgp->peers.size(), 2u);
  const auto& v4 = config.bgp->peers[0]; // sorted by address: IPv4 first
  EXPECT_EQ(v4.address.to_string(), "203.0.113.1");
  EXPECT_EQ(v4.asn, 4200000000u);
  EXPECT_EQ(v4.port, 1179);
  EXPECT_EQ(v4.password_file, "/etc/k8slb/bgp/peer1");
  EXPECT_FALSE(v4.bfd);
  EXPECT_EQ(v4.hold_time, 0);
  const auto& v6 = config.bgp->peers[1];
  EXPECT_EQ(v6.address.to_string(), "2001:db8::1");
  EXPECT_EQ(v6.asn, 65000u);
  EXPECT_EQ(v6.port, 179);
  EXPECT_TRUE(v6.bfd);
  EXPECT_EQ(v6.hold_time, 9);
}

TEST(Config, RejectsBadBgpValuesNamingTheField) {
  struct Case {
    const char* description;
    const char* bgp; // the document's "bgp" value
    const char* announce;
    const char* error;
  };
  const Case cases[] = {
      {"announce bgp without a bgp section", "null", "bgp",
       "pools.default.announce: bgp needs the bgp section (asn and peers) in the config document"},
      {"announce neither vrrp nor bgp", "null", "ospf", "pools.default.announce: 'ospf' is not vrrp or bgp"},
      {"no asn", R"({"peers": [{"address": "192.0.2.1", "asn": 65000}]})", "bgp",
       "bgp.asn: is required"},
      {"asn 0", R"({"asn": 0, "peers": [{"address": "192.0.2.1", "asn": 65000}]})", "bgp",
       "bgp.asn: '0' is not an AS number (1 to 4294967294)"},
      {"asn too large", R"({"asn": 4294967295, "peers": [{"address": "192.0.2.1", "asn": 65000}]})", "bgp",
       "bgp.asn: '4294967295' is not an AS number (1 to 4294967294)"},
      {"asn that would inject", R"({"asn": "64512; protocol", "peers": [{"address": "192.0.2.1", "asn": 65000}]})",
       "bgp", "bgp.asn: '64512; protocol' is not an AS number (1 to 4294967294)"},
      {"negative asn", R"({"asn": -1, "peers": [{"address": "192.0.2.1", "asn": 65000}]})", "bgp",
       "bgp.asn: '-1' is not an AS number (1 to 4294967294)"},
      {"no peers", R"({"asn": 64512, "peers": []})", "bgp",
       "bgp.peers: must be a list of at least one peer ({\"address\": ..., \"asn\": ...})"},
      {"peer without address", R"({"asn": 64512, "peers": [{"asn": 65000}]})", "bgp",
       "bgp.peers[0].address: is required"},
      {"peer address that is a name", R"({"asn": 64512, "peers": [{"address": "router1", "asn": 65000}]})", "bgp",
       "bgp.peers[0].address: 'router1' is not an IP address"},
      {"peer address that would inject",
       R"({"asn": 64512, "peers": [{"address": "192.0.2.1 as 1; }", "asn": 65000}]})", "bgp",
       "bgp.peers[0].address: '192.0.2.1 as 1; }' is not an IP address"},
      {"peer listed twice",
       R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000}, {"address": "192.0.2.1", "asn": 65001}]})",
       "bgp", "bgp.peers[1].address: 192.0.2.1 is listed twice"},
      {"peer without asn", R"({"asn": 64512, "peers": [{"address": "192.0.2.1"}]})", "bgp",
       "bgp.peers[0].asn: is required"},
      {"port 0", R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000, "port": 0}]})", "bgp",
       "bgp.peers[0].port: '0' is not a port (1 to 65535)"},
      {"hold time below 3", R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000, "holdTime": 1}]})",
       "bgp", "bgp.peers[0].holdTime: '1' is not a number of seconds (3 to 65535)"},
      {"bfd not a boolean", R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000, "bfd": "on"}]})",
       "bgp", "bgp.peers[0].bfd: must be true or false"},
      {"relative password file",
       R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000, "passwordFile": "secret"}]})", "bgp",
       "bgp.peers[0].passwordFile: 'secret' is not an absolute path of letters, digits and /._+-"},
      {"password file with a quote",
       R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000, "passwordFile": "/etc/a\";"}]})", "bgp",
       "bgp.peers[0].passwordFile: '/etc/a\";' is not an absolute path of letters, digits and /._+-"},
      {"password file climbing out",
       R"({"asn": 64512, "peers": [{"address": "192.0.2.1", "asn": 65000, "passwordFile": "/etc/../root/x"}]})",
       "bgp", "bgp.peers[0].passwordFile: '/etc/../root/x' is not an absolute path of letters, digits and /._+-"},
      {"bgp not an object", R"("yes")", "bgp", "bgp: must be an object"},
      {"an IPv4 pool with only an IPv6 peer", R"({"asn": 64512, "peers": [{"address": "2001:db8::1", "asn": 65000}]})",
       "bgp", "pools.default.announce: bgp needs an IPv4 peer in bgp.peers for this IPv4 pool"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    std::string document = std::string(R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1", "announce": ")") +
                           c.announce + R"("}}, "bgp": )" + c.bgp + "}";
    EXPECT_EQ(error_of(document), c.error);
  }
}

TEST(Config, DuplicatesAndHostileTextsAreErrorsNamingTheKey) {
  std::string bomb = "pools: &a [1,1,1,1,1,1,1,1,1,1]\n";
  for (char c = 'b'; c <= 'j'; ++c)
    bomb += std::string("x") + c + ": &" + c + " [*" + static_cast<char>(c - 1) + ",*" +
            static_cast<char>(c - 1) + ",*" + static_cast<char>(c - 1) + ",*" + static_cast<char>(c - 1) +
            ",*" + static_cast<char>(c - 1) + ",*" + static_cast<char>(c - 1) + ",*" +
            static_cast<char>(c - 1) + ",*" + static_cast<char>(c - 1) + ",*" + static_cast<char>(c - 1) + "]\n";
  struct Case {
    const char* description;
    std::string text;
    const char* error;
  };
  const Case cases[] = {
      {"two default pools (JSON)",
       R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1"},
                     "default": {"network": "198.51.100.0/24", "range": "198.51.100.1"}}})",
       "pools.json: pools: duplicate key 'default'"},
      {"two default pools (YAML)",
       "pools:\n  default: {network: 192.0.2.0/24, range: 192.0.2.1}\n  default: {network: 198.51.100.0/24, range: 198.51.100.1}\n",
       "pools: duplicate key 'default'"},
      {"a range with a NUL",
       std::string(R"({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.1\u0000junk"}}})"),
       "pools.default.range: '192.0.2.1\x00junk' is not an IP address"},
      {"an alias bomb", bomb, "more than 1000000 values in one document once aliases are expanded"},
      {"nested deep", "{\"pools\": " + std::string(1000, '[') + std::string(1000, ']') + "}",
       "nested more than 64 deep"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    try {
      parse_config_text(c.text, "pools.json");
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_NE(std::string(e.what()).find(c.error), std::string::npos) << e.what();
    }
  }
}

TEST(Config, ComesFromTheConfigMapTheOriginalUsed) {
  json config_map = json::parse(R"({
    "apiVersion": "v1", "kind": "ConfigMap",
    "metadata": {"name": "global", "namespace": "k8slb-system"},
    "data": {"config": "{\"pools\": {\"default\": {\"network\": \"192.0.2.0/24\", \"range\": \"192.0.2.10-192.0.2.20\"}}}"}
  })");
  Config config = parse_config_map(config_map);
  EXPECT_EQ(config.find("default")->range.to_string(), "192.0.2.10-192.0.2.20");

  config_map["data"]["config"] = "{\"pools\": {\"default\": {\"network\": \"192.0.2.0/24\"}}}";
  try {
    parse_config_map(config_map);
    ADD_FAILURE() << "no error";
  } catch (const Error& e) {
    EXPECT_EQ(std::string(e.what()),
              "ConfigMap k8slb-system/global: data.config: pools.default.range: is required");
  }
}

} // namespace
} // namespace k8slb::pool
