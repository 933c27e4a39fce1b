"""End to end: a load-balancer node driven by a timer or cron instead of the actor's pipeline
(`actor.sh once`, as contrib/systemd/k8slb-node-once.service and contrib/cron/k8slb run it),
then stopped (`actor.sh stop`). The daemons of a pass outlive it; a second pass with nothing
changed reloads nothing and says so; the stop hands the VIP over and leaves nothing running."""

import json
import os
import subprocess

import cluster as cluster_module
from e2e import NetnsTestCase, netns

POD = "198.51.100.200"
WEB = cluster_module.http_service("web")


class NodeOnceTest(NetnsTestCase):
    pods = (POD,)
    lb_count = 1

    def actor(self, cluster, node, mode):
        env = cluster.actor_environment(node)
        for key in ("RUN_DIR", "CONFIG_DIR"):
            os.makedirs(env[key], exist_ok=True)
        return subprocess.run(["ip", "netns", "exec", node.namespace, "bash", cluster_module.ACTOR, mode],
                              env=env, capture_output=True, text=True, timeout=120,
                              stdin=subprocess.DEVNULL)

    def test_two_passes_then_stop(self):
        self.start_backend("http", POD, 8080, "web")
        cluster = cluster_module.Cluster(self.topology, self.workdir, start_actors=False)
        cluster.create_endpoints("default", "web", [POD], [("http", 8080, "TCP")])
        cluster.apply_yaml(WEB)
        vip = cluster.wait_for_ip("default", "web")
        node = self.topology.lb_nodes[0]

        first = self.actor(cluster, node, "once")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(json.loads(first.stdout)["actions"], {"haproxy": "start", "keepalived": "start"})
        # The pass has ended; its daemons serve.
        self.wait_for_body(f"http://{vip}/", "pod web", timeout=30)

        second = self.actor(cluster, node, "once")
        self.assertEqual(second.returncode, 0, second.stderr)
        self.assertEqual(json.loads(second.stdout)["actions"], {"haproxy": "none", "keepalived": "none"})
        self.assertNotIn("reload", second.stderr)
        self.wait_for_body(f"http://{vip}/", "pod web", timeout=10)

        stop = self.actor(cluster, node, "stop")
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertIn("stopped keepalived", stop.stderr)
        self.assertIn("stopped haproxy", stop.stderr)
        self.assertLess(stop.stderr.index("stopped keepalived"), stop.stderr.index("stopped haproxy"),
                        "keepalived stops first, so the VIP leaves before the proxy")
        self.assertFalse(node.holds(vip))
        self.assertEqual([pid for pid in netns.namespace_pids(node.namespace)
                          if self.comm(pid) in ("haproxy", "keepalived")], [])

    @staticmethod
    def comm(pid):
        try:
            with open(f"/proc/{pid}/comm") as f:
                return f.read().strip()
        except OSError:
            return ""
