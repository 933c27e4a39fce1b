// The checks for which a whole Service is refused. See k8slb/validate.hpp.
#include "k8slb/validate.hpp"

#include <algorithm>

#include <fmt/format.h>
#include <nlohmann/json.hpp>

namespace k8slb::validate {

namespace {

constexpr const char* kInvalidService = "InvalidService";

bool is_lower_alnum(char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

struct AnnotationGrammar {
  const char* key;
  std::vector<std::string> values;
};

const std::vector<AnnotationGrammar>& annotation_grammars() {
  static const std::vector<AnnotationGrammar> grammars = {
      {model::kAnnotationMode, {"", "http", "false"}},
      {model::kAnnotationSsl, {"", "true", "false"}},
      {model::kAnnotationSslBackend, {"", "true", "false"}},
      {model::kAnnotationSslRedirect, {"", "true", "false"}},
      {model::kAnnotationNocheck, {"", "true", "false"}},
  };
  return grammars;
}

std::string one_of(const std::vector<std::string>& values) {
  std::string text;
  for (const auto& value : values) {
    if (!text.empty()) text += ", ";
    text += quote(value);
  }
  return text;
}

} // namespace

bool is_dns_label(std::string_view text) {
  if (text.empty() || text.size() > 63) return false;
  if (!is_lower_alnum(text.front()) || !is_lower_alnum(text.back())) return false;
  return std::all_of(text.begin(), text.end(), [](char c) { return is_lower_alnum(c) || c == '-'; });
}

std::string quote(std::string_view text) {
  return nlohmann::json(std::string(text)).dump(-1, ' ', false, nlohmann::json::error_handler_t::replace);
}

std::optional<ip::Range> parse_source_range(const std::string& text) {
  try {
    if (text.find('/') == std::string::npos) {
      auto address = ip::Address::parse(text);
      return ip::Range(address, address);
    }
    return ip::Prefix::parse(text).network();
  } catch (const Error&) {
    return std::nullopt;
  }
}

std::vector<Problem> service_problems(const model::Service& service) {
  std::vector<Problem> problems;
  auto problem = [&](std::string field, std::string message) {
    problems.push_back(Problem{service.key(), std::move(field), kInvalidService, std::move(message)});
  };
  if (!is_dns_label(service.ns)) {
    problem("metadata.namespace", "not a DNS label");
    return problems;
  }
  if (!is_dns_label(service.name)) {
    problem("metadata.name", "not a DNS label");
    return problems;
  }
  // Two keys for one setting that disagree (loadBalancer/pool and loadbalancer/pool,
  // metallb.io/address-pool and loadbalancer/pool): which one the user meant is unknown.
  for (const auto& note : service.annotation_notes)
    if (note.reason == kInvalidService) problem(note.field, note.message);
  for (const auto& grammar : annotation_grammars()) {
    auto value = service.annotation(grammar.key);
    if (std::find(grammar.values.begin(), grammar.values.end(), value) == grammar.values.end()) {
      problem(service.annotation_field(grammar.key),
              fmt::format("{} is not one of {}", quote(value), one_of(grammar.values)));
    }
  }
  for (std::size_t i = 0; i < service.source_ranges.size(); ++i) {
    if (!parse_source_range(service.source_ranges[i])) {
      problem(fmt::format("spec.loadBalancerSourceRanges[{}]", i),
              fmt::format("{} is not a CIDR", quote(service.source_ranges[i])));
    }
  }
  return problems;
}

} // namespace k8slb::validate
