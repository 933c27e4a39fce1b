#include "k8slb/pool.hpp"

#include <algorithm>
#include <map>
#include <regex>

#include <fmt/format.h>

#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"

namespace k8slb::pool {

namespace {

using nlohmann::json;

// Names that reach config files (pool names become certificate paths and keepalived instance
// names; interface names go into keepalived.conf) are held to a strict grammar.
const std::regex kPoolName{"[A-Za-z0-9]([A-Za-z0-9_.-]{0,62})"};
const std::regex kInterfaceName{"[A-Za-z0-9_][A-Za-z0-9_.:@-]{0,14}"};
const std::regex kEmail{"[A-Za-z0-9._%+-]+@[A-Za-z0-9.-]+"};
const std::regex kHost{"[A-Za-z0-9.:-]{1,253}"};

std::string optional_string(const json& parent, const char* key, const std::string& field) {
  if (!parent.contains(key) || parent[key].is_null()) return {};
  if (!parent[key].is_string()) fail(field, "", "must be a string");
  return parent[key].get<std::string>();
}

ip::Range parse_range(const json& pool, const char* key, const std::string& field) {
  if (!pool.contains(key) || pool[key].is_null() ||
      (pool[key].is_string() && pool[key].get<std::string>().empty()))
    fail(field, "", "is required");
  if (!pool[key].is_string()) fail(field, "", "must be a string (a CIDR or a start-stop range)");
  try {
    return ip::Range::parse(pool[key].get<std::string>());
  } catch (const Error& e) {
    fail(field, "", e.what());
  }
}

std::vector<std::string> raw_lines(const json& section, const char* key, const std::string& field) {
  std::vector<std::string> lines;
  if (!section.contains(key) || section[key].is_null()) return lines;
  const json& value = section[key];
  if (!value.is_array()) fail(field, "", "must be a list of config lines");
  for (std::size_t i = 0; i < value.size(); ++i) {
    std::string line_field = fmt::format("{}[{}]", field, i);
    if (!value[i].is_string()) fail(line_field, "", "must be a string");
    std::string line = value[i].get<std::string>();
    if (line.find_first_of(std::string("\n\r\0", 3)) != std::string::npos)
      fail(line_field, "", "a config line cannot hold a newline or NUL");
    lines.push_back(std::move(line));
  }
  return lines;
}

const json& section(const json& document, const char* key) {
  static const json empty = json::object();
  if (!document.contains(key) || document[key].is_null()) return empty;
  if (!document[key].is_object()) fail(key, "", "must be an object");
  return document[key];
}

// Addresses that can never be a load-balancer IP.
struct Reserved {
  const char* range;
  const char* what;
};
const Reserved kReserved[] = {
    {"0.0.0.0/8", "unspecified"},       {"127.0.0.0/8", "loopback"},
    {"169.254.0.0/16", "link-local"},   {"224.0.0.0/4", "multicast"},
    {"255.255.255.255/32", "broadcast"}, {"::/128", "unspecified"},
    {"::1/128", "loopback"},            {"fe80::/10", "link-local"},
    {"ff00::/8", "multicast"},
};

bool optional_bool(const json& pool, const char* key, const std::string& field, bool fallback) {
  if (!pool.contains(key) || pool[key].is_null()) return fallback;
  if (!pool[key].is_boolean()) fail(field, "", "must be true or false");
  return pool[key].get<bool>();
}

// RFC 1123 label, as Kubernetes namespace names are.
const std::regex kNamespace{"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"};

std::vector<std::string> namespace_list(const json& pool, const std::string& field) {
  std::vector<std::string> names;
  if (!pool.contains("namespaces") || pool["namespaces"].is_null()) return names;
  const json& value = pool["namespaces"];
  if (!value.is_array()) fail(field, "", "must be a list of namespace names");
  for (std::size_t i = 0; i < value.size(); ++i) {
    std::string item_field = fmt::format("{}[{}]", field, i);
    if (!value[i].is_string() || !std::regex_match(value[i].get<std::string>(), kNamespace))
      fail(item_field, "", fmt::format("{} is not a namespace name",
                                       value[i].dump(-1, ' ', false, json::error_handler_t::replace)));
    names.push_back(value[i].get<std::string>());
  }
  std::sort(names.begin(), names.end());
  names.erase(std::unique(names.begin(), names.end()), names.end());
  return names;
}

Pool parse_pool(const std::string& name, const json& value) {
  std::string field = "pools." + name;
  if (!std::regex_match(name, kPoolName))
    fail(field, "", "a pool name is letters, digits, '-', '_' and '.', up to 63, starting with a letter or digit");
  if (!value.is_object()) fail(field, "", "must be an object with network and range");
  Pool pool;
  pool.name = name;
  pool.network = parse_range(value, "network", field + ".network");
  pool.range = parse_range(value, "range", field + ".range");
  pool.interface = optional_string(value, "interface", field + ".interface");
  if (!pool.interface.empty() && !std::regex_match(pool.interface, kInterfaceName))
    fail(field + ".interface", "", fmt::format("'{}' is not an interface name", pool.interface));
  pool.avoid_buggy_ips = optional_bool(value, "avoidBuggyIPs", field + ".avoidBuggyIPs", false);
  pool.auto_assign = optional_bool(value, "autoAssign", field + ".autoAssign", true);
  pool.namespaces = namespace_list(value, field + ".namespaces");
  if (pool.network.family() != pool.range.family())
    fail(field, "", fmt::format("network {} is {} but range {} is {}: a pool holds one family",
                                pool.network.to_string(), ip::to_string(pool.network.family()),
                                pool.range.to_string(), ip::to_string(pool.range.family())));
  for (const auto& reserved : kReserved) {
    ip::Range block = ip::Range::parse(reserved.range);
    if (pool.network.overlaps(block))
      fail(field + ".network", "",
           fmt::format("{} holds {} addresses ({}): they cannot be load-balancer IPs",
                       pool.network.to_string(), reserved.what, block.to_string()));
  }
  if (!pool.network.contains(pool.range))
    fail(field + ".range", "",
         fmt::format("{} is not inside network {} (range holds the dynamic IPs and must lie "
                     "inside network, which holds every IP of the pool)",
                     pool.range.to_string(), pool.network.to_string()));
  return pool;
}

KeepalivedSettings parse_keepalived(const json& value) {
  KeepalivedSettings settings;
  settings.email = optional_string(value, "email", "keepalived.email");
  settings.email_from = optional_string(value, "emailFrom", "keepalived.emailFrom");
  settings.email_server = optional_string(value, "emailServer", "keepalived.emailServer");
  if (!settings.email.empty() && !std::regex_match(settings.email, kEmail))
    fail("keepalived.email", "", fmt::format("'{}' is not an email address", settings.email));
  if (!settings.email_from.empty() && !std::regex_match(settings.email_from, kEmail))
    fail("keepalived.emailFrom", "", fmt::format("'{}' is not an email address", settings.email_from));
  if (!settings.email_server.empty() && !std::regex_match(settings.email_server, kHost))
    fail("keepalived.emailServer", "", fmt::format("'{}' is not a host name or IP", settings.email_server));
  if (value.contains("emailServerTimeout") && !value["emailServerTimeout"].is_null()) {
    const json& timeout = value["emailServerTimeout"];
    std::string text = timeout.is_string() ? timeout.get<std::string>()
                                           : timeout.dump(-1, ' ', false, json::error_handler_t::replace);
    if (!text.empty()) {
      bool digits = text.size() <= 4 && std::all_of(text.begin(), text.end(), ::isdigit);
      if (!digits || std::stoi(text) == 0)
        fail("keepalived.emailServerTimeout", "", fmt::format("'{}' is not a number of seconds", text));
      settings.email_server_timeout = std::stoi(text);
    }
  }
  if (!settings.email.empty() && settings.email_server.empty())
    fail("keepalived.emailServer", "", "is required when keepalived.email is set");
  return settings;
}

} // namespace

const Pool* Config::find(std::string_view name) const {
  auto it = std::lower_bound(pools.begin(), pools.end(), name,
                             [](const Pool& pool, std::string_view n) { return pool.name < n; });
  return it != pools.end() && it->name == name ? &*it : nullptr;
}

Config parse_config(const json& document) {
  if (!document.is_object()) fail("config", "", "must be a JSON object with \"pools\"");
  Config config;
  const json& pools = section(document, "pools");
  if (pools.empty()) fail("pools", "", "at least one pool is required");
  for (const auto& [name, value] : pools.items()) config.pools.push_back(parse_pool(name, value));
  std::sort(config.pools.begin(), config.pools.end(),
            [](const Pool& a, const Pool& b) { return a.name < b.name; });
  // Overlap: sort networks by start and compare neighbours, O(n log n).
  std::vector<const Pool*> by_start;
  for (const auto& pool : config.pools) by_start.push_back(&pool);
  std::sort(by_start.begin(), by_start.end(), [](const Pool* a, const Pool* b) {
    return a->network < b->network;
  });
  for (std::size_t i = 1; i < by_start.size(); ++i) {
    const Pool* a = by_start[i - 1];
    const Pool* b = by_start[i];
    if (a->network.overlaps(b->network))
      fail("pools." + b->name + ".network", "",
           fmt::format("{} overlaps pool '{}' ({})", b->network.to_string(), a->name,
                       a->network.to_string()));
  }
  // A namespace names one pool per family, so that a Service there knows which to use.
  std::map<std::pair<std::string, ip::Family>, const Pool*> by_namespace;
  for (const auto& pool : config.pools) {
    for (const auto& ns : pool.namespaces) {
      auto [it, added] = by_namespace.emplace(std::make_pair(ns, pool.family()), &pool);
      if (!added)
        fail("pools." + pool.name + ".namespaces", "",
             fmt::format("namespace {} is listed by pool '{}' too, of the same family ({}): a "
                         "namespace may name one pool per family",
                         ns, it->second->name, ip::to_string(pool.family())));
    }
  }
  config.keepalived = parse_keepalived(section(document, "keepalived"));
  const json& haproxy = section(document, "haproxy");
  config.haproxy.global = raw_lines(haproxy, "global", "haproxy.global");
  config.haproxy.defaults = raw_lines(haproxy, "defaults", "haproxy.defaults");
  config.haproxy.tcpfront = raw_lines(haproxy, "tcpfront", "haproxy.tcpfront");
  config.haproxy.httpfront = raw_lines(haproxy, "httpfront", "haproxy.httpfront");
  config.haproxy.tcpback = raw_lines(haproxy, "tcpback", "haproxy.tcpback");
  config.haproxy.httpback = raw_lines(haproxy, "httpback", "haproxy.httpback");
  const json& nginx = section(document, "nginx");
  config.nginx.global = raw_lines(nginx, "global", "nginx.global");
  config.nginx.http = raw_lines(nginx, "http", "nginx.http");
  config.nginx.proxy = raw_lines(nginx, "proxy", "nginx.proxy");
  return config;
}

Config parse_config_text(std::string_view text, std::string_view source) {
  json document;
  std::string_view rest = text;
  while (!rest.empty() && std::isspace(static_cast<unsigned char>(rest.front()))) rest.remove_prefix(1);
  if (!rest.empty() && rest.front() == '{') document = parse_json(text, source, kConfigLimits);
  else document = yaml_to_json(text, source, kConfigLimits);
  try {
    return parse_config(document);
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", source, e.what()));
  }
}

Config parse_config_map(const json& config_map) {
  auto text_at = [&](const json::json_pointer& pointer) {
    return config_map.contains(pointer) && config_map[pointer].is_string() ? config_map[pointer].get<std::string>()
                                                                           : std::string();
  };
  std::string ns = text_at("/metadata/namespace"_json_pointer);
  std::string name = text_at("/metadata/name"_json_pointer);
  std::string source = fmt::format("ConfigMap {}/{}", ns, name);
  const json* data = config_map.contains("data") ? &config_map["data"] : nullptr;
  if (data == nullptr || !data->is_object() || !data->contains("config") || !(*data)["config"].is_string())
    fail(source, "data.config", "is required and must hold the config document as a string");
  return parse_config_text((*data)["config"].get<std::string>(), source + ": data.config");
}

Config load_config_file(const std::string& path) {
  std::string text = read_file(path, kConfigLimits.max_bytes);
  const std::string name = path == "-" ? "<stdin>" : path;
  std::vector<json> items = flatten_items(parse_documents(text, name, kConfigLimits));
  for (const auto& item : items) {
    if (item.is_object() && item.contains("kind") && item["kind"] == "ConfigMap") return parse_config_map(item);
  }
  if (items.size() != 1) fail(name, "", "expected one config document or a ConfigMap carrying it");
  try {
    return parse_config(items.front());
  } catch (const Error& e) {
    throw Error(fmt::format("{}: {}", name, e.what()));
  }
}

} // namespace k8slb::pool
