#include "k8slb/error.hpp"

#include <fmt/format.h>

namespace k8slb {

namespace {
// Control characters from the cluster (a name with a newline) are shown escaped, so one
// problem is always one line and cannot forge another.
void append_printable(std::string& out, std::string_view text) {
  for (unsigned char c : text) {
    if (c == '\n') out += "\\n";
    else if (c == '\r') out += "\\r";
    else if (c == '\t') out += "\\t";
    else if (c < 0x20 || c == 0x7f) out += fmt::format("\\x{:02x}", c);
    else out += static_cast<char>(c);
  }
}
} // namespace

std::string describe(std::string_view object, std::string_view field, std::string_view message) {
  std::string out;
  for (std::string_view part : {object, field}) {
    if (!part.empty()) {
      append_printable(out, part);
      out += ": ";
    }
  }
  append_printable(out, message);
  return out;
}

void fail(std::string_view object, std::string_view field, std::string_view message) {
  throw Error(describe(object, field, message));
}

std::string Problem::to_string() const { return describe(object, field, message); }

} // namespace k8slb
