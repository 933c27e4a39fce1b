// Addresses, CIDRs, start-stop ranges and interface prefixes.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "k8slb/error.hpp"
#include "k8slb/ip.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  std::string_view text(reinterpret_cast<const char*>(data), size);
  using namespace k8slb::ip;
  if (auto address = Address::try_parse(text)) {
    // What is printed parses back to the same address.
    if (Address::parse(address->to_string()) != *address) __builtin_trap();
  }
  try {
    Range range = Range::parse(text);
    if (Range::parse(range.to_string()) != range) __builtin_trap();
    if (!range.contains(range.first()) || !range.contains(range.last())) __builtin_trap();
  } catch (const k8slb::Error&) {
  }
  try {
    Prefix prefix = Prefix::parse(text);
    (void)prefix.network();
  } catch (const k8slb::Error&) {
  }
  return 0;
}
