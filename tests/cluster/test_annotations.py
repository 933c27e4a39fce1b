"""Issue 8 on the watcher pipeline (scripts/watcher.sh against the API simulator, Services
written with kubectl as a user writes them): a changed pool annotation moves the Service with
an IPMoved Event naming old and new, and a restart moves nothing (item 5); annotation
spellings and typos (item 6); a Service written for MetalLB (item 8)."""

import subprocess
import unittest

from harness import ClusterTestCase, wait_until


def manifest(name, annotations):
    lines = "".join(f"    {key}: {value}\n" for key, value in annotations.items())
    return f"""
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: default
  annotations:
{lines}spec:
  type: LoadBalancer
  selector: {{app: {name}}}
  ports:
    - {{name: http, port: 80, protocol: TCP, targetPort: 8080}}
"""


class AnnotationsTest(ClusterTestCase):

    def kubectl(self, *args, stdin=None, check=True):
        return subprocess.run(["kubectl", "--kubeconfig", self.sim.kubeconfig, *args], input=stdin,
                              capture_output=True, text=True, timeout=30, check=check)

    def test_a_changed_pool_annotation_moves_the_service_and_a_restart_does_not(self):
        self.start_watcher("w0")
        self.kubectl("apply", "-f", "-", stdin=manifest("web", {"loadbalancer/pool": "default"}))
        old = self.wait_ip("web")
        self.assertEqual(old, "192.0.2.10")
        self.kubectl("annotate", "--overwrite", "svc", "web", "loadbalancer/pool=other")
        new = wait_until(lambda: (ips := self.ips("web")) and ips[0] != old and ips[0], 20,
                         "a new IP for default/web")
        self.assertEqual(new, "198.51.100.10")
        moved = self.wait_event("web", "IPMoved")
        self.assertEqual(moved["type"], "Normal")
        self.assertIn(f"moved from {old} to {new} (pool other)", moved["message"])
        # A restart of the watcher sees the same Service: nothing moves.
        for watcher in self.watchers:
            watcher.stop()
        writes_before = len(self.events("web", reason="IPAllocated"))
        self.start_watcher("w1")
        self.kubectl("apply", "-f", "-", stdin=manifest("second", {"loadbalancer/pool": "other"}))
        self.assertEqual(self.wait_ip("second"), "198.51.100.11")  # w1 is running and allocating
        self.assertEqual(self.ips("web"), [new])
        self.assertEqual(len(self.events("web", reason="IPAllocated")), writes_before)

    def test_a_typo_in_an_annotation_key_is_a_warning_naming_the_nearest(self):
        self.start_watcher("w0")
        self.kubectl("apply", "-f", "-", stdin=manifest("typo", {"loadbalancer/pol": "other"}))
        self.assertEqual(self.wait_ip("typo"), "192.0.2.10")  # served, from default
        warning = self.wait_event("typo", "UnknownAnnotation")
        self.assertEqual(warning["type"], "Warning")
        self.assertIn('metadata.annotations[loadbalancer/pol]: "loadbalancer/pol" is not a k8slb '
                      "annotation and is ignored; the nearest known one is loadbalancer/pool",
                      warning["message"])

    def test_the_originals_spelling_loadBalancer_pool(self):
        self.start_watcher("w0")
        # A real API server accepts the key (ValidateAnnotations lower-cases keys before checking
        # them), and so does the simulator.
        result = self.kubectl("apply", "-f", "-", stdin=manifest("camel", {"loadBalancer/pool": "other"}),
                              check=False)
        self.assertEqual(result.returncode, 0, result.stderr)
        self.assertEqual(self.wait_ip("camel"), "198.51.100.10")
        mapped = self.wait_event("camel", "AnnotationMapped")
        self.assertIn("metadata.annotations[loadBalancer/pool]: read as loadbalancer/pool", mapped["message"])

    def test_a_service_written_for_metallb(self):
        self.start_watcher("w0")
        self.kubectl("apply", "-f", "-", stdin=manifest("mlb", {"metallb.io/address-pool": "other",
                                                                 "metallb.io/allow-shared-ip": "web"}))
        self.kubectl("apply", "-f", "-", stdin=manifest("mlb-static", {
            "metallb.universe.tf/loadBalancerIPs": "198.51.100.50"}))
        self.assertEqual(self.wait_ip("mlb"), "198.51.100.10")
        self.assertEqual(self.wait_ip("mlb-static"), "198.51.100.50")
        def mapped():
            found = self.events("mlb", reason="AnnotationMapped")
            return len(found) == 2 and found
        events = wait_until(mapped, 20, "two AnnotationMapped Events on default/mlb")
        messages = sorted(event["message"] for event in events)
        self.assertEqual(messages, [
            "default/mlb: metadata.annotations[metallb.io/address-pool]: MetalLB's metallb.io/address-pool "
            "is read as loadbalancer/pool",
            "default/mlb: metadata.annotations[metallb.io/allow-shared-ip]: MetalLB's "
            "metallb.io/allow-shared-ip is read as loadbalancer/share"])


if __name__ == "__main__":
    unittest.main()
