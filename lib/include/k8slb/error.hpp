#pragma once
// One error style for the whole project: "<object>: <field>: <message>", e.g.
// "default/myapp: spec.ports[1]: protocol SCTP is not carried by haproxy".

#include <cstddef>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace k8slb {

// A user error (bad input, bad config, a refused request). Programmer errors are asserts.
class Error : public std::runtime_error {
public:
  using std::runtime_error::runtime_error;
};

// A problem with one object that does not stop the others (a Service that cannot be
// assigned or rendered). Tools print them on stderr; the cluster side turns them into Events.
struct Problem {
  std::string object;  // "namespace/name", or a config path such as "pools.external"
  std::string field;   // "spec.ports[1].protocol"; empty when the whole object is meant
  std::string reason;  // CamelCase Event reason, e.g. "AllocationFailed", "InvalidService"
  std::string message; // human sentence, no object or field in it

  std::string to_string() const; // "object: field: message"
  bool operator==(const Problem&) const = default;
};

// Values in messages are cut to a readable length: longer text keeps its head and tail around
// a marker "...[N bytes cut]...", cut on UTF-8 character boundaries. describe() applies it to
// each part, so every Problem, Error and Event built from them stays short whatever the
// cluster sends (a 200 KB annotation value is not echoed whole).
inline constexpr std::size_t kMaxShown = 400;
std::string shorten(std::string_view text, std::size_t max = kMaxShown);

// "object: field: message" with empty parts left out, each part shortened and with control
// characters escaped.
std::string describe(std::string_view object, std::string_view field, std::string_view message);

// Throws Error(describe(object, field, message)).
[[noreturn]] void fail(std::string_view object, std::string_view field, std::string_view message);

} // namespace k8slb
