#!/usr/bin/env python3
"""Benchmark of the node side at 1, 100 and 1,000 Services already served (issue 11).

Two parts, per size N and per proxy (HAProxy, nginx):

  offline   a snapshot of N LoadBalancer Services (1 port, 1 endpoint each, IPs from the pool),
            rendered for node lb1 by the real `k8slb-render`; then `haproxy -c -f` and
            `nginx -t` (as k8slb-apply runs them, inside a node namespace with non-local binds)
            on it: wall time, peak memory (the checker's maxrss, from GNU time), config size;
            and keepalived.conf through `keepalived -t`, with the bench's pools and with one.
  live      the end-to-end data centre of tests/e2e (network namespaces, the API simulator,
            the watcher and two actors running scripts/actor.sh with the real keepalived and
            proxy, one pod). N Services (and their EndpointSlices) are created in bulk straight
            through the simulator's API; once every one has an IP and both actors are quiet, RUNS
            times: one more Service is created (its EndpointSlice first) and the client opens a
            new TCP connection to its VIP every 10 ms (each sending an HTTP GET, 1 s timeout, at
            most 30 s) until the first answer. Reported: creation -> IP in its status -> config
            written on the VIP's node -> new proxy worker -> VIP on the node -> first byte, the
            reloads the actors' logs report (per daemon, both nodes), VRRP state changes, and
            the RSS of the proxy's processes on the VIP's node (master and workers, VmRSS
            summed) before, at peak during and after the run.

Sizes grow within one cluster (1, then 99 more, then 900 more); the Services of earlier runs
stay, so run k at size N has N + k - 1 other Services around (the JSON says how many). VIPs are
IPv6, on the LAN's 2001:db8:203::/64: 1,000 addresses do not fit in the IPv4 documentation /24
the client shares with the nodes (--family ipv4 uses 203.0.113.20-239, sizes up to 200 or so).
The bulk Services go 64 to a pool (`default` 2001:db8:203::1:0/112, bulk01
2001:db8:203::2:0/112, ...; --pool-size), the new ones to `default`. Before e8c1a2d keepalived
refused (`keepalived -t` exits 5) a VRRP instance with more IPv6 VIPs than fit in one advert (89),
so 1,000 Services in one IPv6 pool were not served; k8slb now advertises only each instance's
lowest VIP, the others are virtual_ipaddress_excluded (--pool-size 0 puts every Service in one
pool; the offline part checks both keepalived.conf variants).

    python3 bench/node_bench.py --binary-dir build [--sizes 1,100,1000] [--runs 5]
                                [--proxy haproxy|nginx|both] [--family ipv6|ipv4]
    python3 bench/node_bench.py --binary-dir build --quick   # sizes 1,100; 3 runs
    python3 bench/node_bench.py --binary-dir build --offline-only --sizes 1,100,1000,10000
    python3 bench/node_bench.py --binary-dir build --proxy haproxy --sizes 10000 --pool-size 157 \
        --setup-timeout 1800    # 64 pools (the most: VRIDs), about 78 VIPs per instance; heavy

Not part of ctest (run as root: it makes network namespaces). Output: one JSON document on
stdout, progress on stderr. Every wait is bounded; namespaces and processes (by PID) are
cleaned up whatever happens.
"""

import argparse
import concurrent.futures
import datetime
import ipaddress
import json
import os
import platform
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
E2E = os.path.join(SOURCE_DIR, "tests", "e2e")
sys.path.insert(0, E2E)
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "kubesim"))
sys.path.insert(0, HERE)

from cluster_bench import children, rss_kib  # noqa: E402  (/proc helpers of the cluster bench)

POD = "198.51.100.200"
POOLS = {
    "ipv6": {"network": "2001:db8:203::1:0/112", "range": "2001:db8:203::1:0/112"},
    "ipv4": {"network": "203.0.113.0/24", "range": "203.0.113.20-203.0.113.239"},
}
MAX_POOLS = 64
PROXY_FILE = {"haproxy": "haproxy.cfg", "nginx": "nginx.conf"}
TRANSITION = re.compile(r"Entering (MASTER|BACKUP|FAULT) STATE")
APPLIED = re.compile(r'msg="(haproxy|nginx|keepalived|bird): (start|reload|runtime-update)\b')
REJECTED = re.compile(r"level=error component=k8slb-apply msg=\"\S+: rejected by")
LOG_TIME = re.compile(r"^time=(\S+)")


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


# --- the cluster's objects, as a user (and the endpoint controller) would write them -------------

def service(name, vip=None, pool=None, node_ports=True):
    """A LoadBalancer Service with one port (http 80 -> 8080); with vip, as allocated; with
    pool, asking for that pool; without node_ports, allocateLoadBalancerNodePorts false."""
    obj = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
           "spec": {"type": "LoadBalancer", "selector": {"app": name},
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}
    if not node_ports:
        obj["spec"]["allocateLoadBalancerNodePorts"] = False
    if pool:
        obj["metadata"]["annotations"] = {"loadbalancer/pool": pool}
    if vip:
        obj["status"] = {"loadBalancer": {"ingress": [{"ip": vip, "ipMode": "Proxy"}]}}
    return obj


def endpoint_slice(name):
    """The EndpointSlice of Service `name`: one ready endpoint, the pod."""
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"{name}-ipv4", "namespace": "default",
                         "labels": {"kubernetes.io/service-name": name,
                                    "endpointslice.kubernetes.io/managed-by": "bench.k8slb.test"}},
            "addressType": "IPv4",
            "endpoints": [{"addresses": [POD], "conditions": {"ready": True}, "nodeName": "worker1",
                           "targetRef": {"kind": "Pod", "namespace": "default", "name": f"{name}-0"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def pool_name(index, pool_size):
    """The pool of bulk Service `index`: Services 0..pool_size-1 in `default` (no annotation),
    the next pool_size in bulk01, ... (pool_size 0: all in `default`)."""
    number = min(index // pool_size, MAX_POOLS - 1) if pool_size else 0
    return None if number == 0 else f"bulk{number:02d}"


def pool_config(family, pools=1):
    """`default`, and for IPv6 pools bulk01.. beside it: 2001:db8:203::<n+1>:0/112 each, all
    on the LAN's /64 (networks may not overlap)."""
    config = {"default": POOLS[family]}
    for number in range(1, pools if family == "ipv6" else 1):
        network = f"2001:db8:203::{number + 1:x}:0/112"
        config[f"bulk{number:02d}"] = {"network": network, "range": network}
    return {"pools": config}


def first_addresses(family, pool):
    """The addresses allocation hands out first in a pool, lowest first."""
    text = pool["range"]
    first = ipaddress.ip_address(text.split("-")[0]) if "-" in text else ipaddress.ip_network(text)[0]
    return (str(first + i) for i in range(1 << 16))


# --- /proc ------------------------------------------------------------------------------------

def start_time(pid):
    """Wall-clock start of a process (clock-tick resolution, 10 ms), from its start in ticks
    since boot and the uptime now (btime is whole seconds: too coarse)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            ticks = int(f.read().rsplit(")", 1)[1].split()[19])
        with open("/proc/uptime") as f:
            now, uptime = time.time(), float(f.read().split()[0])
        return now - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return None


def loadavg():
    with open("/proc/loadavg") as f:
        return [float(x) for x in f.read().split()[:3]]


def summary(values, digits=3):
    values = [v for v in values if v is not None]
    if not values:
        return None
    return {"p50": round(statistics.median(values), digits), "max": round(max(values), digits),
            "min": round(min(values), digits), "n": len(values)}


def timed(argv, timeout=300, stdout=None):
    """Runs argv under /usr/bin/time (stdout to the open file `stdout`, or discarded); returns
    (exit status, wall seconds, peak RSS in KiB, stderr). GNU time forks the command from its own
    small image, so the peak is the command's (from Python, a forked copy of this interpreter
    would count before the exec)."""
    with tempfile.NamedTemporaryFile() as figures, tempfile.TemporaryFile() as err:
        started = time.monotonic()
        process = subprocess.Popen(["/usr/bin/time", "-o", figures.name, "-f", "%M", *argv],
                                   stdin=subprocess.DEVNULL, stdout=stdout or subprocess.DEVNULL, stderr=err)
        try:
            process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
            raise
        seconds = time.monotonic() - started
        err.seek(0)
        text = err.read().decode(errors="replace")
        try:
            kib = int(figures.read().decode().split()[-1])
            return process.returncode, seconds, kib, text
        except ValueError:
            return process.returncode or 1, None, None, text


# --- offline: render and check a snapshot -------------------------------------------------------

def pools_for(count, pool_size):
    return min(MAX_POOLS, -(-count // pool_size)) if pool_size else 1


def lb1_interfaces():
    """lb1's interfaces as `ip -j addr` prints them (netns.Topology gives it these addresses)."""
    addresses = [("inet", "192.0.2.11", 24), ("inet", "203.0.113.11", 24),
                 ("inet6", "2001:db8:1::11", 64), ("inet6", "2001:db8:203::11", 64)]
    return [{"ifname": "lo", "flags": ["LOOPBACK", "UP", "LOWER_UP"], "operstate": "UNKNOWN",
             "addr_info": [{"family": "inet", "local": "127.0.0.1", "prefixlen": 8}]},
            {"ifname": "eth0", "flags": ["BROADCAST", "MULTICAST", "UP", "LOWER_UP"], "operstate": "UP",
             "addr_info": [{"family": f, "local": a, "prefixlen": p} for f, a, p in addresses]}]


def snapshot(count, family, pool_size):
    """What k8slb-watch --once prints for the actor, with `count` Services allocated."""
    config = pool_config(family, pools_for(count, pool_size))
    items = [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "global", "namespace": "k8slb-system"},
              "data": {"config": json.dumps(config)}}]
    for index in (1, 2):
        items.append({"apiVersion": "v1", "kind": "Node",
                      "metadata": {"name": f"lb{index}", "labels": {"type": "loadBalancer",
                                                                    "kubernetes.io/hostname": f"lb{index}"}},
                      "status": {"addresses": [{"type": "InternalIP", "address": f"192.0.2.{10 + index}"}],
                                 "conditions": [{"type": "Ready", "status": "True"}]}})
    addresses = {name: first_addresses(family, pool) for name, pool in config["pools"].items()}
    for i in range(count):
        pool = pool_name(i, pool_size)
        vip = next(addresses[pool or "default"])
        items += [service(f"bulk-{i:05d}", vip, pool), endpoint_slice(f"bulk-{i:05d}")]
    return {"apiVersion": "v1", "kind": "List", "items": items}


def check_argv(proxy, config, run_dir):
    """The checker as k8slb-apply node runs it (lib/apply/node_applier.cpp, check_argv)."""
    if proxy == "haproxy":
        return ["haproxy", "-c", "-f", config]
    with open(config) as text:
        has_pid = re.search(r"^\s*pid\s", text.read(), re.M)
    globals_ = "daemon off;" + ("" if has_pid else f" pid {run_dir}/nginx.pid;")
    return ["nginx", "-t", "-q", "-c", config, "-p", os.path.join(run_dir, "nginx") + "/", "-g", globals_]


def offline(options, host, workdir):
    """Per size and proxy: render time and memory, config size, checker time and memory."""
    render = os.path.join(options.binary_dir, "k8slb-render")
    interfaces = os.path.join(workdir, "interfaces.json")
    with open(interfaces, "w") as out:
        json.dump(lb1_interfaces(), out)
    results = []
    for size in options.offline_sizes:
        directory = os.path.join(workdir, f"offline-{size}")
        run_dir = os.path.join(directory, "run")
        os.makedirs(os.path.join(run_dir, "nginx"), exist_ok=True)
        snap = os.path.join(directory, "snapshot.json")
        with open(snap, "w") as out:
            json.dump(snapshot(size, options.family, options.pool_size), out)
        variants = [(proxy, False) for proxy in options.proxies]
        if options.shared_ports:
            variants += [(proxy, True) for proxy in options.proxies]
        for proxy, shared in variants:
            argv = [render, proxy, "-f", snap, "--node", "lb1", "--interfaces", interfaces, "--no-cert-check",
                    "--runtime-dir", run_dir]
            if shared:  # the map file beside haproxy.cfg, as k8slb-apply installs them
                out_dir = os.path.join(directory, "shared-" + proxy)
                config = os.path.join(out_dir, PROXY_FILE[proxy])
                status, seconds, rss, err = timed(argv + ["--shared-ports", "80", "--output-dir", out_dir])
            else:
                config = os.path.join(directory, PROXY_FILE[proxy])
                with open(config, "wb") as out:
                    status, seconds, rss, err = timed(argv, stdout=out)
            if status != 0:
                raise RuntimeError(f"k8slb-render {proxy} at {size} Services: exit {status}: {err[-2000:]}")
            row = {"services": size, "proxy": proxy + (" --shared-ports 80" if shared else ""),
                   "config_bytes": os.path.getsize(config),
                   "render_s": round(seconds, 3), "render_maxrss_mib": round(rss / 1024, 1)}
            times, peaks = [], []
            for _ in range(options.checks):
                status, seconds, rss, err = timed(host.exec_argv(check_argv(proxy, config, run_dir)), timeout=600)
                if status != 0:
                    raise RuntimeError(f"{proxy} check at {size} Services: exit {status}: {err[-2000:]}")
                times.append(seconds)
                peaks.append(rss)
            row.update({"check_s": summary(times), "check_maxrss_mib": round(max(peaks) / 1024, 1),
                        "check_runs": len(times)})
            log(f"offline {proxy} {size}: {row['config_bytes']} bytes, render {row['render_s']} s, "
                f"check p50 {row['check_s']['p50']} s, {row['check_maxrss_mib']} MiB")
            results.append(row)
        results.append(keepalived_checks(options, host, directory, snap, interfaces, size))
    return results


def keepalived_checks(options, host, directory, snap, interfaces, size):
    """keepalived.conf for the bench's pools and for all N Services in one pool, through
    `keepalived -t` (what k8slb-apply checks it with): exit status, time, first message."""
    render = os.path.join(options.binary_dir, "k8slb-render")
    row = {"services": size, "daemon": "keepalived"}
    single = os.path.join(directory, "snapshot-one-pool.json")
    with open(single, "w") as out:
        json.dump(snapshot(size, options.family, 0), out)
    for label, source in (("bench_pools", snap), ("one_pool", single)):
        config = os.path.join(directory, f"keepalived-{label}.conf")
        with open(config, "wb") as out:
            status, _, _, err = timed([render, "keepalived", "-f", source, "--node", "lb1", "--interfaces", interfaces,
                                       "--no-cert-check"], stdout=out)
        if status != 0:
            raise RuntimeError(f"k8slb-render keepalived at {size} Services: exit {status}: {err[-2000:]}")
        with open(config) as text:
            instances = text.read().count("vrrp_instance ")
        status, seconds, rss, err = timed(host.exec_argv(["keepalived", "-t", "-f", config]), timeout=120)
        row[label] = {"instances": instances, "config_bytes": os.path.getsize(config), "check_exit": status,
                      "check_s": round(seconds, 3), "message": err.strip().splitlines()[0] if err.strip() else ""}
        log(f"offline keepalived {size} ({label}, {instances} instances): keepalived -t exit {status}"
            + (f": {row[label]['message']}" if status else ""))
    return row


# --- live: the e2e data centre ----------------------------------------------------------------

LISTEN = re.compile(r"(?:bind|listen) (?:\[([0-9a-f:]+)\]|([0-9.]+)):\d+")
GEO_ROUTE = re.compile(r"^    ([0-9a-f.:]+) [a-z0-9._-]+;$", re.M)  # nginx --shared-ports: VIP -> upstream
KEEPALIVED_VIP = re.compile(r"^\s+([0-9a-f.:]+)/\d+ dev", re.M)
MONITOR = re.compile(r"^\[(\S+)\] (Deleted )?\d+: eth0\s+inet6? ([0-9a-f.:]+)/")


def first_byte(netns, namespace, vip, port=80, timeout=30.0, interval=0.01, attempt_timeout=1.0):
    """From inside `namespace`: a new TCP connection to vip:port every `interval` seconds, each
    sending an HTTP GET and waiting (at most attempt_timeout) for a 200 status line. Returns
    (wall time of the first answer or None, attempts). Bounded in time and count."""
    family = socket.AF_INET6 if ":" in vip else socket.AF_INET
    request = b"GET / HTTP/1.0\r\nHost: bench\r\n\r\n"
    selector = selectors.DefaultSelector()
    pending = {}  # socket -> monotonic start
    attempts = 0

    def drop(sock):
        pending.pop(sock, None)
        selector.unregister(sock)
        sock.close()

    with netns.in_namespace(namespace):
        try:
            deadline = time.monotonic() + timeout
            next_at = time.monotonic()
            for _ in range(int(timeout / interval) * 10 + 100):
                now = time.monotonic()
                if now >= deadline:
                    break
                if now >= next_at:
                    next_at = max(next_at + interval, now)
                    if len(pending) < 2 * attempt_timeout / interval:
                        sock = socket.socket(family, socket.SOCK_STREAM)
                        sock.setblocking(False)
                        sock.connect_ex((vip, port))
                        selector.register(sock, selectors.EVENT_WRITE, "connect")
                        pending[sock] = now
                        attempts += 1
                for key, _ in selector.select(max(0.0, min(next_at, deadline) - time.monotonic())):
                    sock = key.fileobj
                    if key.data == "connect":
                        try:
                            if sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) == 0:
                                sock.send(request)
                                selector.modify(sock, selectors.EVENT_READ, "read")
                                continue
                        except OSError:
                            pass
                        drop(sock)
                    else:
                        try:
                            data = sock.recv(64)
                        except OSError:
                            data = b""
                        if data.startswith(b"HTTP/1.") and b" 200 " in data[:16]:
                            return time.time(), attempts
                        drop(sock)
                for sock, started in list(pending.items()):
                    if time.monotonic() - started > attempt_timeout:
                        drop(sock)
        finally:
            for sock in list(pending):
                drop(sock)
            selector.close()
    return None, attempts


def listened(text):
    """The VIPs a proxy config serves: its binds and listens, and (nginx --shared-ports) its geo
    lines."""
    return {a or b for a, b in LISTEN.findall(text)} | set(GEO_ROUTE.findall(text))


def log_time(line):
    """Wall time of a logfmt line (time=2026-11-28T10:03:20.123Z ...), or None."""
    match = LOG_TIME.match(line)
    try:
        return datetime.datetime.strptime(match.group(1), "%Y-%m-%dT%H:%M:%S.%fZ").replace(
            tzinfo=datetime.timezone.utc).timestamp()
    except (AttributeError, ValueError):
        return None


class RssSampler(threading.Thread):
    """Peak of the summed VmRSS (and count) of each node's proxy processes, every 20 ms."""

    def __init__(self, live):
        super().__init__(daemon=True)
        self.live = live
        self.stop_event = threading.Event()
        self.peak_kib = {}
        self.peak_processes = {}

    def run(self):
        deadline = time.monotonic() + 600  # bounded whatever happens to the main thread
        while not self.stop_event.is_set() and time.monotonic() < deadline:
            for host in self.live.topology.lb_nodes:
                pids = self.live.proxy_pids(host)
                kib = sum(rss_kib(pid) or 0 for pid in pids)
                self.peak_kib[host.role] = max(self.peak_kib.get(host.role, 0), kib)
                self.peak_processes[host.role] = max(self.peak_processes.get(host.role, 0), len(pids))
            self.stop_event.wait(0.02)

    def stop(self):
        self.stop_event.set()
        self.join(timeout=5)


class Live:
    """The e2e data centre with one proxy, grown to each size in turn."""

    def __init__(self, options, proxy):
        import cluster as cluster_module
        import kubesim_client
        import netns
        self.netns = netns
        self.options = options
        self.proxy = proxy
        self.workdir = tempfile.mkdtemp(prefix=f"k8slb-node-bench-{proxy}-")
        self.topology = netns.Topology(f"nb{proxy}", self.workdir, lb_count=2, pods=[POD])
        self.bulk = 0      # Services bulk-00000.. created
        self.created = 0   # Services created in all
        self.log_offsets = {}
        try:
            self.topology.pods.spawn([sys.executable, os.path.join(E2E, "backend.py"), "http", POD, "8080", "web"],
                                     "pod-web")
            netns.wait_until(lambda: netns.listening(self.topology.pods, POD, 8080), 10, what="backend")
            settings = {}
            if options.server_slots:
                settings["SERVER_SLOTS"] = str(options.server_slots)
            if options.shared_ports:
                settings["SHARED_PORTS"] = "80"
            settings = settings or None
            self.cluster = cluster_module.Cluster(self.topology, self.workdir, proxy=proxy, settings=settings,
                                                  advert_int=options.advert_int)
            most = max(options.sizes) + len(options.sizes) * options.runs
            self.pools = pool_config(options.family, pools_for(most, options.pool_size))
            if options.check_inter and proxy == "haproxy":  # the operator's lines for HAProxy's defaults
                self.pools["haproxy"] = {"defaults": [f"default-server inter {options.check_inter}s"]}
            # The pools the test certificates were made for are small; the bench's pool holds
            # every Service (plain http: no certificate needed).
            self.cluster.apply_objects([{"apiVersion": "v1", "kind": "ConfigMap",
                                         "metadata": {"name": "global", "namespace": "k8slb-system"},
                                         "data": {"config": json.dumps(self.pools)}}])
            self.sim = kubesim_client.Simulator(self.cluster.simulator, self.cluster.kube_dir,
                                                f"https://127.0.0.1:{self.cluster.port}")
            for host in self.topology.lb_nodes:
                self.topology.spawn(None, ["ip", "-n", host.namespace, "-ts", "monitor", "address"],
                                    f"addrmon-{host.role}")
        except BaseException:
            self.close()
            raise

    # --- what the nodes run ---------------------------------------------------------------

    def path(self, host, *parts):
        return os.path.join(self.workdir, host.role, *parts)

    def read(self, path):
        try:
            with open(path, errors="replace") as f:
                return f.read()
        except OSError:
            return ""

    def proxy_pids(self, host):
        """The proxy's master and every process under it."""
        master = self.cluster.daemon_pid(host, self.proxy)
        if not master:
            return []
        found, todo = [], [master]
        for _ in range(1000):
            if not todo:
                break
            pid = todo.pop()
            found.append(pid)
            todo += children(pid)
        return found

    def proxy_rss_kib(self, host):
        return sum(rss_kib(pid) or 0 for pid in self.proxy_pids(host))

    def log_size(self, name):
        try:
            return os.path.getsize(os.path.join(self.workdir, name))
        except OSError:
            return 0

    def log_since(self, name, offset):
        with open(os.path.join(self.workdir, name), "rb") as f:
            f.seek(offset)
            return f.read().decode(errors="replace").splitlines()

    def activity(self, offsets, wanted=None):
        """Apply actions and VRRP transitions (or lines matching `wanted`) in the actors' logs
        since `offsets`."""
        lines = []
        for host in self.topology.lb_nodes:
            for line in self.log_since(f"actor-{host.role}.log", offsets[host.role]):
                if (wanted.search(line) if wanted else APPLIED.search(line) or TRANSITION.search(line)):
                    lines.append((host.role, line))
        return lines

    def quiet(self, seconds, timeout):
        """Waits until no actor has applied anything nor changed VRRP state for `seconds`."""
        offsets = {h.role: self.log_size(f"actor-{h.role}.log") for h in self.topology.lb_nodes}
        last = time.monotonic()
        deadline = last + timeout
        for _ in range(int(timeout / 0.2) + 1):
            if time.monotonic() - last >= seconds:
                return
            if time.monotonic() > deadline:
                break
            time.sleep(0.2)
            if self.activity(offsets):
                last = time.monotonic()
                offsets = {h.role: self.log_size(f"actor-{h.role}.log") for h in self.topology.lb_nodes}
        raise TimeoutError(f"the actors did not settle within {timeout} s")

    def holders(self, vip):
        return [h.role for h in self.topology.lb_nodes if h.holds(vip)]

    # --- the cluster ----------------------------------------------------------------------

    def post(self, obj):
        group = "/api/v1" if obj["apiVersion"] == "v1" else "/apis/" + obj["apiVersion"]
        kind = {"Service": "services", "EndpointSlice": "endpointslices"}[obj["kind"]]
        return self.sim.must("POST", f"{group}/namespaces/default/{kind}", obj)

    def ingress(self):
        """{name: first ingress IP or None} of every Service in namespace default."""
        items = self.sim.must("GET", "/api/v1/namespaces/default/services")["items"]
        return {s["metadata"]["name"]: ((s.get("status", {}).get("loadBalancer", {}).get("ingress") or [{}])[0]
                                        .get("ip")) for s in items}

    def grow(self, target):
        """Creates Services up to `target` in all (bulk, through the API), waits until each has
        an IP, both nodes' configs carry every VIP, every VIP is held and the actors are quiet.
        Returns the figures of the setup."""
        started = time.monotonic()
        names = [f"bulk-{i:05d}" for i in range(self.bulk, self.bulk + max(0, target - self.created))]
        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda n: self.post(endpoint_slice(n)), names))
            # The NodePort range (30000-32767) holds 2,768 ports, and the simulator, as the API
            # server, refuses a Service once it is full: from 2,000 on, none (no renderer uses them).
            list(pool.map(lambda i: self.post(service(f"bulk-{i:05d}", pool=pool_name(i, self.options.pool_size),
                                                      node_ports=i < 2000)),
                          range(self.bulk, self.bulk + len(names))))
        self.bulk += len(names)
        self.created += len(names)
        created_s = time.monotonic() - started
        timeout = min(self.options.setup_timeout or 1e9, 120 + 0.5 * self.created)
        interval = max(1.0, self.created / 1000)  # listing 10,000 Services costs the simulator
        offsets = {h.role: self.log_size(f"actor-{h.role}.log") for h in self.topology.lb_nodes}
        ips = self.netns.wait_until(lambda: (i := self.ingress()) and len(i) == self.created and all(i.values()) and i,
                                    timeout, interval=interval, what=f"an IP on all {self.created} Services")
        ip_s = time.monotonic() - started
        vips = set(ips.values())

        def configured():
            for host in self.topology.lb_nodes:
                served = listened(self.read(self.path(host, "etc", PROXY_FILE[self.proxy])))
                # --shared-ports: port 80's VIPs are the map's keys
                served |= {line.split()[0] for line in self.read(self.path(host, "etc", "haproxy-p80.map")).splitlines()
                           if line.strip()}
                if not vips <= served:
                    return False
                if not vips <= set(KEEPALIVED_VIP.findall(self.read(self.path(host, "etc", "keepalived.conf")))):
                    return False
            held = set()
            for host in self.topology.lb_nodes:
                held |= set(host.addresses_on("eth0"))
            return vips <= held
        deadline = time.monotonic() + timeout
        done = False
        for _ in range(int(timeout) + 1):
            # A config a checker refuses is never retried with the same input: stop here.
            for role, line in self.activity(offsets, REJECTED):
                raise RuntimeError(f"{role}: {line.split('msg=', 1)[-1][:600]}")
            # Once is enough: a VIP seen between nodes at a second look (a VRRP transition of a
            # saturated machine) is not a setup that failed; the runs count the transitions.
            done = configured()
            if done or time.monotonic() > deadline:
                break
            time.sleep(interval)
        if not done:
            raise TimeoutError(f"all {len(vips)} VIPs not configured and held within {timeout} s")
        self.quiet(3, timeout)
        # One bulk VIP answers through the client (the node serves what it says).
        some = ips[names[-1]] if names else next(iter(vips))
        answered, _ = first_byte(self.netns, self.topology.client.namespace, some, timeout=30)
        if not answered:
            raise RuntimeError(f"{some} does not answer after the setup")
        setup = {"services": self.created, "created_now": len(names), "create_s": round(created_s, 1),
                 "all_ips_s": round(ip_s, 1), "settled_s": round(time.monotonic() - started, 1),
                 "loadavg_after": loadavg()}
        for host in self.topology.lb_nodes:
            setup[f"{host.role}_proxy_rss_mib"] = round(self.proxy_rss_kib(host) / 1024, 1)
            setup[f"{host.role}_proxy_config_bytes"] = len(self.read(self.path(host, "etc", PROXY_FILE[self.proxy])))
            setup[f"{host.role}_keepalived_config_bytes"] = len(self.read(self.path(host, "etc", "keepalived.conf")))
        return setup

    def new_service(self, name):
        """One more Service (its EndpointSlice first): the timeline to its first byte."""
        self.post(endpoint_slice(name))
        self.quiet(1, 60)
        nodes = self.topology.lb_nodes
        offsets = {h.role: self.log_size(f"actor-{h.role}.log") for h in nodes}
        monitor_offsets = {h.role: self.log_size(f"addrmon-{h.role}.log") for h in nodes}
        before_pids = {h.role: set(self.proxy_pids(h)) for h in nodes}
        rss_before = {h.role: self.proxy_rss_kib(h) for h in nodes}
        sampler = RssSampler(self)
        sampler.start()
        try:
            watch = self.sim.watch("/api/v1/namespaces/default/services?watch=true&fieldSelector="
                                   + urllib.parse.quote(f"metadata.name={name}"), timeout=30)
            try:
                created = time.time()
                self.post(service(name))
                self.created += 1
                vip = None
                for _ in range(100):
                    event = watch.next_event()
                    if event is None or time.time() - created > 30:
                        break
                    ingress = event["object"].get("status", {}).get("loadBalancer", {}).get("ingress")
                    if ingress:
                        vip, ip_at = ingress[0]["ip"], time.time()
                        break
            finally:
                watch.close()
            if not vip:
                raise RuntimeError(f"no IP on {name} within 30 s")
            answered, attempts = first_byte(self.netns, self.topology.client.namespace, vip, timeout=30)
            if not answered:
                raise RuntimeError(f"no answer from {vip} ({name}) within 30 s")
            holder = self.netns.wait_until(lambda: len(h := self.holders(vip)) == 1 and h[0], 30,
                                           what=f"{vip} on one node")
            self.quiet(2, 60)
        finally:
            sampler.stop()
        host = self.topology.hosts[holder]
        run = {"name": name, "vip": vip, "holder": holder, "others_served": self.created - 1,
               "probe_attempts": attempts}

        def since(at):
            return round(at - created, 3) if at else None
        run["ip_s"] = since(ip_at)
        run["first_byte_s"] = since(answered)
        try:
            run["config_written_s"] = since(os.stat(self.path(host, "etc", PROXY_FILE[self.proxy])).st_mtime)
            run["keepalived_written_s"] = since(os.stat(self.path(host, "etc", "keepalived.conf")).st_mtime)
        except OSError:
            pass
        try:  # --shared-ports: the port's map file, written once its entries are set at runtime
            run["map_written_s"] = since(os.stat(self.path(host, "etc", "haproxy-p80.map")).st_mtime)
        except OSError:
            pass
        master = self.cluster.daemon_pid(host, self.proxy)
        new = [pid for pid in self.proxy_pids(host) if pid not in before_pids[holder] and pid != master]
        starts = [t for t in (start_time(pid) for pid in new) if t]
        run["new_worker_s"] = since(min(starts)) if starts else None
        for line in self.log_since(f"addrmon-{holder}.log", monitor_offsets[holder]):
            match = MONITOR.match(line)
            if match and not match.group(2) and match.group(3) == vip:
                run["vip_on_node_s"] = since(datetime.datetime.fromisoformat(match.group(1)).timestamp())
                break
        actions, transitions, proxy_logged = {}, 0, None
        for role, line in self.activity(offsets):
            if TRANSITION.search(line):
                transitions += 1
                continue
            daemon, action = APPLIED.search(line).groups()
            key = f"{daemon} {action}"
            actions[key] = actions.get(key, 0) + 1
            if role == holder and daemon == self.proxy and proxy_logged is None:
                proxy_logged = log_time(line)
        run["actions_both_nodes"] = actions
        run["proxy_reloads_both_nodes"] = actions.get(f"{self.proxy} reload", 0)
        run["vrrp_transitions"] = transitions
        run["apply_logged_s"] = since(proxy_logged)
        if run.get("new_worker_s") is not None and run.get("config_written_s") is not None:
            run["config_to_new_worker_s"] = round(run["new_worker_s"] - run["config_written_s"], 3)
        run["proxy_rss_mib"] = {"before": round(rss_before[holder] / 1024, 1),
                                "peak": round(sampler.peak_kib.get(holder, 0) / 1024, 1),
                                "after": round(self.proxy_rss_kib(host) / 1024, 1),
                                "peak_processes": sampler.peak_processes.get(holder, 0)}
        return run

    def close(self):
        self.topology.close()
        if not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"logs kept in {self.workdir}")


STAGES = ("ip_s", "config_written_s", "map_written_s", "new_worker_s", "config_to_new_worker_s", "keepalived_written_s",
          "apply_logged_s", "vip_on_node_s", "first_byte_s")


def live(options, proxy, started):
    """Grows one cluster through the sizes; per size, RUNS new Services timed."""
    out = {"sizes": []}
    bench = Live(options, proxy)
    try:
        for size in options.sizes:
            if time.monotonic() - started > options.budget:
                out["stopped"] = f"time budget ({options.budget} s) spent before size {size}"
                log(f"{proxy}: {out['stopped']}")
                break
            log(f"{proxy}: growing to {size} Services")
            try:
                setup = bench.grow(size)
            except (TimeoutError, RuntimeError) as error:
                out["stopped"] = f"size {size}: {error}"
                log(f"{proxy}: {out['stopped']}")
                break
            log(f"{proxy}: {size} Services served after {setup['settled_s']} s (IPs after {setup['all_ips_s']} s)")
            runs = []
            for k in range(options.runs):
                try:
                    run = bench.new_service(f"new-{size}-{k}")
                except (TimeoutError, RuntimeError) as error:
                    out["stopped"] = f"size {size}, run {k + 1}: {error}"
                    log(f"{proxy}: {out['stopped']}")
                    break
                log(f"{proxy} {size} run {k + 1}: IP {run['ip_s']} s, first byte {run['first_byte_s']} s, "
                    f"reloads {run['proxy_reloads_both_nodes']}, VRRP transitions {run['vrrp_transitions']}, "
                    f"config -> new worker {run.get('config_to_new_worker_s')} s on {run['holder']}")
                runs.append(run)
            if not runs:
                break
            row = {"services": size, "setup": setup, "runs": runs}
            for stage in STAGES:
                row[stage] = summary([r.get(stage) for r in runs])
            row["proxy_reloads_both_nodes"] = summary([r["proxy_reloads_both_nodes"] for r in runs], 0)
            row["vrrp_transitions_total"] = sum(r["vrrp_transitions"] for r in runs)
            for key in ("before", "peak", "after"):
                row[f"proxy_rss_{key}_mib"] = summary([r["proxy_rss_mib"][key] for r in runs], 1)
            out["sizes"].append(row)
            if "stopped" in out:
                break
    finally:
        bench.close()
    return out


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary-dir", default=os.path.join(SOURCE_DIR, "build"))
    parser.add_argument("--sizes", default="1,100,1000", help="Services already served, comma-separated")
    parser.add_argument("--runs", type=int, default=5, help="new Services timed per size and proxy")
    parser.add_argument("--proxy", choices=("haproxy", "nginx", "both"), default="both")
    parser.add_argument("--family", choices=("ipv6", "ipv4"), default="ipv6", help="the VIP pool's family")
    parser.add_argument("--pool-size", type=int, default=64,
                        help="IPv6: bulk Services per pool (default 64; 0: all in one pool, more VIPs per VRRP "
                             "instance than one advert carries: the rest are excluded VIPs)")
    parser.add_argument("--checks", type=int, default=5, help="offline checker runs per size and proxy")
    parser.add_argument("--server-slots", type=int, default=0,
                        help="the actors' SERVER_SLOTS (default: theirs, 8). HAProxy needs about Service ports x "
                             "(slots + 1) open files: 10,000 Services with 8 slots need about 90,000, more than "
                             "a hard limit of 20,000 (as in the sandbox these figures were taken in) allows")
    parser.add_argument("--advert-int", type=int, default=None,
                        help="the actors' ADVERT_INT in centiseconds (default: theirs, 5)")
    parser.add_argument("--check-inter", type=int, default=0,
                        help="HAProxy: seconds between health checks of a server, as `default-server inter` in the "
                             "config document's haproxy.defaults (default: HAProxy's, 2 s). At 10,000 Services "
                             "the checks of both nodes against one pod saturate 2 cores")
    parser.add_argument("--shared-ports", action="store_true",
                        help="the actors' SHARED_PORTS=80 (one wildcard frontend for port 80; HAProxy: a new "
                             "Service is a runtime update)")
    parser.add_argument("--offline-sizes", default=None, help="sizes of the offline part (default: --sizes)")
    parser.add_argument("--offline-only", action="store_true")
    parser.add_argument("--budget", type=int, default=5400,
                        help="seconds; no new size is started after this (default 5400)")
    parser.add_argument("--setup-timeout", type=int, default=0,
                        help="seconds to serve a size's Services at most (default 120 + 0.5 per Service)")
    parser.add_argument("--keep", action="store_true", help="keep the work directories (every daemon's log)")
    parser.add_argument("--quick", action="store_true", help="sizes 1,100; 3 runs; 3 checks")
    options = parser.parse_args(argv)
    if options.quick:
        options.sizes, options.runs, options.checks = "1,100", 3, 3
    options.sizes = sorted({max(1, min(int(s), 100000)) for s in options.sizes.split(",") if s})
    options.offline_sizes = (sorted({max(1, min(int(s), 100000)) for s in options.offline_sizes.split(",") if s})
                             if options.offline_sizes else options.sizes)
    options.runs = max(1, min(options.runs, 50))
    options.check_inter = max(0, min(options.check_inter, 3600))
    options.checks = max(1, min(options.checks, 20))
    options.proxies = ["haproxy", "nginx"] if options.proxy == "both" else [options.proxy]
    options.binary_dir = os.path.abspath(options.binary_dir)
    if options.family == "ipv4":
        options.pool_size = 0  # one pool: 220 addresses, too few VIPs for keepalived's limit
    if options.family == "ipv4" and max(options.sizes) + len(options.sizes) * options.runs > 220:
        parser.error("--family ipv4: the pool holds 220 addresses")
    os.environ["K8SLB_BINARY_DIR"] = options.binary_dir
    import netns
    netns.check_available()

    def version(argv):
        result = subprocess.run(argv, capture_output=True, text=True, timeout=10)
        return (result.stdout + result.stderr).strip().splitlines()[0]
    commit = subprocess.run(["git", "-C", os.path.dirname(options.binary_dir), "rev-parse", "--short", "HEAD"],
                            capture_output=True, text=True, timeout=10).stdout.strip()
    result = {"binaries_commit": commit or None, "binary_dir": options.binary_dir,
              "machine": {"cores": os.cpu_count(), "kernel": platform.release(), "loadavg_start": loadavg()},
              "versions": {"haproxy": version(["haproxy", "-v"]), "nginx": version(["nginx", "-v"]),
                           "keepalived": version(["keepalived", "--version"])},
              "options": {"sizes": options.sizes, "runs": options.runs, "proxies": options.proxies,
                          "family": options.family, "pool_size": options.pool_size, "server_slots": options.server_slots or 8,
                          "shared_ports": "80" if options.shared_ports else None, "check_inter_s": options.check_inter or 2,
                          "advert_int_cs": options.advert_int or 5,
                          "default_pool": POOLS[options.family]}}
    started = time.monotonic()
    workdir = tempfile.mkdtemp(prefix="k8slb-node-bench-offline-")
    topology = netns.Topology("nboffline", workdir, lb_count=1)
    try:
        result["offline"] = offline(options, topology.lb_nodes[0], workdir)
    finally:
        topology.close()
        shutil.rmtree(workdir, ignore_errors=True)
    if not options.offline_only:
        result["live"] = {}
        for proxy in options.proxies:
            result["live"][proxy] = live(options, proxy, started)
    result["machine"]["loadavg_end"] = loadavg()
    # The lead may rebuild the binaries meanwhile: what HEAD was at the end.
    result["binaries_commit_end"] = subprocess.run(
        ["git", "-C", os.path.dirname(options.binary_dir), "rev-parse", "--short", "HEAD"],
        capture_output=True, text=True, timeout=10).stdout.strip() or None
    result["seconds"] = round(time.monotonic() - started)
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
