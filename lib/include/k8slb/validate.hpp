#pragma once
// The checks for which a whole Service is refused, shared by k8slb-allocate (no IP for it)
// and k8slb-render (not rendered), so that no Service holds an IP that no node serves.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "k8slb/error.hpp"
#include "k8slb/ip.hpp"
#include "k8slb/model.hpp"

namespace k8slb::validate {

// RFC 1123 label: [a-z0-9]([-a-z0-9]*[a-z0-9])?, at most 63 characters.
bool is_dns_label(std::string_view text);

// A value quoted for a message, whatever bytes it holds: "\"a\\nb\"".
std::string quote(std::string_view text);

// A loadBalancerSourceRanges entry as a range: a CIDR ("10.0.0.0/8"), or a single address
// (as /32 or /128). nullopt when it is neither.
std::optional<ip::Range> parse_source_range(const std::string& text);

// The problems that refuse a whole Service, reason InvalidService, in field order:
// metadata.namespace or metadata.name not a DNS label (nothing else is checked then), two
// annotation keys for one setting that disagree (model::read_annotations), an annotation k8slb
// reads with a value outside its grammar, an unparsable
// spec.loadBalancerSourceRanges entry. Messages say what is wrong, not what follows from it.
std::vector<Problem> service_problems(const model::Service& service);

} // namespace k8slb::validate
