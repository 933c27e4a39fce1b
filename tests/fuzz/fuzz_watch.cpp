// Watch events from the API server, applied to a store as the cache does.
#include <cstddef>
#include <cstdint>
#include <string_view>

#include "k8slb/error.hpp"
#include "k8slb/kube.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  using namespace k8slb::kube;
  std::string_view text(reinterpret_cast<const char*>(data), size);
  Store store(find_kind("services"));
  // One event a line, as the stream delivers them.
  while (!text.empty()) {
    auto end = text.find('\n');
    std::string_view line = text.substr(0, end);
    text = end == std::string_view::npos ? std::string_view() : text.substr(end + 1);
    try {
      WatchEvent event = decode_watch_event(line);
      if (event.type != EventType::error) store.apply(event);
    } catch (const k8slb::Error&) {
    }
  }
  return 0;
}
