#!/usr/bin/env bash
# k8slb watcher: the entrypoint of the watcher Deployment.
#
#   k8slb-apply cluster --acquire-only ...          (wait until this replica holds the Lease)
#   k8slb-watch services configmap/k8slb-system/global | k8slb-allocate | k8slb-apply cluster ...
#
# Only the replica holding the Lease runs the pipeline, and it starts the pipeline after it
# became leader, so the first document it writes from comes from a fresh list (every
# assignment read back from the Services). When any part of the pipeline ends, the others are
# stopped and the whole thing starts again after a bounded backoff. SIGTERM is passed on to
# the children (k8slb-apply first, so that it releases the Lease) and the script exits 0.
#
# Environment (names of the original kept where they apply):
#   PROXY            haproxy | nginx | kubeproxy: ipMode Proxy, or VIP for kubeproxy (default haproxy)
#   LB_CLASS         serve Services of this spec.loadBalancerClass (default: those without one)
#   LOG_LEVEL        error, warn, info (default) or debug, for the script and the tools; every
#                    line is logfmt: time=... level=... component=... msg="..."
#   LOOP_DELAY       ignored: the watcher watches, it does not poll (the original polled every 10 s)
#   CONFIG_MAP       namespace/name of the pools ConfigMap (default k8slb-system/global)
#   LEASE_NAME       Lease used for leader election (default k8slb-watcher; "none": no election)
#   LEASE_NAMESPACE  (default $POD_NAMESPACE, else k8slb-system)
#   LEASE_IDENTITY   holderIdentity (default $POD_NAME, else the host name)
#   LEASE_DURATION, LEASE_RENEW_DEADLINE, LEASE_RETRY_PERIOD   seconds (default 15, 10, 2)
#   EVENT_INTERVAL   seconds between two writes of the same Event (default 300)
#   WATCH_EVENTS     true (default): the pipeline carries changes: the List once, then one watch
#                    event per change (k8slb-watch --events), each allocated at its own cost;
#                    false: a whole List per change (the snapshots of earlier versions)
#   WATCH_RESYNC     with WATCH_EVENTS=true: the whole List again every WATCH_RESYNC (default
#                    10m; 0: never), so that a status write that was lost is made again
#   WATCH_DEBOUNCE   with WATCH_EVENTS=false: at most one List per window (default 50ms)
#   RESTART_MAX_DELAY  longest pause before restarting a failed pipeline, seconds (default 30)
#   METRICS_ADDR     serve Prometheus metrics on this address, e.g. :9402 (default: off); the
#                    tools keep theirs in files that `k8slb-apply metrics` serves as one endpoint
#   METRICS_DIR      where those files are kept (default: beside the FIFOs, under TMPDIR)
#
# watcher.sh --help prints this text.
#   K8SLB_BIN        directory of the k8slb tools (default: found on PATH)
#   KUBECONFIG       kubeconfig for the tools (default: in-cluster)
#   TMPDIR           where the pipeline's FIFOs are made (default /tmp; must be writable)
set -u -o pipefail

PROGRAM=watcher.sh
# One line per message, as the tools print theirs with LOG_FORMAT=logfmt (exported to them):
#   time=2026-11-28T10:03:20.123Z level=info component=watcher.sh msg="..."
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

tool() { if [ -n "${K8SLB_BIN:-}" ]; then echo "$K8SLB_BIN/$1"; else echo "$1"; fi; }

PROXY=${PROXY:-haproxy}
case "$PROXY" in
  haproxy | nginx) ip_mode=Proxy; proxy=$PROXY ;;
  kubeproxy | kube-proxy) ip_mode=VIP; proxy=kubeproxy ;;
  *) log "error: PROXY=$PROXY: expected haproxy, nginx or kubeproxy"; exit 2 ;;
esac
if [ -n "${LOOP_DELAY:-}" ]; then
  log "warning: LOOP_DELAY=$LOOP_DELAY ignored: changes are watched, not polled"
fi
case ${1:-} in
  "") ;;
  -h | --help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
  *) log "error: usage: watcher.sh (settings come from the environment; --help lists them)"; exit 2 ;;
esac
config_map=${CONFIG_MAP:-k8slb-system/global}
# The same checks as actor.sh: the two read the same settings.
if ! [[ $config_map =~ ^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?/[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$ ]]; then
  log "error: CONFIG_MAP=$config_map: expected namespace/name, e.g. k8slb-system/global"
  exit 2
fi
if [ -n "${LB_CLASS:-}" ] && ! [[ $LB_CLASS =~ ^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$ ]]; then
  log "error: LB_CLASS=$LB_CLASS: expected a qualified name such as example.com/k8slb"
  exit 2
fi
lease_name=${LEASE_NAME:-k8slb-watcher}
max_delay=${RESTART_MAX_DELAY:-30}
if ! [[ $max_delay =~ ^[0-9]+$ ]] || [ "$max_delay" -lt 1 ]; then
  log "error: RESTART_MAX_DELAY=$max_delay: expected a whole number of seconds, at least 1"
  exit 2
fi

metrics_addr=${METRICS_ADDR:-}
if [ -n "$metrics_addr" ] && ! [[ $metrics_addr =~ ^(\[[0-9A-Fa-f:.]+\]|[0-9.]+)?:[0-9]{1,5}$ ]]; then
  log "error: METRICS_ADDR=$metrics_addr: expected :PORT, IPv4:PORT or [IPv6]:PORT, e.g. :9402"
  exit 2
fi

for part in k8slb-watch k8slb-allocate k8slb-apply; do
  if ! command -v "$(tool "$part")" >/dev/null 2>&1; then
    log "error: $(tool "$part"): not found (install the tools on PATH, or set K8SLB_BIN to their directory)"
    exit 2
  fi
done

watch_args=(services "configmap/$config_map")
allocate_args=(--ip-mode "$ip_mode" --proxy "$proxy" --config-map "$config_map")
apply_args=()
if [ -n "${LB_CLASS:-}" ]; then
  watch_args+=(--lb-class "$LB_CLASS")
  allocate_args+=(--lb-class "$LB_CLASS")
fi
case ${WATCH_EVENTS:-true} in
  true) watch_args+=(--events --resync "${WATCH_RESYNC:-10m}") ;;
  false) if [ -n "${WATCH_DEBOUNCE:-}" ]; then watch_args+=(--debounce "$WATCH_DEBOUNCE"); fi ;;
  *) log "error: WATCH_EVENTS=$WATCH_EVENTS: expected true or false"; exit 2 ;;
esac
if [ -n "${EVENT_INTERVAL:-}" ]; then apply_args+=(--event-interval "$EVENT_INTERVAL"); fi
lease_args=()
if [ "$lease_name" != none ]; then
  lease_args=(--lease-name "$lease_name")
  if [ -n "${LEASE_NAMESPACE:-}" ]; then lease_args+=(--lease-namespace "$LEASE_NAMESPACE"); fi
  if [ -n "${LEASE_IDENTITY:-}" ]; then lease_args+=(--identity "$LEASE_IDENTITY"); fi
  if [ -n "${LEASE_DURATION:-}" ]; then lease_args+=(--lease-duration "$LEASE_DURATION"); fi
  if [ -n "${LEASE_RENEW_DEADLINE:-}" ]; then lease_args+=(--renew-deadline "$LEASE_RENEW_DEADLINE"); fi
  if [ -n "${LEASE_RETRY_PERIOD:-}" ]; then lease_args+=(--retry-period "$LEASE_RETRY_PERIOD"); fi
fi

# The FIFOs between the tools. The manifests mount an emptyDir at /tmp (the root file system is
# read-only); without a writable directory there is no pipeline, so say so and stop.
if ! fifo_dir=$(mktemp -d "${TMPDIR:-/tmp}/k8slb-watcher.XXXXXX"); then
  log "error: cannot create a directory for the pipeline's FIFOs in ${TMPDIR:-/tmp}: mount a writable volume there or set TMPDIR"
  exit 1
fi
metrics_dir=""
metrics_pid=""
if [ -n "$metrics_addr" ]; then
  metrics_dir=${METRICS_DIR:-$fifo_dir/metrics}
  if ! mkdir -p "$metrics_dir"; then
    log "error: METRICS_DIR=$metrics_dir: cannot be created"
    exit 1
  fi
fi
# --metrics-file for each part of the pipeline (nothing when metrics are off).
watch_metrics=() allocate_metrics=() apply_metrics=()
if [ -n "$metrics_dir" ]; then
  watch_metrics=(--metrics-file "$metrics_dir/k8slb-watch.prom")
  allocate_metrics=(--metrics-file "$metrics_dir/k8slb-allocate.prom")
  apply_metrics=(--metrics-file "$metrics_dir/k8slb-apply-cluster.prom")
fi
# The pod's one metrics endpoint, started again if it ended (checked before each pipeline run).
start_metrics() {
  [ -n "$metrics_addr" ] || return 0
  if [ -n "$metrics_pid" ] && kill -0 "$metrics_pid" 2>/dev/null; then return 0; fi
  [ -n "$metrics_pid" ] && log "warning: k8slb-apply metrics (pid $metrics_pid) ended; starting it again"
  "$(tool k8slb-apply)" metrics --listen "$metrics_addr" "$metrics_dir" &
  metrics_pid=$!
}

stopping=0
gate_pid=""
watch_pid="" allocate_pid="" apply_pid=""
pipeline_result=0

# Stops the given PIDs: SIGTERM, then SIGKILL for those still there after 10 s.
stop_pids() {
  local pid alive
  for pid in "$@"; do kill -TERM "$pid" 2>/dev/null; done
  for _ in $(seq 100); do
    alive=0
    for pid in "$@"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "$@"; do kill -KILL "$pid" 2>/dev/null; done
  for pid in "$@"; do wait "$pid" 2>/dev/null; done
  return 0
}

stop_pipeline() {
  # k8slb-apply first: it finishes its request in flight and releases the Lease.
  if [ -n "$apply_pid" ]; then stop_pids "$apply_pid"; fi
  local rest=()
  [ -n "$watch_pid" ] && rest+=("$watch_pid")
  [ -n "$allocate_pid" ] && rest+=("$allocate_pid")
  if [ "${#rest[@]}" -gt 0 ]; then stop_pids "${rest[@]}"; fi
  watch_pid="" allocate_pid="" apply_pid=""
  # A part killed outright left its metrics file behind: its figures are no longer live.
  if [ -n "$metrics_dir" ]; then rm -f "$metrics_dir"/k8slb-watch.prom "$metrics_dir"/k8slb-allocate.prom "$metrics_dir"/k8slb-apply-cluster.prom; fi
}

on_term() {
  stopping=1
  log "stopping"
  if [ -n "$gate_pid" ]; then kill -TERM "$gate_pid" 2>/dev/null; fi
  if [ -n "$apply_pid" ]; then kill -TERM "$apply_pid" 2>/dev/null; fi
}

cleanup() {
  if [ -n "$gate_pid" ]; then stop_pids "$gate_pid"; fi
  stop_pipeline
  if [ -n "$metrics_pid" ]; then stop_pids "$metrics_pid"; fi
  rm -rf "$fifo_dir"
}
trap on_term TERM INT
trap cleanup EXIT

# Waits for the lease (returns 0 once held), or returns non-zero when stopping or on error.
acquire() {
  if [ "${#lease_args[@]}" = 0 ]; then return 0; fi
  "$(tool k8slb-apply)" cluster --acquire-only "${lease_args[@]}" "${apply_metrics[@]}" &
  gate_pid=$!
  local status=0
  while :; do
    wait "$gate_pid"
    status=$?
    # A trapped signal interrupts wait (status > 128) while the gate is still running.
    if kill -0 "$gate_pid" 2>/dev/null; then continue; fi
    break
  done
  gate_pid=""
  return "$status"
}

# Runs the pipeline until one of its parts ends; sets pipeline_result to the exit status of the
# part that caused the end ("restart" when k8slb-apply exited 4: it acquired the lease itself).
# The cause is not simply the first part to end: when k8slb-watch fails, k8slb-allocate sees
# the end of its input and exits 0 at about the same moment. So the parts that end on their
# own within a second are collected too, and the cause is the one with a non-zero status
# (k8slb-apply's first, then upstream first); the log names every part and its status.
run_pipeline() {
  rm -f "$fifo_dir/watch" "$fifo_dir/allocate"
  mkfifo "$fifo_dir/watch" "$fifo_dir/allocate"
  "$(tool k8slb-watch)" "${watch_args[@]}" "${watch_metrics[@]}" >"$fifo_dir/watch" &
  watch_pid=$!
  "$(tool k8slb-allocate)" "${allocate_args[@]}" "${allocate_metrics[@]}" <"$fifo_dir/watch" >"$fifo_dir/allocate" &
  allocate_pid=$!
  "$(tool k8slb-apply)" cluster "${apply_args[@]}" "${lease_args[@]}" "${apply_metrics[@]}" <"$fifo_dir/allocate" &
  apply_pid=$!
  log "pipeline started: k8slb-watch $watch_pid | k8slb-allocate $allocate_pid | k8slb-apply $apply_pid"
  log "debug: k8slb-watch ${watch_args[*]} | k8slb-allocate ${allocate_args[*]} | k8slb-apply cluster ${apply_args[*]} ${lease_args[*]}"
  local -A status_of=()
  local ended="" status=0 pid
  while :; do
    wait -n -p ended "$watch_pid" "$allocate_pid" "$apply_pid"
    status=$?
    if [ -n "${ended:-}" ]; then break; fi
    # Interrupted by a signal: on_term has passed it on; wait for the parts to end.
    if [ "$stopping" = 1 ]; then
      stop_pipeline
      pipeline_result=0
      return
    fi
  done
  status_of[$ended]=$status
  # Give the others a second to end by themselves (bounded: 10 rounds of a 0.1 s timer).
  local rest=() timer
  for _ in $(seq 10); do
    rest=()
    for pid in "$watch_pid" "$allocate_pid" "$apply_pid"; do
      [ -z "${status_of[$pid]+x}" ] && rest+=("$pid")
    done
    [ "${#rest[@]}" = 0 ] && break
    sleep 0.1 &
    timer=$!
    ended=""
    wait -n -p ended "${rest[@]}" "$timer"
    status=$?
    if [ -n "${ended:-}" ] && [ "$ended" != "$timer" ]; then
      status_of[$ended]=$status
      kill "$timer" 2>/dev/null
    fi
    wait "$timer" 2>/dev/null
    [ "$stopping" = 1 ] && break
  done
  local names=(k8slb-watch k8slb-allocate k8slb-apply) pids=("$watch_pid" "$allocate_pid" "$apply_pid")
  local cause="" cause_status=0 parts="" i
  # k8slb-apply first: its status says why (4: restart, 1: lost the lease or failed).
  for i in 2 0 1; do
    pid=${pids[$i]}
    if [ -n "${status_of[$pid]+x}" ] && [ "${status_of[$pid]}" != 0 ] && [ -z "$cause" ]; then
      cause=${names[$i]} cause_status=${status_of[$pid]}
    fi
  done
  for i in 0 1 2; do
    pid=${pids[$i]}
    if [ -n "${status_of[$pid]+x}" ]; then
      parts+=" ${names[$i]} (pid $pid) exited with status ${status_of[$pid]};"
    else
      parts+=" ${names[$i]} (pid $pid) still running, stopped;"
    fi
  done
  if [ -z "$cause" ]; then
    # Every part that ended did so with status 0: the first one's end is the cause (k8slb-watch
    # ending means its stream ended; the others end when their input ends).
    for i in 0 1 2; do
      pid=${pids[$i]}
      if [ -n "${status_of[$pid]+x}" ] && [ -z "$cause" ]; then cause=${names[$i]}; fi
    done
  fi
  for i in 0 1 2; do
    [ -n "${status_of[${pids[$i]}]+x}" ] || continue
    case $i in 0) watch_pid="" ;; 1) allocate_pid="" ;; 2) apply_pid="" ;; esac
  done
  case "$cause:$cause_status" in
    k8slb-apply:4) log "pipeline ended: k8slb-apply took the lease while the pipeline was running (status 4): restarting from a fresh list;$parts" ;;
    *) log "warning: pipeline ended: cause: $cause exited with status $cause_status;$parts stopping the pipeline" ;;
  esac
  stop_pipeline
  pipeline_result=$cause_status
  if [ "$cause" = k8slb-apply ] && [ "$cause_status" = 4 ]; then pipeline_result=restart; fi
}

delay=1
while [ "$stopping" = 0 ]; do
  start_metrics
  if ! acquire; then
    [ "$stopping" = 1 ] && break
    log "warning: waiting for the lease failed; retrying in ${delay}s"
  else
    [ "$stopping" = 1 ] && break
    started=$SECONDS
    run_pipeline
    [ "$stopping" = 1 ] && break
    if [ "$pipeline_result" = restart ]; then
      delay=1
      continue
    fi
    if [ $((SECONDS - started)) -ge 60 ]; then delay=1; fi
    log "pipeline ended (status $pipeline_result); restarting in ${delay}s"
  fi
  sleep "$delay" &
  sleep_pid=$!
  wait "$sleep_pid" 2>/dev/null
  kill "$sleep_pid" 2>/dev/null
  delay=$((delay * 2))
  if [ "$delay" -gt "$max_delay" ]; then delay=$max_delay; fi
done
log "stopped"
exit 0
