"""End to end: what users of the original rely on at a TLS Service (issue 8, items 2-4), with
the original's config documents (examples/original/haproxy.json, nginx.json) unchanged, through
HAProxy and through nginx:

  * port 80 of a Service that terminates TLS on 443 redirects to https, unless the Service says
    loadbalancer/sslredirect: "false" (then port 80 reaches the pods);
  * Host, X-Forwarded-For and X-Forwarded-Proto reach the pod exactly once, although the
    documents set them too;
  * the cert dir's other certificates are offered by SNI, verified by the client; the pool's
    certificate stays the default; a file whose name is unsafe is refused, named in the log."""

import json
import os
import re
import unittest

from e2e import SOURCE_DIR, netns
from test_vip import POD_A, POD_B, VipTestCase

SERVICES = """
apiVersion: v1
kind: Service
metadata:
  name: secure
  namespace: default
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
    - {name: http, port: 80, targetPort: 8080}
    - {name: https, port: 443, targetPort: 8080}
---
apiVersion: v1
kind: Service
metadata:
  name: plain
  namespace: default
  annotations:
    loadbalancer/sslredirect: "false"
spec:
  type: LoadBalancer
  selector:
    app: web
  ports:
    - {name: http, port: 80, targetPort: 8080}
    - {name: https, port: 443, targetPort: 8080}
"""

SNI_NAMES = ("one.example.test", "two.example.test")


def make_sni_certificate(cert_dir, name):
    """<name>.pem (certificate + key) for DNS name `name`, signed by the cluster's test CA."""
    stem = os.path.join(cert_dir, name.split(".")[0])
    with open(stem + ".ext", "w") as ext:
        ext.write(f"subjectAltName=DNS:{name}\nextendedKeyUsage=serverAuth\n")
    netns.run(["openssl", "req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
               "-nodes", "-keyout", stem + ".key", "-out", stem + ".csr", "-subj", f"/CN={name}"],
              timeout=60)
    netns.run(["openssl", "x509", "-req", "-in", stem + ".csr", "-CA", os.path.join(cert_dir, "ca.crt"),
               "-CAkey", os.path.join(cert_dir, "ca.key"), "-CAcreateserial", "-out", stem + ".crt",
               "-days", "2", "-extfile", stem + ".ext"], timeout=60)
    with open(stem + ".pem", "w") as bundle:
        for part in (".crt", ".key"):
            with open(stem + part) as text:
                bundle.write(text.read())
    return stem + ".pem"


class TlsHttpCase(VipTestCase):
    proxy = None

    def setUp(self):
        if self.proxy is None:
            self.skipTest("base class")
        with open(os.path.join(SOURCE_DIR, "examples", "original", f"{self.proxy}.json")) as doc:
            self.cluster_options = {"proxy_settings": json.load(doc)[self.proxy]}
        super().setUp()

    def fetch(self, url, *extra):
        """(curl exit status, HTTP code, Location, body) from the client."""
        status, output = self.curl(url, *extra, "-w", "\ncode %{http_code} %{redirect_url}\n")
        found = re.findall(r"^code (\d{3}) ?(\S*)$", output, re.M)
        code, location = found[-1] if found else ("000", "")
        return status, int(code), location, output

    def assert_headers_once(self, body, scheme):
        counts = dict(re.findall(r"^count (\S+) (\d+)$", body, re.M))
        self.assertEqual(counts, {"host": "1", "x-forwarded-for": "1", "x-forwarded-proto": "1"}, body)
        self.assertRegex(body, rf"(?m)^x-forwarded-proto {scheme}$")
        self.assertRegex(body, r"(?m)^x-forwarded-for [0-9.]+$")

    def test_tls(self):
        cert_dir = self.cluster.cert_dir
        for name in SNI_NAMES:
            make_sni_certificate(cert_dir, name)
        bad = os.path.join(cert_dir, "bad name.pem")
        with open(os.path.join(cert_dir, "one.pem")) as source, open(bad, "w") as copy:
            copy.write(source.read())
        self.cluster.create_endpoints("default", "secure", [POD_A, POD_B],
                                      [("http", 8080, "TCP"), ("https", 8080, "TCP")])
        self.cluster.create_endpoints("default", "plain", [POD_A, POD_B],
                                      [("http", 8080, "TCP"), ("https", 8080, "TCP")])
        self.cluster.apply_yaml(SERVICES)
        secure = self.cluster.wait_for_ip("default", "secure")
        plain = self.cluster.wait_for_ip("default", "plain")
        cacert = ("--cacert", self.cluster.ca_crt)

        # Item 2: port 80 of a TLS Service redirects; with sslredirect "false" it is served.
        self.wait_for_body(f"http://{plain}/", "pod web-", timeout=60)
        self.wait_for_body(f"https://{secure}/", "pod web-", *cacert, timeout=30)
        # Each VIP settled on its first-choice node (not moving while the client connects).
        self.assert_held_by_first_choice(secure)
        self.assert_held_by_first_choice(plain)
        status, code, location, output = self.fetch(f"http://{secure}/some/path?q=1")
        self.assertEqual((status, code, location), (0, 301, f"https://{secure}/some/path?q=1"), output)
        self.assertNotIn("pod web-", output)
        status, code, _, output = self.fetch(f"http://{secure}/", "-L", *cacert)
        self.assertEqual((status, code), (0, 200), output)
        self.assertIn("pod web-", output)

        # Item 3: each header once, with the original's document setting them too.
        for url, scheme in ((f"http://{plain}/", "http"), (f"https://{plain}/", "https"),
                            (f"https://{secure}/", "https")):
            with self.subTest(url=url):
                status, code, _, body = self.fetch(url, *cacert)
                self.assertEqual((status, code), (0, 200), body)
                self.assert_headers_once(body, scheme)

        # Item 4: each name gets its own certificate (curl verifies it against the name), a
        # client naming no certificate of the dir gets the pool's (it names the IP, not the name).
        for name in SNI_NAMES:
            with self.subTest(sni=name):
                status, code, _, output = self.fetch(f"https://{name}/", "--resolve", f"{name}:443:{secure}",
                                                     "-v", *cacert)
                self.assertEqual((status, code), (0, 200), output)
                self.assertIn(f"subject: CN={name}", output)
                self.assertIn("pod web-", output)
        status, code, _, output = self.fetch(f"https://{secure}/", "-v", *cacert)
        self.assertEqual((status, code), (0, 200), output)
        self.assertIn("subject: CN=k8slb pool default", output)
        status, _, _, output = self.fetch("https://three.example.test/", "--resolve",
                                          f"three.example.test:443:{secure}", *cacert)
        self.assertNotEqual(status, 0, f"an unknown name got a certificate for it: {output}")
        for node in self.topology.lb_nodes:
            with open(self.cluster.actors[node.role].log_path, errors="replace") as log:
                text = log.read()
            # (logfmt escapes the quotes around the name: \"bad name.pem\")
            self.assertRegex(text, r'\\?"bad name\.pem\\?" is not a safe file name')
            # The document's `daemon` (HAProxy) never made the proxy look dead to k8slb-apply.
            self.assertNotIn("did not start", text)


class HaproxyTlsTest(TlsHttpCase):
    proxy = "haproxy"


class NginxTlsTest(TlsHttpCase):
    proxy = "nginx"



if __name__ == "__main__":
    unittest.main()
