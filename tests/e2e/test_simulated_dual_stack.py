"""End to end: the seed's "simulated dual stack" example on a single-stack IPv4 cluster.

The original's user documentation creates two Services on the same pods, one with an IPv4
loadBalancerIP from pool `external` and one with an IPv6 loadBalancerIP from pool `ipv6`. A
real single-stack IPv4 API server (and tests/kubesim) defaults `spec.ipFamilies: [IPv4]` on
both. In haproxy and nginx mode the proxy bridges the families, so the IPv6 VIP carries
traffic to the IPv4 pods (issue 8, item 1); in kubeproxy mode it cannot, and the Service gets
a Warning Event naming spec.ipFamilies.

The manifests are the example's, as written, apart from the addresses: the seed's pools and
IPs (1.2.3.0/22, 2001:468::/64, whose IPv6 range and address lie outside the network) are
replaced by documentation addresses that fit the test's network."""

import time
import unittest

import cluster as cluster_module
from e2e import NetnsTestCase, netns, record_figure

POD_A, POD_B = "198.51.100.210", "198.51.100.211"

# The seed's example pools, corrected: "external" 1.2.3.0/22 with range 1.2.3.50-1.2.3.74,
# "ipv6" 2001:468::/64 with range 2001:468:101::/96 (outside its network in the seed).
SEED_POOLS = {
    "default": {"network": "203.0.113.128/25", "range": "203.0.113.160-203.0.113.169"},
    "external": {"network": "203.0.113.0/25", "range": "203.0.113.50-203.0.113.74"},
    "ipv6": {"network": "2001:db8:203::/64", "range": "2001:db8:203::100-2001:db8:203::109"},
}
VIP4, VIP6 = "203.0.113.4", "2001:db8:203::4"

# The seed's example, as written but for 1.2.3.4 -> 203.0.113.4 and 2001:468:201::4 ->
# 2001:db8:203::4.
SEED_EXAMPLE = f"""
apiVersion: v1
kind: Service
metadata:
  name:  myapp-loadbalancer
  namespace: default
  annotations:
    loadbalancer/pool: external
spec:
  loadBalancerIP: {VIP4}
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 80
  selector:
    app: myapp
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name:  myapp-loadbalancer6
  namespace: default
  annotations:
    loadbalancer/pool: ipv6
spec:
  loadBalancerIP: {VIP6}
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 80
  selector:
    app: myapp
  type: LoadBalancer
"""


class SimulatedDualStackCase(NetnsTestCase):
    proxy = "haproxy"
    pods = (POD_A, POD_B)

    def setUp(self):
        super().setUp()
        missing = cluster_module.missing_tools("k8slb-watch", "k8slb-allocate", "k8slb-render",
                                               "k8slb-apply")
        if missing:
            self.fail(f"tools not built in {cluster_module.BINARY_DIR}: {', '.join(missing)}")
        self.start_backend("http", POD_A, 80, "myapp-a")
        self.start_backend("http", POD_B, 80, "myapp-b")
        self.cluster = cluster_module.Cluster(self.topology, self.workdir, proxy=self.proxy,
                                              pools=SEED_POOLS, ip_families="IPv4",
                                              start_actors=self.proxy != "kubeproxy")
        # The endpoint controller of a single-stack IPv4 cluster: IPv4 slices for both.
        for name in ("myapp-loadbalancer", "myapp-loadbalancer6"):
            self.cluster.create_endpoints("default", name, [POD_A, POD_B], [("http", 80, "TCP")])

    def apply_example(self):
        created = time.monotonic()
        self.cluster.apply_yaml(SEED_EXAMPLE)
        return created

    def families_of(self, name):
        service = self.cluster.get("service", "-n", "default", name)
        return service["spec"].get("ipFamilies"), service["spec"].get("ipFamilyPolicy")


class BridgedFamilies:
    """Both Services served; the IPv6 client reaches the IPv4 pods through the IPv6 VIP."""

    def test_ipv6_vip_reaches_ipv4_pods(self):
        created = self.apply_example()
        self.assertEqual(self.cluster.wait_for_ip("default", "myapp-loadbalancer"), VIP4)
        self.assertEqual(self.cluster.wait_for_ip("default", "myapp-loadbalancer6"), VIP6)
        # What a real single-stack IPv4 cluster made of the example.
        for name in ("myapp-loadbalancer", "myapp-loadbalancer6"):
            self.assertEqual(self.families_of(name), (["IPv4"], "SingleStack"), name)
        self.wait_for_body(f"http://[{VIP6}]/", "pod myapp-", timeout=60)
        record_figure(f"{self.proxy}.simulated_dual_stack_to_first_byte",
                      round(time.monotonic() - created, 3))
        self.wait_for_body(f"http://{VIP4}/", "pod myapp-", timeout=60)
        # Both pods answer through the IPv6 VIP (bounded number of tries), and the client
        # really spoke IPv6 to the VIP.
        seen = set()
        for _ in range(20):
            status, body = self.curl(f"http://[{VIP6}]/", "-6")
            self.assertEqual(status, 0, body)
            seen.update(part for part in ("myapp-a", "myapp-b") if f"pod {part}" in body)
            if len(seen) == 2:
                break
        self.assertEqual(seen, {"myapp-a", "myapp-b"})
        ingress = self.cluster.ingress_of("default", "myapp-loadbalancer6")
        self.assertEqual(ingress, [{"ip": VIP6, "ipMode": "Proxy"}])


class HaproxySimulatedDualStackTest(BridgedFamilies, SimulatedDualStackCase):
    proxy = "haproxy"


class NginxSimulatedDualStackTest(BridgedFamilies, SimulatedDualStackCase):
    proxy = "nginx"


class KubeProxySimulatedDualStackTest(SimulatedDualStackCase):
    """kube-proxy cannot bridge families: the IPv6 Service is refused, with an Event naming
    spec.ipFamilies; the IPv4 one is served."""
    proxy = "kubeproxy"

    def test_ipv6_vip_refused_naming_ip_families(self):
        self.apply_example()
        self.assertEqual(self.cluster.wait_for_ip("default", "myapp-loadbalancer"), VIP4)

        def refusal():
            events = self.cluster.get("events", "-n", "default")["items"]
            return [e["message"] for e in events
                    if e["involvedObject"]["name"] == "myapp-loadbalancer6"
                    and e["type"] == "Warning"]
        messages = netns.wait_until(refusal, 30, what="a Warning Event on myapp-loadbalancer6")
        self.assertIn("spec.ipFamilies", messages[0])
        self.assertIn(VIP6, messages[0])
        self.assertEqual(self.cluster.ingress_of("default", "myapp-loadbalancer6"), [])


if __name__ == "__main__":
    unittest.main()
