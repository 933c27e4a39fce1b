// Pure decisions for k8slb-apply node: plans, server tables, runtime commands.
#include "k8slb/apply.hpp"

#include <algorithm>
#include <cctype>
#include <csignal>
#include <regex>
#include <set>
#include <sstream>

#include <fmt/format.h>

#include "k8slb/ip.hpp"

namespace k8slb::apply {

std::string_view to_string(Daemon daemon) {
  switch (daemon) {
  case Daemon::haproxy: return "haproxy";
  case Daemon::nginx: return "nginx";
  case Daemon::keepalived: return "keepalived";
  case Daemon::bird: return "bird";
  }
  return "?";
}

std::string_view config_file_of(Daemon daemon) {
  switch (daemon) {
  case Daemon::haproxy: return "haproxy.cfg";
  case Daemon::nginx: return "nginx.conf";
  case Daemon::keepalived: return "keepalived.conf";
  case Daemon::bird: return "bird.conf";
  }
  return "?";
}

std::string_view to_string(Action action) {
  switch (action) {
  case Action::none: return "none";
  case Action::start: return "start";
  case Action::runtime_update: return "runtime-update";
  case Action::reload: return "reload";
  }
  return "?";
}

namespace {

std::vector<std::string_view> split_lines(std::string_view text) {
  std::vector<std::string_view> lines;
  while (!text.empty()) {
    auto end = text.find('\n');
    if (end == std::string_view::npos) {
      lines.push_back(text);
      break;
    }
    lines.push_back(text.substr(0, end));
    text.remove_prefix(end + 1);
  }
  return lines;
}

std::vector<std::string_view> split_words(std::string_view text) {
  std::vector<std::string_view> words;
  std::size_t i = 0;
  while (i < text.size()) {
    while (i < text.size() && std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    std::size_t start = i;
    while (i < text.size() && !std::isspace(static_cast<unsigned char>(text[i]))) ++i;
    if (i > start) words.push_back(text.substr(start, i - start));
  }
  return words;
}

bool is_haproxy_name(std::string_view name) {
  if (name.empty() || name.size() > 100) return false;
  return std::all_of(name.begin(), name.end(), [](char c) {
    return std::isalnum(static_cast<unsigned char>(c)) || c == '_' || c == '.' || c == ':' || c == '-';
  });
}

} // namespace

ServerTable parse_server_table(const nlohmann::json& document, std::string_view source) {
  if (!document.is_object()) fail(source, "", "expected an object of backend name -> server list");
  ServerTable table;
  for (const auto& [backend, servers] : document.items()) {
    if (!is_haproxy_name(backend)) fail(source, backend, "not a valid HAProxy backend name");
    if (!servers.is_array()) fail(source, backend, "expected a list of servers");
    auto& slots = table[backend];
    std::set<std::string> names;
    for (std::size_t i = 0; i < servers.size(); ++i) {
      const auto& server = servers[i];
      const std::string where = fmt::format("{}[{}]", backend, i);
      if (!server.is_object()) fail(source, where, "expected an object");
      ServerSlot slot;
      auto name = server.find("name");
      if (name == server.end() || !name->is_string() || !is_haproxy_name(name->get<std::string>()))
        fail(source, where + ".name", "expected a HAProxy server name ([A-Za-z0-9_.:-])");
      slot.name = name->get<std::string>();
      if (!names.insert(slot.name).second) fail(source, where + ".name", "duplicate server name " + slot.name);
      auto address = server.find("address");
      if (address == server.end() || !address->is_string())
        fail(source, where + ".address", "expected an IP address");
      auto parsed = ip::Address::try_parse(address->get<std::string>());
      if (!parsed) fail(source, where + ".address", "'" + address->get<std::string>() + "' is not an IP address");
      slot.address = parsed->to_string();
      auto port = server.find("port");
      if (port == server.end() || !port->is_number_integer() || port->get<long long>() < 0 ||
          port->get<long long>() > 65535)
        fail(source, where + ".port", "expected a port number 0..65535");
      slot.port = port->get<int>();
      auto enabled = server.find("enabled");
      if (enabled == server.end() || !enabled->is_boolean()) fail(source, where + ".enabled", "expected true or false");
      slot.enabled = enabled->get<bool>();
      slots.push_back(std::move(slot));
    }
  }
  return table;
}

std::string normalize_server_lines(std::string_view haproxy_cfg) {
  std::string out;
  for (auto line : split_lines(haproxy_cfg)) {
    auto words = split_words(line);
    if (words.empty()) continue;               // blank lines carry nothing
    if (words.front().starts_with('#')) continue; // nor do comments ("2 ready of 8 slots")
    if (words.front() == "server" && words.size() >= 3) {
      out += "server ";
      out += words[1];
      out += " -";
      for (std::size_t i = 3; i < words.size(); ++i) {
        if (words[i] == "disabled" || words[i] == "enabled") continue;
        out += ' ';
        out += words[i];
      }
    } else {
      for (std::size_t i = 0; i < words.size(); ++i) {
        if (i) out += ' ';
        out += words[i];
      }
    }
    out += '\n';
  }
  return out;
}

std::optional<std::vector<std::string>> runtime_commands(const ServerTable& installed,
                                                         const ServerTable& wanted) {
  if (installed.size() != wanted.size()) return std::nullopt;
  std::vector<std::string> commands;
  for (const auto& [backend, wanted_slots] : wanted) {
    auto found = installed.find(backend);
    if (found == installed.end()) return std::nullopt;
    const auto& installed_slots = found->second;
    if (installed_slots.size() != wanted_slots.size()) return std::nullopt;
    for (std::size_t i = 0; i < wanted_slots.size(); ++i) {
      const auto& before = installed_slots[i];
      const auto& after = wanted_slots[i];
      if (before.name != after.name) return std::nullopt;
      const bool moved = before.address != after.address || before.port != after.port;
      const std::string server = backend + "/" + after.name;
      // A slot being emptied goes to maint first, so no request reaches the old address
      // while it moves; a slot being filled gets its address first, then ready.
      if (moved && !after.enabled && before.enabled)
        commands.push_back(fmt::format("set server {} state maint", server));
      if (moved)
        commands.push_back(fmt::format("set server {} addr {} port {}", server, after.address, after.port));
      if (moved ? after.enabled : before.enabled != after.enabled)
        commands.push_back(fmt::format("set server {} state {}", server, after.enabled ? "ready" : "maint"));
    }
  }
  return commands;
}

bool is_map_file_name(std::string_view name) {
  constexpr std::string_view prefix = "haproxy-p", suffix = ".map";
  if (!name.starts_with(prefix) || !name.ends_with(suffix)) return false;
  auto digits = name.substr(prefix.size(), name.size() - prefix.size() - suffix.size());
  if (digits.empty() || digits.size() > 5 || digits.front() == '0') return false;
  if (!std::all_of(digits.begin(), digits.end(), [](char c) { return c >= '0' && c <= '9'; })) return false;
  return std::stoi(std::string(digits)) <= 65535;
}

MapTable parse_map_file(std::string_view text, std::string_view source) {
  MapTable table;
  int number = 0;
  for (auto line : split_lines(text)) {
    ++number;
    auto words = split_words(line);
    if (words.empty()) continue;
    const std::string where = fmt::format("line {}", number);
    if (words.size() != 2) fail(source, where, "expected \"<IP address> <backend>\"");
    auto key = ip::Address::try_parse(std::string(words[0]));
    if (!key) fail(source, where, fmt::format("'{}' is not an IP address", words[0]));
    if (!is_haproxy_name(words[1])) fail(source, where, "not a valid HAProxy backend name");
    if (!table.emplace(key->to_string(), std::string(words[1])).second)
      fail(source, where, "a second line for " + key->to_string());
  }
  return table;
}

std::optional<MapCommands> map_commands(const MapFiles& installed, const MapFiles& wanted) {
  MapCommands commands;
  for (const auto& [file, entries] : wanted) {
    auto found = installed.find(file);
    if (found == installed.end()) return std::nullopt;
    for (const auto& [key, backend] : found->second)
      if (!entries.contains(key)) commands.before.push_back(fmt::format("del map {} {}", file, key));
    for (const auto& [key, backend] : entries) {
      auto was = found->second.find(key);
      // `add map` on a key already there adds a second entry (the first keeps winning).
      if (was == found->second.end()) commands.after.push_back(fmt::format("add map {} {} {}", file, key, backend));
      else if (was->second != backend) commands.after.push_back(fmt::format("set map {} {} {}", file, key, backend));
    }
  }
  return commands;
}

std::optional<std::string> stats_socket_path(std::string_view haproxy_cfg) {
  bool in_global = false;
  for (auto line : split_lines(haproxy_cfg)) {
    auto words = split_words(line);
    if (words.empty() || words.front().starts_with('#')) continue;
    const bool indented = !line.empty() && std::isspace(static_cast<unsigned char>(line.front()));
    if (!indented) {
      in_global = words.front() == "global";
      continue;
    }
    if (in_global && words.size() >= 3 && words[0] == "stats" && words[1] == "socket") {
      std::string_view path = words[2];
      if (path.starts_with("unix@")) path.remove_prefix(5);
      if (path.starts_with('/')) return std::string(path);
    }
  }
  return std::nullopt;
}

Plan plan_daemon(bool running, const std::optional<std::string>& installed, const std::string& wanted) {
  if (!running) return {Action::start, {}, installed ? "not running" : "first config"};
  if (installed && *installed == wanted) return {Action::none, {}, "unchanged"};
  return {Action::reload, {}, installed ? "config changed" : "no installed config"};
}

Plan plan_haproxy(bool running, const HaproxyFiles& installed, const std::string& wanted_cfg,
                  const std::optional<ServerTable>& wanted_servers, const std::optional<MapFiles>& wanted_maps) {
  if (!running) return {Action::start, {}, installed.cfg ? "not running" : "first config"};
  if (!installed.cfg) return {Action::reload, {}, "no installed config"};
  if (!wanted_maps) return {Action::reload, {}, "map file unreadable"};
  const bool same_cfg = *installed.cfg == wanted_cfg;
  const bool same_maps = installed.maps == *wanted_maps;
  if (same_cfg && same_maps && (!wanted_servers || installed.servers == wanted_servers))
    return {Action::none, {}, "unchanged"};
  if (!installed.servers || !wanted_servers)
    return {Action::reload, {}, same_cfg ? "server table unknown" : "config changed, server table unknown"};
  if (!same_cfg && normalize_server_lines(*installed.cfg) != normalize_server_lines(wanted_cfg))
    return {Action::reload, {}, "config changed"};
  if (!stats_socket_path(wanted_cfg)) return {Action::reload, {}, "servers changed, no stats socket"};
  auto commands = runtime_commands(*installed.servers, *wanted_servers);
  if (!commands) return {Action::reload, {}, "server slots added or removed"};
  auto maps = map_commands(installed.maps, *wanted_maps);
  if (!maps) return {Action::reload, {}, "map file not installed"};
  if (commands->empty() && maps->before.empty() && maps->after.empty()) {
    // The server lines differ but the tables agree: the table does not describe the change.
    if (!same_cfg) return {Action::reload, {}, "server lines changed beyond the server table"};
    return {Action::none, {}, "unchanged"};
  }
  // A VIP's entry goes before its slot is emptied, and comes once its slot is filled.
  const bool servers_changed = !commands->empty();
  commands->insert(commands->begin(), maps->before.begin(), maps->before.end());
  commands->insert(commands->end(), maps->after.begin(), maps->after.end());
  const char* reason = !servers_changed ? "VIPs changed" : maps->before.empty() && maps->after.empty()
                                                                ? "servers changed"
                                                                : "servers and VIPs changed";
  return {Action::runtime_update, std::move(*commands), reason};
}

ProcStatus parse_show_proc(std::string_view text) {
  ProcStatus status;
  enum { master, workers, old_workers, other } section = master;
  for (auto line : split_lines(text)) {
    auto words = split_words(line);
    if (words.empty()) continue;
    if (words.front().starts_with('#')) {
      std::string header(line);
      if (header.find("old workers") != std::string::npos) section = old_workers;
      else if (header.find("workers") != std::string::npos) section = workers;
      else if (header.find("<PID>") != std::string::npos) section = master;
      else section = other;
      continue;
    }
    if (words.size() < 3) continue;
    int pid = 0;
    try {
      pid = std::stoi(std::string(words[0]));
    } catch (const std::exception&) {
      continue;
    }
    if (section == master && words[1] == "master") {
      status.master_pid = pid;
      try {
        status.reloads = std::stoi(std::string(words[2]));
      } catch (const std::exception&) {
      }
    } else if (section == workers && words[1] == "worker") {
      status.workers.push_back(pid);
    } else if (section == old_workers && words[1] == "worker") {
      status.old_workers.push_back(pid);
    }
  }
  return status;
}

std::vector<std::string> split_options(std::string_view text) {
  std::vector<std::string> out;
  for (auto word : split_words(text)) out.emplace_back(word);
  return out;
}

std::optional<std::string> nginx_pid_path(std::string_view nginx_conf) {
  int depth = 0;
  for (auto line : split_lines(nginx_conf)) {
    auto hash = line.find('#');
    if (hash != std::string_view::npos) line = line.substr(0, hash);
    auto words = split_words(line);
    if (depth == 0 && words.size() >= 2 && words[0] == "pid") {
      std::string path(words[1]);
      if (path.ends_with(';')) path.pop_back();
      if (!path.empty()) return path;
    }
    for (char c : line) {
      if (c == '{') ++depth;
      else if (c == '}' && depth > 0) --depth;
    }
  }
  return std::nullopt;
}

bool nginx_listens_on_wildcard(std::string_view nginx_conf) {
  for (auto line : split_lines(nginx_conf)) {
    auto hash = line.find('#');
    if (hash != std::string_view::npos) line = line.substr(0, hash);
    // "server { listen 80; }" on one line too: braces and semicolons end words.
    std::string spaced(line);
    std::replace_if(spaced.begin(), spaced.end(), [](char c) { return c == '{' || c == '}' || c == ';'; }, ' ');
    auto words = split_words(spaced);
    for (std::size_t i = 0; i + 1 < words.size(); ++i) {
      if (words[i] != "listen") continue;
      auto address = words[i + 1];
      // "80", "*:80", "0.0.0.0:80", "[::]:80"; not "192.0.2.10:80", "[2001:db8::1]:80", "unix:..."
      if (address.find_first_not_of("0123456789") == std::string_view::npos || address.starts_with("*:") ||
          address.starts_with("0.0.0.0:") || address.starts_with("[::]:"))
        return true;
    }
  }
  return false;
}

std::chrono::milliseconds restart_delay(int failures) {
  if (failures <= 0) return std::chrono::milliseconds(0);
  long long delay = 1000;
  for (int i = 1; i < failures && delay < 30000; ++i) delay *= 2;
  return std::chrono::milliseconds(std::min(delay, 30000LL));
}

StopPlan stop_plan(Daemon daemon) {
  switch (daemon) {
  case Daemon::keepalived: return {SIGTERM, std::chrono::seconds(5)};
  case Daemon::bird: return {SIGTERM, std::chrono::seconds(5)};
  case Daemon::haproxy: return {SIGUSR1, std::chrono::seconds(15)};
  case Daemon::nginx: return {SIGQUIT, std::chrono::seconds(15)};
  }
  return {SIGTERM, std::chrono::seconds(5)};
}

std::optional<std::string> keepalived_hold_reason(const std::vector<DaemonResult>& earlier) {
  for (const auto& result : earlier) {
    if (result.daemon == Daemon::keepalived || result.daemon == Daemon::bird || result.ok) continue;
    return fmt::format("{} did not take its new config", to_string(result.daemon));
  }
  return std::nullopt;
}

std::string checker_summary(std::string_view output, const std::vector<std::pair<std::string, std::string>>& names,
                            std::size_t max_size) {
  std::string text(output);
  auto by_length = names;
  std::sort(by_length.begin(), by_length.end(), [](const auto& a, const auto& b) { return a.first.size() > b.first.size(); });
  for (const auto& [from, to] : by_length) {
    if (from.empty()) continue;
    for (auto at = text.find(from); at != std::string::npos; at = text.find(from, at + to.size()))
      text.replace(at, from.size(), to);
  }
  // nginx: "2026/11/28 12:43:04 [emerg] 8122#8122: message" or "nginx: [emerg] message";
  // HAProxy: "[ALERT]    (8114) : config : message".
  static const std::regex nginx_line(R"(^(?:\d{4}/\d\d/\d\d \d\d:\d\d:\d\d |nginx: )\[(\w+)\] (?:\d+#\d+: )?(.*)$)");
  static const std::regex haproxy_line(R"(^\[(\w+)\]\s*\(\d+\)\s*:\s*(.*)$)");
  static const std::regex summary_line(
      R"(Error\(s\) found in configuration file|Fatal errors found in configuration|configuration file .* test failed)");
  std::vector<std::string> kept, summaries;
  std::istringstream lines(text);
  for (std::string line; std::getline(lines, line);) {
    while (!line.empty() && std::isspace(static_cast<unsigned char>(line.back()))) line.pop_back();
    line.erase(0, std::min(line.size(), line.find_first_not_of(" \t")));
    if (line.empty()) continue;
    std::smatch match;
    if (std::regex_match(line, match, nginx_line) || std::regex_match(line, match, haproxy_line)) {
      if (match[1] == "NOTICE") continue; // HAProxy's version banner
      line = "[" + match[1].str() + "] " + match[2].str();
    }
    auto& list = std::regex_search(line, summary_line) ? summaries : kept;
    if (std::find(list.begin(), list.end(), line) == list.end()) list.push_back(line);
  }
  if (kept.empty()) kept = std::move(summaries);
  std::string out;
  for (const auto& line : kept) out += (out.empty() ? "" : "; ") + line;
  if (out.size() > max_size) {
    std::size_t cut = max_size > 3 ? max_size - 3 : 0;
    while (cut > 0 && (static_cast<unsigned char>(out[cut]) & 0xC0) == 0x80) --cut; // UTF-8
    out = out.substr(0, cut) + "...";
  }
  return out;
}

nlohmann::json rejected_config_events(const ApplyResult& result, const nlohmann::json& vips) {
  nlohmann::json events = nlohmann::json::array();
  if (!vips.is_object()) return events;
  auto text = [](const nlohmann::json& object, const char* key) {
    auto found = object.find(key);
    return found != object.end() && found->is_string() ? found->get<std::string>() : std::string();
  };
  for (const auto& daemon : result.daemons) {
    if (daemon.rejected.empty()) continue;
    std::set<std::string> seen; // a Service with two VIPs gets one Event
    for (const auto& [vip, services] : vips.items()) {
      if (!services.is_array()) continue;
      for (const auto& service : services) {
        if (!service.is_object()) continue;
        const std::string ns = text(service, "namespace"), name = text(service, "name");
        if (ns.empty() || name.empty() || !seen.insert(ns + "/" + name).second) continue;
        events.push_back(
            {{"apiVersion", "v1"},
             {"kind", "Event"},
             {"metadata", {{"namespace", ns}, {"generateName", name + "."}}},
             {"involvedObject",
              {{"apiVersion", "v1"}, {"kind", "Service"}, {"namespace", ns}, {"name", name}, {"uid", text(service, "uid")}}},
             {"reason", "ConfigRejected"},
             {"message", fmt::format("{} rejected by `{} {}`, the node keeps its running config: {}",
                                     config_file_of(daemon.daemon), to_string(daemon.daemon),
                                     daemon.daemon == Daemon::haproxy ? "-c" : "-t", daemon.rejected)},
             {"type", "Warning"},
             {"source", {{"component", "k8slb"}}},
             {"reportingComponent", "k8slb"}});
      }
    }
  }
  return events;
}

nlohmann::json ApplyResult::to_json() const {
  nlohmann::json actions = nlohmann::json::object();
  for (const auto& daemon : daemons)
    actions[std::string(to_string(daemon.daemon))] =
        daemon.held ? "held" : daemon.ok ? std::string(to_string(daemon.action)) : "failed";
  nlohmann::json list = nlohmann::json::array();
  for (const auto& problem : problems)
    list.push_back({{"object", problem.object},
                    {"field", problem.field},
                    {"reason", problem.reason},
                    {"message", problem.message}});
  return {{"actions", actions}, {"problems", list}};
}

} // namespace k8slb::apply
