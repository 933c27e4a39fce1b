#!/usr/bin/env python3
"""Network-namespace harness for k8slb's end-to-end tests and demo.

A Topology is a small data centre made of network namespaces, all named
k8slb-<test>-<pid>-<role> so that two runs never collide:

    sw      a switch: one bridge, one port per host below
    lb1..N  load-balancer nodes: eth0 192.0.2.1x/24 + 203.0.113.1x/24 (VIP pool's network)
            and 2001:db8:1::1x/64 + 2001:db8:203::1x/64; routes to the pods via "pods"
    client  a client: eth0 192.0.2.100/24, 203.0.113.250/24, 2001:db8:1::100/64,
            2001:db8:203::250/64, so it reaches every VIP of 203.0.113.0/24 and
            2001:db8:203::/64 on the LAN, through whichever node holds it
    pods    the pod network's router: eth0 192.0.2.50 / 2001:db8:1::50, pod addresses
            198.51.100.x/32 and 2001:db8:100::x/128 on its loopback

Every address is from the documentation prefixes. The API simulator runs on the host's
loopback; a forwarder started by the harness listens on 127.0.0.1:<port> inside each node
namespace and connects to 127.0.0.1:<port> on the host, so kubeconfigs work unchanged.

Everything the topology starts is tracked by PID; close() kills those processes, then every
process left inside its namespaces (they can only be ours: the namespaces are ours), then
deletes the namespaces. close() runs from `with`, from atexit and on SIGTERM/SIGINT.
Every wait is bounded in time and in count.
"""

import atexit
import contextlib
import ctypes
import ipaddress
import json
import os
import re
import selectors
import signal
import socket
import subprocess
import sys
import threading
import time

NETNS_DIR = "/var/run/netns"
CLONE_NEWNET = 0x40000000

LAN4 = "192.0.2.0/24"
LAN6 = "2001:db8:1::/64"
VIP4_NET = "203.0.113.0/24"
VIP6_NET = "2001:db8:203::/64"
PODS4_NET = "198.51.100.0/24"
PODS6_NET = "2001:db8:100::/64"
PODS_ROUTER4 = "192.0.2.50"
PODS_ROUTER6 = "2001:db8:1::50"
CLIENT4 = "192.0.2.100"
CLIENT6 = "2001:db8:1::100"


class Unavailable(Exception):
    """The machine cannot create network namespaces (not root, no CAP_SYS_ADMIN, ...)."""


def run(argv, check=True, timeout=20, input=None):
    """Runs a command, bounded in time; returns CompletedProcess with text output."""
    result = subprocess.run(argv, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)}: exit {result.returncode}: {result.stderr.strip()}")
    return result


def wait_until(predicate, timeout, interval=0.05, what="condition"):
    """Polls predicate() until it returns a true value or `timeout` seconds pass.

    Bounded in time and in count (timeout / interval + 1 tries). Returns the value, or raises
    TimeoutError naming `what`."""
    deadline = time.monotonic() + timeout
    tries = int(timeout / interval) + 1
    last_error = None
    for _ in range(tries):
        try:
            value = predicate()
            if value:
                return value
        except Exception as error:  # the predicate's own failure counts as "not yet"
            last_error = error
        if time.monotonic() >= deadline:
            break
        time.sleep(interval)
    suffix = f" (last error: {last_error})" if last_error else ""
    raise TimeoutError(f"timed out after {timeout:.1f}s waiting for {what}{suffix}")


def check_available():
    """Raises Unavailable with a clear message when `ip netns add` does not work here."""
    if os.geteuid() != 0:
        raise Unavailable("network namespaces need root (run as root or in a privileged container)")
    probe = f"k8slb-probe-{os.getpid()}"
    result = subprocess.run(["ip", "netns", "add", probe], capture_output=True, text=True, timeout=10)
    if result.returncode != 0:
        raise Unavailable(f"`ip netns add` fails on this machine: {result.stderr.strip()}")
    subprocess.run(["ip", "netns", "del", probe], capture_output=True, timeout=10)


def remove_stale(prefix="k8slb-"):
    """Deletes namespaces k8slb-<name>-<pid>-<role> whose creating process is gone."""
    if not os.path.isdir(NETNS_DIR):
        return
    pattern = re.compile(r"^" + re.escape(prefix) + r"[a-z0-9]+-(\d+)-(sw|lb\d+|client|pods|rtr|far)$")
    for name in sorted(os.listdir(NETNS_DIR)):
        match = pattern.match(name)
        if not match or os.path.exists(f"/proc/{match.group(1)}"):
            continue
        kill_namespace_processes(name)
        subprocess.run(["ip", "netns", "del", name], capture_output=True, timeout=10)


def namespace_pids(namespace):
    result = subprocess.run(["ip", "netns", "pids", namespace], capture_output=True, text=True,
                            timeout=10)
    return [int(p) for p in result.stdout.split() if p.isdigit()]


def _parent_of(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return int(stat.read().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return 0


def crash(pids):
    """Kills `pids` as a crash would: none of them gets to see another die and stop gracefully.

    All are frozen (SIGSTOP) first, then SIGKILLed children before parents. The order matters:
    a process killed while its children are stopped can leave behind a process group with
    stopped members and no parent in the session (k8slb-apply runs each daemon in its own
    group), and the kernel then sends that group SIGHUP and SIGCONT (orphaned process groups,
    POSIX). keepalived, woken that way with the SIGTERM its dead parent left pending, would
    send priority-0 adverts and remove its VIPs: a graceful stop, not a crash."""
    pids = list(pids)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGSTOP)
    parent = {pid: _parent_of(pid) for pid in pids}

    def depth(pid):
        seen, count = set(), 0
        while pid in parent and pid not in seen:
            seen.add(pid)
            pid, count = parent[pid], count + 1
        return count
    for pid in sorted(pids, key=depth, reverse=True):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def kill_namespace_processes(namespace, grace=2.0):
    """SIGTERM, then SIGKILL, every process inside a namespace this harness created."""
    pids = namespace_pids(namespace)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    for _ in range(int(grace / 0.05) + 1):
        pids = [p for p in pids if os.path.exists(f"/proc/{p}") and not _is_zombie(p)]
        if not pids or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def _is_zombie(pid):
    try:
        with open(f"/proc/{pid}/stat") as stat:
            return stat.read().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


_libc = ctypes.CDLL(None, use_errno=True)


def setns(fd):
    if _libc.setns(fd, CLONE_NEWNET) != 0:
        error = ctypes.get_errno()
        raise OSError(error, f"setns: {os.strerror(error)}")


@contextlib.contextmanager
def in_namespace(namespace):
    """Runs the block with this thread inside `namespace` (sockets made there stay there)."""
    home = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
    target = os.open(os.path.join(NETNS_DIR, namespace), os.O_RDONLY)
    try:
        setns(target)
        yield
    finally:
        setns(home)
        os.close(target)
        os.close(home)


class Host:
    def __init__(self, topology, role, namespace):
        self.topology = topology
        self.role = role
        self.namespace = namespace
        self.addresses = []  # (interface, prefix) as added

    def ip(self, *args, check=True):
        return run(["ip", "-n", self.namespace, *args], check=check)

    def exec_argv(self, argv):
        return ["ip", "netns", "exec", self.namespace, *argv]

    def run(self, argv, check=True, timeout=20, input=None):
        return run(self.exec_argv(argv), check=check, timeout=timeout, input=input)

    def sysctl(self, key, value):
        self.run(["sysctl", "-q", "-w", f"{key}={value}"])

    def spawn(self, argv, name, env=None, cwd=None):
        return self.topology.spawn(self, argv, name, env=env, cwd=cwd)

    def addresses_on(self, interface="eth0"):
        out = self.ip("-j", "addr", "show", "dev", interface).stdout
        found = []
        for link in json.loads(out or "[]"):
            for info in link.get("addr_info", []):
                found.append(info["local"])
        return found

    def holds(self, address, interface="eth0"):
        return address in self.addresses_on(interface)


class Topology:
    """Namespaces for one test. Use as a context manager; close() is idempotent."""

    def __init__(self, test_name, workdir, lb_count=2, pods=None, api_port=None):
        check_available()
        remove_stale()
        safe = re.sub(r"[^a-z0-9]+", "", test_name.lower())[:12] or "test"
        self.prefix = f"k8slb-{safe}-{os.getpid()}"
        self.workdir = workdir
        os.makedirs(workdir, exist_ok=True)
        self.processes = []  # (name, Popen)
        self.hosts = {}
        self.closed = False
        self._previous_handlers = {}
        atexit.register(self.close)
        for sig in (signal.SIGTERM, signal.SIGINT):
            with contextlib.suppress(ValueError):  # not the main thread
                self._previous_handlers[sig] = signal.signal(sig, self._on_signal)
        try:
            self._build(lb_count, pods or [])
            if api_port:
                self.forward_api(api_port)
        except BaseException:
            self.close()
            raise

    # --- construction -------------------------------------------------------------------

    def _add_namespace(self, role):
        name = f"{self.prefix}-{role}"
        run(["ip", "netns", "add", name])
        host = Host(self, role, name)
        self.hosts[role] = host
        host.ip("link", "set", "lo", "up")
        return host

    def _plug(self, host, port_name):
        """A veth pair: eth0 in `host`, port_name on the switch's bridge."""
        switch = self.hosts["sw"]
        host.ip("link", "add", "eth0", "type", "veth", "peer", "name", port_name,
                "netns", switch.namespace)
        switch.ip("link", "set", port_name, "master", "br0")
        switch.ip("link", "set", port_name, "up")
        host.sysctl("net.ipv6.conf.eth0.accept_dad", "0")
        host.sysctl("net.ipv6.conf.all.accept_dad", "0")
        host.sysctl("net.ipv6.conf.default.accept_dad", "0")
        host.ip("link", "set", "eth0", "up")

    def _address(self, host, prefix, interface="eth0"):
        args = ["addr", "add", prefix, "dev", interface]
        if ":" in prefix:
            args.append("nodad")
        host.ip(*args)
        host.addresses.append((interface, prefix))

    def _build(self, lb_count, pods):
        switch = self._add_namespace("sw")
        switch.ip("link", "add", "br0", "type", "bridge", "stp_state", "0", "forward_delay", "0",
                  "mcast_snooping", "0")
        switch.ip("link", "set", "br0", "up")

        self.lb_nodes = []
        for index in range(1, lb_count + 1):
            host = self._add_namespace(f"lb{index}")
            self._plug(host, f"p-lb{index}")
            self._address(host, f"192.0.2.{10 + index}/24")
            self._address(host, f"203.0.113.{10 + index}/24")
            self._address(host, f"2001:db8:1::{10 + index}/64")
            self._address(host, f"2001:db8:203::{10 + index}/64")
            host.ip("route", "add", PODS4_NET, "via", PODS_ROUTER4)
            host.ip("-6", "route", "add", PODS6_NET, "via", PODS_ROUTER6)
            host.sysctl("net.ipv4.ip_nonlocal_bind", "1")
            host.sysctl("net.ipv6.ip_nonlocal_bind", "1")
            host.lan4 = f"192.0.2.{10 + index}"
            host.lan6 = f"2001:db8:1::{10 + index}"
            self.lb_nodes.append(host)

        client = self._add_namespace("client")
        self._plug(client, "p-client")
        self._address(client, f"{CLIENT4}/24")
        self._address(client, "203.0.113.250/24")
        self._address(client, f"{CLIENT6}/64")
        self._address(client, "2001:db8:203::250/64")
        self.client = client

        router = self._add_namespace("pods")
        self._plug(router, "p-pods")
        self._address(router, f"{PODS_ROUTER4}/24")
        self._address(router, f"{PODS_ROUTER6}/64")
        self.pods = router
        for pod_address in pods:
            self.add_pod_address(pod_address)

    def add_address(self, host, prefix, interface="eth0"):
        """Adds one more address (a documentation prefix, e.g. "192.0.2.200/24") to a host;
        it goes with the namespace at close()."""
        network = ipaddress.ip_interface(prefix).network
        if not any(network.subnet_of(ipaddress.ip_network(allowed)) for allowed in
                   (LAN4, LAN6, VIP4_NET, VIP6_NET, PODS4_NET, PODS6_NET)
                   if ipaddress.ip_network(allowed).version == network.version):
            raise ValueError(f"{prefix} is outside the test networks")
        self._address(host, prefix, interface)

    def add_pod_address(self, address):
        """Puts a pod address (198.51.100.x or 2001:db8:100::x) on the pods namespace."""
        parsed = ipaddress.ip_address(address)
        network = PODS4_NET if parsed.version == 4 else PODS6_NET
        if parsed not in ipaddress.ip_network(network):
            raise ValueError(f"pod address {address} is outside {network}")
        self._address(self.pods, f"{address}/{32 if parsed.version == 4 else 128}", "lo")

    # --- processes ----------------------------------------------------------------------

    def spawn(self, host, argv, name, env=None, cwd=None):
        """Starts argv inside host's namespace (host None: on the host), output to a log."""
        log_path = os.path.join(self.workdir, f"{name}.log")
        log = open(log_path, "ab")
        full = host.exec_argv(argv) if host else list(argv)
        process = subprocess.Popen(full, stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                   env=env, cwd=cwd, start_new_session=True)
        log.close()
        process.log_path = log_path
        self.processes.append((name, process))
        return process

    def stop(self, process, sig=signal.SIGTERM, timeout=10.0):
        """Sends sig to one process we started and waits (bounded) for it to exit."""
        if process.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                process.wait(timeout=5)
        return process.returncode

    def forward_api(self, port):
        """127.0.0.1:port inside every node namespace -> 127.0.0.1:port on the host."""
        for host in self.lb_nodes + [self.client]:
            process = self.spawn(None, [sys.executable, os.path.abspath(__file__), "forward",
                                        host.namespace, str(port)], f"forward-{host.role}")
            wait_until(lambda: listening(host, "127.0.0.1", port), 10, what=f"API forwarder in {host.role}")

    # --- teardown -----------------------------------------------------------------------

    def _on_signal(self, signum, frame):
        self.close()
        previous = self._previous_handlers.get(signum)
        if callable(previous):
            previous(signum, frame)
        raise SystemExit(128 + signum)

    def close(self):
        if self.closed:
            return
        self.closed = True
        for name, process in reversed(self.processes):
            with contextlib.suppress(Exception):
                self.stop(process, timeout=5)
        for host in reversed(list(self.hosts.values())):
            with contextlib.suppress(Exception):
                kill_namespace_processes(host.namespace)
        for host in reversed(list(self.hosts.values())):
            subprocess.run(["ip", "netns", "del", host.namespace], capture_output=True, timeout=10)
        for sig, handler in self._previous_handlers.items():
            with contextlib.suppress(Exception):
                signal.signal(sig, handler)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def listening(host, address, port, udp=False):
    """True when something listens on address:port inside host's namespace."""
    out = host.run(["ss", "-Hlun" if udp else "-Hltn"], check=False).stdout
    wanted = f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
    return any(wanted in line.split()[3:4] for line in out.splitlines() if len(line.split()) > 3)


# --- the API forwarder (a subcommand, run by Topology.forward_api) ------------------------

def forward(namespace, port, target_host="127.0.0.1"):
    """Listens on 127.0.0.1:port inside `namespace`, forwards each connection to the host."""
    with in_namespace(namespace):
        listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        listener.bind(("127.0.0.1", port))
        listener.listen(64)

    def pipe(downstream):
        try:
            upstream = socket.create_connection((target_host, port), timeout=10)
        except OSError:
            downstream.close()
            return
        upstream.settimeout(None)
        selector = selectors.DefaultSelector()
        selector.register(downstream, selectors.EVENT_READ, upstream)
        selector.register(upstream, selectors.EVENT_READ, downstream)
        try:
            open_ends = 2
            while open_ends:
                for key, _ in selector.select():
                    data = key.fileobj.recv(65536)
                    if not data:
                        selector.unregister(key.fileobj)
                        with contextlib.suppress(OSError):
                            key.data.shutdown(socket.SHUT_WR)
                        open_ends -= 1
                    else:
                        key.data.sendall(data)
        except OSError:
            pass
        finally:
            downstream.close()
            upstream.close()

    while True:
        connection, _ = listener.accept()
        threading.Thread(target=pipe, args=(connection,), daemon=True).start()


def main(argv):
    if len(argv) >= 3 and argv[0] == "forward":
        signal.signal(signal.SIGTERM, lambda *_: os._exit(0))
        forward(argv[1], int(argv[2]))
        return 0
    if argv and argv[0] == "check":
        try:
            check_available()
        except Unavailable as error:
            print(f"netns: {error}", file=sys.stderr)
            return 77
        return 0
    if argv and argv[0] == "remove-stale":
        remove_stale()
        return 0
    print("usage: netns.py forward NAMESPACE PORT | check | remove-stale", file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
