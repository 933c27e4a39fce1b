"""kubectl-k8slb's command line, run through kubectl as a user runs it (the plugin on PATH)
against the API simulator: usage errors exit 2, a cluster kubectl cannot reach exits 1 with
kubectl's own error, and what status can do without (the ConfigMap) is a warning with the pool
shown unknown. The plugin's figures against a live cluster: tests/e2e/test_plugin.py."""

import json
import os
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "kubesim"))
import kubesim_client  # noqa: E402

SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "default"},
           "spec": {"type": "LoadBalancer", "ports": [{"port": 80, "targetPort": 8080}]}}


class PluginCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.work = tempfile.TemporaryDirectory()
        cls.sim = kubesim_client.start(os.path.join(cls.work.name, "sim"))

    @classmethod
    def tearDownClass(cls):
        cls.sim.stop()
        cls.work.cleanup()

    def plugin(self, *args, kubeconfig=None, input=None):
        tmp = os.path.join(self.work.name, "tmp")
        os.makedirs(tmp, exist_ok=True)
        env = dict(os.environ, PATH=f"{BINARY_DIR}:{os.environ.get('PATH', '/usr/bin:/bin')}",
                   KUBECONFIG=kubeconfig or self.sim.kubeconfig, TMPDIR=tmp)
        result = subprocess.run(["kubectl", "k8slb", *args], env=env, capture_output=True, text=True,
                                timeout=60, input=input)
        self.assertEqual(os.listdir(tmp), [], f"kubectl k8slb {' '.join(args)} left files behind")
        return result

    def test_usage_errors_exit_2(self):
        cases = [
            ((), "a command is required"),
            (("status", "pools"), "one command"),
            (("status", "-o", "yaml"), "-o must be table or json"),
            (("pools", "-n", "default"), "-n and -A are for status"),
            (("status", "-f", "x.json"), "-f is for lint"),
            (("status", "--config-map", "global"), "NAMESPACE/NAME"),
            (("status", "--bogus"), "unknown argument '--bogus'"),
            (("status", "-n"), "-n needs a value"),
        ]
        for args, message in cases:
            with self.subTest(args=args):
                result = self.plugin(*args)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertEqual(result.stdout, "")
        self.assertIn("kubectl k8slb status", self.plugin("--help").stdout)
        for config, status in (('{"pools": {"a": {"network": "192.0.2.0/24", "range": "192.0.2.10"}}}', 0),
                               ("{}", 1)):
            with self.subTest(config=config):
                self.assertEqual(self.plugin("lint", "-f", "-", input=config).returncode, status)

    def test_unreachable_cluster_exits_1_with_kubectls_error(self):
        kubeconfig = os.path.join(self.work.name, "nowhere")
        with open(kubeconfig, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                       "clusters": [{"name": "x", "cluster": {"server": "https://127.0.0.1:1"}}],
                       "contexts": [{"name": "x", "context": {"cluster": "x", "user": "x"}}],
                       "users": [{"name": "x", "user": {"token": "t"}}]}, f)
        for command in ("status", "pools", "lint"):
            with self.subTest(command=command):
                result = self.plugin(command, "--request-timeout", "5s", kubeconfig=kubeconfig)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertIn("127.0.0.1:1", result.stderr)
                self.assertEqual(result.stdout, "")

    def test_status_without_config_map_warns_and_pools_fail(self):
        created = subprocess.run(["kubectl", "--kubeconfig", self.sim.kubeconfig, "apply", "-f", "-"],
                                 input=json.dumps(SERVICE), capture_output=True, text=True, timeout=30)
        self.assertEqual(created.returncode, 0, created.stderr)
        status = self.plugin("status", "-o", "json")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertIn("warning:", status.stderr)
        self.assertEqual(json.loads(status.stdout)["items"],
                         [{"namespace": "default", "name": "web", "ip": None, "pool": None, "node": None,
                           "since": None}])
        for form in (("-n", "default"), ("-n=default",), ("-ndefault",), ("--namespace=default",),
                     ("--namespace", "default"), ):
            with self.subTest(form=form):
                same = self.plugin("status", *form, "-ojson")
                self.assertEqual((same.returncode, same.stdout), (0, status.stdout), same.stderr)
        elsewhere = self.plugin("status", "-n", "kube-system", "--output=json")
        self.assertEqual(json.loads(elsewhere.stdout)["items"], [])
        pools = self.plugin("pools")
        self.assertEqual((pools.returncode, pools.stdout), (1, ""))
        self.assertIn("not found", pools.stderr)  # kubectl's NotFound for the ConfigMap

    def test_nothing_from_the_cluster_reaches_the_terminal_as_a_control(self):
        """Anyone who may create Events can write a NodeAssigned one: a message that is not the
        actor's sentence (here with terminal escapes) is ignored, never printed."""
        kubectl = ["kubectl", "--kubeconfig", self.sim.kubeconfig]
        service = json.loads(json.dumps(SERVICE))
        service["metadata"].update(name="esc", namespace="shop")
        subprocess.run(kubectl + ["apply", "-f", "-"], check=True, capture_output=True, text=True, timeout=30,
                       input=json.dumps({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}}))
        subprocess.run(kubectl + ["apply", "-f", "-"], input=json.dumps(service), check=True,
                       capture_output=True, text=True, timeout=30)
        subprocess.run(kubectl + ["-n", "shop", "patch", "service", "esc", "--subresource=status", "--type=merge", "-p",
                                  json.dumps({"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.5"}]}}})],
                       check=True, capture_output=True, text=True, timeout=30)
        for name, message, time in (("good", "192.0.2.5 is served by node lb-a", "2026-11-28T10:00:00Z"),
                                    ("evil", "192.0.2.5 is served by node \x1b]0;owned\x07\x1b[2J",
                                     "2026-11-28T11:00:00Z")):
            event = {"apiVersion": "v1", "kind": "Event", "metadata": {"name": f"esc.{name}", "namespace": "shop"},
                     "involvedObject": {"apiVersion": "v1", "kind": "Service", "namespace": "shop", "name": "esc"},
                     "reason": "NodeAssigned", "message": message, "type": "Normal",
                     "firstTimestamp": time, "lastTimestamp": time}
            created = subprocess.run(kubectl + ["create", "-f", "-"], input=json.dumps(event),
                                     capture_output=True, text=True, timeout=30)
            self.assertEqual(created.returncode, 0, created.stderr)
        status = self.plugin("status", "-n", "shop")
        self.assertEqual(status.returncode, 0, status.stderr)
        self.assertNotIn("\x1b", status.stdout + status.stderr)
        self.assertNotIn("\x07", status.stdout + status.stderr)
        row = [line.split() for line in status.stdout.splitlines() if line.split()[1:2] == ["esc"]]
        self.assertEqual(row[0][2:6], ["192.0.2.5", "unknown", "lb-a", "2026-11-28T10:00:00Z"])


if __name__ == "__main__":
    unittest.main()
