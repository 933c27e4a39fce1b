// Documents and streams: any bytes end in k8slb::Error or objects, never another exception,
// a crash or unbounded memory.
#include <cstddef>
#include <cstdint>
#include <sstream>
#include <string>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
  const std::string text(reinterpret_cast<const char*>(data), size);
  const k8slb::Limits limits{1 << 20, 100'000, 64};
  try {
    auto objects = k8slb::take_objects(k8slb::parse_documents(text, "fuzz", limits), "fuzz");
    k8slb::model::make_snapshot(std::move(objects.items));
  } catch (const k8slb::Error&) {
  }
  // The same bytes as a stream: every document is read or refused, and the reader goes on.
  std::istringstream in(text);
  k8slb::JsonStreamReader reader(in, "fuzz", limits);
  for (int documents = 0; documents < 10'000; ++documents) {
    try {
      auto document = reader.next();
      if (!document) break;
      k8slb::take_objects({std::move(*document)}, reader.name());
    } catch (const k8slb::Error&) {
    }
  }
  return 0;
}
