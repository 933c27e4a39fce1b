#pragma once
// The typed rendering model: every decision the printers need (TLS, http mode, server slots,
// VIP owners, router ids), made and validated once, sorted by namespace, name, port. Printers
// only print it. Everything a printer writes comes from here: DNS-label names, numbers,
// re-printed ip::Address values, validated pool names and settings paths.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "k8slb/error.hpp"
#include "k8slb/ip.hpp"
#include "k8slb/render.hpp"

namespace k8slb::render {

enum class Protocol { tcp, udp, sctp };
std::string_view to_string(Protocol protocol); // "TCP", "UDP", "SCTP"

enum class Mode { tcp, http };

// A Service's VIP with the pool whose network holds it.
struct Vip {
  ip::Address address;
  std::string pool;
  bool operator==(const Vip&) const = default;
};

// One server slot of a backend. Filled slots carry a ready endpoint; empty slots are
// disabled placeholders (address 0.0.0.0) that the runtime API can fill without a reload.
struct Server {
  std::string name; // s1..sN
  ip::Address address;
  int port = 0;
  bool enabled = false;
  bool operator==(const Server&) const = default;
};

// One Service port, with every decision made.
struct PortPlan {
  std::string ns;        // DNS label
  std::string name;      // DNS label
  int index = 0;         // position in spec.ports
  std::string port_name; // DNS label or empty
  Protocol protocol = Protocol::tcp;
  int port = 0;
  int target_port = 0;   // numeric targetPort; 0 when named
  std::vector<Vip> vips; // IPv4 first
  Mode mode = Mode::tcp;
  bool tls = false;         // terminate TLS on the proxy
  bool tls_backend = false; // TLS to the backend (not verified: `ssl verify none`)
  bool check = true;        // health checks
  std::vector<ip::Range> source_ranges; // loadBalancerSourceRanges; empty: anyone
  std::vector<Server> servers; // haproxy slots: filled first (sorted by address), then empty
  int filled = 0;              // number of filled slots (ready endpoints)
  // haproxy: served by its port's shared frontend (Settings.shared_ports), from the slot
  // backend `slot` ("shared_<port>_<k>"); empty: its own frontends and backend id().
  std::string slot;

  std::string service() const { return ns + "/" + name; }
  // "<ns>_<name>_<port>", with "_udp" / "_sctp" for those protocols: the backend / upstream
  // name. '_' never occurs in a DNS label, so the parts cannot run into each other.
  std::string id() const;
  std::string backend() const { return slot.empty() ? id() : slot; } // haproxy's backend name
};

// A port served by one shared frontend (Settings.shared_ports): a wildcard bind per family
// in use, routing by destination address through its map file to slot backends.
struct SharedPort {
  int port = 0;
  Mode mode = Mode::tcp;       // shared_mode(port)
  bool v4 = false, v6 = false; // families among its VIPs: the wildcard binds
  int capacity = 0;            // slot backends "shared_<port>_0" .. capacity - 1
  std::vector<std::pair<ip::Address, std::string>> map; // VIP -> slot backend, sorted
  // Per slot k: the index in ProxyPlan::ports of the port it serves, -1 for a spare. haproxy.cfg
  // lists the slot backends in this order, so that filling or emptying one changes no other line.
  std::vector<int> slots;
  int spare_port = 0; // the spares' placeholder servers' port
  std::string slot_name(int k) const; // "shared_<port>_<k>"
};

// An http -> https redirect listener on port 80 of a VIP, for TLS-terminated http-mode ports.
struct Redirect {
  std::string ns;
  std::string name;
  Vip vip;
  int to_port = 443; // the TLS port the redirect points at
  std::vector<ip::Range> source_ranges;
  std::string id() const; // "<ns>_<name>_redirect"
};

// A certificate of the cert dir offered by SNI besides the pool's own, checked: a safe file
// name, DNS names only, a private key that matches. The pool's `<pool>.pem` stays the default.
struct SniCertificate {
  std::string file;               // "<stem>.pem": [A-Za-z0-9][A-Za-z0-9._-]*
  std::string key_file;           // nginx's ssl_certificate_key: "<stem>.key", or `file` itself
  std::vector<std::string> names; // lower-case DNS names and "*.<name>" wildcards (nginx server_name)
  bool operator==(const SniCertificate&) const = default;
};

// HAProxy reads at most 64 words on a line: a bind line keeps room for this many `crt` pairs.
inline constexpr std::size_t kMaxSniCertificates = 28;

struct ProxyPlan {
  std::vector<PortPlan> ports;     // sorted by namespace, name, port, protocol
  std::vector<Redirect> redirects; // sorted by namespace, name, VIP
  // Offered by SNI on TLS ports (sorted by file): haproxy, those holding their key (a bundle),
  // at most kMaxSniCertificates; nginx, those with a key and DNS names (http-mode ports).
  std::vector<SniCertificate> sni;
  int nginx_names_bucket = 0; // server_names_hash_bucket_size to set (names too long for 64); 0: none
  std::vector<SharedPort> shared; // the shared ports, sorted by port
  std::vector<Problem> problems;
};

// Decides everything the proxy's config needs. Empty (but with Service problems) for kubeproxy.
ProxyPlan plan_proxy(const Input& input);

// The mode of a shared port's frontend: http for 80 and 443 (what a Service port without
// annotations gets there), else tcp.
Mode shared_mode(int port);
// Puts the ports a shared frontend can serve (a port in `shared_ports`, TCP, in the port's
// shared_mode(), no TLS, no source ranges; for nginx also no TLS to the backend: plan_proxy()
// refuses a port in the other mode there) into slot backends: each keeps its slot
// of `previous` while that is below the port's capacity, the others take the lowest free ones
// (by id). A port's capacity is kept while its Services fit and it is not four times what they
// need; otherwise it is the Services plus spare_slots(). Fills plan.shared; returns the slots
// (haproxy's; nginx routes to each port's own upstream). Pure.
SharedSlots plan_shared(ProxyPlan& plan, const std::set<int>& shared_ports, const SharedSlots& previous,
                        Proxy proxy = Proxy::haproxy);
// nginx: every port of `shared_ports` gets its shared server, with or without a Service to
// route, listening on the wildcard of each family the pools have. nginx binds a VIP's own
// socket (a redirect, source ranges, TLS) only where no wildcard is on that port, and the kernel
// refuses a wildcard beside a VIP's socket and the reverse: a wildcard that came and went with
// the port's Services would make a reload fail. Pure.
void wildcard_every_shared_port(ProxyPlan& plan, const std::set<int>& shared_ports, const pool::Config& config);
// The spare slot backends a shared port gets with `services` Services: max(16, services / 8).
int spare_slots(int services);

// The owner's priority: VRRP's "address owner", which keepalived starts as master at once
// (rendered `state MASTER`) instead of waiting three adverts to hear none: a new Service's VIP
// is up as soon as its instance is. The other nodes back it up with 100 - rank.
inline constexpr int kOwnerPriority = 255;

struct VrrpInstance {
  std::string name; // "<pool>_<owner>_v4|v6"
  std::string pool;
  std::string owner; // node that is first choice for these VIPs
  ip::Family family = ip::Family::v4;
  std::string interface;
  int router_id = 0;
  int priority = 100; // this node's priority
  int version = 3;    // VRRP version: 2 only for an IPv4 instance with a password (IPv6 needs 3)
  bool authenticated = false; // auth_type PASS (VRRPv2 only)
  std::vector<ip::Address> vips; // the lowest VIP alone: virtual_ipaddress, in every advert
  // The others, held and moved the same way but left out of the adverts
  // (virtual_ipaddress_excluded), so that the adverts do not change with every Service.
  std::vector<ip::Address> excluded_vips; // sorted, all above vips
  std::optional<ip::Address> unicast_src;   // set when Settings.unicast
  std::vector<ip::Address> unicast_peers;
};

struct KeepalivedPlan {
  std::string router_id; // this node's name, sanitised
  int vrrp_version = 3;  // 2 when a password is set
  std::string advert_int; // "0.2", "1"
  std::optional<pool::KeepalivedSettings> email; // set when mail is configured (validated)
  // `vrrp_script` command tracking the proxy (Settings.proxy_check health ...); every instance
  // tracks it and goes to FAULT (gives its VIPs up) while it fails. Empty: no tracking.
  std::string track_proxy;
  std::vector<VrrpInstance> instances; // sorted by pool, owner
  std::vector<Problem> problems;
};

// Decides VIP owners, router ids, priorities and interfaces. Throws Error for invalid settings
// (password, paths, mail settings) and when this node is not among the load-balancer nodes.
KeepalivedPlan plan_keepalived(const Input& input);

// ---- bird.conf: BGP announcement of the VIPs of pools with `announce: bgp` ----

struct BgpPeerPlan {
  std::string name; // "k8slb_<address, '.' and ':' as '_'>": stays while the peer is listed
  ip::Address address;
  std::uint32_t asn = 0;
  int port = 179;
  bool bfd = false;
  int hold_time = 0;       // 0: BIRD's default
  bool internal = false;   // iBGP (the peer has our ASN): `direct`
  std::string password;    // checked (printable, no '"' or '\\'); empty: none
};

struct BirdPlan {
  std::optional<ip::Address> router_id; // this node's IPv4 InternalIP, else from its name; nullopt offline
  std::uint32_t asn = 0;
  // The VIPs of bgp pools among the rendered Services: every load-balancer node announces
  // each while its proxy serves it (k8slb-apply node withdraws them while it does not).
  std::vector<ip::Address> vips_v4, vips_v6; // sorted
  std::vector<BgpPeerPlan> peers;            // sorted by address
  bool bfd = false;                          // a bfd protocol (some peer asks for BFD)
  std::vector<Problem> problems;
};

// Decides what bird.conf holds. Throws Error when the config has no bgp section.
BirdPlan plan_bird(const Input& input);

// Server slots for a backend with `endpoints` ready endpoints:
// max(min_slots, next power of two >= endpoints).
int server_slots(int endpoints, int min_slots);

} // namespace k8slb::render
