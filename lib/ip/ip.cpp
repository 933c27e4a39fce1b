#include "k8slb/ip.hpp"

#include <arpa/inet.h>

#include <cassert>
#include <charconv>

#include <fmt/format.h>

#include "k8slb/error.hpp"

namespace k8slb::ip {

namespace {

u128 all_ones(Family family) {
  return family == Family::v4 ? u128{0xffffffffu} : ~u128{0};
}

// Mask of the host bits for a prefix length.
u128 host_mask(Family family, int length) {
  int host_bits = bits(family) - length;
  if (host_bits <= 0) return 0;
  if (host_bits >= 128) return ~u128{0};
  return (u128{1} << host_bits) - 1;
}

int parse_length(std::string_view text, Family family, std::string_view whole) {
  int length = -1;
  auto [end, ec] = std::from_chars(text.data(), text.data() + text.size(), length);
  if (ec != std::errc() || end != text.data() + text.size() || length < 0 ||
      length > bits(family))
    throw Error(fmt::format("'{}': prefix length must be 0-{}", whole, bits(family)));
  return length;
}

std::string_view trim(std::string_view text) {
  while (!text.empty() && (text.front() == ' ' || text.front() == '\t')) text.remove_prefix(1);
  while (!text.empty() && (text.back() == ' ' || text.back() == '\t')) text.remove_suffix(1);
  return text;
}

} // namespace

std::string_view to_string(Family family) { return family == Family::v4 ? "IPv4" : "IPv6"; }
int bits(Family family) { return family == Family::v4 ? 32 : 128; }

std::optional<Address> Address::try_parse(std::string_view text) {
  // inet_pton reads a C string: a NUL inside the text ("192.0.2.1\0junk") would end it early.
  if (text.empty() || text.size() > 45 || text.find('\0') != std::string_view::npos) return std::nullopt;
  std::string s(text);
  if (s.find(':') == std::string::npos) {
    in_addr a{};
    if (inet_pton(AF_INET, s.c_str(), &a) != 1) return std::nullopt;
    return Address(Family::v4, u128{ntohl(a.s_addr)});
  }
  in6_addr a{};
  if (inet_pton(AF_INET6, s.c_str(), &a) != 1) return std::nullopt;
  u128 value = 0;
  for (unsigned char byte : a.s6_addr) value = (value << 8) | byte;
  return Address(Family::v6, value);
}

Address Address::parse(std::string_view text) {
  if (auto address = try_parse(text)) return *address;
  throw Error(fmt::format("'{}' is not an IP address", shorten(text, 80)));
}

// inet_ntop's text, without its sprintf per group (a tenth of a rendering at 10,000 VIPs):
// RFC 5952 (lowercase, no leading zeros, the first longest run of two or more zero groups as
// "::"), and as glibc the last 32 bits dotted after "::" or "::ffff:" (tests/unit/ip compares
// the two on every zero-run shape).
std::string Address::to_string() const {
  char buffer[48];
  char* out = buffer;
  auto decimal = [&out](unsigned byte) {
    if (byte >= 100) *out++ = static_cast<char>('0' + byte / 100);
    if (byte >= 10) *out++ = static_cast<char>('0' + byte / 10 % 10);
    *out++ = static_cast<char>('0' + byte % 10);
  };
  auto dotted = [&](uint32_t v) {
    for (int shift = 24; shift >= 0; shift -= 8) {
      decimal((v >> shift) & 0xff);
      if (shift > 0) *out++ = '.';
    }
  };
  if (family_ == Family::v4) {
    dotted(static_cast<uint32_t>(value_));
    return std::string(buffer, out);
  }
  unsigned words[8];
  for (int i = 0; i < 8; ++i) words[i] = static_cast<unsigned>(value_ >> (16 * (7 - i))) & 0xffff;
  int best = -1, best_length = 0;
  for (int i = 0; i < 8;) {
    if (words[i] != 0) {
      ++i;
      continue;
    }
    int end = i;
    while (end < 8 && words[end] == 0) ++end;
    if (end - i > best_length) {
      best = i;
      best_length = end - i;
    }
    i = end;
  }
  if (best_length < 2) best = -1;
  static constexpr char kHex[] = "0123456789abcdef";
  for (int i = 0; i < 8; ++i) {
    if (i == best) {
      *out++ = ':';
      if (i == 0) *out++ = ':';
      i += best_length - 1;
      continue;
    }
    if (i == 6 && best == 0 && (best_length == 6 || (best_length == 5 && words[5] == 0xffff))) {
      dotted(static_cast<uint32_t>(value_));
      return std::string(buffer, out);
    }
    bool leading = true;
    for (int shift = 12; shift >= 0; shift -= 4) {
      const unsigned digit = (words[i] >> shift) & 0xf;
      if (leading && digit == 0 && shift > 0) continue;
      leading = false;
      *out++ = kHex[digit];
    }
    if (i < 7) *out++ = ':';
  }
  return std::string(buffer, out);
}

Range::Range(Address first, Address last) : first_(first), last_(last) {
  assert(first.family() == last.family() && first <= last);
}

Range Range::parse(std::string_view input) {
  std::string_view text = trim(input);
  if (text.empty()) throw Error("empty address range");
  if (auto slash = text.find('/'); slash != std::string_view::npos) {
    // A CIDR. Host bits are allowed (the original's own example is 1.2.3.0/22) and mean the
    // whole block that contains the address.
    Address address = Address::parse(text.substr(0, slash));
    int length = parse_length(text.substr(slash + 1), address.family(), text);
    u128 mask = host_mask(address.family(), length);
    return Range(Address(address.family(), address.value() & ~mask),
                 Address(address.family(), address.value() | mask));
  }
  if (auto dash = text.find('-'); dash != std::string_view::npos) {
    Address first = Address::parse(trim(text.substr(0, dash)));
    Address last = Address::parse(trim(text.substr(dash + 1)));
    if (first.family() != last.family())
      throw Error(fmt::format("'{}': start and stop are of different families", text));
    if (last < first) throw Error(fmt::format("'{}': start is after stop", text));
    return Range(first, last);
  }
  Address address = Address::parse(text);
  return Range(address, address);
}

bool Range::contains(const Address& address) const {
  return address.family() == family() && first_ <= address && address <= last_;
}

bool Range::contains(const Range& other) const {
  return other.family() == family() && first_ <= other.first_ && other.last_ <= last_;
}

bool Range::overlaps(const Range& other) const {
  return other.family() == family() && first_ <= other.last_ && other.first_ <= last_;
}

std::string Range::to_string() const {
  u128 span = last_.value() - first_.value();
  // A CIDR when the span is 2^k - 1 and first is aligned to it.
  if (((span + 1) & span) == 0 && (first_.value() & span) == 0) {
    int host_bits = 0;
    while (host_bits < 128 && ((span >> host_bits) & 1)) ++host_bits;
    if (span == all_ones(family())) host_bits = bits(family());
    return fmt::format("{}/{}", first_.to_string(), bits(family()) - host_bits);
  }
  return fmt::format("{}-{}", first_.to_string(), last_.to_string());
}

Prefix Prefix::parse(std::string_view input) {
  std::string_view text = trim(input);
  auto slash = text.find('/');
  if (slash == std::string_view::npos) {
    Address address = Address::parse(text);
    return Prefix{address, bits(address.family())};
  }
  Address address = Address::parse(text.substr(0, slash));
  return Prefix{address, parse_length(text.substr(slash + 1), address.family(), text)};
}

Range Prefix::network() const {
  u128 mask = host_mask(address.family(), length);
  return Range(Address(address.family(), address.value() & ~mask),
               Address(address.family(), address.value() | mask));
}

std::string Prefix::to_string() const {
  return fmt::format("{}/{}", address.to_string(), length);
}

void IntervalSet::insert(u128 first, u128 last) {
  assert(first <= last);
  // Merge with an interval that starts at or before `first` and reaches it (or touches it).
  auto it = intervals_.upper_bound(first);
  if (it != intervals_.begin()) {
    auto prev = std::prev(it);
    if (prev->second == ~u128{0} || prev->second + 1 >= first) {
      first = prev->first;
      if (prev->second > last) last = prev->second;
      it = intervals_.erase(prev);
    }
  }
  // Absorb every interval that starts inside or right after [first, last].
  while (it != intervals_.end() && (last == ~u128{0} || it->first <= last + 1)) {
    if (it->second > last) last = it->second;
    it = intervals_.erase(it);
  }
  intervals_.emplace(first, last);
}

void IntervalSet::erase(u128 value) {
  auto it = intervals_.upper_bound(value);
  if (it == intervals_.begin()) return;
  --it;
  auto [first, last] = *it;
  if (value > last) return;
  intervals_.erase(it);
  if (first < value) intervals_.emplace(first, value - 1);
  if (value < last) intervals_.emplace(value + 1, last);
}

bool IntervalSet::contains(u128 value) const {
  auto it = intervals_.upper_bound(value);
  if (it == intervals_.begin()) return false;
  return value <= std::prev(it)->second;
}

std::optional<u128> IntervalSet::first_free(u128 first, u128 last) const {
  if (first > last) return std::nullopt;
  auto it = intervals_.upper_bound(first);
  if (it == intervals_.begin()) return first;
  auto prev = std::prev(it);
  if (first > prev->second) return first;
  // `first` is taken; intervals are non-adjacent, so the value after this one is free.
  if (prev->second == ~u128{0} || prev->second >= last) return std::nullopt;
  return prev->second + 1;
}

} // namespace k8slb::ip
