#pragma once
// One error style for the whole project: "<object>: <field>: <message>", e.g.
// "default/myapp: spec.ports[1]: protocol SCTP is not carried by haproxy".

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

// "object: field: message" with empty parts left out.
std::string describe(std::string_view object, std::string_view field, std::string_view message);

// Throws Error(describe(object, field, message)).
[[noreturn]] void fail(std::string_view object, std::string_view field, std::string_view message);

} // namespace k8slb
