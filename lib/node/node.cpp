#include "k8slb/node.hpp"

#include <ifaddrs.h>
#include <net/if.h>
#include <netinet/in.h>

#include <algorithm>
#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>

#include <fmt/format.h>
#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/x509v3.h>

#include "k8slb/error.hpp"

namespace k8slb::node {

namespace {

int prefix_length(const sockaddr* netmask) {
  if (netmask == nullptr) return 0;
  const unsigned char* bytes = nullptr;
  std::size_t size = 0;
  if (netmask->sa_family == AF_INET) {
    bytes = reinterpret_cast<const unsigned char*>(&reinterpret_cast<const sockaddr_in*>(netmask)->sin_addr);
    size = 4;
  } else if (netmask->sa_family == AF_INET6) {
    bytes = reinterpret_cast<const sockaddr_in6*>(netmask)->sin6_addr.s6_addr;
    size = 16;
  }
  int length = 0;
  for (std::size_t i = 0; i < size; ++i) length += __builtin_popcount(bytes[i]);
  return length;
}

std::optional<ip::Address> address_of(const sockaddr* address) {
  if (address == nullptr) return std::nullopt;
  if (address->sa_family == AF_INET) {
    uint32_t v = ntohl(reinterpret_cast<const sockaddr_in*>(address)->sin_addr.s_addr);
    return ip::Address(ip::Family::v4, v);
  }
  if (address->sa_family == AF_INET6) {
    ip::u128 v = 0;
    for (unsigned char byte : reinterpret_cast<const sockaddr_in6*>(address)->sin6_addr.s6_addr)
      v = (v << 8) | byte;
    return ip::Address(ip::Family::v6, v);
  }
  return std::nullopt;
}

// How well an interface address serves a pool: 2 when its prefix contains the pool's whole
// network, 1 when the two only overlap, 0 when unrelated.
int fit(const ip::Prefix& prefix, const pool::Pool& pool) {
  if (prefix.address.family() != pool.family()) return 0;
  ip::Range block = prefix.network();
  if (block.contains(pool.network)) return 2;
  if (block.overlaps(pool.network)) return 1;
  return 0;
}

} // namespace

std::vector<Interface> interfaces_from_ip_json(const nlohmann::json& document) {
  if (!document.is_array()) throw Error("ip -j addr: expected a JSON list of interfaces");
  std::vector<Interface> interfaces;
  for (std::size_t i = 0; i < document.size(); ++i) {
    const auto& entry = document[i];
    std::string where = fmt::format("ip -j addr: [{}]", i);
    if (!entry.is_object() || !entry.contains("ifname") || !entry["ifname"].is_string())
      fail(where, "ifname", "is required");
    Interface interface;
    interface.name = entry["ifname"].get<std::string>();
    if (entry.contains("flags") && entry["flags"].is_array()) {
      interface.up = std::find(entry["flags"].begin(), entry["flags"].end(), "UP") != entry["flags"].end();
    }
    if (entry.contains("addr_info") && entry["addr_info"].is_array()) {
      for (const auto& info : entry["addr_info"]) {
        if (!info.is_object() || !info.contains("local") || !info["local"].is_string()) continue;
        std::string family = info.contains("family") && info["family"].is_string() ? info["family"].get<std::string>() : "";
        if (family != "inet" && family != "inet6") continue;
        ip::Address address;
        try {
          address = ip::Address::parse(info["local"].get<std::string>());
        } catch (const Error& e) {
          fail(where, "addr_info.local", e.what());
        }
        int length = ip::bits(address.family());
        if (info.contains("prefixlen")) {
          const auto& prefixlen = info["prefixlen"];
          if (!prefixlen.is_number_integer() || prefixlen.get<long long>() < 0 ||
              prefixlen.get<long long>() > length)
            fail(where, "addr_info.prefixlen", fmt::format("must be 0-{}", length));
          length = prefixlen.get<int>();
        }
        interface.addresses.push_back(ip::Prefix{address, length});
      }
    }
    interfaces.push_back(std::move(interface));
  }
  std::sort(interfaces.begin(), interfaces.end(),
            [](const Interface& a, const Interface& b) { return a.name < b.name; });
  return interfaces;
}

namespace {

std::string read_head(const std::filesystem::path& path, std::size_t max) {
  std::ifstream file(path, std::ios::binary); // follows symlinks (Secret volumes)
  std::string text(max, '\0');
  file.read(text.data(), static_cast<std::streamsize>(text.size()));
  text.resize(static_cast<std::size_t>(std::max<std::streamsize>(0, file.gcount())));
  return text;
}

} // namespace

std::set<std::string> readable_certificates(const std::string& dir) {
  namespace fs = std::filesystem;
  std::set<std::string> found;
  std::error_code error;
  fs::directory_iterator entries(dir, error), end;
  for (int count = 0; !error && entries != end && count < 10000; entries.increment(error), ++count) {
    const auto name = entries->path().filename().string();
    if (!name.ends_with(".pem") && !name.ends_with(".key")) continue;
    if (read_head(entries->path(), 65536).find("-----BEGIN ") != std::string::npos) found.insert(name);
  }
  return found;
}

namespace {

struct BioFree { void operator()(BIO* bio) const { BIO_free(bio); } };
struct X509Free { void operator()(X509* cert) const { X509_free(cert); } };
struct KeyFree { void operator()(EVP_PKEY* key) const { EVP_PKEY_free(key); } };
using Bio = std::unique_ptr<BIO, BioFree>;

Bio memory_bio(std::string_view text) {
  return Bio(BIO_new_mem_buf(text.data(), static_cast<int>(std::min<std::size_t>(text.size(), 1 << 20))));
}

std::unique_ptr<EVP_PKEY, KeyFree> first_key(std::string_view text) {
  if (text.empty()) return nullptr;
  auto bio = memory_bio(text);
  // PEM_read_bio_PrivateKey skips PEM blocks of other kinds (certificates) to the first key.
  // No passphrase: an encrypted key is not read (OpenSSL's default would ask on the terminal).
  auto no_passphrase = [](char*, int, int, void*) { return 0; };
  return std::unique_ptr<EVP_PKEY, KeyFree>(PEM_read_bio_PrivateKey(bio.get(), nullptr, no_passphrase, nullptr));
}

} // namespace

CertificateFile parse_certificate_file(std::string file, std::string_view pem, std::string_view key_pem) {
  CertificateFile found;
  found.file = std::move(file);
  auto bio = memory_bio(pem);
  std::unique_ptr<X509, X509Free> cert(PEM_read_bio_X509(bio.get(), nullptr, nullptr, nullptr));
  if (!cert) {
    ERR_clear_error();
    found.error = "holds no PEM certificate";
    return found;
  }
  auto* sans = static_cast<GENERAL_NAMES*>(X509_get_ext_d2i(cert.get(), NID_subject_alt_name, nullptr, nullptr));
  for (int i = 0; sans && i < sk_GENERAL_NAME_num(sans) && i < 1000; ++i) {
    const GENERAL_NAME* name = sk_GENERAL_NAME_value(sans, i);
    if (name->type != GEN_DNS) continue;
    const auto* data = ASN1_STRING_get0_data(name->d.dNSName);
    found.names.emplace_back(reinterpret_cast<const char*>(data), ASN1_STRING_length(name->d.dNSName));
  }
  const bool had_sans = sans != nullptr;
  GENERAL_NAMES_free(sans);
  if (!had_sans) { // RFC 6125: the CN only when there is no subjectAltName
    X509_NAME* subject = X509_get_subject_name(cert.get());
    int index = X509_NAME_get_index_by_NID(subject, NID_commonName, -1);
    if (index >= 0) {
      ASN1_STRING* cn = X509_NAME_ENTRY_get_data(X509_NAME_get_entry(subject, index));
      found.names.emplace_back(reinterpret_cast<const char*>(ASN1_STRING_get0_data(cn)), ASN1_STRING_length(cn));
    }
  }
  bool unreadable_key = false;
  for (auto [text, matches] : {std::pair{pem, &found.key_in_file}, std::pair{key_pem, &found.key_file}}) {
    if (auto key = first_key(text)) {
      found.has_key = true;
      *matches = X509_check_private_key(cert.get(), key.get()) == 1;
    } else if (text.find("PRIVATE KEY-----") != std::string_view::npos) {
      found.has_key = true;
      unreadable_key = true;
    }
  }
  ERR_clear_error();
  if (found.has_key && !found.key_in_file && !found.key_file)
    found.error = unreadable_key ? "holds a private key that cannot be read (encrypted, or not PEM)"
                                 : "holds a private key that does not match its certificate";
  return found;
}

std::vector<CertificateFile> read_certificate_files(const std::string& dir) {
  namespace fs = std::filesystem;
  // Parsing a key costs about a millisecond (OpenSSL 3); a long-running k8slb-render reads the
  // dir at every rendering, so files whose bytes did not change are not parsed again.
  static std::mutex cache_mutex;
  static std::map<std::string, CertificateFile> cache; // name, pem, key -> parsed
  std::lock_guard lock(cache_mutex);
  std::map<std::string, CertificateFile> used;
  std::vector<CertificateFile> found;
  std::error_code error;
  fs::directory_iterator entries(dir, error), end;
  for (int count = 0; !error && entries != end && count < 10000; entries.increment(error), ++count) {
    const auto path = entries->path();
    const auto name = path.filename().string();
    if (!name.ends_with(".pem") || name.size() == 4) continue;
    std::error_code type_error;
    if (!fs::is_regular_file(path, type_error)) continue;
    auto key_path = path.parent_path() / (name.substr(0, name.size() - 4) + ".key");
    std::string key_pem = fs::is_regular_file(key_path, type_error) ? read_head(key_path, 1 << 20) : "";
    std::string pem = read_head(path, 1 << 20);
    std::string cache_key = name + '\0' + pem + '\0' + key_pem;
    auto cached = cache.find(cache_key);
    CertificateFile parsed = cached != cache.end() ? cached->second : parse_certificate_file(name, pem, key_pem);
    found.push_back(parsed);
    used.emplace(std::move(cache_key), std::move(parsed));
  }
  cache = std::move(used); // only what the dir holds now
  std::sort(found.begin(), found.end(),
            [](const CertificateFile& a, const CertificateFile& b) { return a.file < b.file; });
  return found;
}

std::set<std::string> read_addresses() {
  std::set<std::string> held;
  for (const auto& interface : read_interfaces())
    for (const auto& prefix : interface.addresses) held.insert(prefix.address.to_string());
  return held;
}

std::vector<Interface> read_interfaces() {
  ifaddrs* list = nullptr;
  if (getifaddrs(&list) != 0) throw Error(fmt::format("getifaddrs: {}", std::strerror(errno)));
  std::map<std::string, Interface> by_name;
  for (ifaddrs* entry = list; entry != nullptr; entry = entry->ifa_next) {
    Interface& interface = by_name[entry->ifa_name];
    interface.name = entry->ifa_name;
    interface.up = (entry->ifa_flags & IFF_UP) != 0;
    if (auto address = address_of(entry->ifa_addr))
      interface.addresses.push_back(ip::Prefix{*address, prefix_length(entry->ifa_netmask)});
  }
  freeifaddrs(list);
  std::vector<Interface> interfaces;
  for (auto& [name, interface] : by_name) {
    std::sort(interface.addresses.begin(), interface.addresses.end());
    interfaces.push_back(std::move(interface));
  }
  return interfaces;
}

std::string select_interface(const pool::Pool& pool, const std::vector<Interface>& interfaces) {
  std::string object = "pools." + pool.name;
  if (!pool.interface.empty()) {
    if (interfaces.empty()) return pool.interface; // nothing known about this node: trust it
    for (const auto& interface : interfaces)
      if (interface.name == pool.interface) return pool.interface;
    fail(object, "interface", fmt::format("no interface named '{}' on this node", pool.interface));
  }
  // Best: an address whose prefix contains the whole pool network; then one that overlaps it.
  // Among equals the longest prefix wins, then the interface name.
  const Interface* best = nullptr;
  int best_fit = 0;
  int best_length = -1;
  for (const auto& interface : interfaces) {
    if (!interface.up) continue;
    for (const auto& prefix : interface.addresses) {
      int f = fit(prefix, pool);
      if (f == 0) continue;
      if (f > best_fit || (f == best_fit && prefix.length > best_length)) {
        best = &interface;
        best_fit = f;
        best_length = prefix.length;
      }
    }
  }
  if (best == nullptr)
    fail(object, "interface",
         fmt::format("no interface on this node has an address in {} ({}); set the pool's "
                     "interface",
                     pool.network.to_string(), ip::to_string(pool.family())));
  return best->name;
}

} // namespace k8slb::node
