#pragma once
// Rendering: pure functions from assigned Services, their endpoints and node facts to
// haproxy.cfg, nginx.conf and keepalived.conf. Decisions (which node owns a VIP, router IDs,
// TLS, http mode) are made in a typed model first; printers only print it. Output is sorted and
// deterministic. Values from Services never reach a config unchecked: a Service with a value
// outside its grammar is left out and reported as a Problem naming the Service and field.

#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "k8slb/error.hpp"
#include "k8slb/model.hpp"
#include "k8slb/node.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::render {

enum class Proxy { haproxy, nginx, kubeproxy };
std::string_view to_string(Proxy proxy);
Proxy parse_proxy(std::string_view text); // throws Error

struct NodeFacts {
  std::string node_name;                   // this node; empty when rendering offline
  std::vector<model::Node> lb_nodes;       // every load-balancer node (sorted by name)
  std::vector<node::Interface> interfaces; // this node's interfaces
};

struct Settings {
  Proxy proxy = Proxy::haproxy;
  std::string cert_dir = "/etc/certs";
  std::string runtime_dir = "/run/k8slb"; // haproxy admin socket, pid files
  int vrid_offset = 0;                     // added to every virtual_router_id
  int advert_int_cs = 5;                   // VRRP advert interval, centiseconds (VRRPv3)
  bool unicast = false;                    // unicast_peer lists from the nodes' InternalIPs
  std::string vrrp_password;               // empty: no auth (VRRPv3 has none)
  int min_server_slots = 8;                // haproxy server slots per backend, at least
  std::string notify_script;               // keepalived notify script, empty: none
  // Added by render:
  std::string lb_class;                    // our loadBalancerClass: Services of another are skipped
  std::string stream_module = "/usr/lib/nginx/modules/ngx_stream_module.so"; // nginx load_module
  int hard_stop_after_s = 30;              // haproxy hard-stop-after: old workers' grace period
  std::string proxy_check;                 // k8slb-apply's absolute path: keepalived tracks the
                                           // proxy with `k8slb-apply health` (empty: it does not)
  bool transparent_bind = true;            // haproxy `bind ... transparent`: bind VIPs this node
                                           // does not hold (nginx needs ip_nonlocal_bind instead)
  // haproxy: ports served by one shared frontend each (a wildcard bind routing by destination
  // through haproxy-p<port>.map to slot backends), so that a new Service on one of them is a
  // runtime update, not a reload. Empty: every VIP port has its own frontend.
  std::set<int> shared_ports;
};

// The slot backends of the shared ports (Settings.shared_ports), carried from one rendering to
// the next so that a Service keeps its slot and a new one takes a spare: a slot that moves is
// a reload. Read back from an installed haproxy.cfg with previous_shared_slots().
struct SharedSlots {
  std::map<std::string, std::string> backends; // Service port id ("default_web_80") -> "shared_80_3"
  std::map<int, int> capacity;                  // port -> slot backends rendered for it
  bool operator==(const SharedSlots&) const = default;
};

struct Input {
  pool::Config config;
  std::vector<model::Service> services;     // only those with ingress IPs are rendered
  std::vector<model::EndpointSlice> slices;
  NodeFacts node;
  Settings settings;
  // The certificate files of settings.cert_dir that can be read ("<pool>.pem", "<pool>.key"),
  // found by the caller (I/O at the edge). A TLS port whose pool has none is left out with a
  // MissingCertificate Problem; the other ports and Services render. nullopt: not checked.
  std::optional<std::set<std::string>> certificates;
  // The "*.pem" files of settings.cert_dir as read by the caller: besides the pool's own (the
  // default), each is offered by SNI on every TLS port, once checked (see ProxyPlan::sni).
  std::vector<node::CertificateFile> certificate_files;
  // The interface each pool's instances used in the last good keepalived.conf (see
  // previous_interfaces()): a pool this node cannot place now keeps it.
  std::map<std::string, std::string> previous_interfaces;
  // The shared ports' slots in the last haproxy.cfg (see SharedSlots): kept where they can be.
  SharedSlots previous_slots;
  // The contents of the BGP peers' password files (config.bgp peers' passwordFile), read by the
  // caller (I/O at the edge). A peer whose file is not here is left out with a Problem.
  std::map<std::string, std::string> bgp_passwords;
};

struct Output {
  std::map<std::string, std::string> files; // file name -> content, e.g. "haproxy.cfg"
  std::vector<Problem> problems;            // Services (or ports) left out, and why
  // keepalived: pool -> the interface its instances use (the next Input.previous_interfaces).
  std::map<std::string, std::string> interfaces;
  // haproxy: the shared ports' slots of this rendering (the next Input.previous_slots).
  SharedSlots slots;
  // render_all: services_by_vip(input), from the same check of the Services as the files.
  std::map<std::string, std::vector<std::size_t>> vips;
};

// The proxy's files ("haproxy.cfg" + "haproxy-servers.json", or "nginx.conf"); empty for
// kubeproxy.
Output render_proxy(const Input& input);
// "keepalived.conf".
Output render_keepalived(const Input& input);
// "bird.conf" when the config has a bgp section; no file without one.
Output render_bird(const Input& input);
// The proxy's files and keepalived.conf, and bird.conf when the config has a bgp section.
Output render_all(const Input& input);

// The VIPs a bird.conf k8slb-render printed announces ("  route <ip>/<bits> blackhole;" lines
// of its k8slb_vips_* protocols), as addresses; lines that do not parse are skipped. k8slb-apply
// node puts these on the loopback interface, so that the node accepts their traffic.
std::vector<ip::Address> announced_vips(std::string_view bird_conf);

// ---- A rendered set of files in a directory (k8slb-render --output-dir) ----
// The manifest, written last and atomically, says the set is complete:
// {"k8slb-render": 1, "files": {"<name>": {"bytes": n, "hash": "<16 hex>"}}} (hash: the
// render library's stable 64-bit hash, FNV-1a with a splitmix64 finaliser).
// k8slb-apply node --from-dir applies only files a manifest names, with their size and hash.
inline constexpr const char* kManifestFile = "k8slb-render.json";
// keepalived's notify_fifo in the runtime dir: keepalived.conf names it, k8slb-apply node reads
// the VRRP state changes from it.
inline constexpr const char* kNotifyFifoFile = "keepalived.fifo";
std::string manifest_of(const std::map<std::string, std::string>& files);
// The files `manifest` names, checked against what `read` returns for each name (nullopt when
// absent). Throws Error("<source>: <file>: ...") when the manifest is malformed, or a file is
// missing or differs (the set is incomplete: a render failed or is still writing).
std::map<std::string, std::string> files_of_manifest(
    std::string_view manifest, std::string_view source,
    const std::function<std::optional<std::string>(const std::string&)>& read);

// Pool name -> the interface its vrrp_instances use, read from a keepalived.conf k8slb-render
// printed ("# pool P: first choice N" then "  interface X" in the instance). Pools and
// interfaces that are not valid names are skipped.
std::map<std::string, std::string> previous_interfaces(std::string_view keepalived_conf);

// The shared ports' slots of a haproxy.cfg k8slb-render printed (its "backend shared_<port>_<k>"
// lines and the "(<id>)" that ends the comment above a filled one). Names that do not parse
// are skipped.
SharedSlots previous_shared_slots(std::string_view haproxy_cfg);
// "haproxy-p<port>.map": the map file of a shared port; its lines are "<VIP> <slot backend>".
std::string shared_map_file(int port);

// The problems of a rendering that concern a Service this node serves, paired with the
// Service (an index into input.services), for Events from the node (k8slb-render --events).
// A Service's own problem (a port left out, a missing certificate) is that Service's; a
// pool's problem (no interface, a router id collision) is every rendered Service with a VIP
// in the pool. Problems k8slb-allocate reports too (reason InvalidService) are left out: the
// watcher already posts them. Sorted by Service, then as in output.problems. Pure.
struct ServiceProblem {
  std::size_t service = 0; // index into input.services
  Problem problem;
};
std::vector<ServiceProblem> service_problems(const Input& input, const Output& output);

// Each VIP this rendering serves (printed as ip::Address prints it) -> the Services holding
// it (indexes into input.services), for the failover notice: the node that takes a VIP says
// so on its Services (k8slb-apply events). Pure.
std::map<std::string, std::vector<std::size_t>> services_by_vip(const Input& input);

// Which load-balancer node is first choice for a VIP: rendezvous hashing over node names,
// so a node joining or leaving moves only the VIPs it gains or loses. Empty when no nodes.
std::string owner_of(const std::string& vip, const std::vector<std::string>& node_names);

} // namespace k8slb::render
