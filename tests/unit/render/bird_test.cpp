// bird.conf (issue 12): the VIPs of pools with `announce: bgp`, announced to the config's peers.

#include <algorithm>
#include <string>
#include <vector>

#include <gtest/gtest.h>

#include "fixture.hpp"
#include "k8slb/render.hpp"
#include "k8slb/render_model.hpp"

namespace k8slb::render {
namespace {

// The golden input with its "external" (198.51.100.0/24) and "ipv6" pools announced by BGP to
// an IPv4 peer (password from a file, BFD, hold time) and an IPv6 peer (iBGP).
Input bgp_input(Proxy proxy = Proxy::haproxy) {
  Input input = testing::golden_input(proxy);
  for (auto& pool : input.config.pools)
    if (pool.name != "default") pool.announce = pool::Announce::bgp;
  pool::BgpSettings bgp;
  bgp.asn = 64512;
  pool::BgpPeer v4;
  v4.address = ip::Address::parse("203.0.113.1");
  v4.asn = 65000;
  v4.password_file = "/etc/k8slb/bgp/router1";
  v4.bfd = true;
  v4.hold_time = 9;
  pool::BgpPeer v6;
  v6.address = ip::Address::parse("2001:db8:ffff::1");
  v6.asn = 64512;
  v6.port = 1179;
  bgp.peers = {v4, v6};
  input.config.bgp = bgp;
  input.bgp_passwords["/etc/k8slb/bgp/router1"] = "s3cret-md5!\n";
  return input;
}

std::string problems_of(const std::vector<Problem>& problems) {
  std::string text;
  for (const auto& problem : problems) text += problem.to_string() + " [" + problem.reason + "]\n";
  return text;
}

TEST(Bird, AnnouncesTheVipsOfBgpPoolsOnly) {
  auto plan = plan_bird(bgp_input());
  ASSERT_EQ(plan.vips_v4.size(), 1u);
  EXPECT_EQ(plan.vips_v4[0].to_string(), "198.51.100.10"); // not the VRRP pool's 192.0.2.x
  ASSERT_EQ(plan.vips_v6.size(), 1u);
  EXPECT_EQ(plan.vips_v6[0].to_string(), "2001:db8::100");
  ASSERT_TRUE(plan.router_id.has_value());
  EXPECT_EQ(plan.router_id->to_string(), "192.0.2.1"); // lb-a's IPv4 InternalIP
  ASSERT_EQ(plan.peers.size(), 2u);
  EXPECT_EQ(plan.peers[0].name, "k8slb_203_0_113_1");
  EXPECT_EQ(plan.peers[0].password, "s3cret-md5!");
  EXPECT_FALSE(plan.peers[0].internal);
  EXPECT_EQ(plan.peers[1].name, "k8slb_2001_db8_ffff__1");
  EXPECT_TRUE(plan.peers[1].internal);
  EXPECT_TRUE(plan.bfd);
}

TEST(Bird, KeepalivedLeavesBgpPoolsOut) {
  auto instances = plan_keepalived(bgp_input()).instances;
  ASSERT_FALSE(instances.empty());
  for (const auto& instance : instances) {
    SCOPED_TRACE(instance.name);
    EXPECT_EQ(instance.pool, "default");
  }
  // The same input in VRRP mode has instances for the other pools.
  auto vrrp = plan_keepalived(testing::golden_input(Proxy::haproxy)).instances;
  EXPECT_TRUE(std::any_of(vrrp.begin(), vrrp.end(), [](const VrrpInstance& i) { return i.pool == "external"; }));
}

TEST(Bird, RenderAllWritesBirdConfOnlyWithABgpSection) {
  EXPECT_EQ(render_all(testing::golden_input(Proxy::haproxy)).files.count("bird.conf"), 0u);
  auto output = render_all(bgp_input(Proxy::kubeproxy));
  EXPECT_EQ(output.files.count("bird.conf"), 1u);
  EXPECT_EQ(output.files.count("keepalived.conf"), 1u);
  EXPECT_EQ(render_bird(testing::golden_input(Proxy::haproxy)).files.size(), 0u);
}

TEST(Bird, APeerWithoutAGoodPasswordIsLeftOutAndNamed) {
  struct Case {
    const char* description;
    std::optional<std::string> content; // nullopt: the file cannot be read
    const char* problem;
  };
  const Case cases[] = {
      {"missing file", std::nullopt,
       "bgp.peers[0]: passwordFile: \"/etc/k8slb/bgp/router1\" cannot be read; the peer is left out [MissingPassword]\n"},
      {"a quote that would end the string", std::string("abc\";\nprotocol"),
       "bgp.peers[0]: passwordFile: \"/etc/k8slb/bgp/router1\" must hold 1 to 80 printable characters other "
       "than '\"' and '\\'; the peer is left out [InvalidPassword]\n"},
      {"empty", std::string("\n"),
       "bgp.peers[0]: passwordFile: \"/etc/k8slb/bgp/router1\" must hold 1 to 80 printable characters other "
       "than '\"' and '\\'; the peer is left out [InvalidPassword]\n"},
      {"longer than TCP-MD5 takes", std::string(81, 'x'),
       "bgp.peers[0]: passwordFile: \"/etc/k8slb/bgp/router1\" must hold 1 to 80 printable characters other "
       "than '\"' and '\\'; the peer is left out [InvalidPassword]\n"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.description);
    auto input = bgp_input();
    input.bgp_passwords.clear();
    if (c.content) input.bgp_passwords["/etc/k8slb/bgp/router1"] = *c.content;
    auto output = render_bird(input);
    EXPECT_EQ(problems_of(output.problems), c.problem);
    const auto& conf = output.files.at("bird.conf");
    EXPECT_EQ(conf.find("k8slb_203_0_113_1"), std::string::npos);
    EXPECT_EQ(conf.find("password"), std::string::npos);
    EXPECT_NE(conf.find("k8slb_2001_db8_ffff__1"), std::string::npos); // the other peer stays
  }
}

TEST(Bird, AnnouncedVipsReadsBackWhatWasPrinted) {
  auto conf = render_bird(bgp_input()).files.at("bird.conf");
  auto vips = announced_vips(conf);
  ASSERT_EQ(vips.size(), 2u);
  EXPECT_EQ(vips[0].to_string(), "198.51.100.10");
  EXPECT_EQ(vips[1].to_string(), "2001:db8::100");
  // Lines that are not an address with its full prefix length are skipped.
  EXPECT_TRUE(announced_vips("  route 198.51.100.0/24 blackhole;\n  route x/32 blackhole;\n"
                             "  route 198.51.100.1/32 via 192.0.2.1;\n  route 2001:db8::1/32 blackhole;\n")
                  .empty());
}

TEST(Bird, NoVipsStillMakesAValidConfig) {
  auto input = bgp_input();
  input.services.clear();
  auto conf = render_bird(input).files.at("bird.conf");
  EXPECT_EQ(conf.find("  route "), std::string::npos);
  EXPECT_EQ(conf.find("then accept"), std::string::npos);
}

} // namespace

// The golden bird.conf (see golden_test.cpp; K8SLB_UPDATE_GOLDEN=1 regenerates it).
void expect_bird_golden(const std::string& conf, const std::string& problems);

TEST(Golden, Bird) {
  auto output = render_bird(bgp_input());
  expect_bird_golden(output.files.at("bird.conf"), problems_of(output.problems));
}

} // namespace k8slb::render
