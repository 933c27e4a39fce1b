"""The watcher's Prometheus endpoint as an operator scrapes it: scripts/watcher.sh with
METRICS_ADDR against the API simulator, its text checked by promtool (Debian's prometheus
package), its figures against what kubectl shows."""

import json
import os
import shutil
import socket
import subprocess
import unittest
import urllib.request

from harness import POOLS, ClusterTestCase, wait_until

PROMTOOL = shutil.which("promtool")


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def parse(text):
    """{(name, frozenset(labels.items())): value} of an exposition text (our own, so simple)."""
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        series, value = line.rsplit(" ", 1)
        name, _, labels = series.partition("{")
        pairs = {}
        for part in filter(None, labels.rstrip("}").split('",')):
            key, _, val = part.partition('="')
            pairs[key] = val.rstrip('"')
        samples[(name, frozenset(pairs.items()))] = float(value)
    return samples


def value(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())))


@unittest.skipUnless(PROMTOOL, "promtool (Debian package prometheus) is not installed: scripts/install-deps.sh")
class WatcherMetricsTest(ClusterTestCase):

    def start_with_metrics(self, identity):
        port = free_port()
        watcher = self.start_watcher(identity, {"METRICS_ADDR": f"127.0.0.1:{port}"})
        watcher.metrics_url = f"http://127.0.0.1:{port}/metrics"
        return watcher

    def set_config(self, config_text):
        self.sim.must("PATCH", "/api/v1/namespaces/k8slb-system/configmaps/global",
                      {"data": {"config": config_text}}, "application/merge-patch+json")

    def scrape(self, watcher):
        with urllib.request.urlopen(watcher.metrics_url, timeout=5) as answer:
            self.assertEqual(answer.headers["Content-Type"], "text/plain; version=0.0.4; charset=utf-8")
            return answer.read().decode()

    def scraped(self, watcher, predicate, what, timeout=20):
        """The parsed scrape once `predicate` holds for it."""
        def attempt():
            try:
                samples = parse(self.scrape(watcher))
            except OSError:
                return None
            return samples if predicate(samples) else None
        return wait_until(attempt, timeout, what, details=watcher.log)

    def promtool_check(self, text):
        checked = subprocess.run([PROMTOOL, "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=30)
        self.assertEqual(checked.returncode, 0, checked.stdout + checked.stderr)

    def test_pools_services_and_pipeline_figures(self):
        watcher = self.start_with_metrics("w0")
        self.create_service("one", annotations={"loadbalancer/pool": "tiny"})
        self.create_service("two", annotations={"loadbalancer/pool": "tiny"})  # the pool holds one IP
        self.create_service("three")
        self.wait_ip("one")
        self.wait_ip("three")
        self.wait_event("two", "AllocationFailed")
        # Each process rewrites its own file within a second of a change, each on its own clock:
        # wait for every process's figures asserted below, not only the allocator's.
        samples = self.scraped(
            watcher, lambda s: value(s, "k8slb_allocation_failures", reason="AllocationFailed") == 1
            and value(s, "k8slb_services_allocated") == 2
            and (value(s, "k8slb_status_writes_total", result="written") or 0) >= 2
            and (value(s, "k8slb_api_requests_total", component="k8slb-apply cluster", verb="PATCH", code="200")
                 or 0) > 0
            and (value(s, "k8slb_api_requests_total", component="k8slb-watch", verb="GET", code="200") or 0) > 0,
            "the allocation figures and every process's API requests")
        self.promtool_check(self.scrape(watcher))
        # What kubectl shows: two Services with an IP, one waiting, the tiny pool full.
        # The figures kubectl k8slb pools shows: the ranges' sizes (harness.POOLS), in use, free.
        for pool, size, in_use in (("default", 20, 1), ("other", 10, 0), ("tiny", 1, 1)):
            self.assertEqual(value(samples, "k8slb_pool_addresses", pool=pool, family="IPv4"), size, pool)
            self.assertEqual(value(samples, "k8slb_pool_addresses_in_use", pool=pool, family="IPv4"), in_use, pool)
            self.assertEqual(value(samples, "k8slb_pool_addresses_free", pool=pool, family="IPv4"), size - in_use, pool)
        self.assertEqual(value(samples, "k8slb_allocation_failures", reason="InvalidService"), 0)
        self.assertEqual(value(samples, "k8slb_config_loaded"), 1)
        self.assertEqual(value(samples, "k8slb_config_stale"), 0)
        self.assertEqual(value(samples, "k8slb_leader"), 1)
        # Every document that wrote a status was timed from the change k8slb-watch saw.
        timed = value(samples, "k8slb_status_write_duration_seconds_count")
        self.assertGreaterEqual(timed, 1)
        print(f"\nstatus write after the change: mean "
              f"{value(samples, 'k8slb_status_write_duration_seconds_sum') / timed * 1000:.0f} ms over {timed:.0f}")
        # The API requests, by the process that made them.
        self.assertGreater(value(samples, "k8slb_api_requests_total", component="k8slb-apply cluster",
                                 verb="PATCH", code="200") or 0, 0)
        self.assertGreater(value(samples, "k8slb_api_requests_total", component="k8slb-watch",
                                 verb="GET", code="200") or 0, 0)
        # Each pipeline process keeps a live file.
        for name in ("k8slb-watch.prom", "k8slb-allocate.prom", "k8slb-apply-cluster.prom"):
            self.assertIsNotNone(value(samples, "k8slb_metrics_file_age_seconds", file=name), name)

    def test_a_refused_config_is_stale_and_a_relist_is_counted(self):
        watcher = self.start_with_metrics("w0")
        self.create_service("before")
        self.wait_ip("before")
        self.set_config(json.dumps({"pools": {"default": {"network": "192.0.2.0/33"}}}))
        self.scraped(watcher, lambda s: value(s, "k8slb_config_stale") == 1, "k8slb_config_stale 1")
        self.set_config(json.dumps(POOLS))
        self.scraped(watcher, lambda s: value(s, "k8slb_config_stale") == 0, "k8slb_config_stale 0 once fixed")
        # The server compacts past the watcher's resourceVersion: a relist, counted. The
        # compaction comes right after a change, before the next bookmark (1 s) can tell every
        # watch the newest resourceVersion: a watch resumed at the newest one is not expired.
        self.create_service("after")
        self.sim.fault(compact=True, drop_watches=True)
        self.wait_ip("after", timeout=40)
        self.sim.reset_faults()
        def relists(samples):
            return sum(v for (name, _), v in samples.items() if name == "k8slb_watch_relists_total")
        samples = self.scraped(watcher, lambda s: relists(s) >= 1, "a relist counted")
        self.assertGreaterEqual(value(samples, "k8slb_watch_reconnects_total", resource="services"), 1)
        self.promtool_check(self.scrape(watcher))

    def test_leadership_moves_with_the_lease(self):
        first = self.start_with_metrics("alpha")
        wait_until(lambda: self.holder() == "alpha", 20, "alpha to hold the lease")
        second = self.start_with_metrics("beta")
        self.scraped(first, lambda s: value(s, "k8slb_leader") == 1, "alpha leading")
        standby = self.scraped(second, lambda s: value(s, "k8slb_leader") == 0, "beta waiting")
        self.assertIsNone(value(standby, "k8slb_services_allocated"), "the standby allocates nothing")
        self.promtool_check(self.scrape(second))
        first.kill()
        samples = self.scraped(second, lambda s: value(s, "k8slb_leader") == 1, "beta leading", timeout=30)
        self.assertIsNotNone(value(samples, "k8slb_services_allocated"))

    def test_a_bad_metrics_address_is_refused_at_start(self):
        watcher = self.start_watcher("w0", {"METRICS_ADDR": "localhost:9402"})
        watcher.process.wait(timeout=10)
        self.assertEqual(watcher.process.returncode, 2)
        self.assertIn("METRICS_ADDR=localhost:9402", watcher.log())


if __name__ == "__main__":
    unittest.main()
