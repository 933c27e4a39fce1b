"""The images scripts/build-images.sh builds, run by podman with the shipped manifests' pod specs
(tests/deploy/podman_pod.py) against the API simulator:

- two watcher replicas from the Deployment: a Service created with kubectl gets its IP, both
  probes pass, a replica stopped as the kubelet stops it hands the Lease over;
- an actor from the DaemonSet on each load-balancer node (a network namespace), with its
  capabilities and volumes: the Service's VIP carries traffic from a client, the probes pass,
  and stopping the actor that holds the VIP hands it to the other node with no failed request.

The images are built once per build directory (ctest fixture deploy.images); a test finds them
in build/images.
"""

import json
import os
import secrets
import subprocess
import sys
import time
import unittest

import yaml

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import podman_pod  # noqa: E402

SOURCE_DIR = podman_pod.SOURCE_DIR
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "kubesim"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "e2e"))
import kubesim_client  # noqa: E402

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cluster"))
from harness import wait_until  # noqa: E402

NAMESPACE = "k8slb-system"
WHY_NOT = podman_pod.usable()


def load(name):
    with open(os.path.join(SOURCE_DIR, "manifests", f"k8slb-{name}.yml")) as f:
        return [doc for doc in yaml.safe_load_all(f) if doc]


def image_tag():
    with open(os.path.join(SOURCE_DIR, "CMakeLists.txt")) as f:
        for line in f:
            if line.startswith("project(k8slb VERSION "):
                return line.split()[2]
    raise AssertionError("no project version in CMakeLists.txt")




def images_built(names=("watcher", "actor")):
    missing = [name for name in names
               if podman_pod.podman("image", "exists", f"{podman_pod.IMAGE_REPO}/{name}:{image_tag()}",
                                    check=False).returncode != 0]
    return None if not missing else f"images not built ({', '.join(missing)}): run scripts/build-images.sh"


@unittest.skipIf(WHY_NOT, f"podman cannot run here: {WHY_NOT}")
class WatcherImageTest(unittest.TestCase):
    def setUp(self):
        why = images_built(("watcher",))
        if why:
            self.fail(why)
        self.workdir = subprocess.run(["mktemp", "-d", "/tmp/k8slb-images-XXXXXX"], capture_output=True,
                                      text=True, check=True).stdout.strip()
        os.chmod(self.workdir, 0o755)
        self.addCleanup(subprocess.run, ["rm", "-rf", self.workdir])
        self.sim = kubesim_client.start(os.path.join(self.workdir, "sim"))
        self.addCleanup(self.sim.stop)
        self.pods = []
        self.addCleanup(self.remove_pods)

    def remove_pods(self):
        for pod in self.pods:
            pod.remove()

    def kubectl_apply(self, documents):
        text = yaml.safe_dump_all(documents)
        result = subprocess.run(["kubectl", "--kubeconfig", self.sim.kubeconfig, "apply",
                                 "-f", "-"], input=text, text=True, capture_output=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)

    def ingress(self, name):
        resp = self.sim.request("GET", f"/api/v1/namespaces/default/services/{name}")
        return resp.body.get("status", {}).get("loadBalancer", {}).get("ingress", []) if resp.status == 200 else []

    def holder(self):
        resp = self.sim.request("GET", f"/apis/coordination.k8s.io/v1/namespaces/{NAMESPACE}/leases/k8slb-watcher")
        return resp.body.get("spec", {}).get("holderIdentity") if resp.status == 200 else None

    def logs(self):
        return "\n".join(f"--- {p.name}:\n{p.log()}" for p in self.pods)

    def service(self, name):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
                "spec": {"type": "LoadBalancer", "selector": {"app": name},
                         "ports": [{"port": 80, "targetPort": 8080}]}}

    def test_kubectl_plugin_lints_offline_in_the_image(self):
        """The watcher image ships kubectl-k8slb: `lint -f -` needs no kubectl and no network, and
        says what k8slb-allocate on this machine says about the same config."""
        image = f"{podman_pod.IMAGE_REPO}/watcher:{image_tag()}"
        good = load("config")[0]["data"]["config"]
        bad = json.dumps({"pools": {"default": {"network": "192.0.2.0/24", "range": "198.51.100.1"}}})
        for config, status in ((good, 0), (bad, 1)):
            ran = podman_pod.podman("run", "--rm", "-i", "--network=none", "--ulimit", "nofile=16384:16384",
                                    "--ulimit", "nproc=4096:4096", "--entrypoint", "kubectl-k8slb", image,
                                    "lint", "-f", "-", input=config, check=False, timeout=60)
            here = subprocess.run([os.path.join(podman_pod.BINARY_DIR, "k8slb-allocate"), "--lint", "--config", "-"],
                                  input=config, capture_output=True, text=True, timeout=30)
            self.assertEqual((ran.returncode, ran.stdout, ran.stderr), (status, here.stdout, here.stderr))
        self.assertIn("pools.default.range: 198.51.100.1/32 is not inside network 192.0.2.0/24", ran.stderr)

    def test_two_replicas_assign_and_hand_over(self):
        documents = load("haproxy")
        self.kubectl_apply([d for d in documents if d["kind"] in ("Namespace", "ConfigMap")] + load("config"))
        deployment = next(d for d in documents if d["kind"] == "Deployment")
        spec = deployment["spec"]["template"]["spec"]
        container = spec["containers"][0]
        config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
        for _ in range(deployment["spec"]["replicas"]):
            self.pods.append(podman_pod.PodmanPod(
                spec, container, f"k8slb-watcher-{secrets.token_hex(3)}", NAMESPACE, self.workdir,
                "127.0.0.1", self.sim.port, self.sim.token, self.sim.ca_file, image_tag(),
                config_maps=config_maps))
        self.kubectl_apply([self.service("first")])
        ingress = wait_until(lambda: self.ingress("first"), 60, "an IP for default/first", details=self.logs)
        self.assertEqual(ingress[0].get("ipMode"), "Proxy")
        for pod in self.pods:
            self.assertEqual(pod.exec_probe(container["readinessProbe"]), 0, f"{pod.name} not ready\n{self.logs()}")
            self.assertEqual(pod.exec_probe(container["livenessProbe"]), 0, f"{pod.name} not live")
        leader = next(p for p in self.pods if p.name == self.holder())
        other = next(p for p in self.pods if p is not leader)
        self.assertEqual(leader.stop(), 0, leader.log())
        wait_until(lambda: self.holder() == other.name, 20, f"{other.name} to hold the Lease", details=self.logs)
        self.kubectl_apply([self.service("second")])
        wait_until(lambda: self.ingress("second"), 60, "an IP for default/second", details=self.logs)
        self.assertNotEqual(self.ingress("first")[0]["ip"], self.ingress("second")[0]["ip"])


from e2e import NetnsTestCase, netns, record_figure  # noqa: E402
import cluster as cluster_module  # noqa: E402

POD = "198.51.100.200"
WEB = cluster_module.http_service("web")


@unittest.skipIf(WHY_NOT, f"podman cannot run here: {WHY_NOT}")
class ActorImageTest(NetnsTestCase):
    """The actor image on two load-balancer nodes, as the DaemonSet runs it."""
    pods = (POD,)

    def setUp(self):
        super().setUp()
        why = images_built(("actor",))
        if why:
            self.fail(why)
        os.chmod(self.workdir, 0o755)
        self.actors = {}
        self.addCleanup(self.remove_actors)

    def remove_actors(self):
        for actor in self.actors.values():
            actor.remove()

    def start_actor(self, cluster, node, documents):
        daemonset = next(d for d in documents if d["kind"] == "DaemonSet")
        spec = daemonset["spec"]["template"]["spec"]
        config_maps = {d["metadata"]["name"]: d for d in documents if d["kind"] == "ConfigMap"}
        with open(os.path.join(cluster.kube_dir, "token")) as f:
            token = f.read().strip()
        actor = podman_pod.PodmanPod(
            spec, spec["containers"][0], f"k8slb-actor-{node.role}-{secrets.token_hex(3)}", NAMESPACE,
            self.workdir, "127.0.0.1", cluster.port, token, os.path.join(cluster.kube_dir, "ca.crt"),
            image_tag(), node_name=node.role, config_maps=config_maps, netns=node.namespace,
            host_paths={"/etc/certs": cluster.cert_dir})
        self.actors[node.role] = actor
        return actor

    def test_actors_serve_the_vip_and_hand_it_over_on_stop(self):
        documents = load("haproxy")
        container = next(d for d in documents if d["kind"] == "DaemonSet")["spec"]["template"]["spec"]["containers"][0]
        self.start_backend("http", POD, 8080, "web")
        cluster = cluster_module.Cluster(self.topology, self.workdir, start_actors=False)
        for node in self.topology.lb_nodes:
            self.start_actor(cluster, node, documents)
        cluster.create_endpoints("default", "web", [POD], [("http", 8080, "TCP")])
        cluster.apply_yaml(WEB)
        vip = cluster.wait_for_ip("default", "web")
        logs = lambda: "\n".join(f"--- {a.name}:\n{a.log()[-3000:]}" for a in self.actors.values())  # noqa: E731
        try:
            self.wait_for_body(f"http://{vip}/", "pod web", timeout=90)
        except AssertionError as error:
            raise AssertionError(f"{error}\n{logs()}") from None
        for role, actor in self.actors.items():
            self.assertEqual(actor.exec_probe(container["readinessProbe"]), 0, f"{role} not ready\n{logs()}")
            self.assertEqual(actor.exec_probe(container["livenessProbe"]), 0, f"{role} not live")
        holder = netns.wait_until(lambda: len(self.holder_of(vip)) == 1 and self.holder_of(vip)[0], 30,
                                  what=f"one holder of {vip}")
        other = next(n.role for n in self.topology.lb_nodes if n.role != holder)
        # A pod deletion: SIGTERM, the grace period, under a steady probe.
        probe = self.start_probe(f"http://{vip}/", duration=60)
        netns.wait_until(lambda: self.probe_report(probe)["last_ok"], 10, what="first probe")
        stopped_at = time.time()
        self.assertEqual(self.actors[holder].stop(), 0, self.actors[holder].log())
        netns.wait_until(lambda: self.holder_of(vip) == [other], 30, what=f"{vip} on {other}")
        netns.wait_until(lambda: (r := self.probe_report(probe))["last_ok"] and r["last_ok"] > stopped_at + 1,
                         30, what="traffic after the stop")
        report = self.stop_probe(probe)
        gaps = [round(end - start, 3) for start, end in report["gaps"] if end > stopped_at]
        record_figure("images.actor_stop_gap", gaps[0] if gaps else 0.0)
        self.assertEqual(netns.namespace_pids(self.topology.hosts[holder].namespace), [],
                         "processes left in the node after its actor stopped")


if __name__ == "__main__":
    unittest.main()
