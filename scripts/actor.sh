#!/usr/bin/env bash
# k8slb actor: the DaemonSet's entrypoint on every load-balancer node.
#
#   actor.sh          run the pipeline until SIGTERM / SIGINT:
#                       k8slb-watch --events services endpointslices nodes configmap/$CONFIG_MAP
#                         | k8slb-render all --stream --events --node "$NODE_NAME" ...
#                         | k8slb-apply node ...
#                         | k8slb-apply events   (Events on the Services: what this node leaves out)
#   actor.sh health   liveness: the actor and the daemons it started are running
#   actor.sh ready    readiness: health, a config has been applied (keepalived runs), and the
#                     proxy answers (k8slb-apply health; not with kubeproxy)
#   actor.sh once     one pass without a pipeline (a systemd timer, cron): k8slb-watch --once |
#                     k8slb-render all --output-dir $RUN_DIR/actor/rendered, then k8slb-apply
#                     node --from-dir; the daemons it starts keep running, the next pass finds
#                     them, restarts one that died and reloads only what changed
#   actor.sh stop     stop the daemons gracefully (k8slb-apply node --stop): keepalived first,
#                     then the proxy's soft stop
#
# Options come from the environment (as in the original):
#   NODE_NAME       this node (required; the downward API's spec.nodeName)
#   NODE_SELECTOR   labels of the load-balancer Nodes (default type=loadBalancer)
#   CONFIG_MAP      namespace/name of the pools ConfigMap (default k8slb-system/global; as the watcher's)
#   LB_CLASS        serve Services of this spec.loadBalancerClass (default: those without one; as the watcher's)
#   PROXY           haproxy (default) | nginx | kubeproxy
#   CERT_PATH       TLS certificates, <pool>.pem (+ <pool>.key for nginx) (default /etc/certs)
#   VRID_OFFSET     added to every VRRP virtual_router_id (default 0)
#   ADVERT_INT      VRRP advert interval in centiseconds (default 5 = 0.05 s, VRRPv3: 0.18 s failover)
#   SERVER_SLOTS    HAProxy server slots per backend, at least (default 8): endpoints up to this
#                   many come and go through the runtime API, without a reload. Each slot is a
#                   health-checked server, so HAProxy needs about Service ports x (SERVER_SLOTS + 1)
#                   open files (docs/deploy.md, "Open files")
#   SHARED_PORTS    comma-separated ports (e.g. 80,5432) each served by one frontend bound to the
#                   wildcard address, routing by VIP: with HAProxy a new Service on one of them
#                   is a runtime update, not a reload; with nginx a reload of a much smaller
#                   config (default: none). Nothing else on the node may listen on these ports
#                   (docs/node.md, "Shared ports")
#   UNICAST         true: VRRP unicast to the other nodes' InternalIPs (default false)
#   VRRP_PASSWORD   VRRP password (from a Secret); empty: VRRPv3 without authentication
#   KA_OPTIONS, HP_OPTIONS, NX_OPTIONS   extra command-line options for keepalived, haproxy, nginx
#   WATCH_EVENTS    true (default): k8slb-watch prints the List once, then one watch event per
#                   change, and k8slb-render keeps the objects (a change costs its own parse);
#                   false: a whole List per change (at most one per WATCH_DEBOUNCE, default 50ms)
#   WATCH_RESYNC    with WATCH_EVENTS=true: the whole List again every WATCH_RESYNC (default 10m; 0: never)
#   RUN_DIR         sockets, pid files, the actor's own state (default /run/k8slb)
#   CONFIG_DIR      where the daemons' configs are installed (default /etc/k8slb)
#   K8SLB_BIN       directory of the k8slb tools (default: found on PATH)
#   KUBECONFIG      kubeconfig for k8slb-watch and k8slb-apply events (default: in-cluster ServiceAccount)
#   LOG_LEVEL       error, warn, info (default) or debug, for the actor and the tools; every
#                   line is logfmt (time=... level=... component=... msg="...")
#   EVENTS          true (default): post Warning Events on the Services for what this node
#                   leaves out (a missing certificate, a pool it cannot place, a port its proxy
#                   cannot carry), one Event however many nodes report it, and a Normal Event
#                   NodeAssigned when this node takes a Service's VIP (failover notice). false: none
#   RESTART_MAX_DELAY  longest wait before restarting a dead pipeline, seconds (default 30; the
#                   watcher's name; RESTART_DELAY_MAX, the actor's old name, is still read)
#   METRICS_ADDR    serve Prometheus metrics on this address, e.g. :9403 (default: off); the
#                   tools keep theirs in files under METRICS_DIR that `k8slb-apply metrics` serves
#                   as one endpoint (docs/observability.md)
#   METRICS_DIR     (default RUN_DIR/actor/metrics)
#
# When k8slb-watch or k8slb-render exits (the API unreachable or refusing the credentials, say)
# only those two start again, after a delay that doubles up to RESTART_MAX_DELAY: k8slb-apply
# node and its daemons keep running meanwhile with the last good config, and the VIPs stay.
# Only when k8slb-apply node itself exits does the whole pipeline start again. SIGTERM stops the pipeline, then keepalived gracefully (it sends
# priority 0, so a backup takes the VIPs over at once), then the proxy.
set -euo pipefail

readonly PROGRAM=actor.sh
NODE_SELECTOR=${NODE_SELECTOR:-type=loadBalancer}
CONFIG_MAP=${CONFIG_MAP:-k8slb-system/global}
LB_CLASS=${LB_CLASS:-}
PROXY=${PROXY:-haproxy}
CERT_PATH=${CERT_PATH:-/etc/certs}
VRID_OFFSET=${VRID_OFFSET:-0}
ADVERT_INT=${ADVERT_INT:-5}
UNICAST=${UNICAST:-false}
SERVER_SLOTS=${SERVER_SLOTS:-8}
SHARED_PORTS=${SHARED_PORTS:-}
RUN_DIR=${RUN_DIR:-/run/k8slb}
CONFIG_DIR=${CONFIG_DIR:-/etc/k8slb}
RESTART_MAX_DELAY=${RESTART_MAX_DELAY:-${RESTART_DELAY_MAX:-30}}
KA_OPTIONS=${KA_OPTIONS:-}
HP_OPTIONS=${HP_OPTIONS:-}
NX_OPTIONS=${NX_OPTIONS:-}
EVENTS=${EVENTS:-true}
WATCH_EVENTS=${WATCH_EVENTS:-true}
WATCH_RESYNC=${WATCH_RESYNC:-10m}
WATCH_DEBOUNCE=${WATCH_DEBOUNCE:-}
STATE_DIR="$RUN_DIR/actor"
METRICS_ADDR=${METRICS_ADDR:-}
METRICS_DIR=${METRICS_DIR:-$STATE_DIR/metrics}

# One line per message, as the tools print theirs with LOG_FORMAT=logfmt (exported to them):
#   time=2026-11-28T10:03:20.123Z level=info component=actor.sh msg="..."
# A message starting "error: ", "warning: " or "debug: " has that level; LOG_LEVEL (error,
# warn, info, debug; default info) drops the lines below it, here and in the tools.
export LOG_FORMAT=${LOG_FORMAT:-logfmt}
LOG_LEVEL=${LOG_LEVEL:-info}
case ${LOG_LEVEL,,} in
  error) LOG_RANK=0 ;; warn | warning) LOG_RANK=1 ;; info) LOG_RANK=2 ;; debug) LOG_RANK=3 ;;
  *) LOG_RANK=2 LOG_LEVEL_PROBLEM="LOG_LEVEL: '$LOG_LEVEL' is not error, warn, info or debug; using info" LOG_LEVEL=info ;;
esac
export LOG_LEVEL
log() {
  local level=info rank=2 msg="$*"
  case $msg in
    "error: "*) level=error rank=0 msg=${msg#error: } ;;
    "warning: "*) level=warn rank=1 msg=${msg#warning: } ;;
    "debug: "*) level=debug rank=3 msg=${msg#debug: } ;;
  esac
  ((rank <= LOG_RANK)) || return 0
  if [[ $LOG_FORMAT == logfmt ]]; then
    msg=${msg//\\/\\\\} msg=${msg//\"/\\\"} msg=${msg//$'\n'/\\n}
    printf 'time=%s level=%s component=%s msg="%s"\n' "$(date -u +%Y-%m-%dT%H:%M:%S.%3NZ)" "$level" "$PROGRAM" "$msg" >&2
  else
    local prefix=''
    [[ $level == info ]] || prefix="${level/#warn/warning}: "
    printf '%s: %s%s\n' "$PROGRAM" "$prefix" "$msg" >&2
  fi
}
[[ -z ${LOG_LEVEL_PROBLEM:-} ]] || log "warning: $LOG_LEVEL_PROBLEM"
die() { log "error: $*"; exit 2; }

tool_path() {
  if [[ -n ${K8SLB_BIN:-} ]]; then printf '%s/%s' "$K8SLB_BIN" "$1"; else command -v "$1" || printf '%s' "$1"; fi
}

validate_options() {
  [[ -n ${NODE_NAME:-} ]] || die "NODE_NAME is required (the node this actor runs on)"
  [[ $NODE_NAME =~ ^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$ ]] || die "NODE_NAME: '$NODE_NAME' is not a node name"
  [[ $NODE_SELECTOR =~ ^[A-Za-z0-9./_-]+(=[A-Za-z0-9._-]*)?(,[A-Za-z0-9./_-]+(=[A-Za-z0-9._-]*)?)*$ ]] \
    || die "NODE_SELECTOR: '$NODE_SELECTOR' is not key=value[,key=value...]"
  [[ $CONFIG_MAP =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$ ]] \
    || die "CONFIG_MAP: '$CONFIG_MAP' is not namespace/name"
  # A label-style qualified name, as the API server requires of spec.loadBalancerClass.
  [[ -z $LB_CLASS || $LB_CLASS =~ ^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$ ]] \
    || die "LB_CLASS: '$LB_CLASS' is not a qualified name such as example.com/k8slb"
  local part
  for part in k8slb-watch k8slb-render k8slb-apply; do
    [[ -x $(tool_path "$part") ]] || die "$(tool_path "$part"): not found (install the tools on PATH, or set K8SLB_BIN to their directory)"
  done
  case $PROXY in haproxy | nginx | kubeproxy) ;; *) die "PROXY: '$PROXY' is not haproxy, nginx or kubeproxy" ;; esac
  [[ $VRID_OFFSET =~ ^[0-9]{1,3}$ ]] && ((VRID_OFFSET <= 254)) || die "VRID_OFFSET: '$VRID_OFFSET' is not 0-254"
  [[ $ADVERT_INT =~ ^[0-9]{1,4}$ ]] && ((ADVERT_INT >= 1 && ADVERT_INT <= 4095)) \
    || die "ADVERT_INT: '$ADVERT_INT' is not 1-4095 centiseconds"
  case $UNICAST in true | false) ;; *) die "UNICAST: '$UNICAST' is not true or false" ;; esac
  [[ $SERVER_SLOTS =~ ^[0-9]{1,4}$ ]] && ((SERVER_SLOTS >= 1 && SERVER_SLOTS <= 4096)) \
    || die "SERVER_SLOTS: '$SERVER_SLOTS' is not 1-4096"
  if [[ -n $SHARED_PORTS ]]; then
    [[ $PROXY == haproxy || $PROXY == nginx ]] || die "SHARED_PORTS: shared ports are for PROXY=haproxy or nginx, not $PROXY"
    [[ $SHARED_PORTS =~ ^[1-9][0-9]{0,4}(,[1-9][0-9]{0,4})*$ ]] \
      || die "SHARED_PORTS: '$SHARED_PORTS' is not a list of ports such as 80,5432"
    local shared_port
    for shared_port in ${SHARED_PORTS//,/ }; do
      ((shared_port <= 65535)) || die "SHARED_PORTS: $shared_port is not a port 1-65535"
    done
  fi
  case $EVENTS in true | false) ;; *) die "EVENTS: '$EVENTS' is not true or false" ;; esac
  case $WATCH_EVENTS in true | false) ;; *) die "WATCH_EVENTS: '$WATCH_EVENTS' is not true or false" ;; esac
  [[ $WATCH_RESYNC =~ ^(0|[0-9]{1,9}(ms|s|m))$ ]] || die "WATCH_RESYNC: '$WATCH_RESYNC' is not a duration such as 10m"
  [[ -z $WATCH_DEBOUNCE || $WATCH_DEBOUNCE =~ ^(0|[0-9]{1,9}(ms|s|m))$ ]] \
    || die "WATCH_DEBOUNCE: '$WATCH_DEBOUNCE' is not a duration such as 50ms"
  [[ $RESTART_MAX_DELAY =~ ^[0-9]{1,4}$ ]] && ((RESTART_MAX_DELAY >= 1)) \
    || die "RESTART_MAX_DELAY: '$RESTART_MAX_DELAY' is not a number of seconds"
  [[ -z $METRICS_ADDR || $METRICS_ADDR =~ ^(\[[0-9A-Fa-f:.]+\]|[0-9.]+)?:[0-9]{1,5}$ ]] \
    || die "METRICS_ADDR: '$METRICS_ADDR' is not :PORT, IPv4:PORT or [IPv6]:PORT, e.g. :9403"
}

# ip_nonlocal_bind lets nginx bind a VIP before (or while) another node holds it. HAProxy binds
# with `transparent` (IP_TRANSPARENT) and kube-proxy binds nothing: neither needs it.
set_sysctls() {
  local key
  [[ $PROXY == nginx ]] || return 0
  for key in net.ipv4.ip_nonlocal_bind net.ipv6.ip_nonlocal_bind; do
    if ! sysctl -q -w "$key=1" >/dev/null 2>&1; then
      [[ $(sysctl -n "$key" 2>/dev/null) == 1 ]] \
        || log "warning: cannot set $key=1 (read-only /proc/sys?): set it on the node; nginx cannot bind VIPs held elsewhere"
    fi
  done
}

# --- the daemons (started by k8slb-apply node; their pid files are in RUN_DIR) -----------------

pid_from() { # pid file -> pid of a running process, or nothing
  local pid
  [[ -r $1 ]] || return 1
  read -r pid <"$1" || return 1
  [[ $pid =~ ^[0-9]+$ ]] && kill -0 "$pid" 2>/dev/null && printf '%s' "$pid"
}

# Sends a signal to the daemon named by a pid file and waits (bounded) for it to exit.
stop_daemon() {
  local name=$1 pidfile=$2 signal=$3 timeout_tenths=$4 pid i
  pid=$(pid_from "$pidfile") || return 0
  log "stopping $name (pid $pid, SIG$signal)"
  kill -s "$signal" "$pid" 2>/dev/null || return 0
  for ((i = 0; i < timeout_tenths; i++)); do
    kill -0 "$pid" 2>/dev/null || return 0
    sleep 0.1
  done
  log "warning: $name (pid $pid) still running after $((timeout_tenths / 10)) s, sending SIGKILL"
  kill -s KILL "$pid" 2>/dev/null || true
}

stop_daemons() {
  # BGP mode: bird first; on SIGTERM it closes its sessions with a Cease and the routers drop
  # this node's routes at once.
  stop_daemon bird "$RUN_DIR/bird.pid" TERM 100
  # keepalived next: on SIGTERM it sends priority 0 adverts and removes its VIPs, so the
  # backups take over at once instead of after the master-down interval.
  stop_daemon keepalived "$RUN_DIR/keepalived.pid" TERM 100
  case $PROXY in
    haproxy) stop_daemon haproxy "$RUN_DIR/haproxy.pid" USR1 100 ;; # soft stop: finish connections
    nginx) stop_daemon nginx "$RUN_DIR/nginx.pid" QUIT 100 ;;       # graceful shutdown
  esac
}

# --- health ---------------------------------------------------------------------------------

check_health() {
  pid_from "$STATE_DIR/actor.pid" >/dev/null || { echo "actor is not running"; return 1; }
  local name
  for name in keepalived haproxy nginx bird; do
    if [[ -e $RUN_DIR/$name.pid ]] && ! pid_from "$RUN_DIR/$name.pid" >/dev/null; then
      echo "$name died (pid file $RUN_DIR/$name.pid)"
      return 1
    fi
  done
  echo ok
}

check_ready() {
  check_health >/dev/null || { check_health; return 1; }
  pid_from "$RUN_DIR/keepalived.pid" >/dev/null || { echo "no config applied yet (keepalived not started)"; return 1; }
  # A node whose proxy does not answer holds no VIPs (keepalived tracks it) and is not ready.
  if [[ $PROXY != kubeproxy ]]; then
    "$(tool_path k8slb-apply)" health --proxy "$PROXY" --runtime-dir "$RUN_DIR" 2>&1 || return 1
  fi
  echo ok
}

# --- the pipeline ---------------------------------------------------------------------------

PIDS=()
STOPPING=0

# The three tools' arguments, the same for the pipeline and for `once`: WATCH, RENDER, APPLY
# (paths) and WATCH_ARGS, RENDER_ARGS, APPLY_ARGS.
pipeline_args() {
  WATCH=$(tool_path k8slb-watch)
  RENDER=$(tool_path k8slb-render)
  APPLY=$(tool_path k8slb-apply)
  local apply=$APPLY
  local render_args=(all --proxy "$PROXY" --node "$NODE_NAME" --node-selector "$NODE_SELECTOR"
    --cert-dir "$CERT_PATH" --runtime-dir "$RUN_DIR" --vrid-offset "$VRID_OFFSET" --advert-int "$ADVERT_INT"
    --min-server-slots "$SERVER_SLOTS")
  render_args+=(--config-map "$CONFIG_MAP")
  local watch_args=(services endpointslices nodes "configmap/$CONFIG_MAP" --node-selector "$NODE_SELECTOR")
  # The pipeline's watch only (not `once`): changes after the List, or a List per change.
  WATCH_STREAM_ARGS=(--events --resync "$WATCH_RESYNC")
  [[ $WATCH_EVENTS == true ]] || WATCH_STREAM_ARGS=(${WATCH_DEBOUNCE:+--debounce "$WATCH_DEBOUNCE"})
  if [[ -n $LB_CLASS ]]; then
    render_args+=(--lb-class "$LB_CLASS")
    watch_args+=(--lb-class "$LB_CLASS")
  fi
  [[ $UNICAST == true ]] && render_args+=(--unicast)
  # keepalived tracks the proxy (`k8slb-apply health`); a pool this node cannot place keeps the
  # interface of the installed keepalived.conf.
  [[ $PROXY != kubeproxy && $apply =~ ^/[A-Za-z0-9/._+-]+$ ]] && render_args+=(--proxy-check "$apply")
  render_args+=(--previous "$CONFIG_DIR/keepalived.conf")
  [[ -n $SHARED_PORTS ]] && render_args+=(--shared-ports "$SHARED_PORTS")
  # HAProxy's shared ports' Services keep the slot backends of the installed haproxy.cfg.
  [[ -n $SHARED_PORTS && $PROXY == haproxy ]] && render_args+=(--previous-haproxy "$CONFIG_DIR/haproxy.cfg")
  [[ -s $STATE_DIR/vrrp-password ]] && render_args+=(--vrrp-password-file "$STATE_DIR/vrrp-password")
  local apply_args=(node --config-dir "$CONFIG_DIR" --runtime-dir "$RUN_DIR" --proxy "$PROXY")
  [[ -n $KA_OPTIONS ]] && apply_args+=(--keepalived-options "$KA_OPTIONS")
  [[ -n $HP_OPTIONS ]] && apply_args+=(--haproxy-options "$HP_OPTIONS")
  [[ -n $NX_OPTIONS ]] && apply_args+=(--nginx-options "$NX_OPTIONS")
  WATCH_ARGS=("${watch_args[@]}") RENDER_ARGS=("${render_args[@]}") APPLY_ARGS=("${apply_args[@]}")
}

# The pipeline runs in two halves joined by a FIFO the actor holds open (fd 3):
#   reader: k8slb-watch | k8slb-render      restarted alone when a part exits (API errors,
#                                           credentials): the node keeps what it serves
#   node:   k8slb-apply node | k8slb-apply events
#                                           its daemons live as long as k8slb-apply node
# so a failed watch never takes the daemons, and the VIPs they hold, down with it.
READER_PIDS=() APPLY_PID='' EVENTS_PID='' METRICS_PID=''
METRICS_DELAY=1
METRICS_ON=0 # set by run: the pipeline's tools keep metrics files for the endpoint

# --metrics-file for a part of the pipeline (nothing when metrics are off).
metrics_file() { ((METRICS_ON)) && printf '%s\n' --metrics-file "$METRICS_DIR/$1.prom"; return 0; }

# The node's one metrics endpoint; restarted by run's loop when it ends.
start_metrics() {
  "$APPLY" metrics --listen "$METRICS_ADDR" "$METRICS_DIR" 3>&- &
  METRICS_PID=$!
}

start_reader() {
  local watch_metrics
  mapfile -t watch_metrics < <(metrics_file k8slb-watch)
  "$WATCH" "${WATCH_ARGS[@]}" "${WATCH_STREAM_ARGS[@]}" "${watch_metrics[@]}" >"$STATE_DIR/watch.fifo" 3>&- &
  READER_PIDS=($!)
  local events=()
  [[ $EVENTS == true ]] && events=(--events)
  "$RENDER" "${RENDER_ARGS[@]}" --stream "${events[@]}" <"$STATE_DIR/watch.fifo" >&3 3>&- &
  READER_PIDS+=($!)
  log "reader started: watch ${READER_PIDS[0]}, render ${READER_PIDS[1]}"
  log "debug: $WATCH ${WATCH_ARGS[*]} ${WATCH_STREAM_ARGS[*]} | $RENDER ${RENDER_ARGS[*]} --stream ${events[*]}"
}

start_events() {
  local events_metrics
  mapfile -t events_metrics < <(metrics_file k8slb-apply-events)
  "$APPLY" events --node "$NODE_NAME" "${events_metrics[@]}" <"$STATE_DIR/apply.fifo" 3>&- &
  EVENTS_PID=$!
}

start_pipeline() {
  pipeline_args
  rm -f "$STATE_DIR/watch.fifo" "$STATE_DIR/render.fifo" "$STATE_DIR/apply.fifo"
  mkfifo -m 600 "$STATE_DIR/watch.fifo" "$STATE_DIR/render.fifo" "$STATE_DIR/apply.fifo"
  # Held open read-write: k8slb-apply never sees the end of its input while the reader
  # restarts, and a line a dying render left half-written can be ended (see restart_reader).
  exec 3<>"$STATE_DIR/render.fifo"
  local apply_metrics
  mapfile -t apply_metrics < <(metrics_file k8slb-apply-node)
  if [[ $EVENTS == true ]]; then
    exec 4<>"$STATE_DIR/apply.fifo"
    "$APPLY" "${APPLY_ARGS[@]}" "${apply_metrics[@]}" <"$STATE_DIR/render.fifo" >&4 3>&- 4>&- &
    APPLY_PID=$!
    start_events
    exec 4>&-
  else
    "$APPLY" "${APPLY_ARGS[@]}" "${apply_metrics[@]}" <"$STATE_DIR/render.fifo" 3>&- &
    APPLY_PID=$!
    EVENTS_PID=''
  fi
  start_reader
  log "pipeline started: apply $APPLY_PID${EVENTS_PID:+, events $EVENTS_PID}"
  log "debug: $APPLY ${APPLY_ARGS[*]}${EVENTS_PID:+ | $APPLY events}"
}

# Stops the given PIDs: SIGTERM, a bounded wait (tenths of a second), then SIGKILL.
stop_pids() {
  local timeout_tenths=$1 pid i alive
  shift
  (($#)) || return 0
  for pid in "$@"; do kill -s TERM "$pid" 2>/dev/null || true; done
  for ((i = 0; i < timeout_tenths; i++)); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "$@"; do kill -s KILL "$pid" 2>/dev/null || true; done
  for pid in "$@"; do wait "$pid" 2>/dev/null || true; done
}

# The reader's parts stopped; a newline ends any line the render left half-written, so that
# k8slb-apply drops that line alone and takes the next render's first line whole.
stop_reader() {
  stop_pids 50 "${READER_PIDS[@]}"
  READER_PIDS=()
  rm -f "$METRICS_DIR/k8slb-watch.prom" # a killed part's figures are no longer live
  { printf '\n' >&3; } 2>/dev/null || true
}

stop_pipeline() {
  # k8slb-apply first: on SIGTERM it stops keepalived (VIPs hand over at once), then the proxy.
  [[ -n $APPLY_PID ]] && stop_pids 200 "$APPLY_PID"
  stop_pids 50 "${READER_PIDS[@]}" ${EVENTS_PID:+"$EVENTS_PID"}
  APPLY_PID='' EVENTS_PID='' READER_PIDS=()
  exec 3>&-
}

on_stop() {
  ((STOPPING)) && return
  STOPPING=1
  log "stopping"
  stop_pipeline
  stop_daemons # whatever k8slb-apply left running (it was killed, or never stopped them)
  [[ -n $METRICS_PID ]] && stop_pids 50 "$METRICS_PID"
  rm -f "$STATE_DIR/actor.pid" "$STATE_DIR/vrrp-password" "$STATE_DIR/watch.fifo" "$STATE_DIR/render.fifo" \
    "$STATE_DIR/apply.fifo"
  log "stopped"
  exit 0
}

# What every mode that applies needs: checked options, the state dir, the VRRP password file.
prepare() {
  validate_options
  mkdir -p "$STATE_DIR" "$CONFIG_DIR"
  chmod 700 "$STATE_DIR"
  # The VRRP password goes to the renderer in a file only this user can read, never on a
  # command line; the children do not inherit it.
  if [[ -n ${VRRP_PASSWORD:-} ]]; then
    (umask 077 && printf '%s\n' "$VRRP_PASSWORD" >"$STATE_DIR/vrrp-password")
  else
    rm -f "$STATE_DIR/vrrp-password"
  fi
  unset VRRP_PASSWORD
  set_sysctls
}

run() {
  prepare
  echo $$ >"$STATE_DIR/actor.pid"
  trap on_stop TERM INT
  log "node $NODE_NAME, proxy $PROXY, selector $NODE_SELECTOR, advert ${ADVERT_INT}cs, unicast $UNICAST"

  local delay=1 started status pid exited
  if [[ -n $METRICS_ADDR ]]; then
    mkdir -p "$METRICS_DIR"
    METRICS_ON=1
    pipeline_args
    start_metrics
  fi
  start_pipeline
  started=$SECONDS
  while ((!STOPPING)); do
    status=0 exited=''
    wait -n -p exited "${READER_PIDS[@]}" "$APPLY_PID" ${EVENTS_PID:+"$EVENTS_PID"} ${METRICS_PID:+"$METRICS_PID"} || status=$?
    ((STOPPING)) && break
    [[ -n $exited ]] || continue # a signal, not a child
    if [[ $exited == "$METRICS_PID" ]]; then
      log "warning: k8slb-apply metrics exited (status $status); starting it again in $METRICS_DELAY s"
      sleep "$METRICS_DELAY"
      METRICS_DELAY=$((METRICS_DELAY * 2 > RESTART_MAX_DELAY ? RESTART_MAX_DELAY : METRICS_DELAY * 2))
      start_metrics
      continue
    fi
    if [[ $exited == "$EVENTS_PID" ]]; then
      # Events are reports: their loss costs no traffic. k8slb-apply node goes on meanwhile.
      log "k8slb-apply events exited (status $status); starting it again"
      start_events
      continue
    fi
    ((SECONDS - started > 60)) && delay=1 # it ran a while: a fresh failure
    if [[ $exited == "$APPLY_PID" ]]; then
      log "k8slb-apply node exited (status $status); restarting the pipeline in $delay s"
      stop_pipeline
      stop_daemons # whatever it left running
    else
      log "a reader part exited (status $status); restarting the reader in $delay s (the daemons keep their config)"
      stop_reader
    fi
    sleep "$delay" &
    pid=$!
    wait "$pid" || true
    ((STOPPING)) && break
    delay=$((delay * 2 > RESTART_MAX_DELAY ? RESTART_MAX_DELAY : delay * 2))
    started=$SECONDS
    if [[ -z $APPLY_PID ]]; then start_pipeline; else start_reader; fi
  done
}

# One pass: render the cluster as it is now into a directory, then apply that set. Exit status:
# 0 applied; 3 applied, some objects left out by the renderer (named on stderr); 1 the cluster
# could not be read, nothing could be rendered, or the set was not applied (the daemons keep
# what they run).
run_once() {
  prepare
  pipeline_args
  local out="$STATE_DIR/rendered" statuses
  set +e
  "$WATCH" --once "${WATCH_ARGS[@]}" | "$RENDER" "${RENDER_ARGS[@]}" --output-dir "$out"
  statuses=("${PIPESTATUS[@]}")
  set -e
  if ((statuses[0] != 0)); then
    log "error: k8slb-watch --once exited with status ${statuses[0]}: nothing applied"
    return 1
  fi
  case ${statuses[1]} in
    0) ;;
    3) log "warning: k8slb-render left objects out (named above); applying the rest" ;;
    *) log "error: k8slb-render exited with status ${statuses[1]}: nothing applied"; return 1 ;;
  esac
  local applied=0
  "$APPLY" "${APPLY_ARGS[@]}" --from-dir "$out" || applied=$?
  # Applied, but some objects were left out by the renderer: partial (3), as the tools say it.
  if ((applied == 0 && statuses[1] == 3)); then return 3; fi
  return "$applied"
}

stop_node() {
  validate_options
  "$(tool_path k8slb-apply)" node --stop --config-dir "$CONFIG_DIR" --runtime-dir "$RUN_DIR" --proxy "$PROXY"
}

case ${1:-run} in
  run) run ;;
  once) run_once ;;
  stop) stop_node ;;
  health) check_health ;;
  ready) check_ready ;;
  -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//' ;;
  *) echo "usage: $PROGRAM [run|once|stop|health|ready]" >&2; exit 2 ;;
esac
