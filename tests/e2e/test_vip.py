"""End to end: a Service created with kubectl is reachable through its VIP from the client.

Every test builds its own small data centre (tests/e2e/netns.py): the API simulator, two
load-balancer nodes running the real actor (scripts/actor.sh: k8slb-watch | k8slb-render |
k8slb-apply node, with the real keepalived and HAProxy or nginx), the watcher on the host, pods
in their own namespace and a client that reaches the VIPs over the LAN."""

import os
import re
import signal
import time
import unittest

import cluster as cluster_module
from e2e import NetnsTestCase, netns, record_figure

POD_A, POD_B = "198.51.100.200", "198.51.100.201"
POD_V6 = "2001:db8:100::200"

# Port 80 is served (not redirected to https, as a TLS Service's port 80 is by default): these
# tests carry plain http through the VIP; test_tls_http covers the redirect.
WEB_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web
  namespace: default
  annotations:
    loadbalancer/sslredirect: "false"
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
    - name: https
      port: 443
      protocol: TCP
      targetPort: 8080
    - name: https-alt
      port: 8443
      protocol: TCP
      targetPort: 8080
"""

WEB6_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: web6
  namespace: default
  annotations:
    loadbalancer/pool: ipv6
spec:
  type: LoadBalancer
  ipFamilies: [IPv6]
  selector:
    app: web6
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
"""


def instances_of(keepalived_conf):
    """vrrp_instance blocks of a rendered keepalived.conf: [(first choice, priority, [VIPs])]."""
    found = []
    for match in re.finditer(r"# pool \S+: first choice (\S+)\nvrrp_instance \S+ \{(.*?)\n\}",
                             keepalived_conf, re.S):
        body = match.group(2)
        priority = int(re.search(r"priority (\d+)", body).group(1))
        vips = re.findall(r"^\s+([0-9a-f.:]+)/\d+ dev", body, re.M)
        found.append((match.group(1), priority, vips))
    return found


class VipTestCase(NetnsTestCase):
    proxy = "haproxy"
    pods = (POD_A, POD_B, POD_V6)
    keepalived = None
    cluster_options = {}

    def setUp(self):
        super().setUp()
        missing = cluster_module.missing_tools("k8slb-watch", "k8slb-allocate", "k8slb-render",
                                               "k8slb-apply")
        if missing:
            self.fail(f"tools not built in {cluster_module.BINARY_DIR}: {', '.join(missing)}")
        self.start_backend("http", POD_A, 8080, "web-a")
        self.start_backend("http", POD_B, 8080, "web-b")
        self.start_backend("http", POD_V6, 8080, "web6")
        # Dual-stack: web6 asks for ipFamilies: [IPv6], which a single-stack IPv4 cluster refuses.
        options = dict({"ip_families": "IPv4,IPv6"}, **self.cluster_options)
        self.cluster = cluster_module.Cluster(self.topology, self.workdir, proxy=self.proxy,
                                              keepalived=self.keepalived, **options)

    def create_web(self):
        """Endpoints first (the simulator has no endpoint controller), then the Service; returns
        (VIP, seconds from `kubectl apply` to the first byte through the VIP)."""
        self.cluster.create_endpoints("default", "web", [POD_A, POD_B], [("http", 8080, "TCP"),
                                                                         ("https", 8080, "TCP"),
                                                                         ("https-alt", 8080, "TCP")])
        created = time.monotonic()
        self.cluster.apply_yaml(WEB_SERVICE)
        vip = self.cluster.wait_for_ip("default", "web")
        self.wait_for_body(f"http://{vip}/", "pod web-", timeout=60)
        return vip, time.monotonic() - created

    def keepalived_conf(self, node):
        path = os.path.join(self.workdir, node.role, "etc", "keepalived.conf")
        with open(path) as conf:
            return conf.read()

    def assert_held_by_first_choice(self, vip, timeout=30):
        """Every actor names the same first-choice node for the VIP, gives it the highest
        priority, and that node (only) holds the VIP. The owner serves a new VIP as soon as its
        own keepalived has it, so the other actors may still be applying: wait for them."""
        def configured():
            owners, priorities = set(), {}
            for node in self.topology.lb_nodes:
                for owner, priority, vips in instances_of(self.keepalived_conf(node)):
                    if vip in vips:
                        owners.add(owner)
                        priorities[node.role] = priority
            return owners, priorities
        try:
            netns.wait_until(lambda: len(configured()[1]) == len(self.topology.lb_nodes), timeout,
                             interval=0.1, what=f"{vip} in every node's keepalived.conf")
        except TimeoutError:
            pass  # the assertions below say which node
        owners, priorities = configured()
        self.assertEqual(len(owners), 1, f"the actors disagree on who owns {vip}: {owners}")
        owner = owners.pop()
        self.assertEqual(set(priorities), {n.role for n in self.topology.lb_nodes},
                         f"every node must back up {vip}: {priorities}")
        self.assertEqual(max(priorities, key=priorities.get), owner)
        netns.wait_until(lambda: self.holder_of(vip) == [owner], timeout,
                         what=f"{vip} held by {owner} only (now: {self.holder_of(vip)})")
        return owner


class HaproxyTest(VipTestCase):
    proxy = "haproxy"

    def test_http_and_tls_through_the_vip(self):
        vip, seconds = self.create_web()
        record_figure("haproxy.service_to_first_byte", round(seconds, 3))
        self.assertTrue(vip.startswith("203.0.113.10"), f"{vip} is not from the default pool")
        self.assert_held_by_first_choice(vip)
        # Both pods get traffic (several connections, bounded).
        seen = set()
        for _ in range(20):
            status, body = self.curl(f"http://{vip}/")
            self.assertEqual(status, 0, body)
            seen.update(re.findall(r"pod (web-\w)", body))
            if len(seen) == 2:
                break
        self.assertEqual(seen, {"web-a", "web-b"})
        # TLS on 443 and on the port named https-*, with the pool's certificate, verified.
        cacert = self.cluster.ca_crt
        for url in (f"https://{vip}/", f"https://{vip}:8443/"):
            with self.subTest(url=url):
                status, body = self.curl(url, "--cacert", cacert)
                self.assertEqual(status, 0, body)
                self.assertIn("pod web-", body)
        # Port 443 is http mode (auto): the pod learns the client spoke https.
        self.assertIn("x-forwarded-proto https", self.curl(f"https://{vip}/", "--cacert", cacert)[1])
        # Without the test CA the certificate is not trusted: TLS really is the pool's.
        status, body = self.curl(f"https://{vip}/")
        self.assertNotEqual(status, 0, body)
        # The status says the proxy carries the traffic.
        ingress = self.cluster.ingress_of("default", "web")
        self.assertEqual(ingress[0].get("ipMode"), "Proxy", ingress)


class NginxTest(VipTestCase):
    proxy = "nginx"

    def test_http_and_tls_through_the_vip(self):
        vip, seconds = self.create_web()
        record_figure("nginx.service_to_first_byte", round(seconds, 3))
        self.assert_held_by_first_choice(vip)
        for url in (f"https://{vip}/", f"https://{vip}:8443/"):
            with self.subTest(url=url):
                status, body = self.curl(url, "--cacert", self.cluster.ca_crt)
                self.assertEqual(status, 0, body)
                self.assertIn("pod web-", body)


class Ipv6Test(VipTestCase):
    proxy = "haproxy"

    def test_ipv6_service(self):
        self.cluster.create_endpoints("default", "web6", [POD_V6], [("http", 8080, "TCP")])
        created = time.monotonic()
        self.cluster.apply_yaml(WEB6_SERVICE)
        vip = self.cluster.wait_for_ip("default", "web6")
        self.assertIn(":", vip)
        self.assertTrue(vip.startswith("2001:db8:203::"), vip)
        self.wait_for_body(f"http://[{vip}]/", "pod web6", timeout=60)
        record_figure("ipv6.service_to_first_byte", round(time.monotonic() - created, 3))
        self.assert_held_by_first_choice(vip)


class UnicastPasswordTest(VipTestCase):
    """UNICAST, VRRP_PASSWORD and ADVERT_INT from the actor's environment reach keepalived;
    the password never appears on a command line, nor in the environment of the actor's
    children (the daemons and the tools)."""
    proxy = "haproxy"
    cluster_options = {"unicast": True, "vrrp_password": "Pw-7q2x", "advert_int": 50}

    def test_unicast_with_password(self):
        vip, _ = self.create_web()
        self.assert_held_by_first_choice(vip)
        for node in self.topology.lb_nodes:
            with self.subTest(node=node.role):
                conf = self.keepalived_conf(node)
                other = next(n for n in self.topology.lb_nodes if n is not node)
                self.assertRegex(conf, rf"unicast_src_ip {re.escape(node.lan4)}\n")
                self.assertRegex(conf, rf"unicast_peer {{\n\s+{re.escape(other.lan4)}\n")
                self.assertIn("auth_pass Pw-7q2x", conf)
                # A password means VRRPv2 (v3 has no authentication), whose advert interval is
                # whole seconds: ADVERT_INT=50 cs is rounded up to 1 s.
                self.assertIn("vrrp_version 2", conf)
                self.assertRegex(conf, r"\n  advert_int 1\n")
                for pid in netns.namespace_pids(node.namespace):
                    try:
                        with open(f"/proc/{pid}/cmdline", "rb") as cmdline:
                            self.assertNotIn(b"Pw-7q2x", cmdline.read(), f"pid {pid}")
                        if pid == self.cluster.actors[node.role].pid:
                            continue  # actor.sh itself was given it (the Secret, as env)
                        with open(f"/proc/{pid}/environ", "rb") as environ:
                            self.assertNotIn(b"Pw-7q2x", environ.read(), f"pid {pid}")
                    except (FileNotFoundError, ProcessLookupError):
                        continue  # exited meanwhile


class KubeProxyTest(VipTestCase):
    proxy = "kubeproxy"

    def test_vip_held_and_status_ip_mode_vip(self):
        self.cluster.create_endpoints("default", "web", [POD_A], [("http", 8080, "TCP")])
        self.cluster.apply_yaml(WEB_SERVICE)
        vip = self.cluster.wait_for_ip("default", "web")
        ingress = self.cluster.ingress_of("default", "web")
        self.assertEqual(ingress[0].get("ipMode"), "VIP", ingress)
        netns.wait_until(lambda: self.holder_of(vip), 30, what=f"{vip} on a node")
        self.assert_held_by_first_choice(vip)
        # No proxy of k8slb runs: kube-proxy carries the traffic in this mode.
        for node in self.topology.lb_nodes:
            self.assertIsNone(self.cluster.daemon_pid(node, "haproxy", settle=0))
            self.assertIsNone(self.cluster.daemon_pid(node, "nginx", settle=0))


class FailoverTest(VipTestCase):
    proxy = "haproxy"
    keepalived = {"email": "ops@example.com", "emailFrom": "k8slb@example.com",
                  "emailServer": "127.0.0.1", "emailServerTimeout": "5"}

    def gap_after(self, probe, since, holder_wanted, vip, timeout=30):
        """Waits until `holder_wanted` holds the VIP and the probe succeeded after `since`;
        returns the outage the client saw (first gap ending after `since`)."""
        netns.wait_until(lambda: self.holder_of(vip) == [holder_wanted] or
                         holder_wanted in self.holder_of(vip), timeout,
                         what=f"{vip} on {holder_wanted}")
        report = netns.wait_until(
            lambda: (r := self.probe_report(probe))["last_ok"] and r["last_ok"] > since
            and not r["failing_now"] and r, timeout, what="traffic through the VIP again")
        gaps = [end - start for start, end in report["gaps"] if end > since]
        return round(gaps[0], 3) if gaps else 0.0

    def test_failover_sigkill_and_graceful(self):
        mail_dir = os.path.join(self.workdir, "mail")
        for node in self.topology.lb_nodes:
            self.start_smtp_sink(node, 25, os.path.join(mail_dir, node.role))
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        backup = next(n.role for n in self.topology.lb_nodes if n.role != owner)
        owner_host = self.topology.hosts[owner]
        probe = self.start_probe(f"http://{vip}/", duration=120)
        netns.wait_until(lambda: self.probe_report(probe)["last_ok"], 10, what="first probe")

        # 1. The owner's actor crashes: SIGKILL to every process of it (keepalived, HAProxy,
        #    the pipeline). The VIP stays on the dead node's interface; the backup takes over
        #    after the master-down interval and announces itself with gratuitous ARP.
        sink_pids = {p.pid for name, p in self.topology.processes if name == f"smtp-{owner}"}
        victims = [pid for pid in netns.namespace_pids(owner_host.namespace) if pid not in sink_pids]
        self.assertTrue(any(self._comm(pid) == "keepalived" for pid in victims), victims)
        killed_at = time.time()
        # Frozen first, then killed children before parents, so that no process sees another
        # die and stops gracefully (the daemons get SIGTERM when k8slb-apply dies, and a
        # stopped orphaned process group gets SIGCONT): this is a crash, not a stop.
        netns.crash(victims)
        gap_kill = self.gap_after(probe, killed_at, backup, vip)
        record_figure("failover.sigkill_gap", gap_kill)
        self.assertLess(gap_kill, 15, "traffic must resume within a generous bound")
        client_mac = self._mac_seen_by_client(vip)
        self.assertEqual(client_mac, self._mac_of(self.topology.hosts[backup]))

        # 2. The actor comes back: it is first choice again and takes its VIP back.
        self.topology.stop(self.cluster.actors[owner])
        owner_host.ip("addr", "flush", "dev", "eth0", "to", f"{vip}/32", check=False)  # the crash's leftover
        returned_at = time.time()
        self.cluster.start_actor(owner_host)
        gap_return = self.gap_after(probe, returned_at, owner, vip, timeout=60)
        record_figure("failover.preempt_back_gap", gap_return)
        netns.wait_until(lambda: self.holder_of(vip) == [owner], 30, what=f"{vip} back on {owner}")

        # 3. Graceful stop of the owner's actor (what a pod deletion does): keepalived sends
        #    priority 0 and the backup takes over at once; the actor leaves nothing running.
        stopped_at = time.time()
        status = self.topology.stop(self.cluster.actors[owner], signal.SIGTERM, timeout=30)
        self.assertEqual(status, 0, "actor.sh exits 0 on SIGTERM")
        gap_term = self.gap_after(probe, stopped_at, backup, vip)
        record_figure("failover.sigterm_gap", gap_term)
        self.assertLess(gap_term, 15)
        leftovers = [pid for pid in netns.namespace_pids(owner_host.namespace) if pid not in sink_pids]
        self.assertEqual(leftovers, [], "processes left after the actor stopped")
        self.assertFalse(owner_host.holds(vip))
        report = self.stop_probe(probe)
        self.assertGreater(report["probes"], 50)

        # keepalived mailed the state changes to the sink on each node's loopback.
        def master_mail():
            directory = os.path.join(mail_dir, backup)
            texts = [open(os.path.join(directory, f)).read() for f in os.listdir(directory)
                     if f.endswith(".eml")]
            return [t for t in texts if "MASTER" in t and "ops@example.com" in t]
        mails = netns.wait_until(master_mail, 30, what=f"a MASTER mail from {backup}")
        self.assertIn("k8slb@example.com", mails[0])

    @staticmethod
    def _comm(pid):
        try:
            with open(f"/proc/{pid}/comm") as comm:
                return comm.read().strip()
        except OSError:
            return ""

    def _mac_of(self, host):
        return host.ip("-j", "link", "show", "eth0").stdout.split('"address":"')[1].split('"')[0]

    def _mac_seen_by_client(self, vip):
        def neighbour():
            out = self.topology.client.ip("neigh", "show", vip).stdout.split()
            return out[out.index("lladdr") + 1] if "lladdr" in out else None
        return netns.wait_until(neighbour, 10, what=f"client's ARP entry for {vip}")


if __name__ == "__main__":
    unittest.main()
