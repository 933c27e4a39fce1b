"""The kubectl plugin (scripts/kubectl-k8slb, issue 10), run as a user runs it: `kubectl k8slb
...` with the build directory on PATH, against the simulated cluster where the real watcher
assigns the IPs and the real actors (keepalived, HAProxy) hold the VIPs and post the
NodeAssigned Events.

  * status: the Service's IP, pool, the node keepalived gave the VIP and since when (the
    NodeAssigned Event); after a failover the new node; "unknown" once the Events are gone; a
    Service without an IP is <pending>;
  * pools: size, in use, free after the watcher's allocation;
  * lint: a good config passes; a bad one fails with the error and exit status of
    k8slb-allocate, and the watcher says the same about it in its InvalidConfig Event.
"""

import json
import os
import signal
import subprocess
import tempfile
import time
from datetime import datetime

from e2e import BINARY_DIR, netns
from test_vip import VipTestCase

PENDING_SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: pending
  namespace: default
  annotations:
    loadbalancer/pool: nosuchpool
spec:
  type: LoadBalancer
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
"""

BAD_POOLS = {"pools": {"default": {"network": "203.0.113.0/25", "range": "203.0.113.200-203.0.113.209"}}}


def parse_time(text):
    """An Event's RFC 3339 time (seconds, UTC) as seconds since the epoch."""
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp()


def rows_of(table):
    """A kubectl-style table as dicts, keyed by the header's column names."""
    lines = table.splitlines()
    header = lines[0].split()
    return [dict(zip(header, line.split())) for line in lines[1:]]


class PluginTest(VipTestCase):
    proxy = "haproxy"

    def kubectl_k8slb(self, *args, input=None):
        """`kubectl k8slb ARGS` as a user runs it: the plugin found by kubectl on PATH, the
        cluster from $KUBECONFIG."""
        env = dict(os.environ, PATH=f"{BINARY_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   KUBECONFIG=self.cluster.kubeconfig)
        env.pop("K8SLB_ALLOCATE", None)
        return subprocess.run(["kubectl", "k8slb", *args], env=env, capture_output=True, text=True,
                              timeout=60, input=input)

    def notices(self, node=None):
        events = self.cluster.get("events", "-n", "default")["items"]
        return [e for e in events if e["reason"] == "NodeAssigned" and e["involvedObject"]["name"] == "web"
                and (node is None or e["message"].endswith(f" node {node}"))]

    def status_row(self, *args):
        result = self.kubectl_k8slb("status", *args)
        self.assertEqual(result.returncode, 0, result.stderr)
        return {(r["NAMESPACE"], r["NAME"]): r for r in rows_of(result.stdout)}, result

    def test_status_pools_and_lint(self):
        vip, _ = self.create_web()
        owner = self.assert_held_by_first_choice(vip)
        backup = next(n.role for n in self.topology.lb_nodes if n.role != owner)
        self.cluster.apply_yaml(PENDING_SERVICE)
        event = netns.wait_until(lambda: self.notices(owner), 20, what=f"NodeAssigned from {owner}")[0]

        # 1. status: the VIP, its pool, the node holding it and since when.
        rows, result = self.status_row("-n", "default")
        print(result.stdout)
        web = rows[("default", "web")]
        self.assertEqual((web["IP"], web["POOL"], web["NODE"], web["SINCE"]), (vip, "default", owner, event["lastTimestamp"]))
        self.assertEqual(self.holder_of(vip), [owner], "the node named is the one keepalived gave the VIP")
        pending = rows[("default", "pending")]
        self.assertEqual((pending["IP"], pending["NODE"]), ("<pending>", "-"))
        as_json = self.kubectl_k8slb("status", "-A", "-o", "json")
        self.assertEqual(as_json.returncode, 0, as_json.stderr)
        items = {(i["namespace"], i["name"]): i for i in json.loads(as_json.stdout)["items"]}
        self.assertEqual(items[("default", "web")],
                         {"namespace": "default", "name": "web", "ip": vip, "pool": "default", "node": owner,
                          "since": event["lastTimestamp"]})
        self.assertIsNone(items[("default", "pending")]["ip"])
        other_ns = self.kubectl_k8slb("status", "-n", "kube-system")
        self.assertEqual((other_ns.returncode, rows_of(other_ns.stdout)), (0, []), other_ns.stderr)

        # 2. A failover (the owner's actor stopped as a pod deletion stops it): the new node.
        #    An actor announces the same takeover at most once per second (k8slb-apply events):
        #    if the backup held the VIP for a moment at start-up, its notice is let age first.
        earlier = [parse_time(e["lastTimestamp"]) for e in self.notices(backup)]
        if earlier:
            wait = max(0.0, max(earlier) + 2 - time.time())
            print(f"{backup} announced {vip} at start-up; waiting {wait:.1f} s (the actor's Event interval)")
            time.sleep(wait)
        self.assertEqual(self.topology.stop(self.cluster.actors[owner], signal.SIGTERM, timeout=30), 0)
        netns.wait_until(lambda: self.holder_of(vip) == [backup], 30, what=f"{vip} on {backup}")
        owner_since = parse_time(event["lastTimestamp"])
        moved = netns.wait_until(lambda: [e for e in self.notices(backup)
                                          if parse_time(e["lastTimestamp"]) > owner_since], 20,
                                 what=f"NodeAssigned from {backup} after the failover")[0]
        web = netns.wait_until(lambda: (r := self.status_row()[0][("default", "web")])["NODE"] == backup and r,
                               10, what=f"status naming {backup}")
        self.assertEqual((web["IP"], web["NODE"], web["SINCE"]), (vip, backup, moved["lastTimestamp"]))

        # 3. Events expire (1 h by default): without them the node is unknown, said so.
        self.cluster.kubectl("delete", "events", "-n", "default", "--field-selector", "reason=NodeAssigned")
        web = self.status_row()[0][("default", "web")]
        self.assertEqual((web["IP"], web["POOL"], web["NODE"], web["SINCE"]), (vip, "default", "unknown", "unknown"))

        # 4. pools: the watcher's allocation counted as the allocator counts.
        result = self.kubectl_k8slb("pools")
        self.assertEqual(result.returncode, 0, result.stderr)
        print(result.stdout)
        pools = {r["POOL"]: r for r in rows_of(result.stdout)}
        self.assertEqual({name: (r["FAMILY"], r["SIZE"], r["IN-USE"], r["FREE"]) for name, r in pools.items()},
                         {"default": ("IPv4", "10", "1", "9"), "external": ("IPv4", "10", "0", "10"),
                          "ipv6": ("IPv6", "10", "0", "10")})
        as_json = json.loads(self.kubectl_k8slb("pools", "-o", "json").stdout)["items"]
        self.assertIn({"pool": "default", "family": "IPv4", "network": "203.0.113.0/25",
                       "range": "203.0.113.100-203.0.113.109", "size": 10, "inUse": 1, "free": 9}, as_json)

        # 5. lint: the cluster's ConfigMap, then the same as a file and on stdin.
        result = self.kubectl_k8slb("lint")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("ConfigMap k8slb-system/global: valid: 3 pools", result.stdout)
        config_map = self.cluster.kubectl("get", "configmap", "-n", "k8slb-system", "global", "-o", "yaml").stdout
        with tempfile.TemporaryDirectory() as work:
            good = os.path.join(work, "global.yaml")
            with open(good, "w") as f:
                f.write(config_map)
            for args, input in ((("-f", good), None), (("-f", "-"), json.dumps({"pools": self.cluster.pools}))):
                result = self.kubectl_k8slb("lint", *args, input=input)
                self.assertEqual(result.returncode, 0, result.stderr)
                self.assertIn("valid: 3 pools", result.stdout)

            # A bad config: the error and exit status of k8slb-allocate given it.
            bad = os.path.join(work, "bad.json")
            with open(bad, "w") as f:
                json.dump(BAD_POOLS, f)
            services = self.cluster.kubectl("get", "services", "-A", "-o", "json").stdout
            allocate = subprocess.run([os.path.join(BINARY_DIR, "k8slb-allocate"), "--config", bad], input=services,
                                      capture_output=True, text=True, timeout=30)
            linted = self.kubectl_k8slb("lint", "-f", bad)
            print(linted.stderr)
            self.assertEqual((linted.returncode, linted.stdout, linted.stderr),
                             (allocate.returncode, "", allocate.stderr))
            self.assertEqual(linted.returncode, 1)
            self.assertIn("pools.default.range: 203.0.113.200-203.0.113.209 is not inside network 203.0.113.0/25",
                          linted.stderr)

        # The watcher, given that config in its ConfigMap, says the same in its Event on it.
        self.cluster.apply_objects([{"apiVersion": "v1", "kind": "ConfigMap",
                                     "metadata": {"name": "global", "namespace": "k8slb-system"},
                                     "data": {"config": json.dumps(BAD_POOLS)}}])

        def invalid_config_events():
            events = self.cluster.get("events", "-n", "k8slb-system")["items"]
            return [e for e in events if e["reason"] == "InvalidConfig"]
        watcher_says = netns.wait_until(invalid_config_events, 30, what="the watcher's InvalidConfig Event")[0]
        linted = self.kubectl_k8slb("lint")
        self.assertEqual(linted.returncode, 1)
        prefix = "k8slb-allocate: error: "
        self.assertTrue(linted.stderr.startswith(prefix), linted.stderr)
        lint_message = linted.stderr[len(prefix):].rstrip("\n")
        self.assertTrue(watcher_says["message"].startswith(lint_message + "; "),
                        f"watcher: {watcher_says['message']!r}\nlint: {lint_message!r}")
        # pools refuses a config the watcher refuses, with the same words; status still lists.
        pools = self.kubectl_k8slb("pools")
        self.assertEqual((pools.returncode, pools.stderr), (1, linted.stderr))
        web = self.status_row()[0][("default", "web")]
        self.assertEqual((web["IP"], web["POOL"]), (vip, "unknown"))


if __name__ == "__main__":
    import unittest
    unittest.main()
