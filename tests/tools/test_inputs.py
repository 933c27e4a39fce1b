"""Bad and hostile input through the tools, as an operator's pipeline meets it (issue 7, items
1, 10, 11, 12, 13): an error naming the input, object and key; exit 1 with nothing written, or
exit 3 when the output was written without the objects named on stderr; bounded time and memory
whatever the input."""
import http.server
import json
import os
import resource
import shutil
import subprocess
import tempfile
import threading
import time
import unittest

SOURCE = os.environ.get("K8SLB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE, "build"))
EXAMPLES = os.path.join(SOURCE, "examples")
POOLS = os.path.join(EXAMPLES, "pools.json")
INTERFACES = os.path.join(EXAMPLES, "node-interfaces.json")

EXIT_FAILURE, EXIT_PARTIAL = 1, 3


def tool(name):
    return os.path.join(BINARY, name)


def limit_memory():
    # As the review ran them: 4 GB of address space. A tool that overruns it aborts (134) or
    # crashes; a bounded one answers with exit 1.
    resource.setrlimit(resource.RLIMIT_AS, (4 << 30, 4 << 30))


def run(args, stdin=b""):
    if isinstance(stdin, str):
        stdin = stdin.encode()
    result = subprocess.run(args, input=stdin, capture_output=True, timeout=60, preexec_fn=limit_memory)
    result.stdout = result.stdout.decode(errors="replace")
    result.stderr = result.stderr.decode(errors="replace")
    return result


def service(name, **spec):
    return {"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}], **spec}}


def as_list(*items):
    return json.dumps({"apiVersion": "v1", "kind": "List", "items": list(items)})


def alias_bomb():
    text = 'a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]\n'
    for level in "bcdefghi":
        previous = chr(ord(level) - 1)
        text += f"{level}: &{level} [" + ",".join(["*" + previous] * 9) + "]\n"
    return text


class NoObjectIsAnError(unittest.TestCase):
    """Item 1: input that holds no Kubernetes object: exit 1, an error naming the input, nothing written."""

    CASES = [
        # description, stdin, error on stderr
        ("empty input (a failed kubectl)", b"", "<stdin>: holds no Kubernetes object"),
        ("a bare word", b"garbage\n", "<stdin>: a string (\"garbage\"), not a Kubernetes object"),
        ("NUL bytes", b"\0\0\0garbage", "<stdin>: holds a NUL byte (offset 0)"),
        ("an object without apiVersion/kind", b'{"metadata": {"name": "a"}}', "<stdin>: apiVersion: is required"),
        ("kind of the wrong type", b'{"apiVersion": "v1", "kind": 5}', "<stdin>: kind: must be a string"),
    ]

    def test_allocate_from_a_file(self):
        for description, stdin, error in self.CASES:
            with self.subTest(description):
                result = run([tool("k8slb-allocate"), "--config", POOLS, "-f", "-"], stdin)
                self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertIn(error, result.stderr)

    def test_render_all_writes_nothing(self):
        for description, stdin, error in self.CASES:
            with self.subTest(description):
                out = tempfile.mkdtemp(prefix="k8slb-inputs-")
                self.addCleanup(shutil.rmtree, out, True)
                result = run([tool("k8slb-render"), "all", "--config", POOLS, "--interfaces", INTERFACES,
                              "--node", "node1", "--output-dir", out], stdin)
                self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
                self.assertIn(error, result.stderr)
                self.assertEqual(os.listdir(out), [], "a failed render must write no file")

    def test_streams_say_so_too(self):
        for args in ([tool("k8slb-allocate"), "--config", POOLS],
                     [tool("k8slb-render"), "all", "--stream", "--config", POOLS, "--interfaces", INTERFACES]):
            with self.subTest(os.path.basename(args[0])):
                result = run(args, b"")
                self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertIn("<stdin>: holds no Kubernetes object", result.stderr)

    def test_an_explicit_empty_list_is_no_services(self):
        empty = as_list()
        result = run([tool("k8slb-allocate"), "--config", POOLS, "-f", "-"], empty)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(json.loads(result.stdout)["items"], [])
        out = tempfile.mkdtemp(prefix="k8slb-inputs-")
        self.addCleanup(shutil.rmtree, out, True)
        result = run([tool("k8slb-render"), "all", "--config", POOLS, "--interfaces", INTERFACES,
                      "--node", "node1", "--output-dir", out], empty)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn("keepalived.conf", os.listdir(out))


class PartialIsExit3(unittest.TestCase):
    """Item 12: written, some objects skipped (named on stderr): exit 3, apart from failure (1)."""

    def test_allocate_and_render_with_one_bad_service(self):
        doc = as_list(service("good"), service("bad", loadBalancerIP="192.168.99.1"))
        result = run([tool("k8slb-allocate"), "--config", POOLS], doc)
        self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)
        self.assertIn("default/bad: spec.loadBalancerIP:", result.stderr)
        allocated = result.stdout
        # One UDP port on HAProxy: the rest is rendered, the port named, exit 3 (not 1).
        dns = service("dns", ports=[{"name": "dns", "port": 53, "protocol": "UDP"}])
        dns["status"] = {"loadBalancer": {"ingress": [{"ip": "192.168.10.210"}]}}
        good = json.loads(allocated)["items"][0]
        result = run([tool("k8slb-render"), "haproxy", "--config", POOLS, "--interfaces", INTERFACES],
                     as_list(good, dns))
        self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)
        self.assertIn("default/dns: spec.ports[0].protocol: UDP is not carried by haproxy", result.stderr)
        self.assertIn("192.168.10.200:80", result.stdout)

    def test_a_bad_document_in_a_stream_is_its_own_error_and_the_stream_goes_on(self):
        good = as_list(service("web"))
        stream = "\n".join([good, '{"apiVersion": "v1", "kind": 5}', '{"kind": "List", "items": [}', good]) + "\n"
        for args in ([tool("k8slb-allocate"), "--config", POOLS],
                     [tool("k8slb-render"), "all", "--stream", "--config", POOLS, "--interfaces", INTERFACES]):
            with self.subTest(os.path.basename(args[0])):
                result = run(args, stream)
                self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)
                self.assertEqual(len(result.stdout.splitlines()), 2, result.stdout)   # documents 1 and 4
                self.assertIn("<stdin>: document 2: kind: must be a string, not a number (5)", result.stderr)
                self.assertIn("<stdin>: document 3: malformed JSON", result.stderr)

    def test_usage_and_failure_are_unchanged(self):
        self.assertEqual(run([tool("k8slb-allocate"), "--no-such-option"]).returncode, 2)
        self.assertEqual(run([tool("k8slb-allocate"), "--config", "/nonexistent", "-f", "-"], as_list()).returncode,
                         EXIT_FAILURE)


class DuplicatesAreErrors(unittest.TestCase):
    """Item 10: a key twice, the same object twice: an error naming the object and key."""

    def test_two_default_pools_in_the_config(self):
        directory = tempfile.mkdtemp(prefix="k8slb-inputs-")
        self.addCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "pools.json")
        with open(config, "w") as f:
            f.write('{"pools": {"default": {"network": "192.168.10.0/24", "range": "192.168.10.200-192.168.10.254"},'
                    ' "default": {"network": "10.1.0.0/24", "range": "10.1.0.10-10.1.0.20"}}}')
        result = run([tool("k8slb-allocate"), "--config", config, "-f", "-"], as_list(service("web")))
        self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
        self.assertIn(f"{config}: document 1: pools: duplicate key 'default'", result.stderr)

    def test_a_yaml_service_with_name_twice(self):
        text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\nspec:\n  type: LoadBalancer\n"
        result = run([tool("k8slb-allocate"), "--config", POOLS, "-f", "-"], text)
        self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
        self.assertIn("<stdin>: line 5, column 3: metadata: duplicate key 'name'", result.stderr)

    def test_the_same_service_twice_gets_one_ip_and_one_event(self):
        result = run([tool("k8slb-allocate"), "--config", POOLS], as_list(service("web"), service("web")))
        self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)
        self.assertIn("default/web: Service appears twice in the input", result.stderr)
        items = json.loads(result.stdout)["items"]
        self.assertEqual([i["kind"] for i in items], ["Service", "Event"])
        self.assertEqual(items[1]["reason"], "IPAllocated")


class HugeValuesAreCut(unittest.TestCase):
    """Item 11: a 200 KB value is not echoed whole, on stderr or in the Event."""

    def test_a_huge_annotation_value(self):
        huge = service("huge")
        huge["metadata"]["annotations"] = {"loadbalancer/mode": "x" * 200_000}
        result = run([tool("k8slb-allocate"), "--config", POOLS, "--proxy", "haproxy"], as_list(huge))
        lines = [line for line in result.stderr.splitlines() if "default/huge" in line]
        self.assertTrue(lines, result.stderr[:2000])
        for line in lines:
            self.assertLess(len(line), 1500)
            self.assertIn("bytes cut]", line)
        events = [i for i in json.loads(result.stdout)["items"] if i["kind"] == "Event" and i["type"] == "Warning"]
        self.assertTrue(events)
        for event in events:
            self.assertLess(len(event["message"]), 1500)


class HostileInputEndsBoundedWithExit1(unittest.TestCase):
    """Item 13: every malformed file ends in bounded time and memory, exit 1, naming the input."""

    def allocate_file(self, content):
        directory = tempfile.mkdtemp(prefix="k8slb-inputs-")
        self.addCleanup(shutil.rmtree, directory, True)
        path = os.path.join(directory, "input")
        with open(path, "wb") as f:
            f.write(content if isinstance(content, bytes) else content.encode())
        return path, run([tool("k8slb-allocate"), "--config", POOLS, "-f", path])

    def test_malformed_files(self):
        cases = [
            ("a YAML alias bomb", alias_bomb(), "once aliases are expanded"),
            ("a recursive alias", "a: &a [*a]\n", "a recursive alias"),
            ("a YAML file holding just ','", ",", "malformed YAML"),
            ("JSON nested 100,000 deep", "[" * 100_000 + "]" * 100_000, "nested more than 512 deep"),
            ("a JSON object nested 100,000 deep", '{"a":' * 100_000 + "}" * 100_000, "nested more than 512 deep"),
        ]
        for description, content, error in cases:
            with self.subTest(description):
                path, result = self.allocate_file(content)
                self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
                self.assertIn(path, result.stderr)
                self.assertIn(error, result.stderr)

    def test_a_nul_inside_a_value_is_refused(self):
        text = as_list(service("web", loadBalancerIP="192.168.10.210\u0000junk"))
        result = run([tool("k8slb-allocate"), "--config", POOLS], text)
        self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)   # written, the Service refused
        self.assertIn("default/web: spec.loadBalancerIP:", result.stderr)
        self.assertNotIn('"ip":"192.168.10.210"', result.stdout)
        directory = tempfile.mkdtemp(prefix="k8slb-inputs-")
        self.addCleanup(shutil.rmtree, directory, True)
        config = os.path.join(directory, "pools.json")
        with open(config, "w") as f:
            f.write('{"pools": {"default": {"network": "192.168.10.0/24", "range": "192.168.10.200\\u0000-junk"}}}')
        result = run([tool("k8slb-allocate"), "--config", config], as_list(service("web")))
        self.assertEqual(result.returncode, EXIT_FAILURE, result.stderr)
        self.assertIn("pools.default.range:", result.stderr)

    def test_type_errors_name_the_object_and_field_and_the_stream_goes_on(self):
        bad_namespace = service("web")
        bad_namespace["metadata"]["namespace"] = 5
        bad_port = "apiVersion: v1\nkind: Service\nmetadata: {name: port}\nspec:\n  type: LoadBalancer\n" \
                   "  ports: [{port: \"\xff\xfe\"}]\n"
        cases = [
            ("metadata.namespace not a string", as_list(bad_namespace, service("good")),
             "<stdin>: items[0]: metadata.namespace: must be a string"),
            ("an integer field as a string with invalid UTF-8", bad_port.encode("latin-1") + b"---\n" +
             json.dumps(service("good")).encode(), "default/port: spec.ports[0].port: must be an integer"),
        ]
        for description, stdin, error in cases:
            with self.subTest(description):
                result = run([tool("k8slb-allocate"), "--config", POOLS, "-f", "-"], stdin)
                self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)
                self.assertIn(error, result.stderr)
                self.assertNotIn("json.exception", result.stderr)
                ips = {i["metadata"]["name"]: i.get("status", {}) for i in json.loads(result.stdout)["items"]
                       if i["kind"] == "Service"}
                self.assertIn("loadBalancer", ips["good"])

    def test_a_config_map_in_the_cluster_is_held_to_limits(self):
        config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "global", "namespace": "k8slb-system"}, "data": {"config": alias_bomb()}}
        result = run([tool("k8slb-allocate")], as_list(config_map, service("web")))
        # Streaming: the document is passed on without IPs, the ConfigMap's Event says why.
        self.assertEqual(result.returncode, EXIT_PARTIAL, result.stderr)
        self.assertIn("ConfigMap k8slb-system/global: data.config: line", result.stderr)
        self.assertIn("once aliases are expanded", result.stderr)
        events = [i for i in json.loads(result.stdout)["items"] if i["kind"] == "Event"]
        self.assertTrue(any("once aliases are expanded" in e["message"] and len(e["message"]) < 1500
                            for e in events), events)


def watched_service(name, rv):
    return {"kind": "Service", "apiVersion": "v1",
            "metadata": {"name": name, "namespace": "default", "resourceVersion": rv},
            "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}


class BadWatchServer(http.server.ThreadingHTTPServer):
    """An API server whose watch streams carry what the review sent: an event with "metadata": 5,
    an ERROR event with "code": "abc", then a line that never ends. Lists are counted."""

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), BadWatchHandler)
        self.lists = 0
        self.watches = 0
        self.done = threading.Event()


class BadWatchHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):
        pass

    def send_lines(self, lines, end=True):
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for line in lines:
            data = line.encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(data), data))
            self.wfile.flush()
        if end:
            self.wfile.write(b"0\r\n\r\n")

    def do_GET(self):
        server = self.server
        if "watch=true" not in self.path:
            server.lists += 1
            items = [watched_service("a", "1")]
            if server.lists > 1:   # the list after the endless line: b (watched before) and one more
                items += [watched_service("b", "2"), watched_service("relisted", "5")]
            body = json.dumps({"kind": "ServiceList", "apiVersion": "v1", "metadata": {"resourceVersion": "5"},
                               "items": items}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        server.watches += 1
        if server.watches == 1:
            self.send_lines([
                json.dumps({"type": "ADDED", "object": {"metadata": 5}}) + "\n",
                json.dumps({"type": "ADDED", "object": watched_service("b", "2")}) + "\n",
                json.dumps({"type": "ERROR", "object": {"kind": "Status", "code": "abc"}}) + "\n",
            ])
        elif server.watches == 2:
            # 17 MiB without a newline: the client must drop it, not buffer it for ever.
            try:
                self.send_lines(["x" * (1 << 20)] * 17, end=False)
                server.done.wait(30)
            except OSError:
                pass
            self.close_connection = True
        else:
            self.send_lines([json.dumps({"type": "ADDED", "object": watched_service("c", "6")}) + "\n"], end=False)
            server.done.wait(30)
            self.close_connection = True


class WatchGoesOnAfterBadEvents(unittest.TestCase):
    """Item 13: bad watch events do not end k8slb-watch; an endless line is bounded and relisted."""

    def test_bad_events_are_skipped_and_an_endless_line_relists(self):
        server = BadWatchServer()
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.addCleanup(server.server_close)
        self.addCleanup(server.shutdown)
        self.addCleanup(server.done.set)
        directory = tempfile.mkdtemp(prefix="k8slb-inputs-")
        self.addCleanup(shutil.rmtree, directory, True)
        kubeconfig = os.path.join(directory, "kubeconfig")
        with open(kubeconfig, "w") as f:
            json.dump({"apiVersion": "v1", "kind": "Config", "current-context": "x",
                       "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_port}"}}],
                       "users": [{"name": "u", "user": {"token": "t"}}],
                       "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}]}, f)
        stderr_path = os.path.join(directory, "stderr")
        with open(stderr_path, "w") as stderr:
            watch = subprocess.Popen([tool("k8slb-watch"), "--kubeconfig", kubeconfig, "--debounce", "50ms", "services"],
                                     stdout=subprocess.PIPE, stderr=stderr, text=True, preexec_fn=limit_memory)
        self.addCleanup(watch.stdout.close)
        self.addCleanup(lambda: watch.poll() is None and (watch.kill(), watch.wait()))
        names = set()
        deadline = time.monotonic() + 45
        while time.monotonic() < deadline and not {"a", "b", "c", "relisted"} <= names:
            line = watch.stdout.readline()
            if not line:
                break
            names = {item["metadata"]["name"] for item in json.loads(line)["items"]}
        with open(stderr_path) as f:
            stderr = f.read()
        self.assertIsNone(watch.poll(), f"k8slb-watch ended: {stderr}")
        self.assertEqual(names, {"a", "b", "c", "relisted"}, stderr)
        self.assertIn("services: skipped: watch event: object.metadata: missing or not an object", stderr)
        self.assertIn("watch event: a line longer than 16777216 bytes (listing again)", stderr)
        self.assertGreaterEqual(server.lists, 2)
        watch.terminate()
        self.assertEqual(watch.wait(timeout=10), 0)


if __name__ == "__main__":
    unittest.main()
