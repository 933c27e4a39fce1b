// The registry and the text exposition format:
// https://prometheus.io/docs/instrumenting/exposition_formats/#text-based-format
#include "k8slb/metrics.hpp"

#include <algorithm>
#include <cmath>
#include <regex>
#include <stdexcept>

#include <fmt/format.h>

#include "k8slb/tool.hpp"

namespace k8slb::metrics {
namespace {

bool valid_metric_name(std::string_view name) {
  static const std::regex pattern("[a-zA-Z_:][a-zA-Z0-9_:]*");
  return std::regex_match(name.begin(), name.end(), pattern);
}

bool valid_label_name(std::string_view name) {
  static const std::regex pattern("[a-zA-Z_][a-zA-Z0-9_]*");
  return std::regex_match(name.begin(), name.end(), pattern) && name.rfind("__", 0) != 0 && name != "le";
}

bool ends_with(std::string_view text, std::string_view tail) {
  return text.size() >= tail.size() && text.substr(text.size() - tail.size()) == tail;
}

// A sample value: integers without a fraction, the rest in the shortest form that reads back
// the same; +Inf, -Inf and NaN as Prometheus spells them.
std::string format_value(double value) {
  if (std::isnan(value))
    return "NaN";
  if (std::isinf(value))
    return value > 0 ? "+Inf" : "-Inf";
  if (value == std::floor(value) && std::fabs(value) < 1e15)
    return fmt::format("{:.0f}", value);
  return fmt::format("{}", value);
}

// Label values escape backslash, double quote and newline; HELP text backslash and newline.
std::string escape(std::string_view text, bool quote) {
  std::string out;
  out.reserve(text.size());
  for (char c : text) {
    if (c == '\\')
      out += "\\\\";
    else if (c == '\n')
      out += "\\n";
    else if (c == '"' && quote)
      out += "\\\"";
    else
      out += c;
  }
  return out;
}

std::string label_text(const std::vector<std::string>& names, const std::vector<std::string>& values,
                       std::string_view extra_name = {}, std::string_view extra_value = {}) {
  std::string out;
  for (std::size_t i = 0; i < names.size(); ++i)
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", names[i], escape(values[i], true));
  if (!extra_name.empty())
    out += fmt::format("{}{}=\"{}\"", out.empty() ? "" : ",", extra_name, extra_value);
  return out.empty() ? out : "{" + out + "}";
}

const char* type_name(Type type) {
  switch (type) {
  case Type::counter:
    return "counter";
  case Type::gauge:
    return "gauge";
  case Type::histogram:
    return "histogram";
  }
  return "untyped";
}

} // namespace

Family::Family(Registry& registry, std::string name, std::string help, Type type,
               std::vector<std::string> label_names, std::vector<double> buckets)
    : registry_(registry), name_(std::move(name)), help_(std::move(help)), type_(type),
      label_names_(std::move(label_names)), buckets_(std::move(buckets)) {}

Family::Series& Family::series(const std::vector<std::string>& label_values) {
  if (label_values.size() != label_names_.size())
    throw std::logic_error(fmt::format("metric {}: {} label values for {} labels", name_, label_values.size(),
                                       label_names_.size()));
  auto [it, added] = series_.try_emplace(label_values);
  if (added && type_ == Type::histogram)
    it->second.counts.assign(buckets_.size() + 1, 0);
  return it->second;
}

void Family::add(const std::vector<std::string>& label_values, double delta) {
  if (type_ == Type::histogram || (type_ == Type::counter && delta < 0))
    throw std::logic_error(fmt::format("metric {}: add() on a histogram, or a counter going down", name_));
  std::lock_guard lock(registry_.mutex_);
  series(label_values).value += delta;
  ++registry_.version_;
}

void Family::set(const std::vector<std::string>& label_values, double value) {
  if (type_ != Type::gauge)
    throw std::logic_error(fmt::format("metric {}: set() on a {}", name_, type_name(type_)));
  std::lock_guard lock(registry_.mutex_);
  series(label_values).value = value;
  ++registry_.version_;
}

void Family::observe(const std::vector<std::string>& label_values, double value) {
  if (type_ != Type::histogram)
    throw std::logic_error(fmt::format("metric {}: observe() on a {}", name_, type_name(type_)));
  std::lock_guard lock(registry_.mutex_);
  auto& entry = series(label_values);
  auto bucket = std::lower_bound(buckets_.begin(), buckets_.end(), value) - buckets_.begin();
  ++entry.counts[static_cast<std::size_t>(bucket)];
  entry.value += value;
  ++registry_.version_;
}

void Family::clear() {
  std::lock_guard lock(registry_.mutex_);
  if (!series_.empty())
    ++registry_.version_;
  series_.clear();
}

void Family::write(std::string& out) const {
  out += fmt::format("# HELP {} {}\n# TYPE {} {}\n", name_, escape(help_, false), name_, type_name(type_));
  // A family without labels shows its zero before anything happened, as client libraries do.
  if (series_.empty() && label_names_.empty()) {
    if (type_ == Type::histogram)
      out += fmt::format("{0}_bucket{{le=\"+Inf\"}} 0\n{0}_sum 0\n{0}_count 0\n", name_);
    else
      out += fmt::format("{} 0\n", name_);
    return;
  }
  for (const auto& [values, entry] : series_) {
    if (type_ != Type::histogram) {
      out += fmt::format("{}{} {}\n", name_, label_text(label_names_, values), format_value(entry.value));
      continue;
    }
    std::uint64_t cumulative = 0;
    for (std::size_t i = 0; i <= buckets_.size(); ++i) {
      cumulative += entry.counts[i];
      auto le = i < buckets_.size() ? format_value(buckets_[i]) : std::string("+Inf");
      out += fmt::format("{}_bucket{} {}\n", name_, label_text(label_names_, values, "le", le), cumulative);
    }
    out += fmt::format("{}_sum{} {}\n", name_, label_text(label_names_, values), format_value(entry.value));
    out += fmt::format("{}_count{} {}\n", name_, label_text(label_names_, values), cumulative);
  }
}

Family& Registry::declare(std::string name, std::string help, Type type, std::vector<std::string> label_names,
                          std::vector<double> buckets) {
  if (!valid_metric_name(name) || name.rfind("k8slb_", 0) != 0)
    throw std::logic_error("metric name " + name + ": expected k8slb_[a-z0-9_]+");
  if ((type == Type::counter) != ends_with(name, "_total"))
    throw std::logic_error("metric " + name + ": _total is for counters, and counters end in _total");
  if (type == Type::histogram && (buckets.empty() || !std::is_sorted(buckets.begin(), buckets.end())))
    throw std::logic_error("metric " + name + ": a histogram needs buckets in increasing order");
  for (const auto& label : label_names)
    if (!valid_label_name(label))
      throw std::logic_error("metric " + name + ": label name " + label + " is not valid");
  std::lock_guard lock(mutex_);
  for (auto& family : families_)
    if (family->name_ == name) {
      if (family->type_ != type || family->label_names_ != label_names)
        throw std::logic_error("metric " + name + " declared twice, differently");
      return *family;
    }
  families_.push_back(std::unique_ptr<Family>(
      new Family(*this, std::move(name), std::move(help), type, std::move(label_names), std::move(buckets))));
  ++version_;
  return *families_.back();
}

Family& Registry::counter(std::string name, std::string help, std::vector<std::string> label_names) {
  return declare(std::move(name), std::move(help), Type::counter, std::move(label_names), {});
}

Family& Registry::gauge(std::string name, std::string help, std::vector<std::string> label_names) {
  return declare(std::move(name), std::move(help), Type::gauge, std::move(label_names), {});
}

Family& Registry::histogram(std::string name, std::string help, std::vector<double> buckets,
                            std::vector<std::string> label_names) {
  return declare(std::move(name), std::move(help), Type::histogram, std::move(label_names), std::move(buckets));
}

std::string Registry::exposition() const {
  std::lock_guard lock(mutex_);
  std::string out;
  for (const auto& family : families_)
    family->write(out);
  return out;
}

std::uint64_t Registry::version() const {
  std::lock_guard lock(mutex_);
  return version_;
}

Registry& process_registry() {
  static Registry registry;
  return registry;
}

namespace {
std::mutex component_mutex;
std::string component_name;
} // namespace

void set_component(std::string name) {
  std::lock_guard lock(component_mutex);
  component_name = std::move(name);
}

std::string component() {
  std::lock_guard lock(component_mutex);
  return component_name.empty() ? tool::program() : component_name;
}

std::vector<double> duration_buckets() {
  return {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30};
}

std::string merge_expositions(const std::vector<std::string>& texts) {
  struct Merged {
    std::string help, type;
    std::string samples;
  };
  std::vector<std::string> order;
  std::map<std::string, Merged> families;
  auto family_of = [&](const std::string& name) -> Merged& {
    auto [it, added] = families.try_emplace(name);
    if (added)
      order.push_back(name);
    return it->second;
  };
  for (const auto& text : texts) {
    std::string current; // the family of the last TYPE line: _bucket, _sum, _count belong to it
    std::size_t start = 0;
    while (start < text.size()) {
      auto end = text.find('\n', start);
      if (end == std::string::npos)
        end = text.size();
      std::string line = text.substr(start, end - start);
      start = end + 1;
      if (line.rfind("# HELP ", 0) == 0 || line.rfind("# TYPE ", 0) == 0) {
        auto name_end = line.find(' ', 7);
        std::string name = line.substr(7, name_end == std::string::npos ? std::string::npos : name_end - 7);
        auto& family = family_of(name);
        auto& slot = line[2] == 'H' ? family.help : family.type;
        if (slot.empty())
          slot = line;
        if (line[2] == 'T')
          current = name;
        continue;
      }
      if (line.empty() || line[0] == '#')
        continue;
      auto name_end = line.find_first_of("{ ");
      if (name_end == std::string::npos)
        continue;
      std::string name = line.substr(0, name_end);
      bool belongs = !current.empty() && name.rfind(current, 0) == 0 &&
                     (name == current || name == current + "_bucket" || name == current + "_sum" ||
                      name == current + "_count");
      family_of(belongs ? current : name).samples += line + "\n";
    }
  }
  std::string out;
  for (const auto& name : order) {
    const auto& family = families.at(name);
    if (!family.help.empty())
      out += family.help + "\n";
    if (!family.type.empty())
      out += family.type + "\n";
    out += family.samples;
  }
  return out;
}

} // namespace k8slb::metrics
