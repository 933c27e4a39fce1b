#pragma once
// Node facts: which local interface serves a pool. Selection is pure; reading the interface
// list is the I/O at the edge (getifaddrs), or `ip -j addr` JSON for offline rendering.

#include <optional>
#include <set>
#include <string>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/ip.hpp"
#include "k8slb/pool.hpp"

namespace k8slb::node {

struct Interface {
  std::string name;
  bool up = true;
  std::vector<ip::Prefix> addresses;
};

// From `ip -j addr` output. Throws Error on a malformed document.
std::vector<Interface> interfaces_from_ip_json(const nlohmann::json& document);
// The running system's interfaces (getifaddrs), sorted by name.
std::vector<Interface> read_interfaces();
// Every address of the running system's interfaces, canonical text ("192.0.2.10", "2001:db8::1").
std::set<std::string> read_addresses();

// The certificate files in `dir` that can be read and hold PEM text ("<pool>.pem",
// "<pool>.key"; other names are ignored). An absent or unreadable dir holds none.
std::set<std::string> readable_certificates(const std::string& dir);

// A certificate file of the cert dir as read from disk (the I/O at the edge). Nothing in it is
// trusted: the renderer checks the file name and the names before any of them reach a config.
struct CertificateFile {
  std::string file;               // file name in the dir ("shop.pem"), any bytes
  std::vector<std::string> names; // DNS names of subjectAltName, else the subject's CN
  bool key_in_file = false;       // the file holds the certificate's private key (HAProxy bundle)
  bool key_file = false;          // "<stem>.key" holds it (nginx's pair)
  bool has_key = false;           // some private key was found (matching or not)
  std::string error;              // why it cannot be used; empty: it can
  bool operator==(const CertificateFile&) const = default;
};

// The "*.pem" files of `dir` (at most 10000, each read up to 1 MiB, sorted by name), parsed:
// the first certificate, its names, and whether its private key is in the file or in
// "<stem>.key". An absent or unreadable dir holds none.
std::vector<CertificateFile> read_certificate_files(const std::string& dir);
// The same for one file's contents (and its "<stem>.key", empty when absent): pure.
CertificateFile parse_certificate_file(std::string file, std::string_view pem, std::string_view key_pem);

// The interface that serves `pool`: the pool's own `interface` if set (it must exist), else
// the interface holding an address whose prefix contains the pool's network; ties go to the
// longest prefix, then the name. Throws Error naming the pool when there is none.
std::string select_interface(const pool::Pool& pool, const std::vector<Interface>& interfaces);

} // namespace k8slb::node
