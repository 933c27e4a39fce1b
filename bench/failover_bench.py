#!/usr/bin/env python3
"""Benchmark of VIP failover between two real nodes (keepalived, HAProxy, the real actors).

Brings up the end-to-end data centre of tests/e2e (network namespaces, the API simulator, the
watcher and two actors, a pod), creates one LoadBalancer Service and probes its VIP from the
client every 10 ms (each probe a new TCP connection and an HTTP GET, 50 ms timeout). Then, RUNS
times each, the VIP's master:
  - kill:     its node's processes (keepalived, HAProxy, the actor's pipeline) are frozen then
              SIGKILLed together, as a node that dies;
  - linkdown: its eth0 is set down (the node is cut off; its processes live on);
  - graceful: its actor gets SIGTERM (what a pod deletion does; keepalived sends priority 0);
and the traffic gap the client saw (last good answer before, first good answer after) is
reported, p50 and max by cause. With --services N, N more Services (one port each, in an IPv6
pool `bulk` of their own, so about half of them on each node) move with the master: the time
from the fault until the other node holds every one of the master's bulk VIPs is reported too. After each run the node comes back and takes its VIP back
(preemption), and the next run starts after a random pause so that the kill falls anywhere
in the advert interval.

Then the flap count under load: for LOAD seconds, two CPU hogs in each node's namespace
(`timeout LOAD sh -c 'while :; do :; done'`, started and killed by PID) saturate the cores,
and every VRRP state change keepalived logs ("Entering MASTER/BACKUP/FAULT STATE") on either
node is counted: with nothing failing, any transition is spurious.

    python3 bench/failover_bench.py --binary-dir build [--runs 10] [--load 600] [--advert-int CS]
    python3 bench/failover_bench.py --binary-dir build --quick     # 3 runs, 60 s of load
    python3 bench/failover_bench.py --binary-dir build --services 1000 --load 0

Not part of ctest (run as root: it makes network namespaces). --advert-int unset means
actor.sh's default, as the manifests ship. Output: one JSON document on stdout, progress on
stderr.
"""

import argparse
import json
import os
import platform
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
E2E = os.path.join(SOURCE_DIR, "tests", "e2e")
sys.path.insert(0, E2E)
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "kubesim"))

POD = "198.51.100.200"
BULK_POOL = "2001:db8:203::1:0/112"  # beside the test pools, which leave out the e2e `ipv6` pool's /64
TRANSITION = re.compile(r"Entering (MASTER|BACKUP|FAULT) STATE")


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


class Bench:
    def __init__(self, options):
        import cluster as cluster_module
        import netns
        self.netns = netns
        self.options = options
        self.workdir = tempfile.mkdtemp(prefix="k8slb-failover-bench-")
        self.topology = netns.Topology("failbench", self.workdir, lb_count=2, pods=[POD])
        for host in self.topology.lb_nodes:  # linkdown: the node keeps its IPv6 addresses
            host.sysctl("net.ipv6.conf.eth0.keep_addr_on_down", "1")
        self.topology.pods.spawn([sys.executable, os.path.join(E2E, "backend.py"), "http", POD, "8080", "web"],
                                 "pod-web")
        netns.wait_until(lambda: netns.listening(self.topology.pods, POD, 8080), 10, what="backend")
        self.cluster = cluster_module.Cluster(self.topology, self.workdir, proxy="haproxy",
                                              advert_int=options.advert_int)
        self.cluster.create_endpoints("default", "web", [POD], [("http", 8080, "TCP")])
        self.cluster.apply_yaml(cluster_module.http_service("web"))
        self.vip = self.cluster.wait_for_ip("default", "web", timeout=60)
        self.bulk_vips = self.add_bulk(options.services) if options.services else set()
        self.probe_out = os.path.join(self.workdir, "probe.json")
        self.probe = self.topology.client.spawn(
            [sys.executable, os.path.join(E2E, "probe.py"), f"http://{self.vip}/", "--interval", "0.01",
             "--timeout", "0.05", "--duration", str(options.max_seconds), "--out", self.probe_out], "probe")
        netns.wait_until(lambda: self.report().get("last_ok"), 60, what="first answer through the VIP")

    def add_bulk(self, count):
        """Creates `count` Services in pool `bulk` and waits until each VIP is on one node."""
        import cluster as cluster_module
        import kubesim_client
        from node_bench import endpoint_slice, service
        pools = {name: pool for name, pool in cluster_module.DEFAULT_POOLS.items() if name != "ipv6"}
        pools["bulk"] = {"network": BULK_POOL, "range": BULK_POOL}
        self.cluster.apply_objects([{"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "global", "namespace": "k8slb-system"},
                                     "data": {"config": json.dumps({"pools": pools})}}])
        sim = kubesim_client.Simulator(self.cluster.simulator, self.cluster.kube_dir,
                                       f"https://127.0.0.1:{self.cluster.port}")
        names = [f"bulk-{i:05d}" for i in range(count)]
        for name in names:
            sim.must("POST", "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices", endpoint_slice(name))
            # The NodePort range holds 2,768 ports and the API server refuses a Service once it is full.
            sim.must("POST", "/api/v1/namespaces/default/services",
                     service(name, pool="bulk", node_ports=len(names) <= 2000))
        timeout = 120 + 0.2 * count

        def allocated():
            items = sim.must("GET", "/api/v1/namespaces/default/services")["items"]
            vips = {(s.get("status", {}).get("loadBalancer", {}).get("ingress") or [{}])[0].get("ip")
                    for s in items if s["metadata"]["name"].startswith("bulk-")}
            return len(vips) == count and None not in vips and vips
        vips = self.netns.wait_until(allocated, timeout, interval=1, what=f"IPs on {count} Services")
        self.netns.wait_until(lambda: self.bulk_settled(vips), timeout, interval=1, what=f"{count} VIPs held")
        log(f"{count} more Services, their VIPs held")
        return vips

    def bulk_held(self, vips=None):
        """{node: the VIPs of `vips` (default: the bulk ones) it holds}"""
        vips = vips or self.bulk_vips
        return {host.role: set(host.addresses_on("eth0")) & vips for host in self.topology.lb_nodes}

    def bulk_settled(self, vips=None):
        """Every VIP of `vips` (default: the bulk ones) on exactly one node."""
        together = [address for held in self.bulk_held(vips).values() for address in held]
        return len(together) == len(set(together)) == len(vips or self.bulk_vips)

    def moved_after(self, since, moving, new_owner, timeout=60):
        """Seconds from `since` until `new_owner` holds every address of `moving`."""
        host = self.topology.hosts[new_owner]
        self.netns.wait_until(lambda: moving <= set(host.addresses_on("eth0")), timeout, interval=0.01,
                              what=f"{len(moving)} VIPs on {new_owner}")
        return round(time.time() - since, 3)

    def report(self):
        try:
            with open(self.probe_out) as report:
                return json.load(report)
        except (OSError, ValueError):
            return {}

    def holders(self):
        return [host.role for host in self.topology.lb_nodes if host.holds(self.vip)]

    def settled(self, owner, timeout=60):
        """Waits until `owner` alone holds the VIP and the probe has answered for a second."""
        self.netns.wait_until(lambda: self.holders() == [owner], timeout, what=f"{self.vip} on {owner} only")
        since = time.time()
        self.netns.wait_until(lambda: (r := self.report()).get("last_ok", 0) > since + 1 and not r["failing_now"],
                              timeout, what="steady traffic")

    def gap_after(self, since, new_owner, timeout=30):
        self.netns.wait_until(lambda: new_owner in self.holders(), timeout, what=f"{self.vip} on {new_owner}")
        report = self.netns.wait_until(
            lambda: (r := self.report()).get("last_ok", 0) > since and not r["failing_now"] and r, timeout,
            what="traffic again")
        gaps = [end - start for start, end in report["gaps"] if end > since]
        return round(gaps[0], 3) if gaps else 0.0

    def failover(self, cause):
        owner = self.holders()[0]
        other = next(h.role for h in self.topology.lb_nodes if h.role != owner)
        host = self.topology.hosts[owner]
        actor = self.cluster.actors[owner]
        time.sleep(random.uniform(0, 0.5))
        moving = self.bulk_held()[owner] if self.bulk_vips else set()
        if cause == "kill":
            victims = self.netns.namespace_pids(host.namespace)
            at = time.time()
            self.netns.crash(victims)  # frozen, then SIGKILLed children first: a crash, not a stop
        elif cause == "linkdown":
            at = time.time()
            host.ip("link", "set", "eth0", "down")
        else:
            at = time.time()
            actor.send_signal(signal.SIGTERM)
        moved = self.moved_after(at, moving, other) if moving else None
        gap = self.gap_after(at, other)
        # Bring the node back; it preempts and takes its VIP back.
        if cause == "linkdown":
            host.ip("link", "set", "eth0", "up")
            # The kernel dropped the routes through eth0 with the link; put the pods' back.
            host.ip("route", "replace", self.netns.PODS4_NET, "via", self.netns.PODS_ROUTER4)
            host.ip("-6", "route", "replace", self.netns.PODS6_NET, "via", self.netns.PODS_ROUTER6,
                    check=False)
        else:
            self.topology.stop(actor, timeout=30)
            host.ip("addr", "flush", "dev", "eth0", "to", f"{self.vip}/32", check=False)
            if self.bulk_vips:
                host.ip("-6", "addr", "flush", "dev", "eth0", "to", BULK_POOL, check=False)
            self.cluster.start_actor(host)
        self.settled(owner)
        if self.bulk_vips:
            self.netns.wait_until(lambda: self.bulk_held()[owner] == moving and self.bulk_settled(), 120,
                                  interval=0.5, what=f"{len(moving)} VIPs back on {owner}")
        return gap, moved, len(moving)

    def transitions(self):
        count = 0
        for host in self.topology.lb_nodes:
            with open(os.path.join(self.workdir, f"actor-{host.role}.log"), errors="replace") as actor_log:
                count += sum(1 for line in actor_log if TRANSITION.search(line))
        return count

    def under_load(self, seconds):
        owner = self.holders()[0]
        before_transitions = self.transitions()
        before = self.report()
        hogs = [host.spawn(["timeout", str(seconds), "sh", "-c", "while :; do :; done"], f"hog-{host.role}-{i}")
                for host in self.topology.lb_nodes for i in range(2)]
        started = time.time()
        try:
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(min(5, max(0.0, deadline - time.monotonic())))
        finally:
            for hog in hogs:
                self.topology.stop(hog, signal.SIGKILL, timeout=5)
        time.sleep(1)
        after = self.report()
        gaps = [end - start for start, end in after.get("gaps", []) if end > started]
        return {"seconds": seconds, "hogs_per_node": 2,
                "spurious_transitions": self.transitions() - before_transitions,
                "holder_after": self.holders(), "holder_before": [owner],
                "probes": after.get("probes", 0) - before.get("probes", 0),
                "probe_failures": after.get("failures", 0) - before.get("failures", 0),
                "longest_probe_gap_s": round(max(gaps), 3) if gaps else 0.0}

    def close(self):
        self.topology.close()
        if not self.options.keep:
            shutil.rmtree(self.workdir, ignore_errors=True)
        else:
            log(f"logs kept in {self.workdir}")


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return ""


def sched_policy(pid):
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[38])
    except (OSError, IndexError, ValueError):
        return None


def summary(values):
    return {"runs": len(values), "p50_s": round(statistics.median(values), 3), "max_s": round(max(values), 3),
            "min_s": round(min(values), 3), "all_s": values}


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary-dir", default=os.path.join(SOURCE_DIR, "build"))
    parser.add_argument("--runs", type=int, default=10)
    parser.add_argument("--load", type=int, default=600, help="seconds of CPU load for the flap count (0: none)")
    parser.add_argument("--advert-int", type=int, default=None, help="centiseconds (default: actor.sh's)")
    parser.add_argument("--causes", default="kill,linkdown,graceful")
    parser.add_argument("--services", type=int, default=0,
                        help="Services beside the probed one, in an IPv6 pool of their own: the VIPs that move "
                             "with the master (default 0)")
    parser.add_argument("--keep", action="store_true", help="keep the work directory (every daemon's log)")
    parser.add_argument("--quick", action="store_true", help="3 runs per cause, 60 s of load")
    options = parser.parse_args(argv)
    if options.quick:
        options.runs, options.load = 3, 60
    options.runs = max(1, min(options.runs, 100))
    options.load = max(0, min(options.load, 3600))
    options.services = max(0, min(options.services, 10000))
    causes = [c for c in options.causes.split(",") if c]
    options.max_seconds = options.load + options.runs * len(causes) * 60 + 300
    os.environ["K8SLB_BINARY_DIR"] = os.path.abspath(options.binary_dir)
    bench = Bench(options)
    result = {"machine": {"cores": os.cpu_count(), "kernel": platform.release()},
              "advert_int_cs": options.advert_int or "actor default", "vip": bench.vip,
              "services": 1 + options.services}
    try:
        # The first election may briefly leave the VIP on both nodes; the first choice keeps it.
        time.sleep(2)
        owner = bench.netns.wait_until(lambda: len(h := bench.holders()) == 1 and h[0], 60,
                                       what="the VIP on one node")
        bench.settled(owner)
        with open(os.path.join(bench.workdir, owner, "etc", "keepalived.conf")) as conf:
            result["keepalived_timers"] = sorted({line.strip() for line in conf
                                                  if line.startswith("  vrrp_") or "advert_int" in line})
        # Scheduling policy of each keepalived process (0 normal, 1 FIFO, 2 RR: real-time).
        result["keepalived_sched_policy"] = sorted(
            sched_policy(pid) for host in bench.topology.lb_nodes
            for pid in bench.netns.namespace_pids(host.namespace) if comm(pid) == "keepalived")
        for cause in causes:
            gaps, moves = [], []
            for run in range(options.runs):
                gap, moved, moving = bench.failover(cause)
                gaps.append(gap)
                if moved is not None:
                    moves.append(moved)
                log(f"{cause} run {run + 1}: gap {gap} s" + (f", {moving} VIPs moved in {moved} s" if moving else ""))
            result[f"gap_{cause}"] = summary(gaps)
            if moves:
                result[f"all_moved_{cause}"] = summary(moves)
        if options.load:
            log(f"{options.load} s under load")
            result["load"] = bench.under_load(options.load)
            log(f"transitions under load: {result['load']['spurious_transitions']}")
    finally:
        bench.close()
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
