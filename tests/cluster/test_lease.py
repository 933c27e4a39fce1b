"""k8slb-apply cluster and its Lease, run as the watcher runs it (--acquire-only, then the
pipeline) against the API simulator, with faults on the Lease requests."""

import os
import subprocess
import time
import unittest

from harness import BINARY_DIR, ClusterTestCase

APPLY = os.path.join(BINARY_DIR, "k8slb-apply")
LEASE_PATH = "/apis/coordination.k8s.io/v1/namespaces/k8slb-system/leases/drill"


class LeaseTest(ClusterTestCase):

    def apply_cluster(self, *args, identity="me", timeout=60):
        command = [APPLY, "cluster", "--kubeconfig", self.sim.kubeconfig, "--lease-name", "drill",
                   "--identity", identity, "--lease-duration", "4", "--renew-deadline", "3",
                   "--retry-period", "0.5", *args]
        env = {k: v for k, v in os.environ.items() if k not in ("POD_NAMESPACE", "POD_NAME")}
        return subprocess.run(command, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                              timeout=timeout, env=env)

    def holder(self):
        resp = self.sim.request("GET", LEASE_PATH)
        return resp.body["spec"].get("holderIdentity") if resp.status == 200 else None

    def test_a_failed_lease_request_is_retried_not_a_lost_lease(self):
        # The reproduction: the first Lease request of the pipeline fails once.
        cases = [
            ("one 500", {"errors_500": 1, "path_contains": "/leases"}),
            ("two 500s", {"errors_500": 2, "path_contains": "/leases"}),
            ("one 429 with Retry-After", {"throttle_429": 1, "retry_after": 1, "path_contains": "/leases"}),
            ("a PUT answered 500", {"errors_500": 1, "method": "PUT", "path_contains": "/leases"}),
        ]
        for description, fault in cases:
            with self.subTest(description):
                gate = self.apply_cluster("--acquire-only")
                self.assertEqual(gate.returncode, 0, gate.stderr)
                self.assertEqual(self.holder(), "me")
                self.sim.fault(**fault)
                run = self.apply_cluster()
                self.sim.reset_faults()
                self.assertEqual(run.returncode, 0, f"{description}: {run.stderr}")
                self.assertNotIn("not the leader", run.stderr)
                self.assertNotIn("acquired the lease while the pipeline was running", run.stderr)
                self.assertEqual(self.sim.stats()["faults"]["errors_500"], 0)
                self.assertEqual(self.sim.stats()["faults"]["throttle_429"], 0)

    def test_a_leader_renews_with_one_request(self):
        # client-go's fast path: the leader PUTs the Lease it last wrote, no GET first, so an
        # error storm has half the requests to fail.
        gate = self.apply_cluster("--acquire-only")
        self.assertEqual(gate.returncode, 0, gate.stderr)
        before = self.sim.stats()["requests"]
        command = [APPLY, "cluster", "--kubeconfig", self.sim.kubeconfig, "--lease-name", "drill",
                   "--identity", "me", "--lease-duration", "4", "--renew-deadline", "3",
                   "--retry-period", "0.5"]
        pipeline = subprocess.Popen(command, stdin=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        try:
            time.sleep(3.2)  # about six renewals
        finally:
            _, stderr = pipeline.communicate(input="", timeout=30)
        self.assertEqual(pipeline.returncode, 0, stderr)
        after = self.sim.stats()["requests"]
        gets = after.get("GET leases.coordination.k8s.io", 0) - before.get("GET leases.coordination.k8s.io", 0)
        puts = after.get("PUT leases.coordination.k8s.io", 0) - before.get("PUT leases.coordination.k8s.io", 0)
        self.assertGreaterEqual(puts, 4, (gets, puts))
        self.assertLessEqual(gets, 1, f"{gets} GETs for {puts} PUTs: the first round only")
        self.assertEqual(self.holder(), "me")

    def test_another_holder_still_means_restart_with_status_4(self):
        other = self.apply_cluster("--acquire-only", identity="other")
        self.assertEqual(other.returncode, 0, other.stderr)
        # Released by nobody: "me" waits until it expires, takes it, and asks for a restart.
        run = self.apply_cluster()
        self.assertEqual(run.returncode, 4, run.stderr)
        self.assertIn("acquired the lease while the pipeline was running", run.stderr)
        self.assertEqual(self.holder(), "me")

    def test_lease_requests_failing_past_the_deadline_end_leadership(self):
        gate = self.apply_cluster("--acquire-only")
        self.assertEqual(gate.returncode, 0, gate.stderr)
        # Every Lease request fails for longer than the renew deadline (3 s): no claim to lead.
        self.sim.fault(errors_500=1000, path_contains="/leases")
        run = self.apply_cluster(timeout=20)
        faults_left = self.sim.stats()["faults"]["errors_500"]
        self.sim.reset_faults()
        self.assertLess(faults_left, 1000)
        self.assertNotEqual(run.returncode, 0, run.stderr)
        self.assertIn("not renewed", run.stderr)


if __name__ == "__main__":
    unittest.main()
