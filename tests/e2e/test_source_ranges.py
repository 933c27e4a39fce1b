"""End to end: spec.loadBalancerSourceRanges is enforced by the proxy, on every listener.

The client namespace gets a second LAN address, so it can connect from an admitted source
(192.0.2.100, inside 192.0.2.64/26) and from refused ones (192.0.2.200, and 203.0.113.250, the
address it would pick on its own for a VIP). Through the VIP, on an http-mode port (80) and a
tcp-mode port (9000): the admitted source gets the page, the others are refused. Then the
Service's ranges are widened with kubectl and the refused source gets the page too, which shows
that it was the ranges (not routing) that kept it out, and that a change of ranges is applied."""

import json
import re
import unittest

from e2e import netns
from test_vip import POD_A, POD_B, VipTestCase

ADMITTED = "192.0.2.100"  # netns.CLIENT4, inside ADMITTED_RANGE
REFUSED = "192.0.2.200"   # added to the client by the test, outside ADMITTED_RANGE
DEFAULT_SOURCE = "203.0.113.250"  # the client's own choice for a VIP on 203.0.113.0/24
ADMITTED_RANGE = "192.0.2.64/26"

GUARDED_SERVICE = f"""
apiVersion: v1
kind: Service
metadata:
  name: guarded
  namespace: default
spec:
  type: LoadBalancer
  loadBalancerSourceRanges:
    - {ADMITTED_RANGE}
  selector:
    app: guarded
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
    - name: raw
      port: 9000
      protocol: TCP
      targetPort: 8080
"""

# (port, listener kind): port 80 is http mode (automatic), port 9000 layer-4 (tcp mode).
PORTS = ((80, "http mode"), (9000, "tcp mode"))


class HaproxySourceRangesTest(VipTestCase):
    proxy = "haproxy"

    def fetch(self, url, source):
        """curl from the client namespace with `source` as the source address:
        (exit status, HTTP status code or None, body)."""
        status, output = self.curl(url, "--interface", source, "-w", "\nhttp_code %{http_code}\n")
        codes = re.findall(r"^http_code (\d{3})$", output, re.M)
        code = int(codes[-1]) if codes and codes[-1] != "000" else None
        return status, code, output

    def assert_admitted(self, url, source):
        status, code, output = self.fetch(url, source)
        self.assertEqual((status, code), (0, 200), output)
        self.assertRegex(output, r"pod web-[ab]")

    def assert_refused(self, url, source):
        """No page: haproxy resets the connection as soon as it accepts it (curl: "Couldn't
        connect", no HTTP status); nginx answers 403 on an http-mode port and closes a
        tcp-mode one without a byte (curl: "Empty reply")."""
        status, code, output = self.fetch(url, source)
        self.assertNotIn("pod web-", output)
        self.assertTrue(code == 403 or (status != 0 and code is None),
                        f"not refused: curl exit {status}, HTTP {code}: {output}")

    def test_only_admitted_sources_get_the_page(self):
        self.topology.add_address(self.topology.client, f"{REFUSED}/24")
        self.cluster.create_endpoints("default", "guarded", [POD_A, POD_B],
                                      [("http", 8080, "TCP"), ("raw", 8080, "TCP")])
        self.cluster.apply_yaml(GUARDED_SERVICE)
        vip = self.cluster.wait_for_ip("default", "guarded")
        self.assertTrue(vip.startswith("203.0.113.10"), f"{vip} is not from the default pool")
        # The Service's configuration is in place once the admitted source gets the page.
        for port, _ in PORTS:
            self.wait_for_body(f"http://{vip}:{port}/", "pod web-", "--interface", ADMITTED,
                               timeout=60)
        self.assert_held_by_first_choice(vip)

        cases = ((ADMITTED, True), (REFUSED, False), (DEFAULT_SOURCE, False))
        for port, kind in PORTS:
            for source, admitted in cases:
                with self.subTest(port=port, kind=kind, source=source, admitted=admitted):
                    url = f"http://{vip}:{port}/"
                    if admitted:
                        self.assert_admitted(url, source)
                    else:
                        self.assert_refused(url, source)

        # Widen the ranges: the refused source is let in, the admitted one stays in, the
        # source outside every range stays out.
        self.cluster.kubectl("patch", "service", "-n", "default", "guarded", "--type=merge",
                             "-p", json.dumps({"spec": {"loadBalancerSourceRanges":
                                                        [ADMITTED_RANGE, f"{REFUSED}/32"]}}))
        # Until the reload is whole: nginx's old workers accept for a moment after its new ones
        # started, so one good answer is not yet the new config everywhere; five in a row are.
        for port, _ in PORTS:
            def five_in_a_row(url=f"http://{vip}:{port}/"):
                return all(self.curl(url, "--interface", REFUSED, timeout=2)[1].count("pod web-") == 1
                           for _ in range(5))
            netns.wait_until(five_in_a_row, 30, interval=0.2, what=f"port {port} admitting {REFUSED}")
        for port, kind in PORTS:
            url = f"http://{vip}:{port}/"
            with self.subTest(port=port, kind=kind, after="patch"):
                self.assert_admitted(url, ADMITTED)
                self.assert_admitted(url, REFUSED)
                self.assert_refused(url, DEFAULT_SOURCE)


class NginxSourceRangesTest(HaproxySourceRangesTest):
    proxy = "nginx"


if __name__ == "__main__":
    unittest.main()
