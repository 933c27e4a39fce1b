// nginx.conf, printed from the ProxyPlan: stream {} for layer 4, http {} for http mode.

#include <algorithm>
#include <set>
#include <sstream>

#include <fmt/format.h>
#include <fmt/ranges.h>

#include "detail.hpp"
#include "k8slb/render_model.hpp"
#include "printers.hpp"

namespace k8slb::render::detail {

namespace {

// Client connections each worker can take besides its listeners (each proxied client takes two).
constexpr std::size_t kNginxClientConnections = 4096;

// The upstream of a shared port's destinations that are no VIP. Not a port id: those end in a
// port number (or _udp, _sctp).
constexpr std::string_view kNoVipUpstream = "k8slb_no_vip";

// The variable a shared port's geo block sets: the upstream of the connection's destination.
std::string shared_variable(int port) { return fmt::format("k8slb_shared_{}", port); }

// True when a line of nginx.global starts with the directive (or block) `word`.
bool opens(const std::string& text, std::string_view word) {
  auto start = text.find_first_not_of(" \t");
  const auto end = start + word.size();
  return start != std::string::npos && text.compare(start, word.size(), word) == 0 &&
         (text.size() == end || text[end] == ' ' || text[end] == '\t' || text[end] == '{' || text[end] == ';');
}

std::string lower(std::string_view text) {
  std::string out(text);
  for (char& c : out)
    if (c >= 'A' && c <= 'Z') c = static_cast<char>(c - 'A' + 'a');
  return out;
}

// Header names (lower case) that `proxy_set_header NAME ...;` statements in `lines` set.
std::set<std::string> headers_set(const std::vector<std::string>& lines) {
  std::set<std::string> names;
  for (const auto& text : lines) {
    std::size_t start = 0;
    while (start < text.size()) {
      auto end = text.find(';', start);
      if (end == std::string::npos) end = text.size();
      std::istringstream statement(text.substr(start, end - start));
      std::string directive, name;
      if (statement >> directive >> name && directive == "proxy_set_header") names.insert(lower(name));
      start = end + 1;
    }
  }
  return names;
}

// The request headers k8slb sets for the pods, unless the document sets them.
const std::vector<std::pair<std::string, std::string>> kOurHeaders = {
    {"Host", "$host"},
    {"X-Forwarded-For", "$proxy_add_x_forwarded_for"},
    {"X-Forwarded-Proto", "$scheme"},
};

} // namespace

std::string print_nginx(const ProxyPlan& plan, const pool::Config& config, const Settings& settings) {
  std::string out;
  auto line = [&](std::string_view text) {
    out += text;
    out += '\n';
  };
  auto upstream = [&](const PortPlan& port, std::string_view indent) {
    line(fmt::format("{}upstream {} {{", indent, port.id()));
    for (const auto& server : port.servers) {
      if (!server.enabled) continue;
      line(fmt::format("{}  server {}{};", indent, host_port(server.address, server.port),
                       port.check ? "" : " max_fails=0"));
    }
    if (port.filled == 0) line(fmt::format("{}  server 127.0.0.1:1 down; # no ready endpoint", indent));
    line(fmt::format("{}}}", indent));
  };
  auto access = [&](const std::vector<ip::Range>& ranges, std::string_view indent) {
    if (ranges.empty()) return;
    for (const auto& range : ranges) line(fmt::format("{}allow {};", indent, range.to_string()));
    line(fmt::format("{}deny all;", indent));
  };
  // A shared port (Settings.shared_ports): one server on the wildcard address per family in use,
  // which passes each connection to the upstream its destination (a VIP) names in a geo block;
  // an address that is no VIP of the port gets k8slb_no_vip, whose one server is down.
  // `body` prints what the server does with the upstream.
  auto shared_servers = [&](Mode mode, const auto& body) {
    if (std::none_of(plan.shared.begin(), plan.shared.end(), [&](const SharedPort& shared) { return shared.mode == mode; }))
      return;
    line("");
    line(fmt::format("  upstream {} {{", kNoVipUpstream));
    line("    server 127.0.0.1:1 down; # a destination that is no VIP of a shared port");
    line("  }");
    for (const auto& shared : plan.shared) {
      if (shared.mode != mode || (!shared.v4 && !shared.v6)) continue; // no pool: nothing to listen on
      std::vector<std::pair<ip::Address, std::string>> routes;
      for (int index : shared.slots)
        if (index >= 0)
          for (const auto& vip : plan.ports[index].vips) routes.emplace_back(vip.address, plan.ports[index].id());
      std::sort(routes.begin(), routes.end());
      line("");
      line(fmt::format("  # port {}: shared by {} VIPs, routed by destination address", shared.port, routes.size()));
      line(fmt::format("  geo $server_addr ${} {{", shared_variable(shared.port)));
      line(fmt::format("    default {};", kNoVipUpstream));
      for (const auto& [address, id] : routes) line(fmt::format("    {} {};", address.to_string(), id));
      line("  }");
      line("  server {");
      // http: the default server of the wildcard, so that a server of the document's nginx.http
      // that listens there too is refused loudly instead of taking the VIPs' requests.
      const std::string_view flags = mode == Mode::http ? " default_server" : "";
      if (shared.v4) line(fmt::format("    listen 0.0.0.0:{}{};", shared.port, flags));
      if (shared.v6) line(fmt::format("    listen [::]:{}{};", shared.port, flags));
      body(shared);
      line("  }");
    }
  };
  auto certificate = [&](const Vip& vip, std::string_view indent) {
    line(fmt::format("{}ssl_certificate {}/{}.pem;", indent, settings.cert_dir, vip.pool));
    line(fmt::format("{}ssl_certificate_key {}/{}.key;", indent, settings.cert_dir, vip.pool));
  };

  line("# Generated by k8slb-render; do not edit.");
  line(fmt::format("load_module {};", settings.stream_module));
  line(fmt::format("pid {}/nginx.pid;", settings.runtime_dir));
  line("error_log stderr notice;");
  for (const auto& text : config.nginx.global) line(text);
  // Every listening socket takes one of a worker's connections: size them from the listeners,
  // with room for client and upstream connections, unless nginx.global says otherwise.
  std::size_t listeners = plan.redirects.size();
  for (const auto& port : plan.ports) listeners += port.vips.size();
  const std::size_t connections = listeners + kNginxClientConnections;
  const auto& global = config.nginx.global;
  if (std::none_of(global.begin(), global.end(), [](const std::string& text) { return opens(text, "worker_rlimit_nofile"); }))
    line(fmt::format("worker_rlimit_nofile {};", connections + 256));
  if (std::none_of(global.begin(), global.end(), [](const std::string& text) { return opens(text, "events"); }))
    line(fmt::format("events {{ worker_connections {}; }}", connections));

  line("");
  line("stream {");
  bool first = true;
  for (const auto& port : plan.ports) {
    if (port.mode != Mode::tcp) continue;
    if (!first) line("");
    first = false;
    line(fmt::format("  # {} port {} {}{}", port.service(), port.port, to_string(port.protocol),
                     port.slot.empty() ? "" : " (shared)"));
    upstream(port, "  ");
    if (!port.slot.empty()) continue; // served by its port's shared server
    for (const auto& vip : port.vips) {
      line("  server {");
      line(fmt::format("    listen {}{}{};", host_port(vip.address, port.port),
                       port.protocol == Protocol::udp ? " udp" : "", port.tls ? " ssl" : ""));
      access(port.source_ranges, "    ");
      if (port.tls) certificate(vip, "    ");
      line(fmt::format("    proxy_pass {};", port.id()));
      if (port.tls_backend) {
        line("    proxy_ssl on;");
        line("    proxy_ssl_verify off;");
      }
      line("  }");
    }
  }
  shared_servers(Mode::tcp, [&](const SharedPort& shared) {
    line(fmt::format("    proxy_pass ${};", shared_variable(shared.port)));
  });
  line("}");

  const bool any_http = std::any_of(plan.ports.begin(), plan.ports.end(),
                                    [](const PortPlan& port) { return port.mode == Mode::http; }) ||
                        std::any_of(plan.shared.begin(), plan.shared.end(),
                                    [](const SharedPort& shared) { return shared.mode == Mode::http; });
  if (!any_http && plan.redirects.empty() && config.nginx.http.empty()) return out;

  // Host, X-Forwarded-For and X-Forwarded-Proto reach the pods once: a header the document
  // sets (nginx.proxy, or nginx.http) replaces ours. nginx inherits proxy_set_header from http {}
  // only into a location that sets none itself, so ours go where the document's go: into each
  // location when nginx.proxy sets headers or nothing sets any, else into http {}.
  const auto proxy_headers = headers_set(config.nginx.proxy);
  const auto http_headers = headers_set(config.nginx.http);
  const bool headers_in_http = proxy_headers.empty() && !http_headers.empty();
  auto our_headers = [&](const std::set<std::string>& theirs, std::string_view indent) {
    for (const auto& [name, value] : kOurHeaders)
      if (!theirs.count(lower(name))) line(fmt::format("{}proxy_set_header {} {};", indent, name, value));
  };

  line("");
  line("http {");
  if (headers_in_http) our_headers(http_headers, "  ");
  if (plan.nginx_names_bucket > 0) line(fmt::format("  server_names_hash_bucket_size {};", plan.nginx_names_bucket));
  for (const auto& text : config.nginx.http) line("  " + text);
  for (const auto& port : plan.ports) {
    if (port.mode != Mode::http) continue;
    line("");
    line(fmt::format("  # {} port {}{}", port.service(), port.port, port.slot.empty() ? "" : " (shared)"));
    upstream(port, "  ");
    if (!port.slot.empty()) continue; // served by its port's shared server
    for (const auto& vip : port.vips) {
      // The first server of a listen address is its default: the one with the pool's
      // certificate. On a TLS port every other certificate of the cert dir gets a server of its
      // own, chosen by SNI (server_name); a name an earlier one has is left to that one.
      std::set<std::string> names_used;
      for (std::size_t i = 0; i <= (port.tls ? plan.sni.size() : 0); ++i) {
        const SniCertificate* sni = i == 0 ? nullptr : &plan.sni[i - 1];
        std::vector<std::string> names;
        if (sni) {
          if (sni->file == vip.pool + ".pem") continue;
          for (const auto& name : sni->names)
            if (names_used.insert(name).second) names.push_back(name);
          if (names.empty()) continue;
        }
        line("  server {");
        line(fmt::format("    listen {}{};", host_port(vip.address, port.port), port.tls ? " ssl" : ""));
        if (sni) {
          line(fmt::format("    server_name {};", fmt::join(names, " ")));
          line(fmt::format("    ssl_certificate {}/{};", settings.cert_dir, sni->file));
          line(fmt::format("    ssl_certificate_key {}/{};", settings.cert_dir, sni->key_file));
        }
        access(port.source_ranges, "    ");
        if (port.tls && !sni) certificate(vip, "    ");
        line("    location / {");
        line(fmt::format("      proxy_pass {}://{};", port.tls_backend ? "https" : "http", port.id()));
        if (!headers_in_http) our_headers(proxy_headers, "      ");
        if (port.tls_backend) line("      proxy_ssl_verify off;");
        for (const auto& text : config.nginx.proxy) line("      " + text);
        line("    }");
        line("  }");
      }
    }
  }
  shared_servers(Mode::http, [&](const SharedPort& shared) {
    line("    location / {");
    line(fmt::format("      proxy_pass http://${};", shared_variable(shared.port)));
    if (!headers_in_http) our_headers(proxy_headers, "      ");
    for (const auto& text : config.nginx.proxy) line("      " + text);
    line("    }");
  });
  for (const auto& redirect : plan.redirects) {
    line("");
    line(fmt::format("  # {}/{}: http -> https", redirect.ns, redirect.name));
    line("  server {");
    line(fmt::format("    listen {};", host_port(redirect.vip.address, 80)));
    access(redirect.source_ranges, "    ");
    if (redirect.to_port == 443) line("    return 301 https://$host$request_uri;");
    else line(fmt::format("    return 301 https://$host:{}$request_uri;", redirect.to_port));
    line("  }");
  }
  line("}");
  return out;
}

} // namespace k8slb::render::detail
