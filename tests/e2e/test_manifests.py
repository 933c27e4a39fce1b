"""The install manifests (manifests/k8slb-<proxy>.yml, generated from manifests/kustomize) and the
pools ConfigMap (manifests/k8slb-config.yml): well-formed, valid against the Kubernetes API's
schemas, least privilege, ready for production clusters, consistent with the scripts they start,
and carrying a config the tools and the daemons accept.

The API simulator serves only the kinds k8slb itself reads (no apps/v1, no RBAC), so the parts it
serves (Namespace, ConfigMap) are applied to it with kubectl; the rest is checked structurally."""

import json
import os
import re
import subprocess
import sys
import tempfile
import unittest

import yaml

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import netns  # noqa: E402
import openapi_check  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
KUBESIM = os.path.join(SOURCE_DIR, "tests", "kubesim", "kubesim.py")
PROXIES = ("haproxy", "nginx", "kubeproxy")

EXPECTED_KINDS = ["Namespace", "ServiceAccount", "ServiceAccount", "Role", "Role", "ClusterRole",
                  "ClusterRole", "RoleBinding", "RoleBinding", "ClusterRoleBinding",
                  "ClusterRoleBinding", "ConfigMap", "Deployment", "PodDisruptionBudget",
                  "DaemonSet"]

# Least privilege, as a table: (role kind, name) -> {(apiGroup, resource): verbs}.
EXPECTED_RULES = {
    ("ClusterRole", "k8slb-watcher"): {
        ("", "services"): {"get", "list", "watch"},
        ("", "services/status"): {"update", "patch"},
        ("", "events"): {"create", "patch"},
        ("events.k8s.io", "events"): {"create", "patch"},
    },
    ("Role", "k8slb-watcher"): {
        ("", "configmaps"): {"get", "list", "watch"},
        ("coordination.k8s.io", "leases"): {"get", "create", "update"},
    },
    ("ClusterRole", "k8slb-actor"): {
        ("", "services"): {"get", "list", "watch"},
        ("", "nodes"): {"get", "list", "watch"},
        ("discovery.k8s.io", "endpointslices"): {"get", "list", "watch"},
        ("", "events"): {"create", "patch"},  # k8slb-apply events: what the node leaves out
    },
    ("Role", "k8slb-actor"): {
        ("", "configmaps"): {"get", "list", "watch"},
    },
}

SERVICE = {"apiVersion": "v1", "kind": "Service",
           "metadata": {"name": "web", "namespace": "default", "uid": "u1"},
           "spec": {"type": "LoadBalancer", "selector": {"app": "web"},
                    "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}
SLICE = {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
         "metadata": {"name": "web-1", "namespace": "default",
                      "labels": {"kubernetes.io/service-name": "web"}},
         "addressType": "IPv4", "endpoints": [{"addresses": ["198.51.100.200"]}],
         "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}


def load(proxy):
    with open(os.path.join(SOURCE_DIR, "manifests", f"k8slb-{proxy}.yml")) as manifest:
        return [doc for doc in yaml.safe_load_all(manifest) if doc]


def load_config():
    """The pools ConfigMap, shipped apart from the install."""
    with open(os.path.join(SOURCE_DIR, "manifests", "k8slb-config.yml")) as f:
        documents = [doc for doc in yaml.safe_load_all(f) if doc]
    assert [d["kind"] for d in documents] == ["ConfigMap"], documents
    return documents[0]


def find(documents, kind, name=None):
    found = [d for d in documents if d["kind"] == kind and (name is None or d["metadata"]["name"] == name)]
    assert len(found) == 1, f"{kind} {name}: {len(found)} found"
    return found[0]


def env_of(container, documents):
    """name -> env entry, with the ConfigMaps of envFrom resolved as the kubelet does (env wins)."""
    env = {}
    for source in container.get("envFrom", []):
        name = source["configMapRef"]["name"]
        data = find(documents, "ConfigMap", name)["data"]
        env.update({key: {"name": key, "value": value, "from": name} for key, value in data.items()})
    env.update({e["name"]: e for e in container.get("env", [])})
    return env


def pod_of(documents, kind):
    return find(documents, kind)["spec"]["template"]["spec"]


class ManifestTest(unittest.TestCase):
    def test_kinds_and_namespace(self):
        for proxy in PROXIES:
            with self.subTest(proxy=proxy):
                documents = load(proxy)
                self.assertEqual([d["kind"] for d in documents], EXPECTED_KINDS)
                for d in documents:
                    if d["kind"] not in ("Namespace", "ClusterRole", "ClusterRoleBinding"):
                        self.assertEqual(d["metadata"]["namespace"], "k8slb-system", d["metadata"])

    def test_rbac_is_least_privilege(self):
        for proxy in PROXIES:
            documents = load(proxy)
            for (kind, name), expected in EXPECTED_RULES.items():
                with self.subTest(proxy=proxy, role=f"{kind}/{name}"):
                    granted = {}
                    for rule in find(documents, kind, name)["rules"]:
                        self.assertNotIn("*", rule["verbs"])
                        self.assertNotIn("*", rule["resources"])
                        self.assertNotIn("resourceNames", rule)
                        for group in rule["apiGroups"]:
                            for resource in rule["resources"]:
                                granted.setdefault((group, resource), set()).update(rule["verbs"])
                    self.assertEqual(granted, expected)
            for kind in ("ClusterRoleBinding", "RoleBinding"):
                for binding in (d for d in documents if d["kind"] == kind):
                    with self.subTest(proxy=proxy, binding=binding["metadata"]["name"]):
                        role_kind = "ClusterRole" if kind == "ClusterRoleBinding" else "Role"
                        self.assertEqual(binding["roleRef"]["kind"], role_kind)
                        self.assertEqual(binding["subjects"],
                                         [{"kind": "ServiceAccount", "name": binding["roleRef"]["name"],
                                           "namespace": "k8slb-system"}])

    def test_generated_from_kustomize(self):
        """The single files are what `kubectl kustomize` makes of manifests/kustomize."""
        result = subprocess.run(["bash", os.path.join(SOURCE_DIR, "scripts", "gen-manifests.sh"), "--check"],
                                capture_output=True, text=True, timeout=120)
        self.assertEqual(result.returncode, 0, result.stderr)

    def test_every_object_is_valid_against_the_api_schemas(self):
        documents = [("k8slb-config.yml", load_config())]
        documents += [(f"k8slb-{proxy}.yml", d) for proxy in PROXIES for d in load(proxy)]
        for path, document in documents:
            with self.subTest(file=path, kind=document["kind"], name=document["metadata"]["name"]):
                self.assertEqual(openapi_check.errors_of(document), [])
        # The check itself refuses what the API server refuses.
        typo = {"apiVersion": "apps/v1", "kind": "DaemonSet", "metadata": {"name": "x"},
                "spec": {"selector": {}, "template": {"spec": {"containers": [
                    {"name": "a", "imagePullPolicy": "Always", "securityContex": {}}]}}}}
        self.assertEqual(openapi_check.errors_of(typo),
                         ["DaemonSet/x.spec.template.spec.containers[0].securityContex: unknown field of V1Container"])

    def test_ready_for_production_clusters(self):
        for proxy in PROXIES:
            with self.subTest(proxy=proxy):
                documents = load(proxy)
                labels = find(documents, "Namespace")["metadata"]["labels"]
                # hostNetwork and NET_ADMIN need "privileged"; a baseline-enforcing default
                # would refuse the actors.
                self.assertEqual(labels["pod-security.kubernetes.io/enforce"], "privileged")
                watcher, actor = pod_of(documents, "Deployment"), pod_of(documents, "DaemonSet")
                self.assertEqual(watcher["priorityClassName"], "system-cluster-critical")
                self.assertEqual(actor["priorityClassName"], "system-node-critical")
                tolerated = {t["key"] for t in actor["tolerations"]}
                self.assertIn("node-role.kubernetes.io/control-plane", tolerated)
                for pod in (watcher, actor):
                    self.assertEqual(pod["securityContext"]["seccompProfile"]["type"], "RuntimeDefault")
                    for container in pod["containers"] + pod.get("initContainers", []):
                        image = container["image"]
                        self.assertTrue(image.startswith("registry.invalid/k8slb/"),
                                        f"{image}: a name the project owns nowhere would be squatted")
                    self.assertIn("memory", pod["containers"][0]["resources"]["limits"])
                budget = find(documents, "PodDisruptionBudget")
                self.assertEqual(budget["spec"]["minAvailable"], 1)
                self.assertEqual(budget["spec"]["selector"]["matchLabels"],
                                 find(documents, "Deployment")["spec"]["selector"]["matchLabels"])
                # The pools are not part of the install: re-applying it on upgrade keeps them.
                self.assertEqual([d for d in documents if d["kind"] == "ConfigMap"
                                  and d["metadata"]["name"] == "global"], [])

    def test_watcher_and_actors_share_their_settings(self):
        for proxy in PROXIES:
            with self.subTest(proxy=proxy):
                documents = load(proxy)
                watcher = env_of(pod_of(documents, "Deployment")["containers"][0], documents)
                actor = env_of(pod_of(documents, "DaemonSet")["containers"][0], documents)
                # One setting each: both read it from the same generated ConfigMap.
                for name in ("PROXY", "CONFIG_MAP", "LB_CLASS"):
                    self.assertIn("from", watcher[name], f"{name} is not the shared setting")
                    self.assertEqual(watcher[name], actor[name], f"{name} differs")
                self.assertEqual(watcher["PROXY"]["value"], proxy)
                config_map = load_config()["metadata"]
                self.assertEqual(watcher["CONFIG_MAP"]["value"],
                                 f"{config_map['namespace']}/{config_map['name']}")
                selector = dict(item.split("=") for item in actor["NODE_SELECTOR"]["value"].split(","))
                self.assertEqual(pod_of(documents, "DaemonSet")["nodeSelector"], selector,
                                 "the actors must watch the Nodes the DaemonSet runs on")

    def test_actor_daemonset(self):
        with open(os.path.join(SOURCE_DIR, "scripts", "actor.sh")) as script:
            header = "".join(line for line in script if line.startswith("#"))
            documented = set(re.findall(r"^#   ([A-Z_]+(?:, [A-Z_]+)*)\s", header, re.M))
            documented = {name for names in documented for name in names.split(", ")}
        for proxy in PROXIES:
            with self.subTest(proxy=proxy):
                daemonset = find(load(proxy), "DaemonSet")
                pod = daemonset["spec"]["template"]["spec"]
                self.assertEqual(pod["serviceAccountName"], "k8slb-actor")
                self.assertTrue(pod["hostNetwork"])
                self.assertEqual(pod["nodeSelector"], {"type": "loadBalancer"})
                container = pod["containers"][0]
                env = env_of(container, load(proxy))
                self.assertEqual(env["PROXY"]["value"], proxy)
                self.assertEqual(env["NODE_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "spec.nodeName")
                password = env["VRRP_PASSWORD"]
                self.assertNotIn("value", password, "the VRRP password is never in the manifest")
                self.assertEqual(password["valueFrom"]["secretKeyRef"]["name"], "k8slb-vrrp")
                self.assertLessEqual(set(env), documented, "variables actor.sh does not document")
                capabilities = container["securityContext"]["capabilities"]
                self.assertEqual(capabilities["drop"], ["ALL"])
                self.assertEqual(sorted(capabilities["add"]), ["NET_ADMIN", "NET_BIND_SERVICE", "NET_RAW"])
                self.assertNotIn("privileged", container["securityContext"])
                self.assertEqual(container["livenessProbe"]["exec"]["command"],
                                 ["/usr/local/bin/actor.sh", "health"])
                self.assertEqual(container["readinessProbe"]["exec"]["command"],
                                 ["/usr/local/bin/actor.sh", "ready"])
                mounts = {m["name"]: m for m in container["volumeMounts"]}
                self.assertEqual(mounts["certs"]["mountPath"], env["CERT_PATH"]["value"])
                self.assertTrue(mounts["certs"]["readOnly"])
                if proxy == "nginx":
                    # nginx cannot bind a VIP held elsewhere without ip_nonlocal_bind, which
                    # only a privileged container can set in the node's network namespace.
                    sysctls = " ".join(pod["initContainers"][0]["command"])
                    self.assertIn("net.ipv4.ip_nonlocal_bind=1", sysctls)
                    # A node with IPv6 disabled has no such key: that must not stop the actor.
                    self.assertIn("{ sysctl -w net.ipv6.ip_nonlocal_bind=1 || true; }", sysctls)
                else:
                    # HAProxy binds with `transparent` (NET_ADMIN); kube-proxy mode binds
                    # nothing: no privileged container at all.
                    self.assertNotIn("initContainers", pod)

    def test_watcher_deployment(self):
        for proxy in PROXIES:
            with self.subTest(proxy=proxy):
                documents = load(proxy)
                deployment = find(documents, "Deployment")
                self.assertEqual(deployment["spec"]["replicas"], 2)
                pod = deployment["spec"]["template"]["spec"]
                self.assertEqual(pod["serviceAccountName"], "k8slb-watcher")
                container = pod["containers"][0]
                env = env_of(container, documents)
                self.assertEqual(env["PROXY"]["value"], proxy)
                self.assertEqual(env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"], "metadata.name")
                self.assertIn("livenessProbe", container)
                self.assertIn("readinessProbe", container)
                self.assertTrue(pod["securityContext"]["runAsNonRoot"])

    def test_config_is_accepted_by_the_tools_and_the_daemons(self):
        allocate = os.path.join(BINARY_DIR, "k8slb-allocate")
        render = os.path.join(BINARY_DIR, "k8slb-render")
        self.assertTrue(os.access(allocate, os.X_OK) and os.access(render, os.X_OK),
                        f"k8slb-allocate and k8slb-render must be built in {BINARY_DIR}")
        config_map = load_config()
        config = json.loads(config_map["data"]["config"])
        self.assertIn("default", config["pools"])
        self.assertEqual({"haproxy", "nginx"} & set(config), {"haproxy", "nginx"})
        for proxy in PROXIES:
            with self.subTest(proxy=proxy), tempfile.TemporaryDirectory() as work:
                cm_path = os.path.join(work, "configmap.json")
                with open(cm_path, "w") as out:
                    json.dump(config_map, out)
                objects = os.path.join(work, "objects.json")
                with open(objects, "w") as out:
                    json.dump({"apiVersion": "v1", "kind": "List", "items": [SERVICE, SLICE]}, out)
                allocated = subprocess.run([allocate, "--config", cm_path, "-f", objects],
                                           capture_output=True, text=True, timeout=30)
                self.assertEqual(allocated.returncode, 0, allocated.stderr)
                if proxy == "kubeproxy":
                    continue
                out_dir = os.path.join(work, "out")
                rendered = subprocess.run([render, proxy, "--config", cm_path, "--output-dir", out_dir,
                                           "--runtime-dir", work],
                                          input=allocated.stdout, capture_output=True, text=True, timeout=30)
                self.assertEqual(rendered.returncode, 0, rendered.stderr)
                if proxy == "haproxy":
                    check = ["haproxy", "-c", "-f", os.path.join(out_dir, "haproxy.cfg")]
                else:
                    try:
                        netns.check_available()
                    except netns.Unavailable as error:
                        self.skipTest(f"network namespaces unavailable: {error}")
                    # nginx -t binds the VIPs: in a network namespace of its own (gone when
                    # it exits) with ip_nonlocal_bind, as on a load-balancer node.
                    check = ["unshare", "--net", "sh", "-c",
                             'sysctl -q -w net.ipv4.ip_nonlocal_bind=1 net.ipv6.ip_nonlocal_bind=1'
                             ' && exec nginx -t -q -c "$0" -p "$1"',
                             os.path.join(out_dir, "nginx.conf"), work + "/"]
                checked = subprocess.run(check, capture_output=True, text=True, timeout=30)
                self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    def test_namespace_and_config_apply_to_the_api(self):
        """kubectl applies the parts the simulator serves, and the config reads back intact."""
        with tempfile.TemporaryDirectory() as work:
            simulator = subprocess.Popen([sys.executable, KUBESIM, "--workdir", work],
                                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
            try:
                self.assertTrue(simulator.stdout.readline().startswith("ready https://"))
                kubeconfig = os.path.join(work, "kubeconfig")
                for proxy in PROXIES:
                    with self.subTest(proxy=proxy):
                        documents = [find(load(proxy), "Namespace"), load_config()]
                        text = "\n---\n".join(yaml.safe_dump(d) for d in documents)
                        applied = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "apply", "-f", "-"],
                                                 input=text, capture_output=True, text=True, timeout=30)
                        self.assertEqual(applied.returncode, 0, applied.stderr)
                        got = subprocess.run(["kubectl", "--kubeconfig", kubeconfig, "-n", "k8slb-system",
                                              "get", "configmap", "global", "-o", "json"],
                                             capture_output=True, text=True, timeout=30)
                        self.assertEqual(got.returncode, 0, got.stderr)
                        self.assertEqual(json.loads(got.stdout)["data"]["config"],
                                         documents[1]["data"]["config"])
            finally:
                simulator.terminate()
                simulator.wait(timeout=10)
                simulator.stdout.close()


if __name__ == "__main__":
    unittest.main()
