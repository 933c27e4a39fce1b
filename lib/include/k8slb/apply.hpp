#pragma once
// Applying rendered configs on a node: check each changed file with its daemon's own checker,
// install it atomically, then start, reload or update the daemon at run time.
//
// The decisions (what a daemon needs: nothing, a start, a runtime update, a reload; which
// HAProxy runtime commands turn one server table into another) are pure functions below.
// NodeApplier is the edge: files, child processes, signals and sockets.

#include <chrono>
#include <map>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include <nlohmann/json.hpp>

#include "k8slb/error.hpp"
#include "k8slb/render.hpp"
#include "k8slb/tool.hpp"

namespace k8slb::apply {

enum class Daemon { haproxy, nginx, keepalived, bird };
std::string_view to_string(Daemon daemon);
// The file a daemon reads: "haproxy.cfg", "nginx.conf", "keepalived.conf", "bird.conf".
std::string_view config_file_of(Daemon daemon);
inline constexpr const char* kHaproxyServersFile = "haproxy-servers.json";

enum class Action { none, start, runtime_update, reload };
std::string_view to_string(Action action);

// ---- HAProxy server slots (haproxy-servers.json, written by k8slb-render) -------------------

struct ServerSlot {
  std::string name;
  std::string address; // canonical IP text
  int port = 0;
  bool enabled = false;
  bool operator==(const ServerSlot&) const = default;
};
// backend name -> its server slots, in config order.
using ServerTable = std::map<std::string, std::vector<ServerSlot>>;

// Parses haproxy-servers.json ({"<backend>": [{"name","address","port","enabled"}]}).
// Names must be HAProxy identifiers ([A-Za-z0-9_.:-]), addresses IPs, ports 0..65535, so
// nothing else can reach the runtime socket. Throws Error("<source>: <backend>[i].field: ...").
ServerTable parse_server_table(const nlohmann::json& document, std::string_view source);

// haproxy.cfg with comment lines dropped and, in each `server` line, the address and the
// `disabled`/`enabled` keyword blanked: two configs that normalize equal differ only in what
// the runtime API can change.
std::string normalize_server_lines(std::string_view haproxy_cfg);

// Runtime API commands that turn `installed` into `wanted`: `set server B/S addr A port P`
// for a moved slot, `set server B/S state ready|maint` for a slot whose state or address
// changed. nullopt when the backends or slot names differ (then only a reload will do).
std::optional<std::vector<std::string>> runtime_commands(const ServerTable& installed,
                                                         const ServerTable& wanted);

// A shared port's map file (k8slb-render --shared-ports): "haproxy-p<port>.map", lines
// "<VIP> <slot backend>". MapFiles: file name -> (VIP -> backend).
using MapTable = std::map<std::string, std::string>;
using MapFiles = std::map<std::string, MapTable>;
bool is_map_file_name(std::string_view name);
// Keys must be IP addresses (re-printed), values HAProxy identifiers, one pair per line, so
// nothing else can reach the runtime socket. Throws Error("<source>: line N: ...").
MapTable parse_map_file(std::string_view text, std::string_view source);
// The runtime commands that turn the installed maps into the wanted ones, in two parts:
// `before` (entries that go: before their backends are emptied) and `after` (entries that come
// or change: once their backends are filled). nullopt when a wanted file is not installed.
struct MapCommands {
  std::vector<std::string> before, after;
};
std::optional<MapCommands> map_commands(const MapFiles& installed, const MapFiles& wanted);

// The `stats socket <path>` of the global section (a unix socket path), if any.
std::optional<std::string> stats_socket_path(std::string_view haproxy_cfg);

// ---- Plans -------------------------------------------------------------------------------

struct Plan {
  Action action = Action::none;
  std::vector<std::string> commands; // runtime API commands, for Action::runtime_update
  std::string reason;                // why, in a few words, for logs
  bool operator==(const Plan&) const = default;
};

// nginx and keepalived: start when not running, reload when the file changed, else nothing.
Plan plan_daemon(bool running, const std::optional<std::string>& installed, const std::string& wanted);

// HAProxy: as plan_daemon, but a change in server addresses and states only (see
// normalize_server_lines) with server tables for both sides and a stats socket becomes a
// runtime update instead of a reload.
struct HaproxyFiles {
  std::optional<std::string> cfg;       // haproxy.cfg; nullopt when absent
  std::optional<ServerTable> servers;   // haproxy-servers.json parsed; nullopt when absent/bad
  MapFiles maps;                        // the wanted map files as installed (absent/bad: left out)
};
// `wanted_maps`: the set's map files; nullopt when one does not parse (a reload then decides).
Plan plan_haproxy(bool running, const HaproxyFiles& installed, const std::string& wanted_cfg,
                  const std::optional<ServerTable>& wanted_servers,
                  const std::optional<MapFiles>& wanted_maps = MapFiles{});

// ---- HAProxy master CLI `show proc` --------------------------------------------------------

struct ProcStatus {
  int master_pid = 0;
  int reloads = 0;                 // master's reload counter
  std::vector<int> workers;        // current workers
  std::vector<int> old_workers;    // workers still finishing after a reload
};
ProcStatus parse_show_proc(std::string_view text);

// ---- Small pure helpers ------------------------------------------------------------------

// "-d -V" -> {"-d", "-V"}: the original's KA_OPTIONS / HP_OPTIONS / NX_OPTIONS, split on
// white space (no shell, no quotes).
std::vector<std::string> split_options(std::string_view text);

// The path of nginx.conf's top-level `pid` directive, if any.
std::optional<std::string> nginx_pid_path(std::string_view nginx_conf);
// True when nginx.conf listens on a wildcard address (`listen 80`, `*:80`, `0.0.0.0:80`,
// `[::]:80`; a shared port): one socket serves many VIPs, so a new VIP's connection can reach an
// old worker during a reload.
bool nginx_listens_on_wildcard(std::string_view nginx_conf);

// Delay before restarting a daemon that died `failures` times in a row: 1 s doubling to 30 s.
std::chrono::milliseconds restart_delay(int failures);

// How a daemon is stopped gracefully, and how long to wait for it before SIGKILL: keepalived
// by SIGTERM (priority-0 adverts, the backups take the VIPs over at once), HAProxy's master by
// SIGUSR1 (soft stop: the workers stop listening and finish their connections, bounded by
// hard-stop-after), nginx by SIGQUIT (graceful shutdown), bird by SIGTERM (it closes its BGP
// sessions with a Cease: the peers drop its routes at once).
struct StopPlan {
  int signal;
  std::chrono::milliseconds wait;
};
StopPlan stop_plan(Daemon daemon);

// ---- The edge: a node's daemons ----------------------------------------------------------

struct NodeOptions {
  std::string config_dir = "/etc/k8slb";
  std::string runtime_dir = "/run/k8slb";
  render::Proxy proxy = render::Proxy::haproxy;
  bool keepalived = true;
  std::string haproxy_bin = "haproxy";
  std::string nginx_bin = "nginx";
  std::string keepalived_bin = "keepalived";
  std::vector<std::string> haproxy_options;
  std::vector<std::string> nginx_options;
  std::vector<std::string> keepalived_options;
  // BGP mode: bird runs once a set holds bird.conf (k8slb-render writes it when the config has
  // a bgp section). Its VIPs go on the loopback interface (`ip addr`), its routes are withdrawn
  // (`birdc disable "k8slb_vips_*"`) while the proxy does not answer `k8slb-apply health`.
  std::string bird_bin = "bird";
  std::string birdc_bin = "birdc";
  std::string ip_bin = "ip";
  std::string loopback = "lo";
  std::vector<std::string> bird_options;
  int bgp_withdraw_wait_ms = 1000; // graceful stop: routes withdrawn, this long, then the proxy stops
  // One-shot mode: daemons started here outlive this process (own session, output appended
  // to <runtime_dir>/<daemon>.log). Otherwise they die with it and log to its stderr.
  bool detach = false;
  int check_timeout_s = 30;         // a checker that takes longer fails
  int start_timeout_s = 10;         // a daemon must be up (HAProxy: a worker) within this
  int haproxy_max_old_workers = 8;  // wait (bounded by reload_wait_s) before reloading past it
  int reload_wait_s = 10;
};

struct DaemonResult {
  Daemon daemon = Daemon::haproxy;
  Action action = Action::none;
  bool ok = true;
  std::string detail; // reason, or what failed
  bool held = false;  // not applied because an earlier daemon failed (keepalived after the proxy)
  std::string rejected = {}; // the checker refused the new config: its message, the same on every node
};

// Proxy first: keepalived (and bird) may take a new VIP set only when the proxy runs its new config.
// Given the results of the daemons applied before keepalived (the proxy's), returns why
// keepalived must keep the VIP set it holds (matching the config the proxy still runs), or
// nullopt when it may follow.
std::optional<std::string> keepalived_hold_reason(const std::vector<DaemonResult>& earlier);

struct ApplyResult {
  std::vector<DaemonResult> daemons;
  std::vector<Problem> problems;
  bool ok() const { return problems.empty(); }
  // {"actions": {"haproxy": "reload", "keepalived": "held", ...}, "problems": [{"object","field","reason","message"}]}
  nlohmann::json to_json() const;
};

// ---- The daemons' own output ----------------------------------------------------------------

// One line a daemon wrote, as k8slb logs it: the daemon's level where its line shows one
// (HAProxy's [NOTICE]/[WARNING]/[ALERT], nginx's [emerg]...[debug]; keepalived shows none: info,
// or warn for its "WARNING -" lines) and the message without the daemon's own timestamp and
// level. "[WARNING]  (33) : Proxy web stopped." -> {warn, "(33) Proxy web stopped."}
struct DaemonLine {
  tool::Level level = tool::Level::info;
  std::string message;
  bool operator==(const DaemonLine&) const = default;
};
DaemonLine parse_daemon_line(Daemon daemon, std::string_view line);

// ---- Events from the node ------------------------------------------------------------------

// A checker's output as one line every node words alike (so the Events they post share one
// name): banner and summary lines dropped; nginx's timestamp and pid, HAProxy's "(pid)" cut; each
// path in `names` (the staged and kept file, the config dir) replaced by the short name it maps
// to; at most `max_size` bytes. "[ALERT] config : parsing [haproxy.cfg:12] : unknown keyword ..."
std::string checker_summary(std::string_view output, const std::vector<std::pair<std::string, std::string>>& names,
                            std::size_t max_size = 600);

// A Warning Event ConfigRejected on each Service of `vips` (k8slb-render --events: VIP ->
// [{namespace, name, uid}]) for each daemon whose checker refused its new config: the whole
// config is refused, so no Service gets its change on this node. Empty when none was refused.
nlohmann::json rejected_config_events(const ApplyResult& result, const nlohmann::json& vips);

// The files of a set that k8slb-apply knows, read from a directory (k8slb-render --output-dir).
std::map<std::string, std::string> read_file_set(const std::string& dir);

// The files of one NDJSON stream line ({"files": {...}, "problems": [...]}). Throws Error.
std::map<std::string, std::string> file_set_from_json(const nlohmann::json& document);

// The proxy's health, as keepalived's vrrp_script asks it (`k8slb-apply health`): HAProxy
// answers `show info` on its stats socket <runtime_dir>/haproxy.sock (a few tries within
// `budget`); nginx's master (<runtime_dir>/nginx.pid) is alive and has a worker. nullopt when
// healthy, else what is wrong.
std::optional<std::string> proxy_health(render::Proxy proxy, const std::string& runtime_dir,
                                        std::chrono::milliseconds budget);

namespace detail {
class DaemonLog;
}

class NodeApplier {
public:
  explicit NodeApplier(NodeOptions options);
  ~NodeApplier();
  NodeApplier(const NodeApplier&) = delete;
  NodeApplier& operator=(const NodeApplier&) = delete;

  // Checks, installs and starts/reloads/updates each managed daemon whose file is in `files`.
  ApplyResult apply(const std::map<std::string, std::string>& files);

  // Restarts managed daemons that died (bounded backoff); with bird running, announces its
  // routes while the proxy answers and withdraws them while it does not. Returns log lines of
  // what happened.
  std::vector<std::string> supervise();

  // Stops the daemons gracefully, bird's routes withdrawn first (then bgp_withdraw_wait_ms),
  // keepalived next (stop_plan: its signal, then SIGKILL after
  // its wait): those this process started, and with `adopted` also those it found running from
  // their pid files (an earlier `--from-dir`). Returns a line per daemon stopped.
  std::vector<std::string> stop_all(bool adopted = false);

  // Daemons this applier manages, in apply order (proxy first, then keepalived).
  const std::vector<Daemon>& daemons() const { return daemons_; }

  struct State; // one daemon's process and restart bookkeeping (opaque)

private:
  NodeOptions options_;
  std::vector<Daemon> daemons_;
  std::map<Daemon, std::unique_ptr<State>> states_;
  std::unique_ptr<detail::DaemonLog> daemon_log_; // !detach: the daemons' output, in our log
  std::optional<bool> announcing_; // bird's k8slb_vips_* protocols enabled; nullopt: not known
  // The server table last parsed, with its text: the installed one is parsed again only when
  // the file holds something else (a megabyte at 1,000 Services).
  std::optional<std::pair<std::string, ServerTable>> parsed_servers_;
  // Enables or disables bird's VIP routes to follow the proxy's health; a log line on a change.
  std::optional<std::string> follow_proxy_health(bool force);
};

} // namespace k8slb::apply
