"""kubectl against the simulator: what a user does with the seed's Service manifests.

If kubectl accepts the simulator's answers, the simulator speaks the real protocol closely
enough for discovery, create, get (JSON and tables), apply (strategic merge patch), label
and delete.
"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import kubesim_client  # noqa: E402

BASIC_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name:  myapp-loadbalancer
  namespace: default
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

# The same Service, changed the way a user edits a manifest: a second port, another selector.
CHANGED_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name:  myapp-loadbalancer
  namespace: default
  annotations:
    loadbalancer/pool: external
spec:
  loadBalancerIP: 203.0.113.4
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 80
    - name: https
      port: 443
      protocol: TCP
      targetPort: 8443
  selector:
    app: myapp2
  type: LoadBalancer
"""

NO_PORTS_SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: noports
  namespace: default
spec:
  selector:
    app: myapp
  type: LoadBalancer
"""

NODE = """\
apiVersion: v1
kind: Node
metadata:
  name: lb-1
status:
  conditions:
    - type: Ready
      status: "True"
  addresses:
    - type: InternalIP
      address: 192.0.2.11
"""


# A `kind: List` file, as `kubectl get -o yaml` writes one: kubectl validates it on the client
# against the server's /openapi/v2 (a List has no endpoint of its own).
LIST_FILE = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: ConfigMap
  metadata: {name: listed-cm, namespace: checks}
  data: {key: value}
- apiVersion: v1
  kind: Service
  metadata:
    name: listed-svc
    namespace: checks
    annotations: {loadBalancer/pool: external}
  spec:
    type: LoadBalancer
    selector: {app: listed}
    ports: [{name: http, port: 80, targetPort: 8080}]
- apiVersion: v1
  kind: Pod
  metadata: {name: listed-pod, namespace: checks, labels: {app: listed}}
  spec:
    containers: [{name: web, image: "registry.example/web:1.0"}]
"""

MULTI_DOC_FILE = """\
apiVersion: v1
kind: ConfigMap
metadata: {name: multi-cm, namespace: checks}
data: {key: value}
---
apiVersion: v1
kind: Service
metadata: {name: multi-svc, namespace: checks}
spec:
  type: LoadBalancer
  ports: [{port: 443}]
"""

# loadbalancerIP and nodeport are typos (loadBalancerIP, nodePort).
LIST_WITH_TYPOS = """\
apiVersion: v1
kind: List
items:
- apiVersion: v1
  kind: Service
  metadata: {name: typo-list, namespace: checks}
  spec:
    type: LoadBalancer
    loadbalancerIP: 203.0.113.5
    ports: [{port: 80, nodeport: 31000}]
- apiVersion: v1
  kind: Pod
  metadata: {name: typo-pod, namespace: checks}
  spec:
    containers: [{name: web, image: "registry.example/web:1.0"}]
  satus: {phase: Running}
"""

SERVICE_WITH_TYPO = """\
apiVersion: v1
kind: Service
metadata: {name: typo-svc, namespace: checks}
spec:
  type: LoadBalancer
  loadbalancerIP: 203.0.113.5
  ports: [{port: 80}]
"""


class KubectlTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.workdir = tempfile.mkdtemp(prefix="kubesim-kubectl-")
        cls.sim = kubesim_client.start(cls.workdir)

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        shutil.rmtree(cls.workdir, ignore_errors=True)

    def manifest(self, name, text):
        path = os.path.join(self.workdir, name)
        with open(path, "w") as f:
            f.write(text)
        return path

    def kubectl(self, *args, connection=None, check=True):
        if connection is None:
            connection = ["--kubeconfig", self.sim.kubeconfig]
        env = dict(os.environ, KUBECONFIG="/nonexistent", HOME=self.workdir)
        result = subprocess.run(["kubectl", "--request-timeout=20s"] + connection + list(args),
                                capture_output=True, text=True, timeout=60, env=env)
        if check and result.returncode != 0:
            self.fail(f"kubectl {' '.join(args)} failed ({result.returncode}):\n"
                      f"{result.stdout}\n{result.stderr}")
        return result

    def get_service_json(self):
        return json.loads(self.kubectl("get", "svc", "myapp-loadbalancer", "-n", "default",
                                       "-o", "json").stdout)

    def test_service_lifecycle(self):
        steps = []

        # create -f, then get -A -o json shows it with a cluster IP and a resourceVersion
        basic = self.manifest("basic.yml", BASIC_SERVICE)
        out = self.kubectl("create", "-f", basic).stdout
        self.assertIn("service/myapp-loadbalancer created", out)
        listing = json.loads(self.kubectl("get", "svc", "-A", "-o", "json").stdout)
        mine = [s for s in listing["items"] if s["metadata"]["name"] == "myapp-loadbalancer"]
        self.assertEqual(len(mine), 1, listing)
        svc = mine[0]
        self.assertEqual(svc["metadata"]["namespace"], "default")
        self.assertTrue(svc["metadata"]["resourceVersion"].isdigit())
        self.assertIn(ipaddress.ip_address(svc["spec"]["clusterIP"]),
                      ipaddress.ip_network("10.96.0.0/12"))
        self.assertEqual(svc["spec"]["type"], "LoadBalancer")
        node_port = svc["spec"]["ports"][0]["nodePort"]
        self.assertTrue(30000 <= node_port <= 32767)
        first_rv = int(svc["metadata"]["resourceVersion"])

        # the table: get svc NAME, and -o wide with the selector column
        table = self.kubectl("get", "svc", "myapp-loadbalancer").stdout.splitlines()
        self.assertEqual(table[0].split(), ["NAME", "TYPE", "CLUSTER-IP", "EXTERNAL-IP",
                                            "PORT(S)", "AGE"])
        self.assertEqual(table[1].split()[:5], ["myapp-loadbalancer", "LoadBalancer",
                                                svc["spec"]["clusterIP"], "<pending>",
                                                f"80:{node_port}/TCP"])
        wide = self.kubectl("get", "svc", "myapp-loadbalancer", "-o", "wide").stdout.splitlines()
        self.assertEqual(wide[0].split()[-1], "SELECTOR")
        self.assertEqual(wide[1].split()[-1], "app=myapp")
        all_ns = self.kubectl("get", "svc", "-A").stdout.splitlines()
        self.assertEqual(all_ns[0].split()[:2], ["NAMESPACE", "NAME"])
        self.assertIn(["default", "myapp-loadbalancer"], [row.split()[:2] for row in all_ns[1:]])

        # apply -f the same manifest (adds last-applied), then a changed one
        self.kubectl("apply", "-f", basic)
        changed = self.manifest("changed.yml", CHANGED_SERVICE)
        out = self.kubectl("apply", "-f", changed).stdout
        self.assertIn("service/myapp-loadbalancer configured", out)
        svc = self.get_service_json()
        self.assertEqual(svc["spec"]["selector"], {"app": "myapp2"})
        self.assertEqual([(p["name"], p["port"], p["targetPort"]) for p in svc["spec"]["ports"]],
                         [("http", 80, 80), ("https", 443, 8443)])
        self.assertEqual(svc["spec"]["ports"][0]["nodePort"], node_port,
                         "an unchanged port keeps its node port")
        self.assertEqual(svc["spec"]["loadBalancerIP"], "203.0.113.4")
        self.assertEqual(svc["metadata"]["annotations"]["loadbalancer/pool"], "external")
        self.assertIn("kubectl.kubernetes.io/last-applied-configuration",
                      svc["metadata"]["annotations"])
        self.assertGreater(int(svc["metadata"]["resourceVersion"]), first_rv)
        self.assertEqual(svc["metadata"]["generation"], 2)

        # apply -f the basic manifest again: the https port and the annotation go away
        self.kubectl("apply", "-f", basic)
        svc = self.get_service_json()
        self.assertEqual([p["name"] for p in svc["spec"]["ports"]], ["http"])
        self.assertNotIn("loadbalancer/pool", svc["metadata"]["annotations"])
        self.assertNotIn("loadBalancerIP", svc["spec"])

        out = self.kubectl("apply", "-f", basic).stdout
        self.assertIn("unchanged", out)

        # delete svc NAME removes it
        out = self.kubectl("delete", "svc", "myapp-loadbalancer").stdout
        self.assertIn('service "myapp-loadbalancer" deleted', out)
        gone = self.kubectl("get", "svc", "myapp-loadbalancer", check=False)
        self.assertNotEqual(gone.returncode, 0)
        self.assertIn('services "myapp-loadbalancer" not found', gone.stderr)

    def test_load_balancer_without_ports_is_rejected(self):
        bad = self.manifest("noports.yml", NO_PORTS_SERVICE)
        result = self.kubectl("create", "-f", bad, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('The Service "noports" is invalid: spec.ports: Required value',
                      result.stderr)
        raw = self.sim.request("POST", "/api/v1/namespaces/default/services", {
            "apiVersion": "v1", "kind": "Service", "metadata": {"name": "noports"},
            "spec": {"type": "LoadBalancer", "selector": {"app": "myapp"}}})
        self.assertEqual(raw.status, 422)
        self.assertEqual(raw.body["reason"], "Invalid")
        self.assertEqual(raw.body["details"]["causes"][0]["field"], "spec.ports")

    def checks_namespace(self):
        """A namespace of their own, apart from the Services the other tests list."""
        self.sim.request("POST", "/api/v1/namespaces", {"metadata": {"name": "checks"}})

    def test_apply_validates_without_validate_false(self):
        self.checks_namespace()
        # A List file and a multi-document file, with kubectl's default validation (Strict).
        out = self.kubectl("apply", "-f", self.manifest("list.yml", LIST_FILE)).stdout
        for created in ("configmap/listed-cm created", "service/listed-svc created",
                        "pod/listed-pod created"):
            self.assertIn(created, out)
        svc = json.loads(self.kubectl("get", "svc", "listed-svc", "-n", "checks",
                                      "-o", "json").stdout)
        self.assertEqual(svc["metadata"]["annotations"]["loadBalancer/pool"], "external")
        pods = self.kubectl("get", "pods", "-n", "checks", "-l", "app=listed").stdout.splitlines()
        self.assertEqual(pods[1].split()[:3], ["listed-pod", "0/1", "Pending"])
        out = self.kubectl("apply", "-f", self.manifest("multi.yml", MULTI_DOC_FILE)).stdout
        self.assertIn("service/multi-svc created", out)

    def test_unknown_fields_are_refused_as_a_real_cluster_refuses_them(self):
        self.checks_namespace()
        # In a List: kubectl's client-side check against /openapi/v2; nothing is created.
        result = self.kubectl("apply", "-f", self.manifest("typos.yml", LIST_WITH_TYPOS),
                              check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('unknown field "loadbalancerIP" in io.k8s.api.core.v1.ServiceSpec',
                      result.stderr)
        self.assertIn('unknown field "nodeport" in io.k8s.api.core.v1.ServicePort', result.stderr)
        self.assertIn('unknown field "satus" in io.k8s.api.core.v1.Pod', result.stderr)
        missing = self.kubectl("get", "svc", "typo-list", "-n", "checks", check=False)
        self.assertNotEqual(missing.returncode, 0)
        # One object: the server's field validation (fieldValidation=Strict, kubectl's default).
        typo = self.manifest("typo.yml", SERVICE_WITH_TYPO)
        result = self.kubectl("apply", "-f", typo, check=False)
        self.assertNotEqual(result.returncode, 0)
        self.assertIn('strict decoding error: unknown field "spec.loadbalancerIP"', result.stderr)
        # --validate=warn: the server drops the field and says so in a Warning header.
        result = self.kubectl("apply", "--validate=warn", "-f", typo)
        self.assertIn('Warning: unknown field "spec.loadbalancerIP"', result.stderr)
        svc = json.loads(self.kubectl("get", "svc", "typo-svc", "-n", "checks",
                                      "-o", "json").stdout)
        self.assertNotIn("loadbalancerIP", svc["spec"])

    def test_explicit_server_token_and_ca(self):
        connection = ["--server", self.sim.url, "--token", self.sim.token,
                      "--certificate-authority", self.sim.ca_file]
        out = self.kubectl("get", "namespaces", "-o", "name", connection=connection).stdout
        for ns in ("namespace/default", "namespace/kube-system", "namespace/k8slb-system"):
            self.assertIn(ns, out.split())
        wrong = connection[:2] + ["--token", "not-the-token"] + connection[4:]
        denied = self.kubectl("get", "svc", connection=wrong, check=False)
        self.assertNotEqual(denied.returncode, 0)
        self.assertIn("Unauthorized", denied.stderr)
        no_ca = connection[:4]
        untrusted = self.kubectl("get", "svc", connection=no_ca, check=False)
        self.assertNotEqual(untrusted.returncode, 0)
        self.assertIn("certificate", untrusted.stderr)

    def test_label_nodes(self):
        node = self.manifest("node.yml", NODE)
        self.kubectl("create", "-f", node)
        self.kubectl("label", "nodes", "lb-1", "type=loadBalancer")
        out = self.kubectl("get", "nodes", "-l", "type=loadBalancer", "-o", "name").stdout
        self.assertEqual(out.split(), ["node/lb-1"])
        table = self.kubectl("get", "nodes", "-o", "wide").stdout.splitlines()
        self.assertEqual(table[1].split()[:2], ["lb-1", "Ready"])
        self.assertIn("192.0.2.11", table[1].split())
        self.kubectl("label", "nodes", "lb-1", "type-")
        out = self.kubectl("get", "nodes", "-l", "type=loadBalancer", "-o", "name").stdout
        self.assertEqual(out.split(), [])


if __name__ == "__main__":
    if shutil.which("kubectl") is None:
        print("kubectl not found: skipped")
        sys.exit(77)
    unittest.main()
