// The config document (a file, or data.config of the ConfigMap in the cluster).
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "k8slb/error.hpp"
#include "k8slb/pool.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  try {
    k8slb::pool::parse_config_text(std::string_view(reinterpret_cast<const char*>(data), size), "fuzz");
  } catch (const k8slb::Error&) {
  }
  return 0;
}
