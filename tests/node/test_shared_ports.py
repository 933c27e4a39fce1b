"""Shared ports (k8slb-render --shared-ports) with the real k8slb-render, k8slb-apply and haproxy,
in a network namespace: a new Service on a shared port is served through the runtime API, with
no reload, and what the runtime API set survives a reload and a restarted renderer. With nginx:
one wildcard server per shared port routes each VIP to its Service."""

import json
import os
import subprocess
import time
import unittest

from helpers import BINARY_DIR, VIP, Harness, backend_address

RENDER = os.path.join(BINARY_DIR, "k8slb-render")
VIP_B = "192.0.2.11"
VIP_V6 = "2001:db8::10"


def service(name, vip, port=80, annotations=None, source_ranges=None):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"namespace": "default", "name": name, "uid": "uid-" + name,
                         "annotations": annotations or {}},
            "spec": {"type": "LoadBalancer", "ports": [{"name": "web", "port": port, "protocol": "TCP", "targetPort": 8080}],
                     "loadBalancerSourceRanges": source_ranges or []},
            "status": {"loadBalancer": {"ingress": [{"ip": vip}]}}}


def slice_of(name, backend):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"namespace": "default", "name": name + "-1", "labels": {"kubernetes.io/service-name": name}},
            "ports": [{"name": "web", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [backend], "conditions": {"ready": True}}]}


class SharedPortsTest(unittest.TestCase):
    def setUp(self):
        self.h = Harness(self)
        self.addCleanup(self.h.cleanup)
        if not os.path.exists(RENDER):
            self.skipTest("no %s" % RENDER)
        self.h.ip("addr", "add", VIP_B + "/32", "dev", "lo")
        self.h.ip("-6", "addr", "add", VIP_V6 + "/128", "dev", "lo", "nodad")
        self.pools = os.path.join(self.h.tmp, "pools.json")
        with open(self.pools, "w") as f:
            json.dump({"pools": {"default": {"network": "192.0.2.0/24", "range": "192.0.2.10-192.0.2.20"},
                                 "v6": {"network": "2001:db8::/64", "range": "2001:db8::10-2001:db8::20"}}}, f)

    def render(self, services, shared="80", proxy="haproxy"):
        """k8slb-render haproxy --shared-ports 80 (`shared`; None: none), as the actor runs it: the
        slots of the installed haproxy.cfg are kept. Returns the set of files. A service is
        (name, vip, backend, port) or with more items: its annotations, its source ranges."""
        objects = []
        for name, vip, backend, port, *more in services:
            objects += [service(name, vip, port, *more), slice_of(name, backend)]
        out = os.path.join(self.h.tmp, "rendered")
        subprocess.run(["rm", "-rf", out], check=True)
        argv = [RENDER, proxy, "--config", self.pools, "--no-cert-check", "--runtime-dir", self.h.runtime_dir,
                "--output-dir", out]
        if proxy == "haproxy":
            argv += ["--previous-haproxy", os.path.join(self.h.config_dir, "haproxy.cfg")]
        if shared:
            argv += ["--shared-ports", shared]
        result = subprocess.run(argv,
                                input=json.dumps({"apiVersion": "v1", "kind": "List", "items": objects}),
                                capture_output=True, text=True, timeout=30)
        # 3: the files are written, some objects have problems (k8slb-render(1))
        self.assertIn(result.returncode, (0, 3), result.stderr)
        self.problems = result.stderr  # one line per problem: "object: field: message"
        files = {}
        for name in os.listdir(out):
            if name != "k8slb-render.json":
                with open(os.path.join(out, name)) as f:
                    files[name] = f.read()
        return files

    def get(self, host, port=80):
        url = "http://[%s]:%d/" % (host, port) if ":" in host else "http://%s:%d/" % (host, port)
        result = subprocess.run(self.h.netns_exec() + ["curl", "-s", "--max-time", "2", url],
                                capture_output=True, text=True)
        return result.stdout.strip() if result.returncode == 0 else "curl exit %d" % result.returncode

    def test_a_new_service_is_served_without_a_reload(self):
        h = self.h
        h.start_backends(2)
        apply = h.start_apply("--no-keepalived")
        a = ("a", VIP, backend_address(0), 80)
        b = ("b", VIP_B, backend_address(1), 80)
        v6 = ("v6", VIP_V6, backend_address(1), 80)
        self.assertEqual(h.send(apply, self.render([a, v6]))["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        self.assertEqual(self.get(VIP_V6), backend_address(1))
        reloads, workers = h.haproxy_proc()

        # b comes while a is under load: a runtime update, no reload, no failed request.
        load = h.start_load()
        time.sleep(0.3)
        self.assertEqual(h.send(apply, self.render([a, b, v6]))["actions"], {"haproxy": "runtime-update"})
        self.assertEqual(self.get(VIP_B), backend_address(1))
        time.sleep(0.3)
        stats = h.stop_load(load)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])
        self.assertEqual(h.haproxy_proc(), (reloads, workers), "haproxy was reloaded")
        # The log says what was sent and how long HAProxy took to answer.
        self.assertRegex(h.stderr(), r"haproxy: runtime-update \(servers and VIPs changed; \d+ command\(s\) in \d+\.\d{3} s\)")

        # a goes: its VIP is refused at once, the others are served; still no reload.
        self.assertEqual(h.send(apply, self.render([b, v6]))["actions"], {"haproxy": "runtime-update"})
        self.assertTrue(self.get(VIP).startswith("curl exit"), self.get(VIP))
        self.assertEqual(self.get(VIP_B), backend_address(1))
        self.assertEqual(h.haproxy_proc(), (reloads, workers), "haproxy was reloaded")

        # A port that is not shared is a reload; what the runtime API set is in the files it loads.
        c = ("c", "192.0.2.12", backend_address(0), 8081)
        h.ip("addr", "add", "192.0.2.12/32", "dev", "lo")
        self.assertEqual(h.send(apply, self.render([b, c, v6]))["actions"], {"haproxy": "reload"})
        self.assertEqual(h.haproxy_proc()[0], reloads + 1)
        self.assertEqual(self.get(VIP_B), backend_address(1))
        self.assertEqual(self.get(VIP_V6), backend_address(1))
        self.assertEqual(self.get("192.0.2.12", 8081), backend_address(0))
        self.assertTrue(self.get(VIP).startswith("curl exit"))

        # A renderer started again reads the slots from the installed haproxy.cfg: nothing to do.
        self.assertEqual(h.send(apply, self.render([b, c, v6]))["actions"], {"haproxy": "none"})
        self.assertEqual(sorted(name for name in os.listdir(h.config_dir) if name.endswith(".map")),
                         ["haproxy-p80.map"])

    def test_turning_shared_ports_on_and_off_under_load_fails_no_request(self):
        """SHARED_PORTS set on a running node, then unset: each is one reload, and the VIP's
        listening socket changes (VIP:80 to *:80 and back) with no request refused."""
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--no-keepalived")
        services = [("a", VIP, backend_address(0), 80)]
        self.assertEqual(h.send(apply, self.render(services, shared=None))["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        load = h.start_load()
        time.sleep(0.3)
        actions = []
        for shared in ("80", None, "80", None, "80"):
            actions.append(h.send(apply, self.render(services, shared=shared))["actions"]["haproxy"])
            time.sleep(0.3)
        stats = h.stop_load(load)
        self.assertEqual(actions, ["reload"] * 5)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])
        with open(os.path.join(h.config_dir, "haproxy.cfg")) as f:
            self.assertIn("frontend shared_80", f.read())

    def test_another_listener_on_the_port_keeps_the_running_config(self):
        """A shared port binds the wildcard address: a node process listening on the same port
        makes haproxy's reload fail. The running haproxy keeps serving, the set is reported."""
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--no-keepalived")
        a = ("a", VIP, backend_address(0), 8082)
        self.assertEqual(h.send(apply, self.render([a]))["actions"], {"haproxy": "start"})
        self.assertEqual(self.get(VIP, 8082), backend_address(0))
        h.ip("addr", "add", "192.0.2.30/32", "dev", "lo")
        h.spawn(["python3", "-m", "http.server", "--bind", "192.0.2.30", "80"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 10
        while self.get("192.0.2.30").startswith("curl exit") and time.time() < deadline:
            time.sleep(0.1)
        answer = h.send(apply, self.render([a, ("b", VIP_B, backend_address(0), 80)]))
        self.assertEqual(answer["actions"], {"haproxy": "failed"})
        self.assertIn("ReloadFailed", [problem["reason"] for problem in answer["problems"]])
        self.assertEqual(self.get(VIP, 8082), backend_address(0))


    def test_nginx_routes_each_vip_to_its_service(self):
        """nginx: one server on the wildcard address per shared port and family, routing by
        destination through a geo block; an address that is no VIP is refused; a new Service is
        a reload with no failed request, served as soon as k8slb-apply answers; a layer-4 port on
        the http port 80 is refused (its VIP:80 could not be bound beside the wildcard)."""
        h = self.h
        h.start_backends(2)
        h.ip("addr", "add", "192.0.2.30/32", "dev", "lo")  # a node address, no VIP
        apply = h.start_apply("--proxy", "nginx", "--no-keepalived")
        a = ("a", VIP, backend_address(0), 80)
        v6 = ("v6", VIP_V6, backend_address(1), 80)
        db = ("db", VIP_B, backend_address(1), 5432)
        files = self.render([a, v6, db], shared="80,5432", proxy="nginx")
        conf = files["nginx.conf"]
        for listen in ("listen 0.0.0.0:80 default_server;", "listen [::]:80 default_server;", "listen 0.0.0.0:5432;",
                       "listen [::]:5432;"):  # the pools have both families
            self.assertEqual(conf.count(listen), 1, conf)
        self.assertNotIn("listen %s:80" % VIP, conf)
        self.assertEqual(h.send(apply, files)["actions"], {"nginx": "start"})
        h.wait_for_traffic()
        self.assertEqual(self.get(VIP), backend_address(0))
        self.assertEqual(self.get(VIP_V6), backend_address(1))
        self.assertEqual(self.get(VIP_B, 5432), backend_address(1))
        # Any other address reaches the wildcard and is refused there: 502 (http), closed (layer 4).
        self.assertIn("502 Bad Gateway", self.get("192.0.2.30"))
        self.assertIn("502 Bad Gateway", self.get(VIP_B))  # db's VIP, on 5432 only
        # accepted, then closed or reset: no reply (52) or a receive error (56), not refused (7)
        self.assertIn(self.get("192.0.2.30", 5432), ("curl exit 52", "curl exit 56"))

        # b comes while a is under load: a reload, no failed request, b served on the same socket.
        b = ("b", "192.0.2.12", backend_address(1), 80)
        h.ip("addr", "add", "192.0.2.12/32", "dev", "lo")
        load = h.start_load()
        time.sleep(0.3)
        self.assertEqual(h.send(apply, self.render([a, b, v6, db], shared="80,5432", proxy="nginx"))["actions"],
                         {"nginx": "reload"})
        self.assertEqual(self.get("192.0.2.12"), backend_address(1))
        time.sleep(0.3)
        stats = h.stop_load(load)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])

        # A layer-4 Service on port 80 cannot be bound beside the wildcard: it is refused, named,
        # and everything else is served as before.
        raw = ("raw", "192.0.2.13", backend_address(0), 80, {"loadbalancer/mode": "false"})
        h.ip("addr", "add", "192.0.2.13/32", "dev", "lo")
        answer = h.send(apply, self.render([a, b, v6, db, raw], shared="80,5432", proxy="nginx"))
        self.assertIn("default/raw: spec.ports[0]: port 80 is a shared port", self.problems)
        self.assertEqual(answer["actions"], {"nginx": "none"}, h.stderr()[-3000:])
        for vip, backend in ((VIP, 0), ("192.0.2.12", 1), (VIP_V6, 1)):
            self.assertEqual(self.get(vip), backend_address(backend), vip)
        self.assertEqual(self.get(VIP_B, 5432), backend_address(1))
        self.assertIn("502 Bad Gateway", self.get("192.0.2.13"))
    def test_nginx_wildcard_stays_as_the_ports_services_come_and_go(self):
        """nginx binds a VIP's own socket on a shared port (here source ranges) only while no
        wildcard is there, and cannot bind one beside the other: the wildcard is rendered for
        every shared port, with or without a Service to route, so the first plain Service on
        the port and the last one leaving are ordinary reloads."""
        h = self.h
        h.start_backends(2)
        apply = h.start_apply("--proxy", "nginx", "--no-keepalived")
        ranged = ("ranged", VIP, backend_address(0), 80, {}, ["192.0.2.0/24", "198.51.100.0/24", "127.0.0.0/8"])
        plain = ("plain", VIP_B, backend_address(1), 80)
        for services, action in (([ranged], "start"), ([ranged, plain], "reload"), ([ranged], "reload"),
                                 ([ranged, plain], "reload")):
            self.assertEqual(h.send(apply, self.render(services, shared="80", proxy="nginx"))["actions"],
                             {"nginx": action}, h.stderr()[-3000:])
            self.assertEqual(self.get(VIP), backend_address(0))
            if plain in services:
                self.assertEqual(self.get(VIP_B), backend_address(1))
            else:
                self.assertIn("502 Bad Gateway", self.get(VIP_B))


if __name__ == "__main__":
    unittest.main()
