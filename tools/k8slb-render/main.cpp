// k8slb-render: writes haproxy.cfg, nginx.conf or keepalived.conf for assigned Services.
//
//   k8slb-allocate --config pools.json -f svc.yml | k8slb-render haproxy
//   k8slb-watch --events services endpointslices nodes configmap/k8slb-system/global |
//     k8slb-render all --stream --node "$NODE_NAME" | k8slb-apply node
#include <chrono>
#include <filesystem>
#include <fstream>
#include <iostream>
#include <malloc.h>
#include <optional>

#include <fmt/format.h>

#include "k8slb/allocate.hpp"
#include "k8slb/documents.hpp"
#include "k8slb/error.hpp"
#include "k8slb/model.hpp"
#include "k8slb/node.hpp"
#include "k8slb/pool.hpp"
#include "k8slb/render.hpp"
#include "k8slb/tool.hpp"

namespace {

using k8slb::json;

struct Options {
  std::string what = "haproxy"; // haproxy | nginx | keepalived | all
  std::string proxy;            // for `keepalived` and `all`: haproxy | nginx | kubeproxy
  std::vector<std::string> files;
  std::string config_file;
  std::string config_map = "k8slb-system/global";
  std::string output_dir;
  bool stream = false;
  std::string node_name;
  std::string node_selector = "type=loadBalancer";
  std::string interfaces_file; // `ip -j addr` JSON; empty: this machine's interfaces
  std::string vrrp_password_file;
  bool no_cert_check = false;
  bool events = false;       // --stream: each line carries Warning Events for the Services' problems
  std::string previous_file; // the installed keepalived.conf: last good interfaces per pool
  std::string previous_haproxy; // the installed haproxy.cfg: the shared ports' slots
  std::vector<std::string> shared_ports; // decimal port numbers (CLI11 would read 0100 as octal)
  k8slb::render::Settings settings;
};

bool matches_selector(const k8slb::model::Node& node, const std::string& selector) {
  if (selector.empty()) return true;
  // Comma-separated key=value terms (the form node selectors take in the manifests).
  std::size_t start = 0;
  while (start <= selector.size()) {
    std::size_t end = selector.find(',', start);
    if (end == std::string::npos) end = selector.size();
    std::string term = selector.substr(start, end - start);
    auto eq = term.find('=');
    std::string key = term.substr(0, eq);
    auto it = node.labels.find(key);
    if (it == node.labels.end()) return false;
    if (eq != std::string::npos && it->second != term.substr(eq + 1)) return false;
    start = end + 1;
  }
  return true;
}

// Renders one input's objects; `errors` (the input's own, on entry) gets what was left out
// (objects that could not be read, a broken ConfigMap when an earlier one is kept).
k8slb::render::Output render_items(k8slb::model::Snapshot snapshot, const Options& options,
                                   std::optional<k8slb::pool::Config>& config,
                                   k8slb::render::Input& carried, // previous_interfaces, previous_slots
                                   const std::vector<k8slb::node::Interface>& interfaces,
                                   std::vector<std::string>& errors, json* events = nullptr) {
  errors.insert(errors.end(), snapshot.errors.begin(), snapshot.errors.end());
  if (options.config_file.empty() && snapshot.config_map) {
    try {
      config = k8slb::pool::parse_config_map(*snapshot.config_map);
    } catch (const k8slb::Error& e) {
      if (!config) throw;
      errors.push_back(fmt::format("{} (keeping the previous config)", e.what()));
    }
  }
  if (!config)
    throw k8slb::Error(fmt::format(
        "no config: give --config FILE or include the ConfigMap {} in the input", options.config_map));
  k8slb::render::Input input;
  input.config = *config;
  // The BGP peers' passwords, read at each rendering (a rotated Secret is picked up); a file
  // that cannot be read leaves its peer out (a Problem from the planner).
  if (config->bgp)
    for (const auto& peer : config->bgp->peers)
      if (!peer.password_file.empty()) try {
          input.bgp_passwords[peer.password_file] = k8slb::read_file(peer.password_file, 4096);
        } catch (const k8slb::Error&) {
        }
  input.services = std::move(snapshot.services);
  input.slices = std::move(snapshot.slices);
  for (auto& node : snapshot.nodes)
    if (matches_selector(node, options.node_selector)) input.node.lb_nodes.push_back(std::move(node));
  input.node.node_name = options.node_name;
  input.node.interfaces = interfaces;
  input.settings = options.settings;
  if (!options.no_cert_check && input.settings.proxy != k8slb::render::Proxy::kubeproxy && options.what != "keepalived" && options.what != "bird") {
    input.certificates = k8slb::node::readable_certificates(options.settings.cert_dir);
    input.certificate_files = k8slb::node::read_certificate_files(options.settings.cert_dir);
  }
  input.previous_interfaces = carried.previous_interfaces;
  input.previous_slots = carried.previous_slots;
  auto output = options.what == "all"          ? k8slb::render::render_all(input)
                : options.what == "keepalived" ? k8slb::render::render_keepalived(input)
                : options.what == "bird"       ? k8slb::render::render_bird(input)
                                               : k8slb::render::render_proxy(input);
  for (const auto& [pool, interface] : output.interfaces) carried.previous_interfaces[pool] = interface;
  if (options.settings.proxy == k8slb::render::Proxy::haproxy && options.what != "keepalived" && options.what != "bird")
    carried.previous_slots = output.slots;
  if (events) {
    // What this node leaves out, as Events on the Services (posted by `k8slb-apply events`),
    // and who holds each VIP: {"events": [...], "vips": {"192.0.2.10": [{namespace, name, uid}]}}.
    json& vips = (*events)["vips"] = json::object();
    // render_all has them (output.vips, moved out here: not used after); the others do not.
    const auto by_vip = options.what == "all" ? std::move(output.vips) : k8slb::render::services_by_vip(input);
    for (const auto& [vip, indexes] : by_vip)
      for (std::size_t index : indexes) {
        const auto& service = input.services[index];
        vips[vip].push_back({{"namespace", service.ns}, {"name", service.name}, {"uid", service.uid}});
      }
    json& list = (*events)["events"] = json::array();
    for (const auto& [index, problem] : k8slb::render::service_problems(input, output)) {
      const bool pool = problem.object.rfind("pools.", 0) == 0;
      auto event = k8slb::allocate::make_event(input.services[index], problem.reason, "Warning",
                                               k8slb::describe(pool ? problem.object : "", problem.field, problem.message));
      if (!options.node_name.empty()) event["source"]["host"] = options.node_name;
      list.push_back(std::move(event));
    }
  }
  return output;
}

void write_file(const std::filesystem::path& path, const std::string& content) {
  auto temporary = path;
  temporary += ".tmp";
  {
    std::ofstream out(temporary, std::ios::binary | std::ios::trunc);
    out << content;
    if (!out) throw k8slb::Error(fmt::format("{}: cannot write", temporary.string()));
  }
  std::filesystem::rename(temporary, path);
}

// Prints what was left out; the output was written, so this is success or a partial one.
int report(const k8slb::render::Output& output, const std::vector<std::string>& errors) {
  for (const auto& error : errors) k8slb::tool::error(error);
  for (const auto& problem : output.problems) k8slb::tool::error(problem.to_string());
  return errors.empty() && output.problems.empty() ? k8slb::tool::kExitOk : k8slb::tool::kExitPartial;
}

int run(Options options) {
  // No fastbins: freeing a rendering's documents (a line per change in a stream) otherwise
  // fills them, and glibc's consolidation costs as much as the work (as in k8slb-watch).
  ::mallopt(M_MXFAST, 0);
  options.settings.proxy = k8slb::render::parse_proxy(
      options.what == "keepalived" || options.what == "all" || options.what == "bird"
          ? (options.proxy.empty() ? std::string("haproxy") : options.proxy)
          : options.what);
  if (!options.vrrp_password_file.empty()) {
    std::string password = k8slb::read_file(options.vrrp_password_file);
    while (!password.empty() && (password.back() == '\n' || password.back() == '\r')) password.pop_back();
    options.settings.vrrp_password = password;
  }
  std::optional<k8slb::pool::Config> config;
  if (!options.config_file.empty()) config = k8slb::pool::load_config_file(options.config_file);
  // The last good interface of each pool: from the installed keepalived.conf (--previous, or
  // the one in --output-dir), then from each rendering. The same for the shared ports' slots.
  k8slb::render::Input carried;
  for (const auto& port : options.shared_ports) options.settings.shared_ports.insert(std::stoi(port));
  auto read_previous = [&](std::string file, const char* name, const char* without, auto parse) {
    if (file.empty() && !options.output_dir.empty()) file = (std::filesystem::path(options.output_dir) / name).string();
    if (file.empty() || !std::filesystem::exists(file)) return decltype(parse(std::string())){};
    try {
      return parse(k8slb::read_file(file));
    } catch (const k8slb::Error& e) {
      k8slb::tool::warning(fmt::format("{} ({})", e.what(), without));
      return decltype(parse(std::string())){};
    }
  };
  carried.previous_interfaces = read_previous(options.previous_file, "keepalived.conf", "no last good interfaces",
                                              [](const std::string& text) { return k8slb::render::previous_interfaces(text); });
  carried.previous_slots = read_previous(options.previous_haproxy, "haproxy.cfg", "no previous shared slots",
                                         [](const std::string& text) { return k8slb::render::previous_shared_slots(text); });
  std::vector<k8slb::node::Interface> interfaces =
      options.interfaces_file.empty()
          ? k8slb::node::read_interfaces()
          : k8slb::node::interfaces_from_ip_json(
                k8slb::parse_json(k8slb::read_file(options.interfaces_file), options.interfaces_file));

  if (options.stream) {
    // One line per input document, or per burst of watch events read together (after a
    // List: k8slb-watch --events), rendered from the objects kept. A document that cannot be
    // read or rendered is reported (no line) and the stream goes on.
    k8slb::JsonStreamReader reader(std::cin, "<stdin>");
    k8slb::model::Store store(options.config_map);
    std::optional<std::chrono::system_clock::time_point> batch_started; // the burst's first event read
    bool batch_rendered = false; // the burst holds a change that can reach a rendering
    constexpr auto kRepeatAfter = std::chrono::seconds(30);
    json last_line;                                  // the last line printed, without observedAt
    auto last_written = std::chrono::steady_clock::now();
    bool all_ok = true;
    bool written_any = false;
    k8slb::tool::StageTimer timer;
    while (true) {
      std::vector<std::string> errors;
      json line;
      std::string text; // the line printed
      try {
        auto document = reader.next();
        if (!document) break;
        if (!batch_started) timer.restart(); // a document (or a burst's first event) arrived
        std::optional<std::chrono::system_clock::time_point> seen; // passed on for k8slb-apply node's timing
        const bool from_events = k8slb::model::is_watch_event(*document);
        if (from_events) {
          if (!store.loaded()) throw k8slb::Error(k8slb::list_first_error(reader.name()));
          if (!batch_started) batch_started = std::chrono::system_clock::now();
          try {
            batch_rendered = store.apply(*document) || batch_rendered;
          } catch (const k8slb::Error& e) {
            k8slb::tool::error(fmt::format("{}: {}", reader.name(), e.what()));
            all_ok = false;
          }
          if (reader.ready()) continue;
          seen = std::exchange(batch_started, std::nullopt);
          // A burst that cannot change the line (a new Service before its IP, its
          // EndpointSlice) would render the same line: not rendered, unless that line is due
          // again (kRepeatAfter, below).
          if (!std::exchange(batch_rendered, false) && std::chrono::steady_clock::now() - last_written < kRepeatAfter)
            continue;
        } else {
          seen = k8slb::observed_at(*document);
          batch_started.reset(); // events read before it are in it
          auto objects = k8slb::take_objects({std::move(*document)}, reader.name());
          k8slb::require_objects(objects, reader.name());
          store.load(objects.items);
          errors = std::move(objects.errors);
        }
        timer.mark("read");
        json events;
        auto output = render_items(store.snapshot(), options, config, carried, interfaces, errors,
                                   options.events ? &events : nullptr);
        all_ok = report(output, errors) == k8slb::tool::kExitOk && all_ok;
        json problems = json::array();
        for (const auto& error : errors) problems.push_back(error);
        for (const auto& problem : output.problems) problems.push_back(problem.to_string());
        line = json{{"files", output.files}, {"problems", problems}};
        if (options.events) {
          line["events"] = std::move(events["events"]);
          line["vips"] = std::move(events["vips"]);
        }
        // On events, most changes leave this node's files as they are (an EndpointSlice or a
        // Service without an IP yet, another node's label): the same line again is not
        // printed, unless it was last printed kRepeatAfter ago or more, so that k8slb-apply
        // node tries again what it could not apply (a check that timed out on a busy node).
        timer.mark("render");
        if (from_events && line == last_line && std::chrono::steady_clock::now() - last_written < kRepeatAfter) {
          timer.mark("unchanged");
          timer.flush(0);
          continue;
        }
        // Kept without observedAt, moved rather than copied (at 10,000 Services it is 10 MB).
        last_line = std::move(line);
        last_written = std::chrono::steady_clock::now();
        if (seen) last_line["observedAt"] = k8slb::observed_at_text(*seen);
        text = k8slb::dump_line(last_line);
        last_line.erase("observedAt");
        timer.mark("dump");
      } catch (const k8slb::Error& e) {
        k8slb::tool::error(e.what());
        all_ok = false;
        continue;
      }
      written_any = true;
      if (!k8slb::tool::write_line(text)) break;
      timer.mark("write");
      timer.flush(text.size());
    }
    if (reader.count() == 0) k8slb::require_objects({}, "<stdin>"); // an empty input: throws
    if (!written_any) return k8slb::tool::kExitFailure;
    return all_ok ? k8slb::tool::kExitOk : k8slb::tool::kExitPartial;
  }

  // Everything is read and rendered before the first file is written: an input that holds no
  // object, or cannot be read, writes nothing (an empty config would take every VIP away).
  std::vector<std::string> paths = options.files.empty() ? std::vector<std::string>{"-"} : options.files;
  std::vector<std::string> errors;
  auto objects = k8slb::read_objects(paths);
  errors = std::move(objects.errors);
  auto output = render_items(k8slb::model::make_snapshot(std::move(objects.items), options.config_map), options,
                             config, carried, interfaces, errors);
  if (!options.output_dir.empty()) {
    // The set is written as a whole: the manifest goes first, each file is replaced
    // atomically, and a new manifest naming every file (size, hash) is written last. A set
    // without a manifest, or with files that do not match it, is refused by k8slb-apply.
    const std::filesystem::path dir(options.output_dir);
    std::filesystem::create_directories(dir);
    std::filesystem::remove(dir / k8slb::render::kManifestFile);
    for (const auto& [name, content] : output.files) write_file(dir / name, content);
    write_file(dir / k8slb::render::kManifestFile, k8slb::render::manifest_of(output.files));
  } else {
    if (output.files.size() != 1) {
      // haproxy also writes haproxy-servers.json; stdout gets the config itself.
      std::string main_file = options.what == "nginx" ? "nginx.conf"
                              : options.what == "keepalived" ? "keepalived.conf" : "haproxy.cfg";
      if (options.what == "all" || !output.files.contains(main_file))
        throw k8slb::Error("several files to write: give --output-dir DIR or --stream");
      std::cout << output.files.at(main_file);
      for (const auto& [name, content] : output.files)
        if (name.ends_with(".map"))
          k8slb::tool::warning(fmt::format("{} not printed (the VIPs of a shared port): give --output-dir DIR", name));
    } else if (output.files.empty()) {
      throw k8slb::Error("nothing to render: the config document has no bgp section");
    } else {
      std::cout << output.files.begin()->second;
    }
    std::cout.flush();
  }
  return report(output, errors);
}

} // namespace

int main(int argc, char** argv) {
  k8slb::tool::set_program("k8slb-render");
  CLI::App app{"Render haproxy.cfg, nginx.conf, keepalived.conf and bird.conf for Services that carry a "
               "load-balancer IP. Reads Kubernetes JSON or YAML (Services, EndpointSlices, Nodes, "
               "the config ConfigMap).",
               "k8slb-render"};
  app.set_version_flag("--version", std::string("k8slb-render ") + K8SLB_VERSION);
  Options options;
  app.add_option("what", options.what,
                 "haproxy | nginx | keepalived | bird | all (proxy config + keepalived, + bird.conf "
                 "when the config has a bgp section)")
      ->required()
      ->check(CLI::IsMember({"haproxy", "nginx", "keepalived", "bird", "all"}));
  app.add_option("--proxy", options.proxy,
                 "With `all`/`keepalived`/`bird`: haproxy (default), nginx or kubeproxy")
      ->check(CLI::IsMember({"haproxy", "nginx", "kubeproxy"}));
  app.add_option("-f,--filename", options.files, "Read objects from FILE (JSON or YAML; - is stdin); repeatable")
      ->type_name("FILE");
  app.add_option("-c,--config", options.config_file, "Pools config file (default: the ConfigMap in the input)")
      ->type_name("FILE");
  app.add_option("--config-map", options.config_map, "namespace/name of the config ConfigMap")->capture_default_str();
  app.add_option("-o,--output-dir", options.output_dir, "Write the files into DIR instead of stdout")
      ->type_name("DIR");
  app.add_flag("--stream", options.stream,
               "Read a stream of documents on stdin; write one JSON line {files, problems} per document");
  app.add_flag("--events", options.events,
               "With --stream: each line also carries \"events\", a Warning Event for each problem of a "
               "Service this node serves (for `k8slb-apply events`)")
      ->needs("--stream");
  app.add_option("--node", options.node_name, "This node's name (the VRRP owner computation needs it)")
      ->envname("NODE_NAME");
  app.add_option("--node-selector", options.node_selector, "Labels of the load-balancer Nodes (key=value,...)")
      ->capture_default_str();
  app.add_option("--interfaces", options.interfaces_file,
                 "`ip -j addr` JSON describing the node's interfaces (default: this machine's)")
      ->type_name("FILE");
  app.add_option("--cert-dir", options.settings.cert_dir, "Directory of the pools' certificates")
      ->envname("CERT_PATH")
      ->capture_default_str();
  app.add_flag("--no-cert-check", options.no_cert_check,
               "Render TLS ports without checking that the pool's certificate is in --cert-dir");
  app.add_option("--previous", options.previous_file,
                 "The installed keepalived.conf (default: the one in --output-dir): a pool this node "
                 "cannot place keeps the interface its instances use there")
      ->type_name("FILE");
  app.add_option("--previous-haproxy", options.previous_haproxy,
                 "The installed haproxy.cfg (default: the one in --output-dir): the Services of the "
                 "shared ports keep their slot backends")
      ->type_name("FILE");
  app.add_option("--shared-ports", options.shared_ports,
                 "Ports served by one shared frontend each (wildcard bind, routing by VIP): with "
                 "haproxy a new Service on them is a runtime update, not a reload; with nginx a "
                 "reload of a smaller config")
      ->delimiter(',')
      ->check(CLI::Validator(
          [](std::string& text) {
            const bool decimal = !text.empty() && text.size() <= 5 && text.front() != '0' &&
                                 text.find_first_not_of("0123456789") == std::string::npos;
            return decimal && std::stoi(text) <= 65535 ? std::string()
                                                       : "'" + text + "' is not a port number 1-65535";
          },
          "PORT"))
      ->type_name("PORT,...");
  app.add_option("--runtime-dir", options.settings.runtime_dir, "Directory of sockets and pid files")
      ->capture_default_str();
  app.add_option("--vrid-offset", options.settings.vrid_offset, "Added to every VRRP virtual_router_id")
      ->envname("VRID_OFFSET")
      ->check(CLI::Range(0, 254))
      ->capture_default_str();
  app.add_option("--advert-int", options.settings.advert_int_cs, "VRRP advert interval in centiseconds")
      ->envname("ADVERT_INT")
      ->check(CLI::Range(1, 4095))
      ->capture_default_str();
  app.add_flag("--unicast", options.settings.unicast, "VRRP unicast to the other nodes' InternalIPs");
  app.add_option("--vrrp-password-file", options.vrrp_password_file,
                 "File holding the VRRP password (switches to VRRPv2 with PASS auth)")
      ->type_name("FILE");
  app.add_option("--min-server-slots", options.settings.min_server_slots,
                 "HAProxy server slots per backend, at least")
      ->check(CLI::Range(1, 4096))
      ->capture_default_str();
  app.add_option("--lb-class", options.settings.lb_class,
                 "Render Services of this spec.loadBalancerClass (default: only those without a class)");
  app.add_option("--notify-script", options.settings.notify_script, "keepalived notify script");
  app.add_option("--proxy-check", options.settings.proxy_check,
                 "k8slb-apply's absolute path: keepalived tracks the proxy with `k8slb-apply health` "
                 "and gives the VIPs up while it fails")
      ->type_name("FILE");
  return k8slb::tool::run_main(app, argc, argv, [&] { return run(options); });
}
