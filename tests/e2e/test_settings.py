"""End to end: the settings the watcher and the actors share (LB_CLASS, CONFIG_MAP) reach every
tool of both. A cluster that keeps its pools in another ConfigMap and serves only Services of
its own loadBalancerClass (for example beside MetalLB) gets IPs that the nodes also serve."""

import os
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


def show_proc_reloads(run_dir):
    """The haproxy master's reload count, from its CLI (`show proc`)."""
    import socket
    with socket.socket(socket.AF_UNIX) as client:
        client.settimeout(5)
        client.connect(os.path.join(run_dir, "haproxy-master.sock"))
        client.sendall(b"show proc\n")
        text = b""
        while not text.endswith(b"\n\n") and (chunk := client.recv(65536)):
            text += chunk
    for line in text.decode().splitlines():
        words = line.split()
        if len(words) >= 3 and words[1] == "master":
            return int(words[2])
    raise AssertionError("no master line in show proc: " + text.decode())


class SharedPortsSettingTest(NetnsTestCase):
    """SHARED_PORTS=80 on the actors: a new Service on port 80 is served through the VIP with no
    haproxy reload on any node (the runtime API sets its slot and its map entry)."""

    pods = (POD,)

    def test_shared_port_no_reload(self):
        self.start_backend("http", POD, 8080, "shared")
        cluster = cluster_module.Cluster(self.topology, self.workdir, settings={"SHARED_PORTS": "80"})
        for name in ("first", "second"):
            cluster.create_endpoints("default", name, [POD], [("http", 8080, "TCP")])
        cluster.apply_yaml(cluster_module.http_service("first"))
        first = cluster.wait_for_ip("default", "first")
        self.wait_for_body(f"http://{first}/", "pod shared", timeout=60)
        time.sleep(1)  # the other node's last line applied too
        reloads = {node.role: show_proc_reloads(cluster.run_dir(node)) for node in self.topology.lb_nodes}
        cluster.apply_yaml(cluster_module.http_service("second"))
        second = cluster.wait_for_ip("default", "second")
        self.wait_for_body(f"http://{second}/", "pod shared", timeout=30)
        time.sleep(1)
        for node in self.topology.lb_nodes:
            with open(f"{self.workdir}/{node.role}/etc/haproxy-p80.map") as served:
                self.assertIn(f"{second} ", served.read())
            self.assertEqual(show_proc_reloads(cluster.run_dir(node)), reloads[node.role], node.role)

    def test_nginx_shared_port(self):
        """PROXY=nginx with SHARED_PORTS=80: the actors render one wildcard server for port 80
        routing by VIP (a geo block), and a new Service is served through its VIP."""
        self.start_backend("http", POD, 8080, "shared")
        cluster = cluster_module.Cluster(self.topology, self.workdir, proxy="nginx", settings={"SHARED_PORTS": "80"})
        for name in ("first", "second"):
            cluster.create_endpoints("default", name, [POD], [("http", 8080, "TCP")])
        cluster.apply_yaml(cluster_module.http_service("first"))
        first = cluster.wait_for_ip("default", "first")
        self.wait_for_body(f"http://{first}/", "pod shared", timeout=60)
        cluster.apply_yaml(cluster_module.http_service("second"))
        second = cluster.wait_for_ip("default", "second")
        self.wait_for_body(f"http://{second}/", "pod shared", timeout=30)
        self.wait_for_body(f"http://{first}/", "pod shared", timeout=5)
        for node in self.topology.lb_nodes:
            with open(f"{self.workdir}/{node.role}/etc/nginx.conf") as served:
                conf = served.read()
            self.assertEqual(conf.count("listen 0.0.0.0:80 default_server;"), 1, node.role)
            self.assertNotIn(f"listen {second}:80", conf)
            self.assertIn(f"    {second} default_second_80;", conf)
