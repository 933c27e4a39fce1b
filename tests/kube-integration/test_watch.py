#!/usr/bin/env python3
"""k8slb-watch against the Kubernetes API simulator.

Each test starts a simulator and k8slb-watch, changes the cluster (with kubectl or the
simulator's own client), injects faults (dropped watches, compaction, 500s, a 429 storm) and
checks the documents k8slb-watch prints: the final one holds exactly the Services that exist,
none lost, none twice, and no document repeats the one before it.
"""

import json
import os
import queue
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import unittest

SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "../.."))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests/kubesim"))
import kubesim_client  # noqa: E402

WATCH = os.environ.get("K8SLB_WATCH") or os.path.join(os.environ.get("K8SLB_BINARY_DIR", "build"), "k8slb-watch")
KUBECTL = shutil.which("kubectl")
WAIT = 20  # seconds any single expectation may take before the test fails


def lb_service(name, namespace="default", lb_class=None, service_type="LoadBalancer"):
    spec = {"type": service_type, "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}
    if lb_class:
        spec["loadBalancerClass"] = lb_class
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace}, "spec": spec}


def keys(document):
    return [f'{i["kind"]} {i["metadata"].get("namespace", "")}/{i["metadata"]["name"]}'
            for i in document["items"]]


class Watcher:
    """A running k8slb-watch whose stdout lines are parsed as they come."""

    def __init__(self, args):
        self.process = subprocess.Popen([WATCH] + args, stdout=subprocess.PIPE,
                                        stderr=subprocess.PIPE, text=True)
        self.documents = []
        self.lines = queue.Queue()
        self.reader = threading.Thread(target=self._read, daemon=True)
        self.reader.start()

    def _read(self):
        for line in self.process.stdout:
            self.lines.put(line)
        self.lines.put(None)

    def wait_for(self, predicate, what):
        """Reads documents until the latest satisfies predicate; returns it."""
        deadline = time.monotonic() + WAIT
        if self.documents and predicate(self.documents[-1]):
            return self.documents[-1]
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=max(0.01, deadline - time.monotonic()))
            except queue.Empty:
                break
            if line is None:
                raise AssertionError(f"k8slb-watch ended while waiting for {what}: "
                                     f"{self.process.wait()} {self.process.stderr.read()}")
            self.documents.append(json.loads(line))
            if predicate(self.documents[-1]):
                return self.documents[-1]
        raise AssertionError(f"timed out waiting for {what}; last document: "
                             f"{keys(self.documents[-1]) if self.documents else None}")

    def wait_for_services(self, names):
        want = sorted(f"Service default/{n}" for n in names)
        return self.wait_for(lambda d: keys(d) == want, f"services {want}")

    def stop(self):
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.reader.join(timeout=5)
        self.process.stdout.close()
        self.process.stderr.close()
        return self.process.returncode


class WatchTest(unittest.TestCase):
    def setUp(self):
        if not os.path.exists(WATCH):
            self.skipTest(f"{WATCH} not built")
        self.workdir = tempfile.mkdtemp(prefix="k8slb-kube-it-")
        self.sim = kubesim_client.start(self.workdir, bookmark_interval=1)
        self.watchers = []

    def tearDown(self):
        for watcher in self.watchers:
            watcher.stop()
        self.sim.stop()
        shutil.rmtree(self.workdir, ignore_errors=True)

    def watch(self, *args):
        watcher = Watcher(["--kubeconfig", self.sim.kubeconfig, "--debounce", "50ms"] + list(args))
        self.watchers.append(watcher)
        return watcher

    def create(self, obj, attempts=20):
        """Creates through the simulator, riding over injected 500s and 429s."""
        ns = obj["metadata"].get("namespace", "default")
        for _ in range(attempts):
            response = self.sim.request("POST", f"/api/v1/namespaces/{ns}/services", obj)
            if response.status == 201:
                return response.body
            self.assertIn(response.status, (429, 500), response.body)
            time.sleep(0.05)
        self.fail(f"could not create {obj['metadata']['name']}")

    def delete(self, name, attempts=20):
        for _ in range(attempts):
            response = self.sim.request("DELETE", f"/api/v1/namespaces/default/services/{name}")
            if response.status == 200:
                return
            self.assertIn(response.status, (429, 500), response.body)
            time.sleep(0.05)
        self.fail(f"could not delete {name}")

    def list_calls(self):
        return self.sim.stats()["verbs"].get("list services", 0)

    def assert_history_sane(self, watcher):
        for before, after in zip(watcher.documents, watcher.documents[1:]):
            self.assertNotEqual(before, after, "a document repeated the one before it")
        for document in watcher.documents:
            self.assertEqual(len(keys(document)), len(set(keys(document))), "an object listed twice")

    # -- tests --

    def test_once_lists_services_created_with_kubectl(self):
        if not KUBECTL:
            self.skipTest("kubectl not installed")
        manifest = "\n".join(json.dumps(s) for s in [
            lb_service("web"), lb_service("api", "k8slb-system"),
            lb_service("internal", service_type="ClusterIP"),
            lb_service("theirs", lb_class="example.com/other"),
            lb_service("ours", lb_class="example.com/k8slb")])
        subprocess.run([KUBECTL, "--kubeconfig", self.sim.kubeconfig, "create", "-f", "-"],
                       input=manifest, text=True, check=True, capture_output=True, timeout=60)
        cases = [
            ("no class: only Services without one", [], ["Service default/web", "Service k8slb-system/api"]),
            ("--lb-class: ours and the unclassed", ["--lb-class", "example.com/k8slb"],
             ["Service default/ours", "Service default/web", "Service k8slb-system/api"]),
            ("--namespace", ["--namespace", "k8slb-system"], ["Service k8slb-system/api"]),
        ]
        for description, args, expected in cases:
            with self.subTest(description):
                result = subprocess.run([WATCH, "--kubeconfig", self.sim.kubeconfig, "--once", "services"] + args,
                                        capture_output=True, text=True, timeout=60)
                self.assertEqual(result.returncode, 0, result.stderr)
                lines = result.stdout.splitlines()
                self.assertEqual(len(lines), 1)
                document = json.loads(lines[0])
                self.assertEqual((document["apiVersion"], document["kind"]), ("v1", "List"))
                self.assertEqual(keys(document), expected)
                for item in document["items"]:
                    self.assertEqual((item["apiVersion"], item["kind"]), ("v1", "Service"))
                    self.assertEqual(item["spec"]["ports"][0]["port"], 80)

    def test_once_mixes_kinds_sorted(self):
        self.sim.must("POST", "/api/v1/namespaces/k8slb-system/configmaps",
                      {"metadata": {"name": "global"}, "data": {"config": "{}"}})
        self.sim.must("POST", "/api/v1/namespaces/k8slb-system/configmaps",
                      {"metadata": {"name": "other"}, "data": {}})
        for name, labels in [("lb-1", {"type": "loadBalancer"}), ("worker-1", {})]:
            self.sim.must("POST", "/api/v1/nodes", {"metadata": {"name": name, "labels": labels}})
        self.create(lb_service("web"))
        result = subprocess.run([WATCH, "--kubeconfig", self.sim.kubeconfig, "--once",
                                 "--node-selector", "type=loadBalancer",
                                 "services", "nodes", "configmap/k8slb-system/global"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(keys(json.loads(result.stdout)),
                         ["ConfigMap k8slb-system/global", "Node /lb-1", "Service default/web"])

    def test_streaming_prints_a_line_after_a_create(self):
        self.create(lb_service("a"))
        watcher = self.watch("services")
        watcher.wait_for_services(["a"])
        self.create(lb_service("b"))
        watcher.wait_for_services(["a", "b"])
        self.create(lb_service("c", service_type="ClusterIP"))  # not passed on: no new line
        self.create(lb_service("d"))
        watcher.wait_for_services(["a", "b", "d"])
        self.delete("a")
        watcher.wait_for_services(["b", "d"])
        self.assert_history_sane(watcher)
        self.assertEqual(len(watcher.documents), 4)
        self.assertEqual(watcher.stop(), 0)  # SIGTERM ends it cleanly

    def test_debounce_prints_a_lone_change_at_once_and_a_burst_as_one_document(self):
        """--debounce is at most one document per window, not a delay: a change after a quiet
        window is printed without waiting the window out; changes within the window of the
        last document come together when it ends."""
        window = 4.0
        watcher = Watcher(["--kubeconfig", self.sim.kubeconfig, "--debounce", f"{window:g}s", "services"])
        self.watchers.append(watcher)
        watcher.wait_for(lambda d: keys(d) == [], "the first (empty) document")
        time.sleep(window + 0.5)  # a quiet window
        created = time.monotonic()
        self.create(lb_service("a"))
        watcher.wait_for_services(["a"])
        lone_change_printed_after = time.monotonic() - created
        for name in ("b", "c", "d"):  # a burst within the window of the last document
            self.create(lb_service(name))
        watcher.wait_for_services(["a", "b", "c", "d"])
        self.assertLess(lone_change_printed_after, window / 2,
                        "a lone change waited for the debounce window")
        self.assertEqual([keys(d) for d in watcher.documents],
                         [[], ["Service default/a"],
                          ["Service default/a", "Service default/b", "Service default/c", "Service default/d"]],
                         "the burst was not coalesced into one document")
        self.assert_history_sane(watcher)

    def test_events_print_the_list_then_each_change_as_a_watch_event(self):
        """--events: the List once, then one watch event per change, as kubectl get -w -o json
        --output-watch-events prints them; --resync prints the whole List again."""
        self.create(lb_service("a"))
        watcher = self.watch("--events", "--resync", "3s", "services")
        first = watcher.wait_for(lambda d: d.get("kind") == "List", "the first List")
        self.assertEqual(keys(first), ["Service default/a"])

        def event(kind, name):
            return watcher.wait_for(lambda d: d.get("type") == kind and d["object"]["metadata"]["name"] == name,
                                    f"{kind} {name}")
        self.create(lb_service("b"))
        self.assertEqual(event("ADDED", "b")["object"]["kind"], "Service")
        self.sim.must("PATCH", "/api/v1/namespaces/default/services/a/status",
                      {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}},
                      "application/merge-patch+json")
        modified = event("MODIFIED", "a")
        self.assertEqual(modified["object"]["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.10")
        self.create(lb_service("c", service_type="ClusterIP"))  # not passed on
        self.delete("b")
        self.assertEqual(event("DELETED", "b")["object"]["metadata"]["name"], "b")
        changes = [f'{d["type"]} {d["object"]["metadata"]["name"]}' for d in watcher.documents[1:]]
        self.assertEqual(changes, ["ADDED b", "MODIFIED a", "DELETED b"])
        again = watcher.wait_for(lambda d: d.get("kind") == "List", "the List again (--resync)")
        self.assertEqual(keys(again), ["Service default/a"])

    def test_service_that_stops_being_a_load_balancer_is_kept_while_it_holds_an_ip(self):
        self.create(lb_service("a"))
        watcher = self.watch("services")
        watcher.wait_for_services(["a"])
        self.sim.must("PATCH", "/api/v1/namespaces/default/services/a/status",
                      {"status": {"loadBalancer": {"ingress": [{"ip": "192.0.2.10"}]}}},
                      "application/merge-patch+json")
        self.sim.must("PATCH", "/api/v1/namespaces/default/services/a",
                      {"spec": {"type": "ClusterIP", "externalTrafficPolicy": None,
                                "allocateLoadBalancerNodePorts": None,
                                "ports": [{"name": "http", "port": 80, "targetPort": 8080}]}},
                      "application/merge-patch+json")
        doc = watcher.wait_for(lambda d: d["items"] and d["items"][0]["spec"]["type"] == "ClusterIP",
                               "a as ClusterIP")
        self.assertEqual(doc["items"][0]["status"]["loadBalancer"]["ingress"][0]["ip"], "192.0.2.10")
        self.sim.must("PATCH", "/api/v1/namespaces/default/services/a/status",
                      {"status": {"loadBalancer": {"ingress": []}}}, "application/merge-patch+json")
        watcher.wait_for_services([])

    def test_dropped_watch_resumes_without_losing_or_replaying(self):
        for name in ("a", "b"):
            self.create(lb_service(name))
        watcher = self.watch("services")
        watcher.wait_for_services(["a", "b"])
        lists_before = self.list_calls()
        for round_number in range(3):
            self.sim.fault(drop_watches=True)
            self.create(lb_service(f"new{round_number}"))
        self.delete("a")
        watcher.wait_for_services(["b", "new0", "new1", "new2"])
        self.assertEqual(self.list_calls(), lists_before, "a dropped watch resumes, it does not relist")
        self.assert_history_sane(watcher)

    def test_compaction_relists_and_reports_only_differences(self):
        for name in ("a", "b", "c"):
            self.create(lb_service(name))
        watcher = self.watch("services")
        watcher.wait_for_services(["a", "b", "c"])
        # Changes while the watcher is cut off (its watches answer 500), then history
        # forgotten: its resourceVersion is too old (410) and it must relist.
        self.sim.fault(errors_500=10000, method="GET", path_contains="/api/v1/services", drop_watches=True)
        self.delete("b")
        self.create(lb_service("d"))
        self.sim.fault(compact=True)
        self.sim.reset_faults()
        watcher.wait_for_services(["a", "c", "d"])
        self.assertGreaterEqual(self.list_calls(), 2, "410 Gone leads to a new list")
        self.create(lb_service("e"))
        watcher.wait_for_services(["a", "c", "d", "e"])
        self.assert_history_sane(watcher)

    def test_500s_are_ridden_over(self):
        self.create(lb_service("a"))
        self.sim.fault(errors_500=3)
        result = subprocess.run([WATCH, "--kubeconfig", self.sim.kubeconfig, "--once", "services"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(keys(json.loads(result.stdout)), ["Service default/a"])
        watcher = self.watch("services")
        watcher.wait_for_services(["a"])
        self.sim.fault(errors_500=4, drop_watches=True)
        self.create(lb_service("b"))
        self.sim.fault(drop_watches=True)
        self.create(lb_service("c"))
        watcher.wait_for_services(["a", "b", "c"])
        self.assert_history_sane(watcher)

    def test_429_storm_honours_retry_after(self):
        self.create(lb_service("a"))
        self.sim.fault(throttle_429=3, retry_after=1)
        result = subprocess.run([WATCH, "--kubeconfig", self.sim.kubeconfig, "--once", "services"],
                                capture_output=True, text=True, timeout=60)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(keys(json.loads(result.stdout)), ["Service default/a"])
        watcher = self.watch("services")
        watcher.wait_for_services(["a"])
        self.sim.fault(throttle_429=10, retry_after=1, drop_watches=True)
        self.create(lb_service("b"))
        watcher.wait_for_services(["a", "b"])
        self.assert_history_sane(watcher)

    def test_errors_name_the_url_and_status(self):
        bad = os.path.join(self.workdir, "bad-kubeconfig")
        with open(self.sim.kubeconfig) as f:
            text = f.read()
        with open(bad, "w") as f:
            f.write(text.replace(self.sim.token, "wrong-token"))
        cases = [
            ("wrong token", ["--kubeconfig", bad, "services"],
             [f"{self.sim.url}/api/v1/services", "401 Unauthorized"]),
            ("unknown resource", ["--kubeconfig", self.sim.kubeconfig, "pods"], ["pods: unknown resource"]),
            ("missing kubeconfig", ["--kubeconfig", os.path.join(self.workdir, "none"), "services"],
             ["does not exist"]),
        ]
        for description, args, fragments in cases:
            with self.subTest(description):
                result = subprocess.run([WATCH] + args, capture_output=True, text=True, timeout=60)
                self.assertEqual(result.returncode, 1)
                self.assertEqual(result.stdout, "")
                self.assertTrue(result.stderr.startswith("k8slb-watch: error: "), result.stderr)
                for fragment in fragments:
                    self.assertIn(fragment, result.stderr)

    def test_token_file_is_read(self):
        self.create(lb_service("a"))
        token_file = os.path.join(self.workdir, "token-file")
        with open(self.sim.kubeconfig) as f:
            text = f.read()
        config = os.path.join(self.workdir, "token-file-kubeconfig")
        with open(config, "w") as f:
            f.write(text.replace(f"token: {self.sim.token}", f"tokenFile: {token_file}"))
        self.assertNotIn(self.sim.token, open(config).read())
        cases = [("a stale token is refused", "stale-token\n", 1),
                 ("the file's new content is used", self.sim.token + "\n", 0)]
        for description, token, code in cases:
            with self.subTest(description):
                with open(token_file, "w") as f:
                    f.write(token)
                result = subprocess.run([WATCH, "--kubeconfig", config, "--once", "services"],
                                        capture_output=True, text=True, timeout=60)
                self.assertEqual(result.returncode, code, result.stderr)
                if code:
                    self.assertIn("401 Unauthorized", result.stderr)
                else:
                    self.assertEqual(keys(json.loads(result.stdout)), ["Service default/a"])

    def test_closed_stdout_ends_it(self):
        self.create(lb_service("a"))
        process = subprocess.Popen([WATCH, "--kubeconfig", self.sim.kubeconfig, "services"],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            first = process.stdout.readline()
            self.assertEqual(keys(json.loads(first)), ["Service default/a"])
            process.stdout.close()
            self.assertEqual(process.wait(timeout=15), 0)
            self.assertEqual(process.stderr.read(), "")
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
            process.stderr.close()


if __name__ == "__main__":
    unittest.main()
