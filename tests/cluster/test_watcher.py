"""The watcher pipeline (scripts/watcher.sh: k8slb-watch | k8slb-allocate | k8slb-apply
cluster) against the API simulator: what a user sees with kubectl get svc and kubectl get
events, under faults and with two replicas."""

import ipaddress
import json
import os
import subprocess
import time
import unittest

from harness import BINARY_DIR, LEASE_DURATION, POOLS, ClusterTestCase, wait_until


def in_pool(ip, first, last):
    return ipaddress.ip_address(first) <= ipaddress.ip_address(ip) <= ipaddress.ip_address(last)


class WatcherTest(ClusterTestCase):

    def kubectl(self, *args, stdin=None):
        return subprocess.run(["kubectl", "--kubeconfig", self.sim.kubeconfig, *args], input=stdin,
                              capture_output=True, text=True, timeout=30, check=True).stdout

    def test_kubectl_service_gets_ip_event_and_frees_it(self):
        self.start_watcher("w0")
        manifest = """
apiVersion: v1
kind: Service
metadata:
  name: first
  namespace: default
  annotations:
    loadbalancer/pool: tiny
spec:
  type: LoadBalancer
  selector: {app: first}
  ports:
    - {name: http, port: 80, protocol: TCP, targetPort: 8080}
"""
        self.kubectl("apply", "-f", "-", stdin=manifest)
        ip = self.wait_ip("first")
        self.assertEqual(ip, "203.0.113.10")
        self.assertEqual(self.ingress("first")[0].get("ipMode"), "Proxy")
        shown = self.kubectl("get", "svc", "first", "-o", "jsonpath={.status.loadBalancer.ingress[0].ip}")
        self.assertEqual(shown, "203.0.113.10")
        event = self.wait_event("first", "IPAllocated")
        self.assertIn("203.0.113.10", event["message"])
        self.assertEqual(event["type"], "Normal")
        self.assertEqual(event["reportingInstance"], "w0")
        self.assertEqual(event["count"], 1)

        # The pool holds one IP: a second Service waits with an AllocationFailed Event ...
        self.create_service("second", annotations={"loadbalancer/pool": "tiny"})
        failed = self.wait_event("second", "AllocationFailed")
        self.assertEqual(failed["type"], "Warning")
        self.assertIn("default/second", failed["message"])
        self.assertEqual(self.ips("second"), [])
        # ... and gets the IP once the first is deleted.
        self.kubectl("delete", "svc", "first")
        self.assertEqual(self.wait_ip("second"), "203.0.113.10")

    def test_static_ip_conflict(self):
        self.start_watcher("w0")
        self.create_service("owner", load_balancer_ip="192.0.2.50")
        self.assertEqual(self.wait_ip("owner"), "192.0.2.50")
        self.create_service("intruder", load_balancer_ip="192.0.2.50")
        event = self.wait_event("intruder", "AllocationFailed")
        self.assertIn("spec.loadBalancerIP", event["message"])
        self.create_service("bystander")
        self.wait_ip("bystander")
        self.assertEqual(self.ips("intruder"), [], "the conflicting Service gets no IP")
        self.assertEqual(self.ips("owner"), ["192.0.2.50"])

    def test_bad_input_is_reported_and_others_get_ips(self):
        self.start_watcher("w0")
        self.create_service("empty-pool-name", annotations={"loadbalancer/pool": "default,,other"})
        self.create_service("unknown-pool", annotations={"loadbalancer/pool": "nosuchpool"})
        self.create_service("sctp", protocol="SCTP", port=9999)
        self.create_service("fine")
        self.wait_ip("fine")
        for name, reason in (("empty-pool-name", "InvalidService"), ("unknown-pool", "AllocationFailed")):
            with self.subTest(name):
                event = self.wait_event(name, reason)
                self.assertEqual(event["type"], "Warning")
                self.assertIn(f"default/{name}", event["message"])
                self.assertIn("metadata.annotations[loadbalancer/pool]", event["message"])
                self.assertEqual(self.ips(name), [])
        # SCTP is not carried by HAProxy (the watcher's PROXY): the Service gets its IP (the
        # node side leaves that port out) and a Warning Event naming the port's protocol.
        self.wait_ip("sctp")
        event = self.wait_event("sctp", "UnsupportedPort")
        self.assertEqual(event["type"], "Warning")
        self.assertIn("default/sctp: spec.ports[0].protocol: SCTP is not carried by haproxy", event["message"])
        self.assert_no_duplicate_ip()

    def test_log_names_the_part_that_ended_the_pipeline(self):
        # A k8slb-watch that fails: it closes its output (k8slb-allocate sees the end of its
        # input and exits 0 first), then exits 7. The log must name k8slb-watch and 7.
        bin_dir = os.path.join(self.workdir, "bin")
        os.makedirs(bin_dir)
        for tool in ("k8slb-allocate", "k8slb-apply"):
            os.symlink(os.path.join(BINARY_DIR, tool), os.path.join(bin_dir, tool))
        with open(os.path.join(bin_dir, "k8slb-watch"), "w") as f:
            f.write("#!/bin/sh\nexec >&-\nsleep 0.3\necho 'k8slb-watch: error: injected' >&2\nexit 7\n")
        os.chmod(os.path.join(bin_dir, "k8slb-watch"), 0o755)
        watcher = self.start_watcher("w0", {"K8SLB_BIN": bin_dir})
        line = wait_until(lambda: [l for l in watcher.log().splitlines() if "pipeline ended" in l],
                          20, "the end of the pipeline in the log")[0]
        self.assertIn("cause: k8slb-watch exited with status 7", line)
        self.assertIn("k8slb-allocate", line)
        self.assertNotIn("cause: k8slb-allocate", watcher.log())

    def test_invalid_annotation_gets_no_ip(self):
        # What render refuses for a whole Service gets no IP from the watcher: no node would
        # carry its traffic, and the pool would lose an address.
        self.start_watcher("w0")
        self.create_service("bad-mode", annotations={"loadbalancer/mode": "tcp"})
        self.create_service("holder")
        held = self.wait_ip("holder")
        event = self.wait_event("bad-mode", "InvalidService")
        self.assertEqual(event["type"], "Warning")
        self.assertIn("default/bad-mode: metadata.annotations[loadbalancer/mode]: \"tcp\" is not one of",
                      event["message"])
        # A Service that holds an IP and becomes invalid keeps it (taking it away would cut
        # traffic the nodes still carry), with a Warning Event.
        self.sim.must("PATCH", "/api/v1/namespaces/default/services/holder",
                      {"metadata": {"annotations": {"loadbalancer/ssl": "yes"}}}, "application/merge-patch+json")
        event = self.wait_event("holder", "InvalidService")
        self.assertIn("metadata.annotations[loadbalancer/ssl]", event["message"])
        self.create_service("after")
        self.wait_ip("after")
        self.assertEqual(self.ips("bad-mode"), [])
        self.assertEqual(self.ips("holder"), [held])
        self.assert_no_duplicate_ip()

    def set_config(self, config_text):
        self.sim.must("PATCH", "/api/v1/namespaces/k8slb-system/configmaps/global",
                      {"data": {"config": config_text}}, "application/merge-patch+json")

    def config_events(self):
        return [e for e in self.events(ns="k8slb-system", reason="InvalidConfig")
                if e["involvedObject"].get("kind") == "ConfigMap" and e["involvedObject"]["name"] == "global"]

    def test_invalid_config_map_is_an_event_on_it_and_on_waiting_services(self):
        first = self.start_watcher("w0")
        self.create_service("before")
        held = self.wait_ip("before")
        self.set_config(json.dumps({"pools": {
            "default": {"network": "192.0.2.0/33", "range": "192.0.2.10-192.0.2.29"},
            "fresh": {"network": "198.51.100.0/24", "range": "198.51.100.50-198.51.100.59"}}}))
        # The last good config stays in use, and the ConfigMap says why it is not.
        event = wait_until(self.config_events, 20, "an InvalidConfig Event on the ConfigMap")[0]
        self.assertEqual(event["type"], "Warning")
        self.assertIn("data.config", event["message"])
        self.assertIn("pools.default", event["message"])
        self.assertIn("keeping the last good config", event["message"])
        self.create_service("during")
        self.wait_ip("during")
        # A Service that fails because of it (its pool is only in the new config) says so.
        self.create_service("wants-fresh", annotations={"loadbalancer/pool": "fresh"})
        failed = self.wait_event("wants-fresh", "AllocationFailed")
        self.assertIn("pool 'fresh' is not configured", failed["message"])
        self.assertIn("the ConfigMap k8slb-system/global is invalid", failed["message"])
        for i in range(3):  # more documents: the same Event is not written again
            self.create_service(f"more-{i}")
            self.wait_ip(f"more-{i}")
        self.assertEqual(len(self.config_events()), 1, self.config_events())
        self.assertEqual(self.config_events()[0]["count"], 1)

        # A new leader with the config still bad has no last good one: it says so, on the
        # ConfigMap and on each Service waiting for an IP; the Services that hold IPs keep them.
        first.kill()
        self.start_watcher("w1")
        self.create_service("waiting")
        waiting = self.wait_event("waiting", "AllocationFailed", timeout=40)
        self.assertEqual(waiting["type"], "Warning")
        self.assertIn("default/waiting: no valid config: ConfigMap k8slb-system/global: data.config", waiting["message"])
        self.assertEqual(waiting["reportingInstance"], "w1")
        wait_until(lambda: any("no IP is assigned" in e["message"] for e in self.config_events()), 20,
                   "the new leader's InvalidConfig Event")
        self.assertEqual(self.ips("waiting"), [])
        self.assertEqual(self.ips("before"), [held])
        # Fixed: the waiting Service gets its IP.
        self.set_config(json.dumps(POOLS))
        self.wait_ip("waiting")
        self.assert_no_duplicate_ip()

    def run_fault(self, **fault):
        """Services created while the fault is on end with one IP each, none twice."""
        self.start_watcher("w0")
        self.create_service("before")
        self.wait_ip("before")
        self.sim.fault(**fault)
        for i in range(3):
            self.create_service(f"during-{i}")
        # Counted faults (500, 429) are used up by the watcher's own requests.
        wait_until(lambda: not self.sim.stats()["faults"]["errors_500"]
                   and not self.sim.stats()["faults"]["throttle_429"], 40, "the faults to be used up")
        self.sim.reset_faults()
        self.create_service("after")
        for name in ("during-0", "during-1", "during-2", "after"):
            self.wait_ip(name, timeout=40)
        self.assert_no_duplicate_ip()
        for key, ips in self.all_ips().items():
            self.assertEqual(len(ips), 1, key)
            self.assertTrue(in_pool(ips[0], "192.0.2.10", "192.0.2.29"), f"{key}: {ips}")
        injected = self.sim.stats()["faults_injected"]
        return injected

    def test_fault_watch_dropped(self):
        self.run_fault(drop_watches=True)

    def test_fault_410_gone(self):
        # Compacting makes the watcher's resourceVersion too old: it must relist.
        self.run_fault(compact=True, drop_watches=True)

    def test_fault_burst_of_500(self):
        # On the status writes and on the watch's reconnection.
        injected = self.run_fault(errors_500=4, method="PATCH", path_contains="/status")
        self.assertGreaterEqual(sum(injected.values()), 4, injected)

    def test_fault_429_storm(self):
        # More 429s than the client retries: a write gives up, a later document retries it.
        injected = self.run_fault(throttle_429=8, retry_after=1, method="PATCH", path_contains="/status")
        self.assertGreaterEqual(sum(injected.values()), 8, injected)

    def test_two_replicas_one_writer_and_hand_over(self):
        first = self.start_watcher("alpha")
        wait_until(lambda: self.holder() == "alpha", 20, "alpha to hold the lease")
        second = self.start_watcher("beta")
        for i in range(4):
            self.create_service(f"svc-{i}")
        for i in range(4):
            self.wait_ip(f"svc-{i}")
        before = self.all_ips()
        time.sleep(1.5)  # several renewals: beta keeps waiting
        self.assertEqual(self.holder(), "alpha")
        self.assertEqual(second.status_writes(), [], "the standby wrote status")
        for event in self.events():
            self.assertEqual(event["reportingInstance"], "alpha", event["message"])

        killed_at = time.monotonic()
        first.kill()
        wait_until(lambda: self.holder() == "beta", 6 * LEASE_DURATION, "beta to take the lease")
        self.create_service("after-handover")
        self.wait_ip("after-handover", timeout=30)
        handover = time.monotonic() - killed_at
        print(f"\nhand-over: {handover:.1f} s from SIGKILL of the leader to a new Service's IP "
              f"(lease duration {LEASE_DURATION} s)")
        self.assertLess(handover, 6 * LEASE_DURATION + 20)
        lease = self.lease()["spec"]
        self.assertEqual(lease["leaseTransitions"], 1)
        event = self.wait_event("after-handover", "IPAllocated")
        self.assertEqual(event["reportingInstance"], "beta")
        after = self.all_ips()
        for key, ips in before.items():
            self.assertEqual(after[key], ips, f"{key} moved during the hand-over")
        self.assert_no_duplicate_ip()

    def test_restart_moves_no_ip_and_releases_the_lease(self):
        first = self.start_watcher("one")
        for i in range(5):
            self.create_service(f"keep-{i}", annotations={"loadbalancer/pool": "other"} if i % 2 else None)
        for i in range(5):
            self.wait_ip(f"keep-{i}")
        before = self.all_ips()
        self.assertEqual(first.stop(), 0, first.log())
        self.assertEqual(self.holder(), "", "SIGTERM released the lease")
        self.start_watcher("two")
        wait_until(lambda: self.holder() == "two", 10, "the new replica to lead")
        self.create_service("new")
        self.wait_ip("new")
        after = self.all_ips()
        for key, ips in before.items():
            self.assertEqual(after[key], ips, f"{key} moved after the restart")
        self.assert_no_duplicate_ip()
        # The restarted watcher wrote only the new Service's status (its log line may follow the
        # write the API already shows).
        wait_until(lambda: self.watchers[-1].status_writes(), 10, "the new Service's status write in the log")
        writes = self.watchers[-1].status_writes()
        self.assertEqual(len(writes), 1, writes)
        self.assertIn("default/new", writes[0])


if __name__ == "__main__":
    unittest.main()
