"""End to end: the settings the watcher and the actors share (LB_CLASS, CONFIG_MAP) reach every
tool of both. A cluster that keeps its pools in another ConfigMap and serves only Services of
its own loadBalancerClass (for example beside MetalLB) gets IPs that the nodes also serve."""

import time

import cluster as cluster_module
from e2e import NetnsTestCase

POD = "198.51.100.200"
LB_CLASS = "example.com/k8slb"

SERVICES = f"""
apiVersion: v1
kind: Service
metadata:
  name: ours
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerClass: {LB_CLASS}
  selector:
    app: ours
  ports:
    - name: http
      port: 80
      targetPort: 8080
---
apiVersion: v1
kind: Service
metadata:
  name: someone-elses
  namespace: default
spec:
  type: LoadBalancer
  selector:
    app: someone-elses
  ports:
    - name: http
      port: 80
      targetPort: 8080
"""


class SharedSettingsTest(NetnsTestCase):
    pods = (POD,)

    def test_lb_class_and_config_map_reach_the_actors(self):
        self.start_backend("http", POD, 8080, "ours")
        cluster = cluster_module.Cluster(
            self.topology, self.workdir,
            settings={"LB_CLASS": LB_CLASS, "CONFIG_MAP": "lb-pools/pools"})
        for name in ("ours", "someone-elses"):
            cluster.create_endpoints("default", name, [POD], [("http", 8080, "TCP")])
        cluster.apply_yaml(SERVICES)
        vip = cluster.wait_for_ip("default", "ours")
        self.wait_for_body(f"http://{vip}/", "pod ours", timeout=60)
        # The other class's Service is left alone by both: no IP, nothing on the nodes.
        time.sleep(1)
        self.assertEqual(cluster.ingress_of("default", "someone-elses"), [])
        for node in self.topology.lb_nodes:
            with open(f"{self.workdir}/{node.role}/etc/haproxy.cfg") as conf:
                self.assertNotIn("someone-elses", conf.read())
