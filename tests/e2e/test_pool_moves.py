"""End to end: the original's annotation spelling, and a Service that changes pool (issue 8,
items 5 and 6), with kubectl against the simulator and traffic through real daemons.

  * `loadBalancer/pool: external` (the spelling of the original's prose) puts the Service in
    pool `external`, with a Normal Event saying which key it was read as, and the VIP answers;
  * `kubectl annotate` to another pool moves the Service: a new IP from that pool, a Normal
    Event IPMoved naming the old and the new, traffic through the new VIP, and the old VIP
    given up by the nodes."""

import ipaddress
import time
import unittest

import cluster as cluster_module
from e2e import NetnsTestCase, netns, record_figure
from test_simulated_dual_stack import POD_A, SEED_POOLS

SERVICE = """
apiVersion: v1
kind: Service
metadata:
  name: myapp
  namespace: default
  annotations:
    loadBalancer/pool: external
spec:
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 80
  selector:
    app: myapp
  type: LoadBalancer
"""


def in_pool(ip, pool):
    return ipaddress.ip_address(ip) in ipaddress.ip_network(SEED_POOLS[pool]["network"])


class PoolMoveTest(NetnsTestCase):
    proxy = "haproxy"
    pods = (POD_A,)

    def setUp(self):
        super().setUp()
        missing = cluster_module.missing_tools("k8slb-watch", "k8slb-allocate", "k8slb-render", "k8slb-apply")
        if missing:
            self.fail(f"tools not built in {cluster_module.BINARY_DIR}: {', '.join(missing)}")
        self.start_backend("http", POD_A, 80, "myapp-a")
        self.cluster = cluster_module.Cluster(self.topology, self.workdir, proxy=self.proxy, pools=SEED_POOLS)
        self.cluster.create_endpoints("default", "myapp", [POD_A], [("http", 80, "TCP")])

    def events(self, reason):
        return [e for e in self.cluster.get("events", "-n", "default")["items"]
                if e["involvedObject"]["name"] == "myapp" and e["reason"] == reason]

    def test_original_spelling_then_a_move(self):
        self.cluster.apply_yaml(SERVICE)
        first = self.cluster.wait_for_ip("default", "myapp")
        self.assertTrue(in_pool(first, "external"), first)
        self.wait_for_body(f"http://{first}/", "pod myapp-a", timeout=60)
        mapped = self.events("AnnotationMapped")
        self.assertTrue(any("loadBalancer/pool" in e["message"] and "loadbalancer/pool" in e["message"]
                            for e in mapped), mapped)

        moved_at = time.monotonic()
        self.cluster.kubectl("annotate", "-n", "default", "service", "myapp", "--overwrite",
                             "loadBalancer/pool=default")
        netns.wait_until(lambda: self.cluster.ingress_of("default", "myapp")
                         and self.cluster.ingress_of("default", "myapp")[0]["ip"] != first, 30,
                         what="a new IP for myapp")
        second = self.cluster.ingress_of("default", "myapp")[0]["ip"]
        self.assertTrue(in_pool(second, "default"), second)
        self.wait_for_body(f"http://{second}/", "pod myapp-a", timeout=60)
        record_figure("haproxy.pool_move_to_first_byte", round(time.monotonic() - moved_at, 3))
        moves = self.events("IPMoved")
        self.assertEqual(len(moves), 1, moves)
        self.assertIn(first, moves[0]["message"])
        self.assertIn(second, moves[0]["message"])
        self.assertEqual(moves[0]["type"], "Normal")
        # The old VIP is given up: no node holds it any more.
        netns.wait_until(lambda: self.holder_of(first) == [], 30, what=f"{first} released by the nodes")


if __name__ == "__main__":
    unittest.main()
