"""The watcher Deployment of each shipped manifest, run as a cluster runs it (tests/deploy/pod.py:
read-only root, its user, no capabilities, its volumes, its environment, the in-cluster service
account), against the API simulator: a Service created with kubectl gets its IP, the probes
report ready, and a replica stopped by SIGTERM hands the Lease to the other at once."""

import json
import secrets
import os
import subprocess
import sys
import tempfile
import time
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pod  # noqa: E402

sys.path.insert(0, os.path.join(pod.SOURCE_DIR, "tests", "kubesim"))
import kubesim_client  # noqa: E402

sys.path.insert(0, os.path.join(pod.SOURCE_DIR, "tests", "cluster"))
from harness import wait_until  # noqa: E402

PROXIES = {"haproxy": "Proxy", "nginx": "Proxy", "kubeproxy": "VIP"}
NAMESPACE = "k8slb-system"
WHY_NOT = pod.usable()


def load(name):
    with open(os.path.join(pod.SOURCE_DIR, "manifests", f"k8slb-{name}.yml")) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]




@unittest.skipIf(WHY_NOT, f"pods cannot run here: {WHY_NOT}")
class WatcherPodTest(unittest.TestCase):
    def setUp(self):
        self.workdir = pod.tempdir()
        self.addCleanup(subprocess.run, ["rm", "-rf", self.workdir])
        self.sim = kubesim_client.start(os.path.join(self.workdir, "sim"))
        self.addCleanup(self.sim.stop)
        self.pods = []
        self.addCleanup(self.stop_pods)

    def stop_pods(self):
        for p in self.pods:
            p.stop(grace=5)

    def install(self, documents):
        """kubectl apply of what the simulator serves from the install (it has no apps/v1 or
        RBAC): the Namespace and the settings ConfigMap; then the pools, as docs/deploy.md says."""
        served = [d for d in documents if d["kind"] in ("Namespace", "ConfigMap")] + load("config")
        path = os.path.join(self.workdir, "install.yml")
        with open(path, "w") as f:
            yaml.safe_dump_all(served, f)
        subprocess.run(["kubectl", "--kubeconfig", self.sim.kubeconfig, "apply",
                        "-f", path], check=True, capture_output=True, timeout=60)

    def start_replicas(self, documents):
        deployment = next(d for d in documents if d["kind"] == "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
        for _ in range(deployment["spec"]["replicas"]):
            # Named as a ReplicaSet names its pods: the Deployment's name and a random suffix.
            name = f"k8slb-watcher-{secrets.token_hex(3)}"
            self.pods.append(pod.Pod(spec, spec["containers"][0], name, NAMESPACE, self.sim,
                                     self.workdir, config_maps=config_maps))
        return spec["containers"][0]

    def create_service(self, name):
        manifest = {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "default"},
                    "spec": {"type": "LoadBalancer", "selector": {"app": name},
                             "ports": [{"port": 80, "targetPort": 8080}]}}
        subprocess.run(["kubectl", "--kubeconfig", self.sim.kubeconfig, "apply",
                        "-f", "-"], input=json.dumps(manifest), text=True, check=True,
                       capture_output=True, timeout=60)

    def ingress(self, name):
        resp = self.sim.request("GET", f"/api/v1/namespaces/default/services/{name}")
        return resp.body.get("status", {}).get("loadBalancer", {}).get("ingress", []) \
            if resp.status == 200 else []

    def holder(self):
        resp = self.sim.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/k8slb-watcher")
        return resp.body.get("spec", {}).get("holderIdentity") if resp.status == 200 else None

    def logs(self):
        return "\n".join(f"--- {p.name}:\n{p.log()}" for p in self.pods)

    def test_the_image_holds_what_the_dockerfile_installs(self):
        self.assertEqual(pod.dockerfile_installs("watcher"), {n for n, _ in pod.IMAGES["watcher"]})

    def test_service_gets_its_ip_from_the_shipped_deployment(self):
        for proxy, ip_mode in PROXIES.items():
            with self.subTest(proxy=proxy):
                documents = load(proxy)
                self.install(documents)
                container = self.start_replicas(documents)
                name = f"web-{proxy}"
                self.create_service(name)
                ingress = wait_until(lambda: self.ingress(name), 30, f"an IP for default/{name}",
                                     details=self.logs)
                self.assertEqual(ingress[0].get("ipMode"), ip_mode)
                self.assertTrue(ingress[0]["ip"].startswith("192.0.2."), ingress)
                for p in self.pods:
                    self.assertEqual(p.exec_probe(container["readinessProbe"]), 0, f"{p.name} not ready")
                    self.assertEqual(p.exec_probe(container["livenessProbe"]), 0, f"{p.name} not live")
                self.stop_pods()
                self.pods = []

    def test_sigterm_hands_the_lease_over(self):
        documents = load("haproxy")
        self.install(documents)
        self.start_replicas(documents)
        self.create_service("first")
        wait_until(lambda: self.ingress("first"), 30, "an IP for default/first", details=self.logs)
        leader = next(p for p in self.pods if p.name == self.holder())
        other = next(p for p in self.pods if p is not leader)
        stopped = time.monotonic()
        self.assertEqual(leader.stop(), 0, leader.log())
        wait_until(lambda: self.holder() == other.name, 15, f"{other.name} to hold the Lease",
                   details=self.logs)
        print(f"lease handed over {time.monotonic() - stopped:.2f} s after SIGTERM", file=sys.stderr)
        self.create_service("second")
        wait_until(lambda: self.ingress("second"), 30, "an IP for default/second", details=self.logs)
        self.assertNotEqual(self.ingress("first")[0]["ip"], self.ingress("second")[0]["ip"])


@unittest.skipIf(WHY_NOT, f"pods cannot run here: {WHY_NOT}")
class WatcherScriptTest(unittest.TestCase):
    def test_no_writable_tmpdir_is_an_error(self):
        # In a mount namespace with a read-only root, so that a script that falls back to
        # FIFOs at /watch cannot leave them on this machine.
        with tempfile.TemporaryDirectory(prefix="k8slb-deploy-") as workdir:
            missing = os.path.join(workdir, "missing")
            env = dict(os.environ, TMPDIR=missing, LEASE_NAME="none", K8SLB_BIN=pod.BINARY_DIR,
                       KUBECONFIG=os.path.join(workdir, "no-kubeconfig"))
            try:
                result = subprocess.run(["unshare", "--mount", "--propagation", "private", "--",
                                         "sh", "-c", 'mount -o remount,ro,bind / && exec "$@"', "sh",
                                         "bash", os.path.join(pod.SOURCE_DIR, "scripts", "watcher.sh")],
                                        env=env, cwd=workdir, capture_output=True, text=True,
                                        timeout=20, stdin=subprocess.DEVNULL)
            except subprocess.TimeoutExpired as e:
                self.fail(f"watcher.sh kept running without a place for its FIFOs: {e.stderr}")
            self.assertEqual(result.returncode, 1, result.stderr)
            self.assertIn(f"cannot create a directory for the pipeline's FIFOs in {missing}", result.stderr)


class WatcherSettingsTest(unittest.TestCase):
    """watcher.sh refuses the settings actor.sh refuses, at once and saying which (exit 2),
    instead of running a pipeline that waits for a ConfigMap it can never read."""
    CASES = [
        ({"CONFIG_MAP": "global"}, "CONFIG_MAP=global: expected namespace/name"),
        ({"CONFIG_MAP": "k8slb-system/Global"}, "CONFIG_MAP=k8slb-system/Global: expected namespace/name"),
        ({"LB_CLASS": "a b"}, "LB_CLASS=a b: expected a qualified name"),
        ({"LB_CLASS": "example.com/k8slb/x"}, "LB_CLASS=example.com/k8slb/x: expected a qualified name"),
        ({}, "/nonexistent/k8slb-watch: not found (install the tools on PATH, or set K8SLB_BIN"),
    ]

    def test_bad_settings_are_refused(self):
        for env, message in self.CASES:
            with self.subTest(env=env):
                result = subprocess.run(["bash", os.path.join(pod.SOURCE_DIR, "scripts", "watcher.sh")],
                                        env=dict(os.environ, K8SLB_BIN="/nonexistent", **env),
                                        capture_output=True, text=True, timeout=20, stdin=subprocess.DEVNULL)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(message, result.stderr)

    def test_help_and_stray_arguments(self):
        script = os.path.join(pod.SOURCE_DIR, "scripts", "watcher.sh")
        shown = subprocess.run(["bash", script, "--help"], capture_output=True, text=True, timeout=20)
        self.assertEqual(shown.returncode, 0)
        self.assertIn("RESTART_MAX_DELAY", shown.stdout)
        stray = subprocess.run(["bash", script, "run"], capture_output=True, text=True, timeout=20)
        self.assertEqual(stray.returncode, 2)
        self.assertIn("usage: watcher.sh", stray.stderr)


if __name__ == "__main__":
    unittest.main()
