#pragma once
// Loads the golden input (tests/golden/input.yaml + interfaces.json) as a render::Input, the way
// k8slb-render builds one: documents -> snapshot -> config from the ConfigMap, nodes, interfaces.

#include <string>

#include <nlohmann/json.hpp>

#include "k8slb/documents.hpp"
#include "k8slb/model.hpp"
#include "k8slb/node.hpp"
#include "k8slb/pool.hpp"
#include "k8slb/render.hpp"

namespace k8slb::render::testing {

// Two pools on the documentation prefixes: "default" 192.0.2.128/25, "ipv6" 2001:db8::/96.
inline pool::Config documentation_pools() {
  pool::Config config;
  config.pools.push_back({"default", ip::Range::parse("192.0.2.0/24"), ip::Range::parse("192.0.2.128/25"), "eth0"});
  config.pools.push_back({"ipv6", ip::Range::parse("2001:db8::/64"), ip::Range::parse("2001:db8::/96"), "eth0"});
  return config;
}

inline std::string source_dir() {
#ifdef K8SLB_SOURCE_DIR
  return K8SLB_SOURCE_DIR;
#else
  return ".";
#endif
}

inline std::string golden_dir() { return source_dir() + "/tests/golden"; }

// The golden input rendered for node lb-a with `proxy`.
inline Input golden_input(Proxy proxy) {
  const std::string path = golden_dir() + "/input.yaml";
  auto items = flatten_items(parse_documents(read_file(path), path));
  auto snapshot = model::make_snapshot(std::move(items));
  Input input;
  input.config = pool::parse_config_map(snapshot.config_map.value());
  input.services = std::move(snapshot.services);
  input.slices = std::move(snapshot.slices);
  input.node.lb_nodes = std::move(snapshot.nodes);
  input.node.node_name = "lb-a";
  input.node.interfaces = node::interfaces_from_ip_json(
      nlohmann::json::parse(read_file(golden_dir() + "/interfaces.json")));
  input.settings.proxy = proxy;
  return input;
}

} // namespace k8slb::render::testing
