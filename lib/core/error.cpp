#include "k8slb/error.hpp"

#include <fmt/format.h>

namespace k8slb {

std::string describe(std::string_view object, std::string_view field, std::string_view message) {
  std::string out;
  for (std::string_view part : {object, field}) {
    if (!part.empty()) {
      out += part;
      out += ": ";
    }
  }
  out += message;
  return out;
}

void fail(std::string_view object, std::string_view field, std::string_view message) {
  throw Error(describe(object, field, message));
}

std::string Problem::to_string() const { return describe(object, field, message); }

} // namespace k8slb
