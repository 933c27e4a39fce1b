#include "k8slb/ip.hpp"

#include <arpa/inet.h>

#include <gtest/gtest.h>

#include "k8slb/error.hpp"

namespace k8slb::ip {
namespace {

TEST(Address, ParsesAndPrintsCanonically) {
  struct Case {
    const char* text;
    Family family;
    const char* canonical;
  };
  const Case cases[] = {
      {"192.0.2.1", Family::v4, "192.0.2.1"},
      {"0.0.0.0", Family::v4, "0.0.0.0"},
      {"255.255.255.255", Family::v4, "255.255.255.255"},
      {"2001:db8::1", Family::v6, "2001:db8::1"},
      {"2001:0DB8:0000:0000:0000:0000:0000:0001", Family::v6, "2001:db8::1"},
      {"::", Family::v6, "::"},
      {"::ffff:192.0.2.1", Family::v6, "::ffff:192.0.2.1"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    Address a = Address::parse(c.text);
    EXPECT_EQ(a.family(), c.family);
    EXPECT_EQ(a.to_string(), c.canonical);
  }
}

// to_string prints what inet_ntop prints: every pattern of zero and non-zero groups (the
// "::" choice), with group values of each digit count, the IPv4-mapped and -compatible forms.
TEST(Address, PrintsWhatInetNtopPrints) {
  auto ntop = [](const Address& address) {
    char buffer[INET6_ADDRSTRLEN] = {};
    if (address.family() == Family::v4) {
      in_addr a{};
      a.s_addr = htonl(static_cast<uint32_t>(address.value()));
      inet_ntop(AF_INET, &a, buffer, sizeof buffer);
    } else {
      in6_addr a{};
      for (int i = 0; i < 16; ++i) a.s6_addr[i] = static_cast<unsigned char>(address.value() >> (8 * (15 - i)));
      inet_ntop(AF_INET6, &a, buffer, sizeof buffer);
    }
    return std::string(buffer);
  };
  const unsigned group_values[] = {0x1, 0xa, 0x10, 0xdb8, 0x2001, 0xffff};
  int compared = 0;
  for (unsigned pattern = 0; pattern < 256; ++pattern)
    for (unsigned value : group_values)
      for (bool mapped : {false, true}) {
        u128 v = 0;
        for (int i = 0; i < 8; ++i) {
          unsigned word = pattern >> i & 1 ? (value + static_cast<unsigned>(i) * 0x111) & 0xffff : 0;
          if (mapped && i == 5) word = 0xffff;
          v = (v << 16) | (word == 0 && pattern >> i & 1 ? 1 : word);
        }
        const Address address(Family::v6, v);
        ASSERT_EQ(address.to_string(), ntop(address)) << "pattern " << pattern << " value " << value;
        ++compared;
      }
  for (uint32_t v : {0u, 1u, 9u, 10u, 99u, 100u, 255u, 0x0a000001u, 0xc0000201u, 0xffffffffu, 0x01020304u}) {
    const Address address(Family::v4, v);
    EXPECT_EQ(address.to_string(), ntop(address));
    ++compared;
  }
  EXPECT_EQ(compared, 256 * 6 * 2 + 11);
}

TEST(Address, RejectsWhatIsNotAnAddress) {
  for (const char* text : {"", "192.0.2", "192.0.2.256", "192.0.2.1; rm -rf /", "2001:db8:::1",
                           "1.2.3.4\nfoo", "example.com", "192.0.2.1/24", " 192.0.2.1"}) {
    SCOPED_TRACE(text);
    EXPECT_FALSE(Address::try_parse(text).has_value());
    EXPECT_THROW(Address::parse(text), Error);
  }
}

TEST(Address, ATextWithANulIsNotAnAddress) {
  // inet_pton would read "192.168.10.210\0junk" up to the NUL and accept it.
  for (std::string text : {std::string("192.168.10.210\0junk", 19), std::string("2001:db8::1\0", 12),
                           std::string("\0", 1)}) {
    SCOPED_TRACE(text);
    EXPECT_FALSE(Address::try_parse(text).has_value());
    EXPECT_THROW(Address::parse(text), Error);
    EXPECT_THROW(Range::parse(text), Error);
    EXPECT_THROW(Range::parse(text + "-192.168.10.220"), Error);
  }
}

TEST(Range, ParsesCidrsRangesAndSingleAddresses) {
  struct Case {
    const char* text;
    const char* first;
    const char* last;
    const char* printed;
  };
  const Case cases[] = {
      {"192.0.2.0/24", "192.0.2.0", "192.0.2.255", "192.0.2.0/24"},
      {"192.0.2.200-192.0.2.254", "192.0.2.200", "192.0.2.254", "192.0.2.200-192.0.2.254"},
      {"192.0.2.10 - 192.0.2.20", "192.0.2.10", "192.0.2.20", "192.0.2.10-192.0.2.20"},
      {"192.0.2.7", "192.0.2.7", "192.0.2.7", "192.0.2.7/32"},
      // The original's own example gives host bits: the whole /22 block is meant.
      {"1.2.3.0/22", "1.2.0.0", "1.2.3.255", "1.2.0.0/22"},
      {"2001:db8::/64", "2001:db8::", "2001:db8::ffff:ffff:ffff:ffff", "2001:db8::/64"},
      {"2001:db8:0:0:1::/96", "2001:db8:0:0:1::", "2001:db8::1:0:ffff:ffff", "2001:db8:0:0:1::/96"},
      {"::/0", "::", "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff", "::/0"},
      {"0.0.0.0/0", "0.0.0.0", "255.255.255.255", "0.0.0.0/0"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    Range r = Range::parse(c.text);
    EXPECT_EQ(r.first().to_string(), c.first);
    EXPECT_EQ(r.last().to_string(), c.last);
    EXPECT_EQ(r.to_string(), c.printed);
  }
}

TEST(Range, RejectsBadRangesWithTheTextNamed) {
  struct Case {
    const char* text;
    const char* message;
  };
  const Case cases[] = {
      {"192.0.2.0/33", "'192.0.2.0/33': prefix length must be 0-32"},
      {"2001:db8::/129", "'2001:db8::/129': prefix length must be 0-128"},
      {"192.0.2.0/x", "'192.0.2.0/x': prefix length must be 0-32"},
      {"192.0.2.20-192.0.2.10", "'192.0.2.20-192.0.2.10': start is after stop"},
      {"192.0.2.1-2001:db8::1", "'192.0.2.1-2001:db8::1': start and stop are of different families"},
      {"192.0.2.300/24", "'192.0.2.300' is not an IP address"},
      {"", "empty address range"},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(c.text);
    try {
      Range::parse(c.text);
      ADD_FAILURE() << "no error";
    } catch (const Error& e) {
      EXPECT_EQ(std::string(e.what()), c.message);
    }
  }
}

TEST(Range, ContainmentAndOverlap) {
  struct Case {
    const char* a;
    const char* b;
    bool a_contains_b;
    bool overlap;
  };
  const Case cases[] = {
      {"192.0.2.0/24", "192.0.2.200-192.0.2.254", true, true},
      {"192.0.2.0/25", "192.0.2.100-192.0.2.200", false, true},
      {"192.0.2.0/25", "192.0.2.128/25", false, false},
      {"2001:db8::/64", "2001:db8::1:0:0/96", true, true},
      // The seed's IPv6 example: its range lies outside its network.
      {"2001:468::/64", "2001:468:101::/96", false, false},
      {"192.0.2.0/24", "2001:db8::/64", false, false},
  };
  for (const auto& c : cases) {
    SCOPED_TRACE(std::string(c.a) + " vs " + c.b);
    Range a = Range::parse(c.a), b = Range::parse(c.b);
    EXPECT_EQ(a.contains(b), c.a_contains_b);
    EXPECT_EQ(a.overlaps(b), c.overlap);
    EXPECT_EQ(b.overlaps(a), c.overlap);
  }
}

TEST(Prefix, NetworkOfAnInterfaceAddress) {
  Prefix p = Prefix::parse("192.0.2.5/24");
  EXPECT_EQ(p.address.to_string(), "192.0.2.5");
  EXPECT_EQ(p.network().to_string(), "192.0.2.0/24");
  EXPECT_EQ(Prefix::parse("2001:db8::5/64").network().to_string(), "2001:db8::/64");
}

TEST(IntervalSet, FirstFreeSkipsTakenIntervalsWithoutScanning) {
  struct Step {
    const char* description;
    std::vector<std::pair<u128, u128>> insert;
    std::vector<u128> erase;
    u128 from, to;
    std::optional<u128> expected;
  };
  IntervalSet set;
  const Step steps[] = {
      {"empty set: the first value is free", {}, {}, 10, 20, 10},
      {"taking 10-12 makes 13 the first free", {{10, 12}}, {}, 10, 20, 13},
      {"adjacent insert merges: 13-15 joins 10-12", {{13, 15}}, {}, 10, 20, 16},
      {"searching from inside a taken interval", {}, {}, 11, 20, 16},
      {"a full window has nothing free", {{16, 20}}, {}, 10, 20, std::nullopt},
      {"erasing 14 splits the interval", {}, {14}, 10, 20, 14},
      {"window before every interval", {}, {}, 1, 5, 1},
  };
  for (const auto& step : steps) {
    SCOPED_TRACE(step.description);
    for (auto [a, b] : step.insert) set.insert(a, b);
    for (auto v : step.erase) set.erase(v);
    EXPECT_EQ(set.first_free(step.from, step.to), step.expected);
  }
  EXPECT_TRUE(set.contains(10));
  EXPECT_FALSE(set.contains(14));
  EXPECT_EQ(set.interval_count(), 2u);
}

TEST(IntervalSet, HandlesTheTopOf128Bits) {
  IntervalSet set;
  u128 top = ~u128{0};
  set.insert(top - 1, top);
  EXPECT_EQ(set.first_free(top - 1, top), std::nullopt);
  EXPECT_EQ(set.first_free(top - 5, top), top - 5);
  set.insert(top - 5, top - 2);
  EXPECT_EQ(set.interval_count(), 1u);
  EXPECT_EQ(set.first_free(top - 5, top), std::nullopt);
}

TEST(IntervalSet, AHugeRangeCostsWhatASmallOneCosts) {
  // A /64 filled densely from its start: one interval, and the next free value in O(log n).
  Range pool = Range::parse("2001:db8::/64");
  IntervalSet set;
  for (u128 i = 0; i < 1000; ++i) set.insert(pool.first().value() + i);
  EXPECT_EQ(set.interval_count(), 1u);
  EXPECT_EQ(set.first_free(pool.first().value(), pool.last().value()), pool.first().value() + 1000);
}

} // namespace
} // namespace k8slb::ip
