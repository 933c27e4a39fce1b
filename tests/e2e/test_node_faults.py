"""Node fault drills (issue 7): real actors, keepalived and HAProxy on two load-balancer nodes,
a client probing the VIP every 20 ms. Each drill names the rule it checks; gaps are printed as
figures (FIGURE lines, $K8SLB_E2E_FIGURES), never asserted as timings.

  * the proxy dies on the VIP's master (worker killed; then crash-looping): keepalived tracks
    the proxy (`k8slb-apply health`), so the healthy node takes the VIP and keeps it while the
    master's proxy is down, and the master takes it back when its proxy is healthy again;
  * a pool the nodes cannot place (`interface: eth9`): no VIP is lost;
  * a missing certificate: only that Service's TLS ports are left out; its other ports and
    every other Service are served;
  * a config document line HAProxy's checker refuses (`haproxy.defaults`): both nodes keep the
    config they run and the VIP keeps serving;
  * the last three also reach `kubectl describe`: one Warning Event on the Service per problem,
    however many nodes report it (k8slb-apply events);
  * k8slb-watch dies (the API refusing the actor, say): only the reader restarts; the daemons
    keep running with their config and no VIP moves;
  * one node applies a Service change before the other (here: the backup's k8slb-apply is
    held while a Service sharing the VRRP instance of another is deleted): the other Service's
    VIP stays on its node alone.
"""

import ipaddress
import json
import os
import re
import signal
import time
import unittest

import cluster as cluster_module
from e2e import netns, record_figure
import test_vip
from test_vip import POD_A, VipTestCase

OTHER_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: other
  namespace: default
spec:
  type: LoadBalancer
  selector:
    app: other
  ports:
    - name: http
      port: 8080
      protocol: TCP
      targetPort: 8080
"""


comm = test_vip.FailoverTest._comm

# A line of the pod log (docs/observability.md, Logs): the tools', the scripts' and the daemons'.
LOGFMT = re.compile(r'^time=\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z level=(error|warn|info|debug) '
                    r'component=(\S+) msg=("(?:[^"\\]|\\.)*"|\S+)$')


def children(pid):
    try:
        with open(f"/proc/{pid}/task/{pid}/children") as f:
            return [int(p) for p in f.read().split()]
    except OSError:
        return []


class NodeFaultCase(VipTestCase):
    def gaps_since(self, probe, since):
        report = self.probe_report(probe)
        return [round(end - start, 3) for start, end in report["gaps"] if end > since], report

    def wait_served_after(self, probe, since, timeout=30):
        """Waits until the probe succeeds again after `since`; returns the gaps ending after it."""
        netns.wait_until(lambda: (r := self.probe_report(probe))["last_ok"] and r["last_ok"] > since
                         and not r["failing_now"], timeout, what="traffic through the VIP again")
        return self.gaps_since(probe, since)[0]

    def actor_log(self, node):
        with open(self.cluster.actors[node.role].log_path, errors="replace") as log:
            return log.read()

    def node(self, role):
        return self.topology.hosts[role]

    def service_events(self, namespace, name, reason):
        """The Events on a Service with this reason, as `kubectl describe` finds them."""
        service = self.cluster.get("service", "-n", namespace, name)
        events = self.cluster.get("events", "-n", namespace)["items"]
        return [e for e in events if e["involvedObject"].get("kind") == "Service"
                and e["involvedObject"].get("name") == name
                and e["involvedObject"].get("uid") == service["metadata"]["uid"] and e["reason"] == reason]

    def assert_log_is_logfmt(self, node, daemons):
        """Every line of the actor's log on stderr is logfmt, the daemons' under their names (on
        stdout: k8slb-apply's result lines, data)."""
        components = set()
        for line in self.actor_log(node).splitlines():
            if line.startswith("{") and "actions" in json.loads(line):
                continue
            match = LOGFMT.match(line)
            self.assertTrue(match, f"{node.role}: not a logfmt line: {line!r}")
            components.add(match.group(2))
        self.assertLessEqual(set(daemons), components, f"{node.role}: components {components}")

    def assert_one_event_each(self, events, messages):
        """Each message in exactly one Warning Event, from one of the load-balancer nodes."""
        nodes = {n.role for n in self.topology.lb_nodes}
        for message in messages:
            found = [e for e in events if message in e["message"]]
            self.assertEqual(len(found), 1, f"Events with {message!r}: {json.dumps(events, indent=1)}")
            self.assertEqual(found[0]["type"], "Warning")
            self.assertIn(found[0]["source"].get("host"), nodes)
            self.assertEqual(found[0]["reportingComponent"], "k8slb")


class ProxyTrackedTest(NodeFaultCase):
    proxy = "haproxy"

    def proxy_pids(self, node):
        return [pid for pid in netns.namespace_pids(node.namespace) if comm(pid) == self.proxy]

    def test_haproxy_killed_and_crash_looping(self):
        self.killed_and_crash_looping()

    def killed_and_crash_looping(self):
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        backup = next(n.role for n in self.topology.lb_nodes if n.role != owner)
        owner_node = self.node(owner)
        probe = self.start_probe(f"http://{vip}/", duration=150)
        netns.wait_until(lambda: self.probe_report(probe)["last_ok"], 10, what="first probe")

        # 1. Only the worker dies: HAProxy's master exits with it, k8slb-apply restarts it; the
        #    VIP moves to the healthy node meanwhile (or stays, if HAProxy is back first).
        #    (nginx's master starts a new worker.)
        master = self.cluster.daemon_pid(owner_node, self.proxy)
        workers = [pid for pid in children(master) if comm(pid) == self.proxy]
        self.assertTrue(workers, f"no {self.proxy} worker on the master")
        killed_at = time.time()
        for pid in workers:
            os.kill(pid, signal.SIGKILL)
        gaps = self.wait_served_after(probe, killed_at)
        record_figure(f"node_faults.{self.proxy}_worker_killed_gap", max(gaps, default=0.0))
        netns.wait_until(lambda: self.holder_of(vip) == [owner], 30, what=f"{vip} back on {owner}")
        netns.wait_until(lambda: not self.probe_report(probe)["failing_now"], 10, what="traffic")

        # 2. HAProxy crash-loops on the master for 15 s (killed whenever it appears, so it never
        #    stays up): the healthy node takes the VIP and holds it for the whole time.
        crash_from = time.time()
        failures_before = self.probe_report(probe)["failures"]
        kills, moved_at, holders = 0, None, set()
        deadline = time.monotonic() + 15
        for _ in range(15 * 50 + 1):
            if time.monotonic() > deadline:
                break
            for pid in self.proxy_pids(owner_node):
                try:
                    os.kill(pid, signal.SIGKILL)
                    kills += 1
                except ProcessLookupError:
                    pass
            holder = self.holder_of(vip)
            if moved_at is None and holder == [backup]:
                moved_at = time.time()
            if moved_at is not None and time.time() - moved_at > 1:
                holders.add(tuple(holder))
            time.sleep(0.02)
        gaps, report = self.gaps_since(probe, crash_from)
        failing_now = report["failing_now"]
        record_figure(f"node_faults.{self.proxy}_crash_loop_first_gap", gaps[0] if gaps else 0.0)
        record_figure(f"node_faults.{self.proxy}_crash_loop_gaps", len(gaps), unit="gaps")
        record_figure(f"node_faults.{self.proxy}_crash_loop_kills", kills, unit="kills")
        record_figure(f"node_faults.{self.proxy}_crash_loop_failed_probes", report["failures"] - failures_before,
                      unit="probes of 20 ms")
        self.assertIsNotNone(moved_at, f"{vip} never moved to {backup} while {self.proxy} crash-looped on {owner}")
        record_figure(f"node_faults.{self.proxy}_crash_loop_vip_moved_after", round(moved_at - crash_from, 3))
        self.assertEqual(holders, {(backup,)}, f"{vip} must stay on {backup} while {owner}'s {self.proxy} is down")
        self.assertFalse(failing_now, f"the VIP is not served while the master's {self.proxy} crash-loops")
        # Before the VIP moves, the owner's proxy may be restarted (after 1 s) before keepalived's
        # check (every 1 s) sees it dead, and answer a probe or two: the outage is then two gaps.
        # Once the VIP is on the healthy node, the traffic must not break again.
        after_move = [round(end - start, 3) for start, end in report["gaps"] if start > moved_at]
        self.assertEqual(after_move, [], f"the traffic broke after {vip} moved to {backup} (all gaps: {gaps})")

        # 3. HAProxy is healthy again: the first choice takes its VIP back.
        healed_at = time.time()
        netns.wait_until(lambda: self.holder_of(vip) == [owner], 40, what=f"{vip} back on {owner}")
        gaps = self.wait_served_after(probe, healed_at)
        record_figure(f"node_faults.{self.proxy}_healed_takeback_gap", max(gaps, default=0.0))
        self.stop_probe(probe)

        # 4. kubectl describe service web: the failover notice, one Event per node that took the
        #    VIP (the takeback raises the count of the first choice's Event).
        def notices():
            return self.service_events("default", "web", "NodeAssigned")
        netns.wait_until(lambda: len(notices()) >= 2, 20, what="NodeAssigned Events from both nodes")
        self.assertEqual(sorted(e["message"] for e in notices()),
                         sorted(f"{vip} is served by node {node}" for node in (owner, backup)),
                         json.dumps(notices(), indent=1))
        for event in notices():
            self.assertEqual(event["type"], "Normal")
            self.assertEqual(event["source"]["host"], event["message"].rsplit(" ", 1)[1])


class NginxTrackedTest(ProxyTrackedTest):
    """The same with nginx: keepalived tracks its master (alive, with a worker)."""
    proxy = "nginx"

    test_haproxy_killed_and_crash_looping = None  # not inherited

    def test_nginx_killed_and_crash_looping(self):
        self.killed_and_crash_looping()


class PoolInterfaceTest(NodeFaultCase):
    proxy = "haproxy"

    def test_missing_interface_loses_no_vip(self):
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        probe = self.start_probe(f"http://{vip}/", duration=60)
        netns.wait_until(lambda: self.probe_report(probe)["last_ok"], 10, what="first probe")
        pools = json.loads(json.dumps(self.cluster.pools))
        pools["default"]["interface"] = "eth9"
        changed_at = time.time()
        failures_before = self.probe_report(probe)["failures"]
        self.cluster.apply_objects([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "global", "namespace": "k8slb-system"},
            "data": {"config": json.dumps({"pools": pools}, indent=2)}}])
        # Every actor rendered the new config (and says why it keeps the pool where it was).
        for node in self.topology.lb_nodes:
            netns.wait_until(lambda: "no interface named 'eth9'" in self.actor_log(node), 30,
                             what=f"{node.role} rendering the config with eth9")
        time.sleep(3)  # keepalived would have dropped the VIP by now
        gaps, report = self.gaps_since(probe, changed_at)
        record_figure("node_faults.missing_interface_gap", max(gaps, default=0.0))
        record_figure("node_faults.missing_interface_failed_probes", report["failures"] - failures_before,
                      unit="probes of 20 ms")
        self.assertEqual(self.holder_of(vip), [owner], "the VIP left its node")
        self.assertEqual(gaps, [], "the VIP stopped serving after the config change")
        self.assertFalse(report["failing_now"])
        for node in self.topology.lb_nodes:
            self.assertIn("keeping the last good interface eth0", self.actor_log(node))
        # kubectl describe service web: one Warning Event, though both nodes report it.
        message = "pools.default: interface: no interface named 'eth9'"
        netns.wait_until(lambda: self.service_events("default", "web", "NoInterface"), 30,
                         what="a NoInterface Event on default/web")
        time.sleep(2)  # the other node's report, if it were to make a second Event
        self.assert_one_event_each(self.service_events("default", "web", "NoInterface"), [message])
        self.stop_probe(probe)


class MissingCertificateTest(NodeFaultCase):
    proxy = "haproxy"

    def test_missing_cert_leaves_out_tls_ports(self):
        # The default pool's certificate bundle is missing on the nodes.
        os.rename(os.path.join(self.cluster.cert_dir, "default.pem"),
                  os.path.join(self.cluster.cert_dir, "default.pem.away"))
        self.cluster.create_endpoints("default", "other", [POD_A], [("http", 8080, "TCP")])
        self.cluster.apply_yaml(OTHER_SERVICE)
        other = self.cluster.wait_for_ip("default", "other")
        # web (80, 443, 8443): port 80 is served, its TLS ports are left out.
        vip, _ = self.create_web()
        self.wait_for_body(f"http://{other}:8080/", "pod web-", timeout=60)
        status, body = self.curl(f"https://{vip}/", "--cacert", self.cluster.ca_crt)
        self.assertNotEqual(status, 0, body)
        for node in self.topology.lb_nodes:
            # The owner serves as soon as it has applied; the other node may still be applying.
            def haproxy_cfg():
                with open(os.path.join(self.workdir, node.role, "etc", "haproxy.cfg")) as cfg:
                    return cfg.read()
            try:
                netns.wait_until(lambda: f"bind {vip}:80 " in haproxy_cfg(), 30, interval=0.1,
                                 what=f"{vip} in {node.role}'s haproxy.cfg")
            except TimeoutError:
                pass  # the assertions below say what is missing
            cfg = haproxy_cfg()
            self.assertNotIn("ssl crt", cfg)
            self.assertIn(f"bind {vip}:80 ", cfg)
            log = self.actor_log(node)
            self.assertIn("default/web: spec.ports[1]: port 443: no readable certificate "
                          f"{self.cluster.cert_dir}/default.pem (pool default)", log)
            self.assertIn("default/web: spec.ports[2]: port 8443: no readable certificate", log)
        # kubectl describe service web: a Warning Event per left-out port, once for both nodes;
        # the Service that is served has none.
        messages = [f"spec.ports[1]: port 443: no readable certificate {self.cluster.cert_dir}/default.pem",
                    "spec.ports[2]: port 8443: no readable certificate"]
        netns.wait_until(lambda: len(self.service_events("default", "web", "MissingCertificate")) >= 2, 30,
                         what="MissingCertificate Events on default/web")
        time.sleep(2)
        self.assert_one_event_each(self.service_events("default", "web", "MissingCertificate"), messages)
        self.assertEqual(self.service_events("default", "other", "MissingCertificate"), [])


class ConfigRejectedTest(NodeFaultCase):
    proxy = "haproxy"
    # A line of the config document that reaches the proxy's config as given; its checker
    # refuses it. (document, what the actor logs, the start of the Event, the checker's words)
    refused = ({"haproxy": {"defaults": ["no-such-keyword here"]}},
               "haproxy.cfg: rejected by `haproxy -c`",
               "haproxy.cfg rejected by `haproxy -c`, the node keeps its running config: [ALERT] config : "
               "parsing [haproxy.cfg:",
               "unknown keyword 'no-such-keyword' in 'defaults' section")

    def test_config_rejected_once(self):
        document, logged, message, words = self.refused
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        probe = self.start_probe(f"http://{vip}/", duration=60)
        netns.wait_until(lambda: self.probe_report(probe)["last_ok"], 10, what="first probe")
        changed_at = time.time()
        failures_before = self.probe_report(probe)["failures"]
        self.cluster.apply_objects([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "global", "namespace": "k8slb-system"},
            "data": {"config": json.dumps(dict(document, pools=self.cluster.pools), indent=2)}}])
        config_file = logged.split(":")[0]
        for node in self.topology.lb_nodes:
            netns.wait_until(lambda: logged in self.actor_log(node), 30,
                             what=f"{node.role}'s checker refusing the config")
            with open(os.path.join(self.workdir, node.role, "etc", config_file)) as f:
                cfg = f.read()
            self.assertNotIn(words.split()[-1], cfg, f"{node.role} installed the refused config")
        # kubectl describe service web: one Warning Event naming the checker's message, though
        # both nodes' checkers refused the config.
        netns.wait_until(lambda: self.service_events("default", "web", "ConfigRejected"), 30,
                         what="a ConfigRejected Event on default/web")
        time.sleep(2)  # the other node's report, if it were to make a second Event
        events = self.service_events("default", "web", "ConfigRejected")
        self.assert_one_event_each(events, [message])
        self.assertIn(words, events[0]["message"])
        gaps, report = self.gaps_since(probe, changed_at)
        record_figure(f"node_faults.{self.proxy}_config_rejected_failed_probes", report["failures"] - failures_before,
                      unit="probes of 20 ms")
        self.assertEqual(self.holder_of(vip), [owner], "the VIP left its node")
        self.assertEqual(gaps, [], "the VIP stopped serving after the refused config")
        self.assertFalse(report["failing_now"])
        self.stop_probe(probe)
        # The pod log: one format, the daemons' lines under their names.
        for node in self.topology.lb_nodes:
            self.assert_log_is_logfmt(node, {self.proxy, "keepalived", "k8slb-apply", "actor.sh"})


class NginxConfigRejectedTest(ConfigRejectedTest):
    proxy = "nginx"
    refused = ({"nginx": {"http": ["no_such_directive on;"]}},
               "nginx.conf: rejected by `nginx -t`",
               "nginx.conf rejected by `nginx -t`, the node keeps its running config: [emerg] unknown directive "
               '"no_such_directive" in nginx.conf:',
               "no_such_directive")


class ReaderRestartTest(NodeFaultCase):
    proxy = "haproxy"

    def test_watch_killed_keeps_daemons(self):
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        owner_node = self.node(owner)
        probe = self.start_probe(f"http://{vip}/", duration=60)
        netns.wait_until(lambda: self.probe_report(probe)["last_ok"], 10, what="first probe")
        daemons = {name: self.cluster.daemon_pid(owner_node, name) for name in ("keepalived", "haproxy")}
        actor = self.cluster.actors[owner].pid
        watches = [pid for pid in children(actor) if comm(pid) == "k8slb-watch"]
        self.assertEqual(len(watches), 1, f"k8slb-watch among the actor's children: {children(actor)}")
        killed_at = time.time()
        failures_before = self.probe_report(probe)["failures"]
        os.kill(watches[0], signal.SIGKILL)
        netns.wait_until(lambda: [p for p in children(actor) if comm(p) == "k8slb-watch"
                                  and p != watches[0]], 20, what="a new k8slb-watch")
        # The restarted reader still drives the node: a new Service is served.
        self.cluster.create_endpoints("default", "other", [POD_A], [("http", 8080, "TCP")])
        self.cluster.apply_yaml(OTHER_SERVICE)
        other = self.cluster.wait_for_ip("default", "other")
        self.wait_for_body(f"http://{other}:8080/", "pod web-", timeout=60)
        gaps, report = self.gaps_since(probe, killed_at)
        record_figure("node_faults.watch_killed_failed_probes", report["failures"] - failures_before,
                      unit="probes of 20 ms")
        self.assertEqual({name: self.cluster.daemon_pid(owner_node, name) for name in daemons}, daemons,
                         "the daemons were restarted when only k8slb-watch died")
        self.assertEqual(self.holder_of(vip), [owner], "the VIP left its node")
        self.assertEqual(gaps, [], "the VIP stopped serving when k8slb-watch died")
        self.stop_probe(probe)


class SharedInstanceTest(NodeFaultCase):
    """The nodes apply a change one after the other. A backup that reloads later must still
    accept the master's adverts for the instance the change touched: before, every VIP was in
    the adverts, the backup dropped those whose list was not its own ("received an unexpected
    ip number count") and took the whole instance 0.18 s later, so one Service's deletion moved
    the other Services' VIPs (and cut their connections when they moved back)."""
    proxy = "haproxy"

    def test_backup_applies_late(self):
        names = ["one", "two", "three"]  # two nodes: at least two share a first choice
        for name in names:
            self.cluster.create_endpoints("default", name, [POD_A], [("http", 8080, "TCP")])
            self.cluster.apply_yaml(cluster_module.http_service(name))
        vips = {name: self.cluster.wait_for_ip("default", name) for name in names}
        owners = {name: self.assert_held_by_first_choice(vip) for name, vip in vips.items()}
        pair = next([a, b] for a in names for b in names if a < b and owners[a] == owners[b])
        kept, deleted = sorted(pair, key=lambda name: ipaddress.ip_address(vips[name]))
        owner = owners[kept]
        backup = next(n for n in self.topology.lb_nodes if n.role != owner)
        applier = [pid for pid in children(self.cluster.actors[backup.role].pid) if comm(pid) == "k8slb-apply"
                   and "node" in open(f"/proc/{pid}/cmdline").read().split("\0")]
        self.assertEqual(len(applier), 1, "k8slb-apply node among the backup's actor's children")

        def owner_applied():
            return vips[deleted] not in json.dumps(test_vip.instances_of(self.keepalived_conf(self.node(owner))))
        seen_on_backup = []
        os.kill(applier[0], signal.SIGSTOP)  # the backup applies nothing until SIGCONT
        try:
            self.cluster.kubectl("delete", "service", "-n", "default", deleted)
            netns.wait_until(owner_applied, 30, interval=0.05, what=f"{owner} to drop {vips[deleted]}")
            deadline = time.monotonic() + 1.5  # 8 master-down intervals at 5 cs adverts
            while time.monotonic() < deadline:
                if backup.holds(vips[kept]):
                    seen_on_backup.append(round(time.monotonic() - deadline + 1.5, 3))
                time.sleep(0.02)
        finally:
            os.kill(applier[0], signal.SIGCONT)
        self.assertEqual(seen_on_backup, [], f"{vips[kept]} ({kept}) went to {backup.role} when {deleted} was "
                                             f"deleted on {owner} first")
        netns.wait_until(lambda: not any(vips[deleted] in json.dumps(test_vip.instances_of(self.keepalived_conf(n)))
                                         for n in self.topology.lb_nodes), 30, what="the backup applied too")
        self.assertEqual(self.holder_of(vips[kept]), [owner])
        self.wait_for_body(f"http://{vips[kept]}/", "pod web-", timeout=30)


if __name__ == "__main__":
    unittest.main()
