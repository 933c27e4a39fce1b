"""The tools end to end on the seed's examples: what an operator sees at a shell."""
import json
import re
import os
import select
import shutil
import subprocess
import tempfile
import unittest

SOURCE = os.environ.get("K8SLB_SOURCE_DIR", os.path.join(os.path.dirname(__file__), "..", ".."))
BINARY = os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE, "build"))
EXAMPLES = os.path.join(SOURCE, "examples")


def tool(name):
    return os.path.join(BINARY, name)


def run(args, stdin=None):
    return subprocess.run(args, input=stdin, capture_output=True, text=True, timeout=60)


def ingress(document):
    """namespace/name -> [ip, ...] from an allocate output document."""
    out = {}
    for item in document["items"]:
        if item.get("kind") == "Service":
            key = f'{item["metadata"].get("namespace", "default")}/{item["metadata"]["name"]}'
            out[key] = [i["ip"] for i in item.get("status", {}).get("loadBalancer", {}).get("ingress", [])]
    return out


def make_cert(directory, pool):
    """A self-signed certificate bundle for a pool, as HAProxy (pem) and nginx (pem + key) read it."""
    key = os.path.join(directory, f"{pool}.key")
    crt = os.path.join(directory, f"{pool}.crt")
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", crt,
                    "-days", "2", "-subj", f"/CN={pool}.example.com"], check=True, capture_output=True, timeout=60)
    with open(os.path.join(directory, f"{pool}.pem"), "w") as bundle:
        with open(crt) as c, open(key) as k:
            bundle.write(c.read() + k.read())


class AllocateTest(unittest.TestCase):
    def allocate(self, *args, stdin=None):
        return run([tool("k8slb-allocate"), *args], stdin=stdin)

    def test_seed_examples_get_the_expected_ips(self):
        result = self.allocate("--config", f"{EXAMPLES}/pools.json", "-f", f"{EXAMPLES}/services.yml")
        self.assertEqual(result.returncode, 0, result.stderr)
        ips = ingress(json.loads(result.stdout))
        self.assertEqual(ips, {
            "default/myapp-loadbalancer": ["192.168.10.200"],
            "default/myapp-tls": ["192.168.10.201"],
            "cattle-system/rancher-loadbalancer": ["1.2.3.4"],
            "default/myapp-loadbalancer4": ["1.2.3.4"],   # shares rancher's static IP on port 80
            "default/myapp-loadbalancer6": ["2001:468:201::4"],
        })

    def test_output_is_the_same_whatever_the_order_and_ips_are_kept(self):
        first = self.allocate("--config", f"{EXAMPLES}/pools.json", "-f", f"{EXAMPLES}/services.yml")
        # Feed the result back in: every Service keeps its IP and nothing changes.
        again = self.allocate("--config", f"{EXAMPLES}/pools.json", stdin=first.stdout)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(ingress(json.loads(again.stdout)), ingress(json.loads(first.stdout)))
        events = [i for i in json.loads(again.stdout)["items"] if i.get("kind") == "Event"]
        self.assertEqual(events, [], "a second run with nothing new must not report changes")

    def test_streaming_writes_one_line_per_document(self):
        services = run([tool("k8slb-allocate"), "--config", f"{EXAMPLES}/pools.json", "-f",
                        f"{EXAMPLES}/services.yml"]).stdout
        result = self.allocate("--config", f"{EXAMPLES}/pools.json", stdin=services + services)
        self.assertEqual(result.returncode, 0, result.stderr)
        lines = result.stdout.splitlines()
        self.assertEqual(len(lines), 2)
        self.assertEqual(ingress(json.loads(lines[0])), ingress(json.loads(lines[1])))

    def test_config_from_the_configmap_in_the_input(self):
        config = open(f"{EXAMPLES}/pools.json").read()
        config_map = {"apiVersion": "v1", "kind": "ConfigMap",
                      "metadata": {"name": "global", "namespace": "k8slb-system"}, "data": {"config": config}}
        service = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "web", "namespace": "default"},
                   "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}
        doc = json.dumps({"apiVersion": "v1", "kind": "List", "items": [config_map, service]})
        result = self.allocate(stdin=doc)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(ingress(json.loads(result.stdout))["default/web"], ["192.168.10.200"])

    def test_the_seeds_ipv6_pool_is_refused_plainly(self):
        result = self.allocate("--config", f"{EXAMPLES}/pools-seed-ipv6.json", "-f", f"{EXAMPLES}/services.yml")
        self.assertEqual(result.returncode, 1)
        self.assertEqual(result.stdout, "")
        self.assertIn("pools.ipv6.range: 2001:468:101::/96 is not inside network 2001:468::/64", result.stderr)
        self.assertTrue(result.stderr.startswith("k8slb-allocate: error: "), result.stderr)

    def test_a_bad_service_is_reported_and_the_others_served(self):
        bad = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "bad", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "loadBalancerIP": "192.168.99.1", "ports": [{"port": 80}]}}
        good = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "good", "namespace": "default"},
                "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}
        result = self.allocate("--config", f"{EXAMPLES}/pools.json",
                               stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": [bad, good]}))
        self.assertEqual(result.returncode, 3)   # written, the bad one named: partial
        self.assertIn("default/bad: spec.loadBalancerIP:", result.stderr)
        ips = ingress(json.loads(result.stdout))
        self.assertEqual(ips["default/bad"], [])
        self.assertEqual(ips["default/good"], ["192.168.10.200"])
        events = {i["involvedObject"]["name"]: i for i in json.loads(result.stdout)["items"] if i.get("kind") == "Event"}
        self.assertEqual(events["bad"]["type"], "Warning")
        self.assertEqual(events["good"]["reason"], "IPAllocated")

    def test_what_the_proxy_cannot_carry_becomes_a_warning_event(self):
        dns = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "dns", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "ports": [{"name": "dns", "port": 53, "protocol": "UDP"},
                                                          {"name": "web", "port": 80}]}}
        doc = json.dumps({"kind": "List", "apiVersion": "v1", "items": [dns]})
        result = self.allocate("--config", f"{EXAMPLES}/pools.json", "--proxy", "haproxy", stdin=doc)
        self.assertEqual(result.returncode, 0, result.stderr)   # served: port 80 still works
        self.assertIn("warning: default/dns: spec.ports[0].protocol: UDP is not carried by haproxy", result.stderr)
        items = json.loads(result.stdout)["items"]
        self.assertEqual(ingress({"items": items})["default/dns"], ["192.168.10.200"])
        warnings = [i for i in items if i.get("kind") == "Event" and i["type"] == "Warning"]
        self.assertEqual([w["reason"] for w in warnings], ["UnsupportedPort"])
        # nginx carries UDP: nothing to report.
        result = self.allocate("--config", f"{EXAMPLES}/pools.json", "--proxy", "nginx", stdin=doc)
        self.assertNotIn("warning", result.stderr)

    def test_services_written_for_metallb_run_unchanged(self):
        # Issue 8 item 8: MetalLB's annotations read as pool, static IPs and sharing key, each
        # with a Normal Event saying which k8slb annotation it maps to.
        result = self.allocate("--config", f"{EXAMPLES}/metallb/pools.json", "-f",
                               f"{EXAMPLES}/metallb/services.yml")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertNotIn("warning", result.stderr)
        items = json.loads(result.stdout)["items"]
        self.assertEqual(ingress({"items": items}), {
            "default/nginx": ["203.0.113.10"],              # metallb.io/address-pool
            "default/nginx-static": ["203.0.113.100"],      # metallb.io/loadBalancerIPs
            "default/dns-service-tcp": ["198.51.100.10"],   # allow-shared-ip: one IP for TCP/53
            "default/dns-service-udp": ["198.51.100.10"],   # and UDP/53
        })
        mapped = sorted((e["involvedObject"]["name"], e["type"], e["message"]) for e in items
                        if e.get("kind") == "Event" and e["reason"] == "AnnotationMapped")
        self.assertEqual(mapped, [
            ("dns-service-tcp", "Normal", "default/dns-service-tcp: metadata.annotations[metallb.universe.tf/address-pool]: "
             "MetalLB's metallb.universe.tf/address-pool is read as loadbalancer/pool"),
            ("dns-service-tcp", "Normal", "default/dns-service-tcp: metadata.annotations[metallb.universe.tf/allow-shared-ip]: "
             "MetalLB's metallb.universe.tf/allow-shared-ip is read as loadbalancer/share"),
            ("dns-service-udp", "Normal", "default/dns-service-udp: metadata.annotations[metallb.universe.tf/address-pool]: "
             "MetalLB's metallb.universe.tf/address-pool is read as loadbalancer/pool"),
            ("dns-service-udp", "Normal", "default/dns-service-udp: metadata.annotations[metallb.universe.tf/allow-shared-ip]: "
             "MetalLB's metallb.universe.tf/allow-shared-ip is read as loadbalancer/share"),
            ("nginx", "Normal", "default/nginx: metadata.annotations[metallb.io/address-pool]: "
             "MetalLB's metallb.io/address-pool is read as loadbalancer/pool"),
            ("nginx-static", "Normal", "default/nginx-static: metadata.annotations[metallb.io/loadBalancerIPs]: "
             "MetalLB's metallb.io/loadBalancerIPs is read as loadbalancer/ips"),
        ])
        # Fed back in, nothing changes and nothing is said again.
        again = self.allocate("--config", f"{EXAMPLES}/metallb/pools.json", stdin=result.stdout)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertEqual(ingress(json.loads(again.stdout)), ingress({"items": items}))
        self.assertEqual([i for i in json.loads(again.stdout)["items"] if i.get("kind") == "Event"], [])

    def test_annotation_spellings_and_typos(self):
        # Issue 8 item 6: loadBalancer/pool (the seed's prose) is loadbalancer/pool; a typo
        # under loadbalancer/ is a warning naming the nearest known key, and the Service is served.
        def service(name, annotations):
            return {"apiVersion": "v1", "kind": "Service",
                    "metadata": {"name": name, "namespace": "default", "annotations": annotations},
                    "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]}}
        doc = json.dumps({"kind": "List", "apiVersion": "v1", "items": [
            service("camel", {"loadBalancer/pool": "external"}),
            service("typo", {"loadbalancer/pol": "external"})]})
        result = self.allocate("--config", f"{EXAMPLES}/pools.json", stdin=doc)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(ingress(json.loads(result.stdout)),
                         {"default/camel": ["1.2.3.50"], "default/typo": ["192.168.10.200"]})
        self.assertIn("k8slb-allocate: warning: default/typo: metadata.annotations[loadbalancer/pol]: "
                      "\"loadbalancer/pol\" is not a k8slb annotation and is ignored; the nearest known "
                      "one is loadbalancer/pool", result.stderr)
        warnings = [(e["involvedObject"]["name"], e["reason"]) for e in json.loads(result.stdout)["items"]
                    if e.get("kind") == "Event" and e["type"] == "Warning"]
        self.assertEqual(warnings, [("typo", "UnknownAnnotation")])

    def test_a_service_migrated_from_the_original_keeps_its_sslip_io_address(self):
        old = {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "old", "namespace": "default"},
               "spec": {"type": "LoadBalancer", "ports": [{"port": 80}]},
               "status": {"loadBalancer": {"ingress": [{"hostname": "192.168.10.240.sslip.io"}]}}}
        result = self.allocate("--config", f"{EXAMPLES}/pools.json",
                               stdin=json.dumps({"kind": "List", "apiVersion": "v1", "items": [old]}))
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(ingress(json.loads(result.stdout))["default/old"], ["192.168.10.240"])

    def test_usage_errors_exit_2_and_help_and_version_exit_0(self):
        self.assertEqual(self.allocate("--no-such-option").returncode, 2)
        self.assertEqual(self.allocate("--ip-mode", "Bogus").returncode, 2)
        help_ = self.allocate("--help")
        self.assertEqual(help_.returncode, 0)
        self.assertIn("--config", help_.stdout)
        version = self.allocate("--version")
        self.assertEqual(version.returncode, 0)
        self.assertIn("k8slb-allocate", version.stdout)

    def test_missing_input_file_is_named(self):
        result = self.allocate("--config", f"{EXAMPLES}/pools.json", "-f", "/nonexistent/svc.yml")
        self.assertEqual(result.returncode, 1)
        self.assertIn("/nonexistent/svc.yml: cannot open", result.stderr)


class RenderPipelineTest(unittest.TestCase):
    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="k8slb-tools-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        allocated = run([tool("k8slb-allocate"), "--config", f"{EXAMPLES}/pools.json", "-f", f"{EXAMPLES}/services.yml"])
        self.assertEqual(allocated.returncode, 0, allocated.stderr)
        self.allocated = os.path.join(self.dir, "allocated.json")
        with open(self.allocated, "w") as f:
            f.write(allocated.stdout)

    def render(self, what, *args):
        return run([tool("k8slb-render"), what, "--config", f"{EXAMPLES}/pools.json",
                    "--interfaces", f"{EXAMPLES}/node-interfaces.json", "-f", self.allocated,
                    "-f", f"{EXAMPLES}/endpointslices.yml", *args])

    def test_haproxy_terminates_tls_with_the_pools_certificate_and_passes_its_checker(self):
        certs = os.path.join(self.dir, "certs")
        os.mkdir(certs)
        for pool in ("default", "external", "ipv6"):
            make_cert(certs, pool)
        result = self.render("haproxy", "--cert-dir", certs, "--runtime-dir", self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        cfg = result.stdout
        self.assertRegex(cfg, rf"bind 192\.168\.10\.201:443 .*ssl crt {certs}/default\.pem")   # myapp-tls
        self.assertRegex(cfg, rf"bind 1\.2\.3\.4:443 .*ssl crt {certs}/external\.pem")          # rancher
        self.assertIn("[2001:468:201::4]:80", cfg)
        self.assertIn("10.42.0.11:80", cfg)
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        check = run(["haproxy", "-c", "-f", path])
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_nginx_uses_pem_and_key_and_passes_its_checker(self):
        certs = os.path.join(self.dir, "certs")
        os.mkdir(certs)
        for pool in ("default", "external", "ipv6"):
            make_cert(certs, pool)
        result = self.render("nginx", "--cert-dir", certs, "--runtime-dir", self.dir)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertIn(f"ssl_certificate {certs}/default.pem;", result.stdout)
        self.assertIn(f"ssl_certificate_key {certs}/default.key;", result.stdout)
        path = os.path.join(self.dir, "nginx.conf")
        with open(path, "w") as f:
            f.write(result.stdout)
        # nginx -t binds the listening sockets: check in a private network namespace where
        # VIPs the "node" does not hold may be bound, as the actor sets it up.
        if os.geteuid() != 0:
            self.skipTest("nginx -t needs a network namespace of its own (root)")
        script = ("ip link set lo up && sysctl -qw net.ipv4.ip_nonlocal_bind=1 net.ipv6.ip_nonlocal_bind=1 && "
                  f"nginx -t -p {self.dir} -c {path} -e {self.dir}/error.log")
        check = run(["unshare", "--net", "sh", "-c", script])
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_keepalived_holds_every_vip_on_the_pools_interface(self):
        result = self.render("keepalived")
        self.assertEqual(result.returncode, 0, result.stderr)
        conf = result.stdout
        for line in ("192.168.10.200", "1.2.3.4", "2001:468:201::4"):
            self.assertIn(line, conf)
        self.assertIn("interface em1", conf)          # the external pool's interface
        self.assertIn("notification_email", conf)     # email is set in the example config
        self.assertIn("smtp_alert", conf)

    def test_missing_certificate_leaves_out_only_that_tls_port_and_passes_the_checker(self):
        certs = os.path.join(self.dir, "certs")
        os.mkdir(certs)
        for pool in ("external", "ipv6"):  # no default.pem
            make_cert(certs, pool)
        result = self.render("haproxy", "--cert-dir", certs, "--runtime-dir", self.dir)
        self.assertEqual(result.returncode, 3, result.stderr)  # partial: written, the TLS port named
        self.assertRegex(result.stderr, rf"k8slb-render: error: default/myapp-tls: spec\.ports\[\d\]: port 443: "
                                        rf"no readable certificate {certs}/default\.pem \(pool default\)")
        cfg = result.stdout
        self.assertNotIn(f"{certs}/default.pem", cfg)
        self.assertRegex(cfg, rf"bind 1\.2\.3\.4:443 .*ssl crt {certs}/external\.pem")  # rancher still TLS
        self.assertIn("192.168.10.200:80", cfg)  # every other Service renders
        path = os.path.join(self.dir, "haproxy.cfg")
        with open(path, "w") as f:
            f.write(cfg)
        check = run(["haproxy", "-c", "-f", path])
        self.assertEqual(check.returncode, 0, check.stdout + check.stderr)

    def test_all_writes_a_set_of_files(self):
        out = os.path.join(self.dir, "out")
        result = self.render("all", "--output-dir", out, "--no-cert-check")
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertTrue({"haproxy.cfg", "keepalived.conf"} <= set(os.listdir(out)), os.listdir(out))
        # The manifest, written last, names the set (k8slb-apply node --from-dir needs it).
        with open(os.path.join(out, "k8slb-render.json")) as f:
            manifest = json.load(f)
        self.assertEqual(set(manifest["files"]), {"haproxy.cfg", "haproxy-servers.json", "keepalived.conf"})
        with open(os.path.join(out, "haproxy.cfg"), "rb") as f:
            self.assertEqual(manifest["files"]["haproxy.cfg"]["bytes"], len(f.read()))
        # A render that fails writes nothing: the complete set from before stays as it was.
        before = {name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}
        failed = self.render("all", "--output-dir", out, "--no-cert-check", "-f", os.path.join(self.dir, "missing.yml"))
        self.assertEqual(failed.returncode, 1, failed.stderr)
        self.assertEqual({name: open(os.path.join(out, name), "rb").read() for name in os.listdir(out)}, before)
        refused = self.render("all")
        self.assertEqual(refused.returncode, 1)
        self.assertIn("--output-dir", refused.stderr)

    def test_pipeline_from_allocate_to_render(self):
        allocate = subprocess.Popen([tool("k8slb-allocate"), "--config", f"{EXAMPLES}/pools.json", "-f",
                                     f"{EXAMPLES}/services.yml"], stdout=subprocess.PIPE)
        render = subprocess.run([tool("k8slb-render"), "haproxy", "--config", f"{EXAMPLES}/pools.json",
                                 "--interfaces", f"{EXAMPLES}/node-interfaces.json", "--no-cert-check"],
                                stdin=allocate.stdout, capture_output=True, text=True, timeout=60)
        allocate.stdout.close()
        self.assertEqual(allocate.wait(timeout=60), 0)
        self.assertEqual(render.returncode, 0, render.stderr)
        self.assertIn("192.168.10.200:80", render.stdout)


class RenderOnEventsTest(unittest.TestCase):
    """k8slb-render --stream after a List takes watch events (k8slb-watch --events): each change
    renders what a List of the same objects renders, at the cost of the change."""

    CONFIG = {"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.50"}}}
    INTERFACES = [{"ifindex": 2, "ifname": "eth0", "flags": ["UP", "LOWER_UP"],
                   "addr_info": [{"family": "inet", "local": "192.0.2.2", "prefixlen": 24}]}]

    def setUp(self):
        self.dir = tempfile.mkdtemp(prefix="k8slb-tools-")
        self.addCleanup(shutil.rmtree, self.dir, True)
        for name, content in (("pools.json", self.CONFIG), ("interfaces.json", self.INTERFACES)):
            with open(os.path.join(self.dir, name), "w") as f:
                json.dump(content, f)

    def args(self):
        return [tool("k8slb-render"), "all", "--stream", "--events", "--node", "lb-0", "--no-cert-check",
                "--config", os.path.join(self.dir, "pools.json"),
                "--interfaces", os.path.join(self.dir, "interfaces.json"), "--runtime-dir", self.dir]

    @staticmethod
    def service(name, ip, port=80):
        return {"apiVersion": "v1", "kind": "Service", "metadata": {"namespace": "default", "name": name, "uid": name},
                "spec": {"type": "LoadBalancer", "ports": [{"port": port, "protocol": "TCP", "targetPort": 8080}]},
                "status": {"loadBalancer": {"ingress": [{"ip": ip}]}}}

    @staticmethod
    def endpoints(name, *addresses):
        return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
                "metadata": {"namespace": "default", "name": name, "labels": {"kubernetes.io/service-name": name}},
                "addressType": "IPv4", "ports": [{"port": 8080, "protocol": "TCP"}],
                "endpoints": [{"addresses": [a]} for a in addresses]}

    NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lb-0", "labels": {"type": "loadBalancer"}},
            "status": {"addresses": [{"type": "InternalIP", "address": "192.0.2.2"}]}}

    def render_list(self, items):
        """The line a List of these objects renders (the snapshot path)."""
        result = run(self.args(), json.dumps({"apiVersion": "v1", "kind": "List", "items": items}) + "\n")
        self.assertIn(result.returncode, (0, 3), result.stderr)  # 3: an object left out
        return json.loads(result.stdout)

    @staticmethod
    def end(process):
        process.kill()
        process.wait(timeout=20)
        for stream in (process.stdin, process.stdout, process.stderr):
            stream.close()

    def read_line(self, process):
        ready, _, _ = select.select([process.stdout], [], [], 20)
        self.assertTrue(ready, "no line from k8slb-render within 20 s")
        return json.loads(process.stdout.readline())

    def test_each_change_renders_what_a_list_renders(self):
        cluster = {("Service", "web"): self.service("web", "192.0.2.10"),
                   ("EndpointSlice", "web"): self.endpoints("web", "198.51.100.1"),
                   ("Node", "lb-0"): self.NODE}
        process = subprocess.Popen(self.args(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True)
        self.addCleanup(self.end, process)
        process.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(cluster.values())}) + "\n")
        process.stdin.flush()
        first = self.read_line(process)
        self.assertIn("192.0.2.10:80", first["files"]["haproxy.cfg"])
        steps = [
            ("a new Service", "ADDED", self.service("api", "192.0.2.11", 443)),
            ("its endpoints", "ADDED", self.endpoints("api", "198.51.100.2", "198.51.100.3")),
            ("an endpoint moves", "MODIFIED", self.endpoints("web", "198.51.100.4")),
            ("a Service that cannot be read", "MODIFIED",
             {**self.service("web", "192.0.2.10"), "spec": {"type": "LoadBalancer", "ports": [{"port": "eighty"}]}}),
            ("fixed", "MODIFIED", self.service("web", "192.0.2.10", 8080)),
            ("a Service deleted", "DELETED", self.service("api", "192.0.2.11", 443)),
        ]
        for what, kind, obj in steps:
            with self.subTest(what):
                key = (obj["kind"], obj["metadata"]["name"])
                if kind == "DELETED":
                    del cluster[key]
                else:
                    cluster[key] = obj
                process.stdin.write(json.dumps({"type": kind, "object": obj}) + "\n")
                process.stdin.flush()
                line = self.read_line(process)
                self.assertIn("observedAt", line)  # when the event was read, for k8slb-apply node's timing
                expected = self.render_list(list(cluster.values()))
                self.assertEqual(line["files"], expected["files"])
                self.assertEqual(line["problems"], expected["problems"])
                self.assertEqual(line["events"], expected["events"])
                self.assertEqual(line["vips"], expected["vips"])
        self.assertIn("192.0.2.10:8080", line["files"]["haproxy.cfg"])
        self.assertNotIn("192.0.2.11", line["files"]["haproxy.cfg"])
        self.assertNotIn("192.0.2.11", line["files"]["keepalived.conf"])
        # A List (a resync) prints its line, also when nothing changed.
        process.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": list(cluster.values())}) + "\n")
        process.stdin.flush()
        self.assertEqual(self.read_line(process)["files"], line["files"])
        # Changes that leave this node's files as they are (a Service without an IP yet, its
        # endpoints) print no line, nor does an event that cannot be used (it is named).
        for quiet in ({**self.service("pending", "192.0.2.12"), "status": {}}, self.endpoints("pending", "198.51.100.9")):
            process.stdin.write(json.dumps({"type": "ADDED", "object": quiet}) + "\n")
        process.stdin.write(json.dumps({"type": "CHANGED", "object": self.NODE}) + "\n")
        process.stdin.close()
        self.assertEqual(process.stdout.read(), "")
        self.assertEqual(process.wait(timeout=20), 3)  # partial: something was left out
        stderr = process.stderr.read()
        self.assertIn("k8slb-render: error: <stdin>: document 11: watch event type 'CHANGED': expected ADDED, MODIFIED, DELETED "
                      "or BOOKMARK", stderr)
        self.assertIn("default/web: spec.ports[0].port: must be an integer", stderr)

    def test_an_event_before_any_list_is_refused(self):
        event = {"type": "ADDED", "object": self.service("web", "192.0.2.10")}
        result = run(self.args(), json.dumps(event) + "\n")
        self.assertEqual(result.returncode, 1, result.stderr)
        self.assertIn("k8slb-render: error: <stdin>: document 1: a watch event before the first List", result.stderr)
        self.assertEqual(result.stdout, "")

    def test_timing_lines_name_each_stage_of_each_line(self):
        """K8SLB_TIMING=1: one line on stderr per line printed, and one per change rendered to
        the same line (not printed), with the time of each stage."""
        items = [self.service("web", "192.0.2.10"), self.endpoints("web", "198.51.100.1"), self.NODE]
        process = subprocess.Popen(self.args(), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                   text=True, env={**os.environ, "K8SLB_TIMING": "1"})
        self.addCleanup(self.end, process)
        # The List, a change that makes a new line, a change rendered to the same line (not
        # printed): written one after the other, so that each is its own burst.
        for document in ({"apiVersion": "v1", "kind": "List", "items": items},
                         {"type": "MODIFIED", "object": self.endpoints("web", "198.51.100.2")}):
            process.stdin.write(json.dumps(document) + "\n")
            process.stdin.flush()
            self.read_line(process)
        process.stdin.write(json.dumps({"type": "MODIFIED", "object": self.NODE}) + "\n")
        process.stdin.close()
        self.assertEqual(process.wait(timeout=20), 0)
        stage = r" (\d+\.\d) ms"
        printed = rf"^k8slb-render: timing: read{stage} render{stage} dump{stage} write{stage} \((\d+) bytes out\)$"
        same = rf"^k8slb-render: timing: read{stage} render{stage} unchanged{stage} \(0 bytes out\)$"
        timings = [line for line in process.stderr.read().splitlines() if "timing:" in line]
        self.assertEqual(len(timings), 3, timings)
        for timing, pattern in zip(timings, (printed, printed, same)):
            self.assertIsNotNone(re.match(pattern, timing), f"{timing!r} does not match {pattern!r}")
        # A document that fails (no config yet) leaves nothing in the next one's line.
        config_map = {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"namespace": "k8slb-system", "name": "global"},
                      "data": {"config": json.dumps(self.CONFIG)}}
        without_config = [arg for arg in self.args() if arg not in ("--config", os.path.join(self.dir, "pools.json"))]
        stdin = "".join(json.dumps({"apiVersion": "v1", "kind": "List", "items": listed}) + "\n"
                        for listed in (items, items + [config_map]))
        result = subprocess.run(without_config, input=stdin, capture_output=True, text=True, timeout=60,
                                env={**os.environ, "K8SLB_TIMING": "1"})
        self.assertIn("no config", result.stderr)
        self.assertEqual(len(result.stdout.splitlines()), 1, result.stderr)
        timings = [line for line in result.stderr.splitlines() if "timing:" in line]
        self.assertEqual(len(timings), 1, timings)
        self.assertIsNotNone(re.match(printed, timings[0]), timings[0])
        # Without it, none.
        stdin = json.dumps({"apiVersion": "v1", "kind": "List", "items": items}) + "\n"
        quiet = subprocess.run(self.args(), input=stdin, capture_output=True, text=True, timeout=60,
                               env={k: v for k, v in os.environ.items() if k != "K8SLB_TIMING"})
        self.assertEqual(quiet.returncode, 0, quiet.stderr)
        self.assertNotIn("timing:", quiet.stderr)


if __name__ == "__main__":
    unittest.main()
