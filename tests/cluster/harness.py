"""Shared pieces of the cluster-side tests: a simulator with the k8slb config, watcher.sh
replicas started from the build directory, and bounded waits.

Every process is started here and stopped here by its PID (a watcher by its own process
group, which it leads), whatever happens in the test.
"""

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR") or os.path.join(SOURCE_DIR, "build")
WATCHER = os.path.join(SOURCE_DIR, "scripts", "watcher.sh")
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "kubesim"))

import kubesim_client  # noqa: E402

# Pools from the documentation prefixes. "tiny" holds one IP, to see an IP freed and reused.
POOLS = {
    "pools": {
        "default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.29"},
        "other": {"network": "198.51.100.0/24", "range": "198.51.100.10-198.51.100.19"},
        "tiny": {"network": "203.0.113.0/24", "range": "203.0.113.10-203.0.113.10"},
    }
}

# Short lease settings so that a hand-over takes seconds, not the 15 s default.
LEASE = {"LEASE_DURATION": "4", "LEASE_RENEW_DEADLINE": "2.5", "LEASE_RETRY_PERIOD": "0.5"}
LEASE_DURATION = 4.0


def wait_until(predicate, timeout, what, interval=0.1, details=lambda: ""):
    """Polls `predicate` until it returns a true value (returned) or `timeout` seconds pass;
    the failure message ends with `details()` (logs, say)."""
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = predicate()
        if last:
            return last
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what} (last: {last!r})\n{details()}")


class Watcher:
    """One watcher replica: scripts/watcher.sh in a process group of its own."""

    def __init__(self, sim, workdir, identity, extra_env=None):
        self.identity = identity
        self.log_path = os.path.join(workdir, f"watcher-{identity}.log")
        env = dict(os.environ)
        env.update({"KUBECONFIG": sim.kubeconfig, "K8SLB_BIN": BINARY_DIR, "PROXY": "haproxy",
                    "LEASE_IDENTITY": identity, "POD_NAME": identity, "RESTART_MAX_DELAY": "2",
                    "WATCH_DEBOUNCE": "50ms"})
        env.update(LEASE)
        env.update(extra_env or {})
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(["bash", WATCHER], env=env, stdin=subprocess.DEVNULL,
                                            stdout=log, stderr=log, start_new_session=True)
        self.pid = self.process.pid  # also its process group id

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def status_writes(self):
        return [line for line in self.log().splitlines() if ": status.loadBalancer.ingress = " in line]

    def kill(self):
        """SIGKILL to the whole process group: the replica dies at once, lease held."""
        if self.process.poll() is None:
            try:
                os.killpg(self.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.process.wait(timeout=10)

    def stop(self, timeout=15):
        """SIGTERM to the script (it passes it on); SIGKILL to the group if it lingers."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=timeout)
            except subprocess.TimeoutExpired:
                pass
        # Anything of the group still alive (it should not be) goes too.
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        return self.process.returncode


class ClusterTestCase(unittest.TestCase):
    """A simulator with the pools ConfigMap; helpers to make Services and read them back.
    The test's own requests are exempt from injected faults (X-Sim-Exempt): the faults hit
    only the watchers."""

    pools = POOLS
    keep_state = False  # True: the simulator keeps its state across restart_sim()
    ip_families = None  # the simulated cluster's service IP families; None: single-stack IPv4

    def setUp(self):
        self.tmp = tempfile.TemporaryDirectory(prefix="k8slb-cluster-")
        self.workdir = self.tmp.name
        self.state_dir = os.path.join(self.workdir, "state") if self.keep_state else None
        self.sim = kubesim_client.start(os.path.join(self.workdir, "sim"), state_dir=self.state_dir,
                                        ip_families=self.ip_families)
        self.sim.exempt = True
        self.watchers = []
        self.addCleanup(self.tmp.cleanup)
        self.addCleanup(lambda: self.sim.stop())
        self.addCleanup(self.stop_watchers)
        self.sim.must("POST", "/api/v1/namespaces/k8slb-system/configmaps", {
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "global", "namespace": "k8slb-system"},
            "data": {"config": json.dumps(self.pools)}})

    def restart_sim(self, kill=True):
        """Stops the simulator (SIGKILL: a crash; else SIGTERM) and starts it again on its
        state: same objects, port, CA and token, no watch history."""
        assert self.keep_state
        if kill:
            self.sim.process.kill()
            self.sim.process.wait(timeout=10)
        else:
            self.sim.stop()
        self.sim = kubesim_client.start(os.path.join(self.workdir, "sim"), state_dir=self.state_dir,
                                        ip_families=self.ip_families)
        self.sim.exempt = True

    def stop_watchers(self):
        for watcher in self.watchers:
            watcher.stop()

    def start_watcher(self, identity, extra_env=None):
        watcher = Watcher(self.sim, self.workdir, identity, extra_env)
        self.watchers.append(watcher)
        return watcher

    # -- Services --

    def create_service(self, name, ns="default", annotations=None, load_balancer_ip=None,
                       protocol="TCP", port=80):
        spec = {"type": "LoadBalancer", "selector": {"app": name},
                "ports": [{"name": "p", "port": port, "protocol": protocol, "targetPort": 8080}]}
        if load_balancer_ip:
            spec["loadBalancerIP"] = load_balancer_ip
        body = {"apiVersion": "v1", "kind": "Service",
                "metadata": {"name": name, "namespace": ns, "annotations": annotations or {}},
                "spec": spec}
        return self.sim.must("POST", f"/api/v1/namespaces/{ns}/services", body)

    def delete_service(self, name, ns="default"):
        self.sim.must("DELETE", f"/api/v1/namespaces/{ns}/services/{name}")

    def service(self, name, ns="default"):
        resp = self.sim.request("GET", f"/api/v1/namespaces/{ns}/services/{name}")
        return resp.body if resp.status == 200 else None

    def ingress(self, name, ns="default"):
        svc = self.service(name, ns) or {}
        return svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])

    def ips(self, name, ns="default"):
        return [entry.get("ip") for entry in self.ingress(name, ns)]

    def wait_ip(self, name, ns="default", timeout=20):
        return wait_until(lambda: self.ips(name, ns), timeout, f"an IP for {ns}/{name}")[0]

    def all_ips(self):
        """ns/name -> ingress IPs, for every Service."""
        items = self.sim.must("GET", "/api/v1/services")["items"]
        out = {}
        for svc in items:
            key = f"{svc['metadata']['namespace']}/{svc['metadata']['name']}"
            out[key] = [e.get("ip") for e in svc.get("status", {}).get("loadBalancer", {}).get("ingress", [])]
        return out

    def assert_no_duplicate_ip(self):
        seen = {}
        for key, ips in self.all_ips().items():
            for ip in ips:
                self.assertNotIn(ip, seen, f"{ip} held by both {seen.get(ip)} and {key}")
                seen[ip] = key

    def events(self, name=None, ns="default", reason=None):
        items = self.sim.must("GET", f"/api/v1/namespaces/{ns}/events")["items"]
        return [e for e in items
                if (name is None or e.get("involvedObject", {}).get("name") == name)
                and (reason is None or e.get("reason") == reason)]

    def wait_event(self, name, reason, ns="default", timeout=20):
        return wait_until(lambda: self.events(name, ns, reason), timeout,
                          f"a {reason} Event for {ns}/{name}")[0]

    def lease(self):
        resp = self.sim.request("GET", "/apis/coordination.k8s.io/v1/namespaces/k8slb-system/leases/k8slb-watcher")
        return resp.body if resp.status == 200 else None

    def holder(self):
        lease = self.lease()
        return (lease or {}).get("spec", {}).get("holderIdentity")
