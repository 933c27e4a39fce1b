#pragma once
// A stable 64-bit hash: the same on every machine and every build, unlike std::hash. For names
// and choices that several processes must agree on (rendezvous order, content hashes, the
// names of Events every node writes alike).

#include <cstdint>
#include <string_view>

namespace k8slb {

// FNV-1a followed by a splitmix64 finaliser.
std::uint64_t stable_hash(std::string_view text);

} // namespace k8slb
