// Renders the golden input and a few variants into a directory, for check.sh to pass through
// the real checkers (haproxy -c, nginx -t, keepalived -t).
//
//   render_check_gen OUT_DIR CERT_DIR RUNTIME_DIR
//
// writes OUT_DIR/<variant>/{haproxy.cfg,nginx.conf,keepalived.conf}.

#include <algorithm>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <functional>
#include <iostream>
#include <string>
#include <vector>

#include "fixture.hpp"
#include "k8slb/node.hpp"
#include "k8slb/render.hpp"

namespace {

using namespace k8slb::render;

struct Variant {
  std::string name;
  std::function<void(Input&)> change;
};

void write(const std::filesystem::path& path, const std::string& text) {
  std::filesystem::create_directories(path.parent_path());
  std::ofstream(path, std::ios::binary | std::ios::trunc) << text;
}

// A served Service of the golden input cut down to one plain TCP port, to copy many times.
k8slb::model::Service single_port_service(const Input& input) {
  auto base = *std::find_if(input.services.begin(), input.services.end(), [](const auto& s) {
    return !s.ingress_ips.empty() && s.is_load_balancer() && s.lb_class.empty();
  });
  base.ports.resize(1);
  base.ports[0].name = "tcp";
  base.ports[0].protocol = "TCP";
  base.annotations.clear();
  return base;
}

} // namespace

int main(int argc, char** argv) {
  if (argc != 4) {
    std::cerr << "usage: render_check_gen OUT_DIR CERT_DIR RUNTIME_DIR\n";
    return 2;
  }
  const std::filesystem::path out = argv[1];
  const std::vector<Variant> variants = {
      {"golden", [](Input&) {}},
      {"one-slot", [](Input& input) { input.settings.min_server_slots = 1; }},
      {"no-endpoints", [](Input& input) { input.slices.clear(); }},
      {"password-unicast", [](Input& input) {
         input.settings.vrrp_password = "s3cret";
         input.settings.unicast = true;
         input.settings.notify_script = "/usr/bin/true";
         input.settings.advert_int_cs = 150;
       }},
      {"fast-adverts-offset", [](Input& input) {
         input.settings.advert_int_cs = 5;
         input.settings.vrid_offset = 200;
         input.config.keepalived = {};
       }},
      {"other-node", [](Input& input) { input.node.node_name = "lb-c"; }},
      // The cert dir's other certificates offered by SNI, as k8slb-render reads them.
      {"sni", [](Input& input) {
         input.certificate_files = k8slb::node::read_certificate_files(input.settings.cert_dir);
       }},
      // keepalived tracks the proxy (any executable will do for the checker).
      {"tracked", [](Input& input) { input.settings.proxy_check = "/usr/bin/true"; }},
      // 600 single-port Services: more listeners than nginx's default 512 worker_connections.
      {"600-listeners", [](Input& input) {
         auto base = single_port_service(input);
         for (int i = 0; i < 600; ++i) {
           auto service = base;
           service.name = "many-" + std::to_string(i);
           service.ports[0].port = 20000 + i;
           service.ports[0].target_port = 8080;
           input.services.push_back(service);
         }
       }},
      // 300 IPv6 VIPs in one pool, about 100 per owner: more than one advert could carry
      // (keepalived -t refuses an instance advertising more than 89); all but the lowest are
      // excluded VIPs.
      {"300-ipv6-vips", [](Input& input) {
         auto base = single_port_service(input);
         for (int i = 0; i < 300; ++i) {
           auto service = base;
           service.name = "v6-" + std::to_string(i);
           char vip[64];
           std::snprintf(vip, sizeof vip, "2001:db8::%x", 0x1000 + i);
           service.ingress_ips = {vip};
           input.services.push_back(service);
         }
       }},
  };
  try {
    for (const auto& variant : variants) {
      for (auto proxy : {Proxy::haproxy, Proxy::nginx}) {
        auto input = testing::golden_input(proxy);
        input.settings.cert_dir = argv[2];
        input.settings.runtime_dir = argv[3];
        variant.change(input);
        auto output = render_all(input);
        for (const auto& [name, text] : output.files) write(out / variant.name / name, text);
      }
    }
  } catch (const std::exception& error) {
    std::cerr << "render_check_gen: error: " << error.what() << "\n";
    return 1;
  }
  return 0;
}
