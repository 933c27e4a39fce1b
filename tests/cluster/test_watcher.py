"""The watcher pipeline (scripts/watcher.sh: k8slb-watch | k8slb-allocate | k8slb-apply
cluster) against the API simulator: what a user sees with kubectl get svc and kubectl get
events, under faults and with two replicas."""

import ipaddress
import os
import subprocess
import time
import unittest

from harness import BINARY_DIR, LEASE_DURATION, ClusterTestCase, wait_until


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
        # The restarted watcher wrote only the new Service's status.
        writes = self.watchers[-1].status_writes()
        self.assertEqual(len(writes), 1, writes)
        self.assertIn("default/new", writes[0])


if __name__ == "__main__":
    unittest.main()
