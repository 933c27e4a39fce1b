// How full the pools are (what k8slb_pool_addresses and _in_use report), as a table.
#include <gtest/gtest.h>

#include "support.hpp"

namespace k8slb::allocate {
namespace {

Result holding(std::string service, std::vector<std::pair<std::string, std::string>> ips_in_pools) {
  Result result;
  result.service = std::move(service);
  result.outcome = Outcome::kept;
  for (auto& [address, pool] : ips_in_pools) {
    result.ips.push_back(ip::Address::parse(address));
    result.pools.push_back(pool);
  }
  return result;
}

TEST(PoolUsage, CountsEachAddressOnceByPool) {
  const std::vector<Result> results = {
      holding("default/a", {{"192.0.2.8", "default"}}),
      holding("default/b", {{"192.0.2.8", "default"}}), // shares a's address
      holding("default/c", {{"192.0.2.9", "default"}, {"2001:db8:1::1:0:0", "ipv6"}}),
      holding("default/d", {{"203.0.113.1", "edge"}}),
      Result{"default/e", Outcome::failed, {}, {}, Problem{"default/e", "", "AllocationFailed", "full"}, {}, {}},
  };
  struct Row {
    std::string pool, family;
    double size;
    std::size_t in_use;
  };
  const std::vector<Row> expected = {
      {"default", "IPv4", 256, 2},       {"edge", "IPv4", 8, 1}, {"external", "IPv4", 256, 0},
      {"ipv6", "IPv6", 18446744073709551616.0, 1}, {"tiny6", "IPv6", 18446744073709551616.0, 0},
      {"whole6", "IPv6", 256, 0},
  };
  auto rows = pool_usage(testing::test_pools(), results);
  ASSERT_EQ(rows.size(), expected.size());
  for (std::size_t i = 0; i < rows.size(); ++i) {
    SCOPED_TRACE(expected[i].pool);
    EXPECT_EQ(rows[i].pool, expected[i].pool);
    EXPECT_EQ(rows[i].family, expected[i].family);
    EXPECT_EQ(rows[i].size, expected[i].size);
    EXPECT_EQ(rows[i].in_use, expected[i].in_use);
  }
}

} // namespace
} // namespace k8slb::allocate
