#pragma once
// IPv4 and IPv6 addresses as 128-bit integers, CIDRs and start-stop ranges, and interval sets.
// Nothing here enumerates a range: a /64 costs what a /29 costs.

#include <cstdint>
#include <map>
#include <optional>
#include <string>
#include <string_view>

namespace k8slb::ip {

using u128 = unsigned __int128;

enum class Family { v4, v6 };
std::string_view to_string(Family family); // "IPv4" / "IPv6", as Kubernetes spells them
int bits(Family family);                   // 32 / 128

class Address {
public:
  Address() = default;
  Address(Family family, u128 value) : family_(family), value_(value) {}

  // "192.0.2.1", "2001:db8::1". Throws Error("'<text>' is not an IP address").
  static Address parse(std::string_view text);
  static std::optional<Address> try_parse(std::string_view text);

  Family family() const { return family_; }
  u128 value() const { return value_; }
  std::string to_string() const; // canonical form (RFC 5952 for IPv6)

  auto operator<=>(const Address&) const = default;

private:
  Family family_ = Family::v4;
  u128 value_ = 0;
};

// An inclusive range of addresses of one family: "192.0.2.0/24", "192.0.2.10-192.0.2.20",
// or one address.
class Range {
public:
  Range() = default;
  Range(Address first, Address last); // asserts same family and first <= last

  // Throws Error with a message naming the text: bad address, mixed families in a
  // start-stop range, start after stop, prefix length out of range, host bits set in a CIDR.
  static Range parse(std::string_view text);

  Address first() const { return first_; }
  Address last() const { return last_; }
  Family family() const { return first_.family(); }
  u128 size_minus_one() const { return last_.value() - first_.value(); } // avoids overflow for ::/0

  bool contains(const Address& address) const;
  bool contains(const Range& other) const;
  bool overlaps(const Range& other) const;
  std::string to_string() const; // CIDR when it is one, else "first-last"

  auto operator<=>(const Range&) const = default;

private:
  Address first_;
  Address last_;
};

// An address with its prefix length, as on an interface: "192.0.2.5/24".
struct Prefix {
  Address address;
  int length = 0;
  static Prefix parse(std::string_view text);
  Range network() const; // the whole block the prefix covers
  std::string to_string() const;
  auto operator<=>(const Prefix&) const = default;
};

// A set of u128 values stored as disjoint, non-adjacent closed intervals. Every operation is
// O(log n) in the number of intervals.
class IntervalSet {
public:
  void insert(u128 value) { insert(value, value); }
  void insert(u128 first, u128 last);
  void erase(u128 value);
  bool contains(u128 value) const;
  // The smallest value in [first, last] not in the set, if any.
  std::optional<u128> first_free(u128 first, u128 last) const;
  std::size_t interval_count() const { return intervals_.size(); }
  bool empty() const { return intervals_.empty(); }

private:
  std::map<u128, u128> intervals_; // first -> last, disjoint and non-adjacent
};

} // namespace k8slb::ip
