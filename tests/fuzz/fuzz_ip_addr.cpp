// `ip -j addr` output (k8slb-render --interfaces FILE).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/node.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    auto document = k8slb::parse_json(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
    k8slb::node::interfaces_from_ip_json(document);
  } catch (const k8slb::Error&) {
  }
  return 0;
}
