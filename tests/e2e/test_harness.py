"""The harness itself, with hand-written daemon configs (no k8slb tool involved):
namespaces are wired as documented, and a real keepalived moves a VIP that a real HAProxy serves.
These tests tell a broken harness apart from a broken k8slb."""

import os
import signal
import unittest

from e2e import NetnsTestCase, netns

KEEPALIVED_CONF = """global_defs {{
  router_id {node}
  vrrp_version 3
}}
vrrp_instance harness {{
  state BACKUP
  interface eth0
  virtual_router_id 51
  priority {priority}
  advert_int 0.2
  virtual_ipaddress {{
    203.0.113.100/32 dev eth0
  }}
}}
"""

HAPROXY_CONF = """global
  maxconn 100
defaults
  mode tcp
  timeout connect 2s
  timeout client 10s
  timeout server 10s
frontend vip
  bind 203.0.113.100:80
  default_backend pods
backend pods
  server pod1 198.51.100.10:8080
"""


class HarnessTest(NetnsTestCase):
    pods = ("198.51.100.10", "2001:db8:100::10")

    def test_wiring(self):
        """Nodes reach the pods (v4 and v6) through the pods router; the client reaches nodes."""
        self.start_backend("http", "198.51.100.10", 8080, "v4")
        self.start_backend("http", "2001:db8:100::10", 8080, "v6")
        for node in self.topology.lb_nodes:
            with self.subTest(node=node.role):
                self.assertIn("pod v4", self.curl("http://198.51.100.10:8080/", host=node)[1])
                self.assertIn("pod v6", self.curl("http://[2001:db8:100::10]:8080/", host=node)[1])
        # The client has no route to the pods: traffic has to go through a load balancer.
        status, _ = self.curl("http://198.51.100.10:8080/", timeout=1)
        self.assertNotEqual(status, 0)
        sysctl = self.topology.lb_nodes[0].run(["sysctl", "-n", "net.ipv4.ip_nonlocal_bind"])
        self.assertEqual(sysctl.stdout.strip(), "1")

    def test_vrrp_failover_with_hand_written_configs(self):
        """keepalived + HAProxy on two nodes: the VIP answers, then moves when the master dies."""
        self.start_backend("http", "198.51.100.10", 8080, "one")
        keepalived = {}
        for index, node in enumerate(self.topology.lb_nodes):
            conf = os.path.join(self.workdir, f"{node.role}-keepalived.conf")
            with open(conf, "w") as out:
                out.write(KEEPALIVED_CONF.format(node=node.role, priority=150 - 50 * index))
            haproxy_conf = os.path.join(self.workdir, f"{node.role}-haproxy.cfg")
            with open(haproxy_conf, "w") as out:
                out.write(HAPROXY_CONF)
            node.spawn(["haproxy", "-W", "-db", "-f", haproxy_conf], f"haproxy-{node.role}")
            keepalived[node.role] = node.spawn(
                ["keepalived", "-n", "-l", "-G", "-D", "-f", conf,
                 "-p", os.path.join(self.workdir, f"{node.role}-keepalived.pid"),
                 "-r", os.path.join(self.workdir, f"{node.role}-vrrp.pid"),
                 "-c", os.path.join(self.workdir, f"{node.role}-checkers.pid")],
                f"keepalived-{node.role}")
        netns.wait_until(lambda: self.holder_of("203.0.113.100") == ["lb1"], 15,
                         what="VIP on lb1 only")
        self.wait_for_body("http://203.0.113.100/", "pod one")

        # Graceful stop: keepalived gives up the VIP (priority 0 advert) and lb2 takes it.
        self.topology.stop(keepalived["lb1"], signal.SIGTERM)
        netns.wait_until(lambda: self.holder_of("203.0.113.100") == ["lb2"], 15,
                         what="VIP on lb2 only")
        self.wait_for_body("http://203.0.113.100/", "pod one")


if __name__ == "__main__":
    unittest.main()
