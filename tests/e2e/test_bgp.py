"""BGP mode (issue 12): real actors (scripts/actor.sh), HAProxy and BIRD on two load-balancer
nodes peering with an upstream router that runs BIRD too, with multipath (`merge paths`) and
Linux's L4 multipath hash; a client behind the router. Pools: "wide" and "wide6" announced by
BGP, "lan" by VRRP, side by side in one cluster.

    far (client) ---- rtr (BIRD, ECMP) ---- LAN switch ---- lb1, lb2 (actor: HAProxy, BIRD, keepalived)
                                                    \\---- pods (backends)

Checks, as a user would: requests to one VIP are answered through both nodes (IPv4 and IPv6);
a node's proxy killed: its routes are withdrawn (the router's route loses the node), traffic
continues, and the routes come back with the proxy; a node's link cut (its switch port down): traffic continues on
the other node; a graceful actor stop: zero failed requests. In kube-proxy mode both nodes
announce the VIPs too. The failure windows, with BFD on
and off, are printed as figures, never asserted.
"""

import collections
import json
import os
import signal
import time
import unittest

import cluster as cluster_module
from e2e import PYTHON, HERE, NetnsTestCase, netns, record_figure

POD4, POD6 = "198.51.100.20", "2001:db8:100::20"
ROUTER4, ROUTER6 = "192.0.2.254", "2001:db8:1::254"
FAR4, FAR6 = "198.51.100.130", "2001:db8:f00::2"
NODE_ASN, ROUTER_ASN = 64512, 65000

POOLS = {
    "lan": {"network": "203.0.113.0/25", "range": "203.0.113.100-203.0.113.109"},
    "wide": {"network": "203.0.113.128/25", "range": "203.0.113.160-203.0.113.169", "announce": "bgp"},
    "wide6": {"network": "2001:db8:b6::/64", "range": "2001:db8:b6::100-2001:db8:b6::109",
              "announce": "bgp"},
}


def service(name, pool, family="IPv4"):
    return f"""
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations:
    loadbalancer/pool: {pool}
spec:
  type: LoadBalancer
  ipFamilies: [{family}]
  selector:
    app: {name}
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
"""


# Counts which node answered each of N requests (the backend names the proxy's address).
SPREAD = r"""
import collections, json, socket, sys
host, count = sys.argv[1], int(sys.argv[2])
seen, failed = collections.Counter(), 0
for _ in range(count):
    try:
        with socket.create_connection((host, 80), timeout=2) as s:
            s.settimeout(2)
            s.sendall(b"GET / HTTP/1.0\r\nHost: spread\r\n\r\n")
            data = b""
            while len(data) < 65536:
                chunk = s.recv(4096)
                if not chunk:
                    break
                data += chunk
        peers = [l.split()[1] for l in data.decode(errors="replace").splitlines() if l.startswith("peer ")]
        seen[peers[0] if peers else "?"] += 1
    except OSError:
        failed += 1
print(json.dumps({"seen": seen, "failed": failed}))
"""


def router_conf(nodes, bfd):
    lines = [f"router id {ROUTER4};", "log stderr all;", "protocol device {}"]
    for family in ("ipv4", "ipv6"):
        # Routes of equal preference from several peers become one multipath kernel route.
        lines.append(f"protocol kernel {{ {family} {{ import none; export all; }}; merge paths yes; }}")
    if bfd:
        lines.append('protocol bfd { interface "*" { min rx interval 100 ms; min tx interval 100 ms; '
                     'multiplier 3; }; }')
    for node in nodes:
        for family, address in (("ipv4", node.lan4), ("ipv6", node.lan6)):
            lines.append(
                f"protocol bgp {node.role}_{family} {{ local as {ROUTER_ASN}; neighbor {address} as {NODE_ASN}; "
                f"{'bfd on; ' if bfd else ''}connect retry time 2; error wait time 1, 5; "
                f"{family} {{ import all; export none; }}; }}")
    return "\n".join(lines) + "\n"


def comm(pid):
    try:
        with open(f"/proc/{pid}/comm") as name:
            return name.read().strip()
    except OSError:
        return ""


class BgpTestCase(NetnsTestCase):
    lb_count = 2
    pods = (POD4, POD6)
    bfd = True
    proxy = "haproxy"

    def setUp(self):
        super().setUp()
        missing = cluster_module.missing_tools("k8slb-watch", "k8slb-allocate", "k8slb-render", "k8slb-apply")
        if missing:
            self.fail(f"tools not built in {cluster_module.BINARY_DIR}: {', '.join(missing)}")
        for binary in ("bird", "birdc", "haproxy", "keepalived"):
            if not any(os.access(os.path.join(d, binary), os.X_OK) for d in
                       os.environ.get("PATH", "").split(os.pathsep) + ["/usr/sbin", "/sbin"]):
                self.skipTest(f"{binary} is not installed")
        self.build_router()
        self.start_backend("http", POD4, 8080, "web4")
        self.start_backend("http", POD6, 8080, "web6")
        self.start_backend("http", POD4, 8081, "lan")
        bgp = {"asn": NODE_ASN, "peers": [
            {"address": ROUTER4, "asn": ROUTER_ASN, "bfd": self.bfd, "holdTime": 9},
            {"address": ROUTER6, "asn": ROUTER_ASN, "bfd": self.bfd, "holdTime": 9}]}
        self.cluster = cluster_module.Cluster(self.topology, self.workdir, pools=POOLS, bgp=bgp,
                                              ip_families="IPv4,IPv6", proxy=self.proxy)

    def build_router(self):
        """rtr on the LAN (192.0.2.254, 2001:db8:1::254), far behind it on its own link."""
        topology = self.topology
        self.router = topology._add_namespace("rtr")
        topology._plug(self.router, "p-rtr")
        topology._address(self.router, f"{ROUTER4}/24")
        topology._address(self.router, f"{ROUTER6}/64")
        self.far = topology._add_namespace("far")
        self.router.ip("link", "add", "eth1", "type", "veth", "peer", "name", "eth0", "netns", self.far.namespace)
        self.router.ip("link", "set", "eth1", "up")
        self.far.ip("link", "set", "eth0", "up")
        topology._address(self.router, "198.51.100.129/25", "eth1")
        topology._address(self.router, "2001:db8:f00::1/64", "eth1")
        topology._address(self.far, f"{FAR4}/25")
        topology._address(self.far, f"{FAR6}/64")
        self.far.ip("route", "add", "default", "via", "198.51.100.129")
        self.far.ip("-6", "route", "add", "default", "via", "2001:db8:f00::1")
        for key in ("net.ipv4.ip_forward", "net.ipv6.conf.all.forwarding",
                    "net.ipv4.fib_multipath_hash_policy", "net.ipv6.fib_multipath_hash_policy"):
            self.router.sysctl(key, "1")
        self.router.sysctl("net.ipv4.conf.all.send_redirects", "0")
        self.router.sysctl("net.ipv4.conf.eth0.send_redirects", "0")
        for node in topology.lb_nodes:
            node.ip("route", "add", "198.51.100.128/25", "via", ROUTER4)
            node.ip("-6", "route", "add", "2001:db8:f00::/64", "via", ROUTER6)
        conf = os.path.join(self.workdir, "router-bird.conf")
        with open(conf, "w") as out:
            out.write(router_conf(topology.lb_nodes, self.bfd))
        self.router_socket = os.path.join(self.workdir, "router-bird.ctl")
        self.router.spawn(["bird", "-f", "-c", conf, "-s", self.router_socket,
                           "-P", os.path.join(self.workdir, "router-bird.pid")], "router-bird")

    # --- what the router sees -----------------------------------------------------------

    def next_hops(self, vip):
        """The router's kernel next hops for a VIP (the nodes' LAN addresses)."""
        family = "-6" if ":" in vip else "-4"
        out = self.router.ip(family, "-j", "route", "show", vip, check=False).stdout
        hops = set()
        for route in json.loads(out or "[]"):
            if route.get("gateway"):
                hops.add(route["gateway"])
            for hop in route.get("nexthops", []):
                hops.add(hop["gateway"])
        return hops

    def node_of(self, address):
        for node in self.topology.lb_nodes:
            if address in (node.lan4, node.lan6):
                return node.role
        return address

    def wait_hops(self, vip, roles, timeout=60, interval=0.05):
        wanted = {n.lan6 if ":" in vip else n.lan4 for n in self.topology.lb_nodes if n.role in roles}
        return netns.wait_until(lambda: self.next_hops(vip) == wanted, timeout, interval=interval,
                                what=f"the router's route to {vip} through {sorted(roles)} "
                                     f"(now {sorted(self.next_hops(vip))})")

    def spread(self, vip, count=200):
        result = self.far.run([PYTHON, "-c", SPREAD, vip, str(count)], timeout=120)
        report = json.loads(result.stdout)
        return {self.node_of(k): v for k, v in report["seen"].items()}, report["failed"]

    # --- probes from the far client -----------------------------------------------------

    def far_probe(self, vip, duration):
        out = os.path.join(self.workdir, f"probe-{time.monotonic_ns()}.json")
        host = f"[{vip}]" if ":" in vip else vip
        process = self.far.spawn([PYTHON, os.path.join(HERE, "probe.py"), f"http://{host}/", "--interval",
                                  "0.02", "--timeout", "0.5", "--duration", str(duration), "--out", out], "probe")
        process.report_path = out
        netns.wait_until(lambda: os.path.exists(out) and self.probe_report(process)["last_ok"], 10,
                         what="the first probe")
        return process

    def window_after(self, probe, since):
        """(seconds from the first failed probe after `since` to the last, failed probes)."""
        report = self.probe_report(probe)
        gaps = [(start, end) for start, end in report["gaps"] if end > since]
        if not gaps:
            return 0.0, report
        return round(max(end for _, end in gaps) - min(start for start, _ in gaps), 3), report

    def actor_log(self, node):
        with open(self.cluster.actors[node.role].log_path, errors="replace") as log:
            return log.read()

    # --- the drill ----------------------------------------------------------------------

    def drill(self):
        lb1, lb2 = self.topology.lb_nodes
        cluster = self.cluster
        cluster.create_endpoints("default", "web4", [POD4], [("http", 8080, "TCP")])
        cluster.create_endpoints("default", "web6", [POD6], [("http", 8080, "TCP")])
        cluster.create_endpoints("default", "lan", [POD4], [("http", 8081, "TCP")])
        cluster.apply_yaml(service("web4", "wide") + "---" + service("web6", "wide6", "IPv6")
                           + "---" + service("lan", "lan"))
        vip4 = cluster.wait_for_ip("default", "web4")
        vip6 = cluster.wait_for_ip("default", "web6")
        lan_vip = cluster.wait_for_ip("default", "lan")
        both = {lb1.role, lb2.role}
        self.wait_hops(vip4, both)
        self.wait_hops(vip6, both)

        # A VRRP pool and a BGP pool side by side: the lan VIP is held by one node (keepalived)
        # and reached on the LAN; the BGP VIPs are on every node's loopback, in no VRRP instance.
        self.wait_for_body(f"http://{lan_vip}/", "pod lan", timeout=60)
        self.assertEqual(len([n for n in (lb1, lb2) if n.holds(lan_vip)]), 1)
        for node in (lb1, lb2):
            with open(os.path.join(self.workdir, node.role, "etc", "keepalived.conf")) as conf:
                keepalived = conf.read()
            with open(os.path.join(self.workdir, node.role, "etc", "bird.conf")) as conf:
                bird = conf.read()
            self.assertIn(lan_vip, keepalived)
            self.assertNotIn(vip4, keepalived)
            self.assertIn(f"route {vip4}/32 blackhole;", bird)
            self.assertIn(f"route {vip6}/128 blackhole;", bird)
            self.assertNotIn(lan_vip, bird)
            self.assertTrue(node.holds(vip4, "lo") and node.holds(vip6, "lo"), f"{node.role}: VIPs not on lo")

        # 1. Spread: each VIP answered through both nodes.
        for vip in (vip4, vip6):
            seen, failed = self.spread(vip)
            print(f"spread {vip}: {dict(seen)}, failed {failed}")
            record_figure(f"bgp spread {vip} lb1/lb2 of 200", f"{seen.get(lb1.role, 0)}/{seen.get(lb2.role, 0)}", "")
            self.assertEqual(failed, 0)
            self.assertEqual(set(seen), both, f"answers by node for {vip}: {seen}")

        bfd = "BFD on" if self.bfd else "BFD off"
        # 2. lb1's proxy killed: its routes are withdrawn while it is down, traffic goes on
        #    through lb2, and lb1 comes back with its proxy.
        probe = self.far_probe(vip4, duration=150)
        master = cluster.daemon_pid(lb1, "haproxy")
        workers = [p for p in netns.namespace_pids(lb1.namespace) if p != master and comm(p) == "haproxy"]
        self.assertTrue(workers, "no haproxy worker on lb1")
        killed_at = time.time()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        self.wait_hops(vip4, {lb2.role}, timeout=20, interval=0.02)
        withdrawn = round(time.time() - killed_at, 3)
        self.wait_hops(vip4, both)
        time.sleep(1)
        window, report = self.window_after(probe, killed_at)
        print(f"proxy killed ({bfd}): routes withdrawn after {withdrawn} s, failure window {window} s, "
              f"{report['failures']} of {report['probes']} probes failed")
        record_figure(f"bgp proxy killed ({bfd}): failure window", window)
        self.assertIn("bird: VIP routes withdrawn", self.actor_log(lb1))
        self.assertFalse(self.probe_report(probe)["failing_now"])

        # 3. lb2's link down: the router drops lb2 (BFD, or the 9 s hold timer), traffic goes on
        #    through lb1; then the link comes back and so does lb2.
        before = self.probe_report(probe)["failures"]
        down_at = time.time()
        switch = self.topology.hosts["sw"]
        switch.ip("link", "set", "p-lb2", "down")  # the cable cut: lb2's eth0 loses its carrier
        self.wait_hops(vip4, {lb1.role}, timeout=30, interval=0.02)
        dropped = round(time.time() - down_at, 3)
        time.sleep(1)
        window, report = self.window_after(probe, down_at)
        print(f"link down ({bfd}): router dropped the node after {dropped} s, failure window {window} s, "
              f"{report['failures'] - before} probes failed")
        record_figure(f"bgp node link down ({bfd}): failure window", window)
        self.assertFalse(report["failing_now"])
        restored_at = time.time()
        switch.ip("link", "set", "p-lb2", "up")
        self.wait_hops(vip4, both, timeout=90)
        print(f"link restored ({bfd}): lb2 back in the router's route after {time.time() - restored_at:.1f} s")
        self.topology.stop(probe, timeout=10)

        # 4. A graceful stop of lb1's actor: routes withdrawn first, then the proxy stops:
        #    not one request fails.
        probe = self.far_probe(vip4, duration=60)
        stopped_at = time.time()
        self.topology.stop(cluster.actors[lb1.role], signal.SIGTERM, timeout=30)
        self.wait_hops(vip4, {lb2.role}, timeout=10)
        time.sleep(1.5)
        report = self.probe_report(probe)
        self.topology.stop(probe, timeout=10)
        print(f"graceful stop ({bfd}): {report['failures']} of {report['probes']} probes failed")
        record_figure(f"bgp graceful actor stop ({bfd}): failed requests", report["failures"], "")
        self.assertEqual(report["failures"], 0, f"failed probes after the graceful stop at {stopped_at}")
        self.assertFalse(lb1.holds(vip4, "lo"), "the stopped node kept the VIP on lo")


class BgpBfdTest(BgpTestCase):
    bfd = True

    def test_spread_failover_and_graceful_stop(self):
        self.drill()


class BgpNoBfdTest(BgpTestCase):
    bfd = False

    def test_spread_failover_and_graceful_stop(self):
        self.drill()



class BgpKubeProxyTest(BgpTestCase):
    """kube-proxy mode (no proxy daemon: kube-proxy, not run here, forwards the VIPs' traffic):
    status ipMode VIP, both nodes announce the VIPs and hold them on the loopback."""
    proxy = "kubeproxy"

    def test_both_nodes_announce(self):
        cluster = self.cluster
        cluster.create_endpoints("default", "web4", [POD4], [("http", 8080, "TCP")])
        cluster.apply_yaml(service("web4", "wide"))
        vip4 = cluster.wait_for_ip("default", "web4")
        self.assertEqual(cluster.ingress_of("default", "web4")[0].get("ipMode"), "VIP")
        self.wait_hops(vip4, {n.role for n in self.topology.lb_nodes})
        for node in self.topology.lb_nodes:
            self.assertTrue(node.holds(vip4, "lo"), f"{node.role}: {vip4} not on lo")
            self.assertIsNone(cluster.daemon_pid(node, "haproxy", settle=0))


if __name__ == "__main__":
    unittest.main()
