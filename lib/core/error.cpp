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
// Moves `at` back to the start of the UTF-8 character it is in.
std::size_t character_start(std::string_view text, std::size_t at) {
  while (at > 0 && at < text.size() && (static_cast<unsigned char>(text[at]) & 0xc0) == 0x80) --at;
  return at;
}
} // namespace

std::string shorten(std::string_view text, std::size_t max) {
  if (text.size() <= max) return std::string(text);
  // Two thirds from the head (where the value starts), one third from the tail (where a
  // message says what is wrong with it).
  std::size_t head = character_start(text, max * 2 / 3);
  std::size_t tail = character_start(text, text.size() - max / 3);
  return fmt::format("{}...[{} bytes cut]...{}", text.substr(0, head), tail - head, text.substr(tail));
}

std::string describe(std::string_view object, std::string_view field, std::string_view message) {
  std::string out;
  for (std::string_view part : {object, field}) {
    if (!part.empty()) {
      append_printable(out, shorten(part));
      out += ": ";
    }
  }
  append_printable(out, shorten(message));
  return out;
}

void fail(std::string_view object, std::string_view field, std::string_view message) {
  throw Error(describe(object, field, message));
}

std::string Problem::to_string() const { return describe(object, field, message); }

} // namespace k8slb
