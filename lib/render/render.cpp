// The entry points: plan, then print.

#include "k8slb/render.hpp"

#include <algorithm>

#include <fmt/format.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"
#include "printers.hpp"

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

Output render_proxy(const Input& input) {
  Output output;
  auto plan = plan_proxy(input);
  switch (input.settings.proxy) {
  case Proxy::haproxy:
    output.files["haproxy.cfg"] = detail::print_haproxy(plan, input.config, input.settings);
    output.files["haproxy-servers.json"] = detail::print_haproxy_servers(plan);
    break;
  case Proxy::nginx:
    output.files["nginx.conf"] = detail::print_nginx(plan, input.config, input.settings);
    break;
  case Proxy::kubeproxy:
    break;
  }
  output.problems = std::move(plan.problems);
  return output;
}

Output render_keepalived(const Input& input) {
  Output output;
  auto plan = plan_keepalived(input);
  output.files["keepalived.conf"] = detail::print_keepalived(plan, input.settings);
  output.problems = std::move(plan.problems);
  return output;
}

Output render_all(const Input& input) {
  Output output = render_proxy(input);
  Output keepalived = render_keepalived(input);
  output.files.merge(keepalived.files);
  // Service-level problems come from both planners: report each once.
  for (auto& problem : keepalived.problems)
    if (std::find(output.problems.begin(), output.problems.end(), problem) == output.problems.end())
      output.problems.push_back(std::move(problem));
  return output;
}

} // namespace k8slb::render
