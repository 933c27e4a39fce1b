// Renders 10,000 Services with 10 ready endpoints each for haproxy, nginx and keepalived;
// prints wall time and output size per file.

#include <chrono>
#include <cstdio>
#include <string>

#include <fmt/format.h>

#include "k8slb/render.hpp"

int main() {
  using namespace k8slb;
  render::Input input;
  auto network = ip::Range::parse("2001:db8::/64");
  input.config.pools.push_back({"default", network, network, "eth0"});
  const int services = 10000, endpoints = 10;
  for (int i = 0; i < services; ++i) {
    model::Service service;
    service.ns = "bench";
    service.name = fmt::format("svc-{}", i);
    service.type = "LoadBalancer";
    service.ports.push_back({"https", "TCP", 443, 8443, "", 0});
    service.ingress_ips = {fmt::format("2001:db8::{:x}", i + 1)};
    input.services.push_back(service);
    model::EndpointSlice slice;
    slice.ns = "bench";
    slice.name = service.name + "-1";
    slice.service_name = service.name;
    slice.address_type = "IPv6";
    slice.ports.push_back({"https", "TCP", 8443});
    for (int e = 0; e < endpoints; ++e) {
      model::Endpoint endpoint;
      endpoint.addresses = {fmt::format("2001:db8:1:{:x}::{:x}", i, e + 1)};
      slice.endpoints.push_back(endpoint);
    }
    input.slices.push_back(slice);
  }
  for (int n = 0; n < 3; ++n) {
    model::Node node;
    node.name = fmt::format("lb-{}", n);
    input.node.lb_nodes.push_back(node);
  }
  input.node.node_name = "lb-0";
  for (auto proxy : {render::Proxy::haproxy, render::Proxy::nginx}) {
    input.settings.proxy = proxy;
    auto start = std::chrono::steady_clock::now();
    auto output = render::render_proxy(input);
    double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    for (const auto& [name, text] : output.files)
      std::printf("%-22s %6.3f s  %9zu bytes  (%d Services x %d endpoints)\n", name.c_str(), seconds,
                  text.size(), services, endpoints);
  }
  auto start = std::chrono::steady_clock::now();
  auto output = render::render_keepalived(input);
  double seconds = std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  std::printf("%-22s %6.3f s  %9zu bytes  (%zu problems)\n", "keepalived.conf", seconds,
              output.files.at("keepalived.conf").size(), output.problems.size());
  return 0;
}
