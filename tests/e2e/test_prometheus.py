"""A real Prometheus scrapes k8slb (issue 10): the watcher and both actors, run by the real
watcher.sh and actor.sh with METRICS_ADDR set as the manifests set it, in the network-namespace
cluster. Prometheus (Debian's `prometheus`, bounded, in the test's work directory) runs in the
client's namespace with scrape_interval 1s; the actors are scraped on their LAN addresses, the
watcher (on the host, as the harness runs it) through a forwarder.

  * every target is up (Prometheus' /api/v1/targets) and `promtool check metrics` passes on
    the text each endpoint serves;
  * what Prometheus reads of each node, k8slb_vrrp_state and k8slb_node_vips, is what keepalived
    holds there (the VIPs on each node's eth0), before and after a failover: the VIP master's
    actor is stopped (as a pod deletion does), its target goes down and the backup reads MASTER
    for the instance and counts the VIP.
"""

import json
import os
import shutil
import signal
import socket
import sys
import time
import unittest
import urllib.parse

import cluster as cluster_module
from e2e import netns
from test_vip import VipTestCase

ACTOR_PORT = 9403  # the manifests' METRICS_ADDR for the actors
ALERTS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "examples", "prometheus", "alerts.yaml")
PROMETHEUS = "127.0.0.1:9090"  # in the client's namespace, which is the test's own


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MetricsCluster(cluster_module.Cluster):
    """The harness's cluster with the actors serving their metrics on every address."""

    def actor_environment(self, node):
        return dict(super().actor_environment(node), METRICS_ADDR=f":{ACTOR_PORT}")


class PrometheusTest(VipTestCase):
    def setUp(self):
        for program in ("prometheus", "promtool"):
            if shutil.which(program) is None:
                self.fail(f"{program} is not installed (Debian package prometheus; scripts/install-deps.sh)")
        # The watcher runs on the host: a port of its own there, forwarded into the client's
        # namespace where Prometheus runs.
        self.watcher_port = free_port()
        cluster_class = cluster_module.Cluster
        cluster_module.Cluster = MetricsCluster
        self.addCleanup(setattr, cluster_module, "Cluster", cluster_class)
        self.cluster_options = {"settings": {"METRICS_ADDR": f"127.0.0.1:{self.watcher_port}"}}
        super().setUp()
        client = self.topology.client
        self.topology.spawn(None, [sys.executable, os.path.join(os.path.dirname(netns.__file__), "netns.py"),
                                   "forward", client.namespace, str(self.watcher_port)], "forward-watcher-metrics")
        netns.wait_until(lambda: netns.listening(client, "127.0.0.1", self.watcher_port), 10,
                         what="the watcher's metrics forwarder")

    # --- Prometheus ---------------------------------------------------------------------

    def targets(self):
        """job -> [target address]."""
        actors = [f"{node.lan4}:{ACTOR_PORT}" for node in self.topology.lb_nodes]
        return {"k8slb-watcher": [f"127.0.0.1:{self.watcher_port}"], "k8slb-actor": actors}

    def start_prometheus(self):
        directory = os.path.join(self.workdir, "prometheus")
        os.makedirs(os.path.join(directory, "data"))
        checked = netns.run(["promtool", "check", "rules", ALERTS], check=False)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        config = {"global": {"scrape_interval": "1s", "scrape_timeout": "900ms", "evaluation_interval": "1s"},
                  "rule_files": [os.path.abspath(ALERTS)],
                  "scrape_configs": [{"job_name": job, "static_configs": [{"targets": targets}]}
                                     for job, targets in self.targets().items()]}
        config_path = os.path.join(directory, "prometheus.yml")
        with open(config_path, "w") as f:
            json.dump(config, f, indent=2)  # JSON is YAML
        checked = netns.run(["promtool", "check", "config", config_path], check=False)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.prometheus = self.topology.client.spawn(
            ["prometheus", f"--config.file={config_path}", f"--storage.tsdb.path={directory}/data",
             f"--web.listen-address={PROMETHEUS}", "--storage.tsdb.retention.time=1h",
             "--web.enable-lifecycle"], "prometheus")
        netns.wait_until(lambda: self.api("status/buildinfo") is not None, 30, interval=0.2,
                         what="Prometheus' API")

    def api(self, path, **query):
        """GET /api/v1/<path> from the client namespace: its data, or None."""
        url = f"http://{PROMETHEUS}/api/v1/{path}"
        if query:
            url += "?" + urllib.parse.urlencode(query)
        result = self.topology.client.run(["curl", "-sf", "--max-time", "5", url], check=False, timeout=10)
        if result.returncode != 0:
            return None
        answer = json.loads(result.stdout)
        return answer["data"] if answer.get("status") == "success" else None

    def target_health(self):
        """'job address' -> health ('up', 'down', 'unknown') of the active targets."""
        data = self.api("targets", state="active") or {"activeTargets": []}
        return {f"{t['labels']['job']} {t['labels']['instance']}": t["health"] for t in data["activeTargets"]}

    def rule_health(self):
        """alert name -> health of the loaded rules ('ok' once evaluated without error)."""
        data = self.api("rules") or {"groups": []}
        return {rule["name"]: rule["health"] for group in data["groups"] for rule in group["rules"]}

    def query(self, expression):
        """An instant query: [(labels, value)]."""
        data = self.api("query", query=expression)
        return [(r["metric"], float(r["value"][1])) for r in (data or {}).get("result", [])]

    # --- what each node holds -----------------------------------------------------------

    def keepalived_view(self, node):
        """(instance -> 'MASTER'|'BACKUP' as keepalived acts on eth0, VIPs held) of a node: an
        instance whose VIPs are on the node's eth0 is MASTER there."""
        states, held = {}, 0
        interface = node.addresses_on("eth0")
        for match_vips in instances_by_name(self.keepalived_conf(node)).items():
            name, vips = match_vips
            on = [vip for vip in vips if vip in interface]
            states[name] = "MASTER" if on and len(on) == len(vips) else "BACKUP"
            held += len(on)
        return states, held

    def prometheus_view(self, node):
        """(instance -> state, VIPs) of a node as Prometheus last scraped them."""
        target = f"{node.lan4}:{ACTOR_PORT}"
        states = {labels["vrrp_instance"]: labels["state"]
                  for labels, value in self.query(f'k8slb_vrrp_state{{instance="{target}"}} == 1')}
        vips = sum(value for _, value in self.query(f'k8slb_node_vips{{instance="{target}"}}'))
        return states, int(vips)

    def assert_views_match(self, nodes, timeout=30):
        """Prometheus' view of each node becomes keepalived's (bounded)."""
        def matching():
            views = {node.role: (self.prometheus_view(node), self.keepalived_view(node)) for node in nodes}
            self.last_views = views
            return all(seen == held and held[0] for seen, held in views.values())
        netns.wait_until(matching, timeout, interval=0.5,
                         what=f"Prometheus' view matching keepalived's: {getattr(self, 'last_views', None)}")
        return self.last_views

    # --- the test -----------------------------------------------------------------------

    def test_targets_up_and_vrrp_state_after_failover(self):
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        backup = next(n for n in self.topology.lb_nodes if n.role != owner)
        owner_host = self.topology.hosts[owner]
        self.start_prometheus()

        # Every target up; every endpoint's text passes promtool.
        expected = {f"{job} {address}" for job, addresses in self.targets().items() for address in addresses}
        netns.wait_until(lambda: set(self.target_health()) == expected and
                         set(self.target_health().values()) == {"up"}, 30, interval=0.5,
                         what=f"every target up: {self.target_health()}")
        for job, addresses in self.targets().items():
            for address in addresses:
                with self.subTest(endpoint=f"{job} {address}"):
                    status, text = self.curl(f"http://{address}/metrics", "-f")
                    self.assertEqual(status, 0, text)
                    self.assertIn("# TYPE k8slb_", text)
                    checked = netns.run(["promtool", "check", "metrics"], input=text, check=False)
                    self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)
        self.assertEqual(self.query('up{job="k8slb-actor"} == 0'), [])
        # The example alerts load and evaluate on what the endpoints serve.
        netns.wait_until(lambda: self.rule_health() and set(self.rule_health().values()) == {"ok"}, 30,
                         interval=0.5, what=f"the example alerts evaluated: {self.rule_health()}")

        # Before the failover: each node as keepalived holds it.
        views = self.assert_views_match(self.topology.lb_nodes)
        print(f"FIGURES prometheus.before_failover: {json.dumps(views)}", flush=True)
        owner_instances = [name for name, state in views[owner][1][0].items() if state == "MASTER"]
        self.assertTrue(owner_instances, views)

        # The failover: the owner's actor stops as a pod deletion stops it (keepalived sends
        # priority 0; the backup takes the VIPs at once).
        stopped_at = time.monotonic()
        status = self.topology.stop(self.cluster.actors[owner], signal.SIGTERM, timeout=30)
        self.assertEqual(status, 0, "actor.sh exits 0 on SIGTERM")
        netns.wait_until(lambda: self.holder_of(vip) == [backup.role], 30, what=f"{vip} on {backup.role}")
        owner_target = f"k8slb-actor {owner_host.lan4}:{ACTOR_PORT}"
        netns.wait_until(lambda: self.target_health().get(owner_target) == "down", 30, interval=0.5,
                         what=f"{owner_target} down: {self.target_health()}")
        views = self.assert_views_match([backup])
        seconds = round(time.monotonic() - stopped_at, 3)
        print(f"FIGURES prometheus.after_failover: {json.dumps(dict(views, seconds_to_match=seconds))}",
              flush=True)
        backup_states = views[backup.role][0][0]
        for name in owner_instances:
            self.assertEqual(backup_states.get(name), "MASTER", views)
        self.assertFalse(owner_host.holds(vip))
        # MASTER once per instance across the nodes Prometheus still scrapes.
        doubled = self.query('sum by (vrrp_instance) (k8slb_vrrp_state{state="MASTER"} == 1) > 1')
        self.assertEqual(doubled, [])


def instances_by_name(keepalived_conf):
    """vrrp_instance name -> its VIPs, from a rendered keepalived.conf."""
    import re
    found = {}
    for match in re.finditer(r"^vrrp_instance (\S+) \{(.*?)\n\}", keepalived_conf, re.S | re.M):
        found[match.group(1)] = re.findall(r"^\s+([0-9a-f.:]+)/\d+ dev", match.group(2), re.M)
    return found


if __name__ == "__main__":
    unittest.main()
