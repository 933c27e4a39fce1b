#include "k8slb/node.hpp"

#include <string>
#include <vector>

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


// Test certificates (EC P-256, made once with openssl req -x509; only parsed, never trusted).
const std::string kSanCert = R"(-----BEGIN CERTIFICATE-----
MIIBxDCCAWqgAwIBAgIUAQXZI2HbJKQR88QxOZyrilmt3UgwCgYIKoZIzj0EAwIw
GzEZMBcGA1UEAwwQb25lLmV4YW1wbGUudGVzdDAeFw0yNjExMjgxMDExMjBaFw0z
NjExMjUxMDExMjBaMBsxGTAXBgNVBAMMEG9uZS5leGFtcGxlLnRlc3QwWTATBgcq
hkjOPQIBBggqhkjOPQMBBwNCAAQHd3IS/euOg9yQ52k4+JDh0pv+V/zY8RrGbhdi
8rxtqinciA+7XezrRbC+zXGgUl5IGERZ99MlRJMu7pFuAnMCo4GLMIGIMB0GA1Ud
DgQWBBSpiIxyWf7wxBz/VV1fNxE0cotsVTAfBgNVHSMEGDAWgBSpiIxyWf7wxBz/
VV1fNxE0cotsVTAPBgNVHRMBAf8EBTADAQH/MDUGA1UdEQQuMCyCEG9uZS5leGFt
cGxlLnRlc3SCEiouT25lLmV4YW1wbGUudGVzdIcEwAACATAKBggqhkjOPQQDAgNI
ADBFAiBNzWi7y0gaNWz4QrWI05hYLLOn0JcpUw84BP/sFdwKlwIhAOwc0gCXaHMb
QzFaPoiJFwI1GpQ4nN6OLrTVkBHRMJz4
-----END CERTIFICATE-----
)";
const std::string kSanKey = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgprRbwJUqELrShk5f
ZhsnVpkyozeqtgCzRssVUxY+zmChRANCAAQHd3IS/euOg9yQ52k4+JDh0pv+V/zY
8RrGbhdi8rxtqinciA+7XezrRbC+zXGgUl5IGERZ99MlRJMu7pFuAnMC
-----END PRIVATE KEY-----
)";
const std::string kCnCert = R"(-----BEGIN CERTIFICATE-----
MIIBiDCCAS+gAwIBAgIUA8JO+AzmB++5LbF6oeSxtrkLTCswCgYIKoZIzj0EAwIw
GjEYMBYGA1UEAwwPY24gb25seS5leGFtcGxlMB4XDTI2MTEyODEwMTEyMFoXDTM2
MTEyNTEwMTEyMFowGjEYMBYGA1UEAwwPY24gb25seS5leGFtcGxlMFkwEwYHKoZI
zj0CAQYIKoZIzj0DAQcDQgAE5YjOKHectSpZKM56ncl/R0zsNQqOrLgXijLAfI1c
38/3wwIIKG1Qn5li08Cx3T4nLVQIBkHSkJkDaHMlYkydVqNTMFEwHQYDVR0OBBYE
FClt8Fjzpf6aKzjbyEQRMjStqYnoMB8GA1UdIwQYMBaAFClt8Fjzpf6aKzjbyEQR
MjStqYnoMA8GA1UdEwEB/wQFMAMBAf8wCgYIKoZIzj0EAwIDRwAwRAIgc3Z8GZgR
mcz2ikssvjY9i8/qqD+nGCud6ZeHvXkFlzgCIFoXobJtQpivP9MR3JlOiVxevnkm
ohICBV/ZOyrwx0Y7
-----END CERTIFICATE-----
)";
const std::string kCnKey = R"(-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgutE3+P3psa5XvuhH
LETlV0oIdwMC4AfWah3zsZhcc5ahRANCAATliM4od5y1KlkoznqdyX9HTOw1Co6s
uBeKMsB8jVzfz/fDAggobVCfmWLTwLHdPictVAgGQdKQmQNocyViTJ1W
-----END PRIVATE KEY-----
)";
const std::string kEncryptedSanKey = R"(-----BEGIN ENCRYPTED PRIVATE KEY-----
MIHsMFcGCSqGSIb3DQEFDTBKMCkGCSqGSIb3DQEFDDAcBAh8g85EkECE5wICCAAw
DAYIKoZIhvcNAgkFADAdBglghkgBZQMEAQIEEDP9Z8rk/5JjAsBjSmFUAuQEgZDS
X5hOHbatd78JazJGIN2LuKjKPyuB9uFUTc+27iAHRUWcetFcJLzKX3xIPSGHDk3d
iYAgzjya7nXLY968Y4KRX1ZqAI32T/9Uczvoh37bPoou+dXwfqoHPVIf/PdmxpjV
jzy0XmI3YdYe1d1FARqKYTADEvru7OifgQmK98Pz81k7UTfj+vHwotL+czCKpi4=
-----END ENCRYPTED PRIVATE KEY-----
)";

TEST(CertificateFiles, NamesAndKeysAsOpenSslReadsThem) {
  struct Case {
    std::string description;
    std::string pem, key_pem;
    std::vector<std::string> names;
    bool key_in_file, key_file, has_key;
    std::string error;
  };
  const std::vector<Case> cases = {
      {"bundle: subjectAltName DNS names (not the IP, not the CN)", kSanCert + kSanKey, "",
       {"one.example.test", "*.One.example.test"}, true, false, true, ""},
      {"key first, then the certificate", kSanKey + kSanCert, "", {"one.example.test", "*.One.example.test"}, true,
       false, true, ""},
      {"pair: the key in <stem>.key", kSanCert, kSanKey, {"one.example.test", "*.One.example.test"}, false, true, true, ""},
      {"no subjectAltName: the CN, as it is", kCnCert + kCnKey, "", {"cn only.example"}, true, false, true, ""},
      {"a CA or chain file: no key", kCnCert + kSanCert, "", {"cn only.example"}, false, false, false, ""},
      {"another certificate's key", kSanCert + kCnKey, "", {"one.example.test", "*.One.example.test"}, false, false,
       true, "holds a private key that does not match its certificate"},
      {"an encrypted key", kSanCert + kEncryptedSanKey, "", {"one.example.test", "*.One.example.test"}, false, false,
       true, "holds a private key that cannot be read (encrypted, or not PEM)"},
      {"no certificate", kSanKey, "", {}, false, false, false, "holds no PEM certificate"},
      {"not PEM", "hello\n", "", {}, false, false, false, "holds no PEM certificate"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto found = parse_certificate_file("x.pem", c.pem, c.key_pem);
    EXPECT_EQ(found.file, "x.pem");
    EXPECT_EQ(found.names, c.names);
    EXPECT_EQ(found.key_in_file, c.key_in_file);
    EXPECT_EQ(found.key_file, c.key_file);
    EXPECT_EQ(found.has_key, c.has_key);
    EXPECT_EQ(found.error, c.error);
  }
}

} // namespace
} // namespace k8slb::node
