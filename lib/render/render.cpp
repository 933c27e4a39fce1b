// The entry points: plan, then print.

#include "k8slb/render.hpp"

#include <algorithm>
#include <cstdint>
#include <set>
#include <tuple>

#include <nlohmann/json.hpp>

#include <fmt/format.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"
#include "printers.hpp"
#include "services.hpp"

namespace k8slb::render {

std::string_view to_string(Proxy proxy) {
  switch (proxy) {
  case Proxy::haproxy: return "haproxy";
  case Proxy::nginx: return "nginx";
  case Proxy::kubeproxy: return "kubeproxy";
  }
  return "haproxy";
}

Proxy parse_proxy(std::string_view text) {
  if (text == "haproxy") return Proxy::haproxy;
  if (text == "nginx") return Proxy::nginx;
  if (text == "kubeproxy") return Proxy::kubeproxy;
  fail("proxy", "", fmt::format("{} is not haproxy, nginx or kubeproxy", detail::quote(text)));
}

namespace {

Output proxy_output(const Input& input, const detail::CheckedServices& check) {
  Output output;
  auto plan = detail::plan_proxy(input, check);
  switch (input.settings.proxy) {
  case Proxy::haproxy:
    output.slots = plan_shared(plan, input.settings.shared_ports, input.previous_slots);
    output.files["haproxy.cfg"] = detail::print_haproxy(plan, input.config, input.settings);
    output.files["haproxy-servers.json"] = detail::print_haproxy_servers(plan, input.settings.min_server_slots);
    for (const auto& shared : plan.shared) output.files[shared_map_file(shared.port)] = detail::print_shared_map(shared);
    break;
  case Proxy::nginx:
    plan_shared(plan, input.settings.shared_ports, {}, Proxy::nginx);
    wildcard_every_shared_port(plan, input.settings.shared_ports, input.config);
    output.files["nginx.conf"] = detail::print_nginx(plan, input.config, input.settings);
    break;
  case Proxy::kubeproxy:
    break;
  }
  output.problems = std::move(plan.problems);
  return output;
}

Output keepalived_output(const Input& input, const detail::CheckedServices& check) {
  Output output;
  auto plan = detail::plan_keepalived(input, check);
  output.files["keepalived.conf"] = detail::print_keepalived(plan, input.settings);
  output.problems = std::move(plan.problems);
  for (const auto& instance : plan.instances) output.interfaces[instance.pool] = instance.interface;
  return output;
}

} // namespace

Output render_proxy(const Input& input) { return proxy_output(input, detail::check_services(input)); }

Output render_keepalived(const Input& input) { return keepalived_output(input, detail::check_services(input)); }

Output render_all(const Input& input) {
  const auto check = detail::check_services(input); // once for every planner
  Output output = proxy_output(input, check);
  Output keepalived = keepalived_output(input, check);
  output.files.merge(keepalived.files);
  output.interfaces = std::move(keepalived.interfaces);
  Output bird = detail::bird_output(input, check);
  output.files.merge(bird.files);
  // Service-level problems come from every planner: report each once.
  std::set<std::tuple<std::string, std::string, std::string, std::string>> reported;
  for (const auto& problem : output.problems)
    reported.emplace(problem.object, problem.field, problem.reason, problem.message);
  for (auto* more : {&keepalived.problems, &bird.problems})
    for (auto& problem : *more)
      if (reported.emplace(problem.object, problem.field, problem.reason, problem.message).second)
        output.problems.push_back(std::move(problem));
  output.vips = detail::services_by_vip(input, check);
  return output;
}

namespace {

std::string content_hash(const std::string& text) { return fmt::format("{:016x}", detail::stable_hash(text)); }

bool is_set_file_name(const std::string& name) {
  return !name.empty() && name.size() <= 64 && name.front() != '.' &&
         std::all_of(name.begin(), name.end(), [](char c) {
           return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '.' || c == '-' || c == '_';
         });
}

} // namespace

std::string manifest_of(const std::map<std::string, std::string>& files) {
  nlohmann::json listed = nlohmann::json::object();
  for (const auto& [name, content] : files) listed[name] = {{"bytes", content.size()}, {"hash", content_hash(content)}};
  return nlohmann::json{{"k8slb-render", 1}, {"files", listed}}.dump(2) + "\n";
}

std::map<std::string, std::string> files_of_manifest(
    std::string_view manifest, std::string_view source,
    const std::function<std::optional<std::string>(const std::string&)>& read) {
  auto document = nlohmann::json::parse(manifest, nullptr, false);
  if (document.is_discarded() || !document.is_object() || !document.contains("k8slb-render") ||
      document["k8slb-render"] != 1 ||
      !document.contains("files") || !document["files"].is_object())
    fail(source, "", "not a k8slb-render manifest");
  std::map<std::string, std::string> files;
  for (const auto& [name, entry] : document["files"].items()) {
    if (!is_set_file_name(name)) fail(source, "files", detail::quote(name) + " is not a file name");
    if (!entry.is_object() || !entry.contains("bytes") || !entry["bytes"].is_number_unsigned() ||
        !entry.contains("hash") || !entry["hash"].is_string())
      fail(source, "files." + name, "expected {\"bytes\": n, \"hash\": \"hex\"}");
    auto content = read(name);
    if (!content) fail(source, name, "missing: the set is incomplete");
    if (content->size() != entry["bytes"].get<std::uint64_t>() || content_hash(*content) != entry["hash"].get<std::string>())
      fail(source, name, "differs from the manifest: the set is incomplete (a render failed or is still writing)");
    files.emplace(name, std::move(*content));
  }
  return files;
}

} // namespace k8slb::render
