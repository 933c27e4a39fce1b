"""The actor's metrics: k8slb-apply node --metrics-addr with the real haproxy and keepalived in a
network namespace, scraped over HTTP (curl inside the namespace) as Prometheus would.

What is checked is what an operator reads: the exposition passes `promtool check metrics`, the
reloads, runtime updates, rejected configs and restarts counted are those that happened, the
stale flag follows the refused config, and keepalived's own state (from its notify_fifo) reads
MASTER on a node alone, with its VIP counted. Scraping's effect on the pipeline is measured
and printed ("FIGURES ..."), never asserted.
"""

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
import unittest

from helpers import Harness, haproxy_files

ADDRESS = "127.0.0.1:9402"  # the test's own namespace: no other process listens there


def figures(name, values):
    print("FIGURES %s: %s" % (name, json.dumps(values)), flush=True)


# keepalived.conf as k8slb-render writes it: the notify_fifo in the runtime dir.
KEEPALIVED_CONF = """global_defs {
  router_id local
  vrrp_version 3
  enable_script_security
  notify_fifo %(runtime)s/keepalived.fifo root
}

# pool test: first choice local
vrrp_instance test_local_v4 {
  state BACKUP
  interface veth0
  virtual_router_id 51
  priority 150
  advert_int 0.2
  virtual_ipaddress {
    192.0.2.100/32 dev veth0
  }
}
"""


def parse(text):
    """{'name{labels}': value} of an exposition's samples."""
    samples = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            series, value = line.rsplit(" ", 1)
            samples[series] = float(value)
    return samples


class MetricsTest(unittest.TestCase):
    def setUp(self):
        self.h = Harness(self)
        self.addCleanup(self.h.cleanup)
        if shutil.which("promtool") is None:
            raise unittest.SkipTest("promtool is not installed (Debian package prometheus)")

    def scrape(self):
        out = subprocess.run(self.h.netns_exec() + ["curl", "-sf", "--max-time", "5", "http://%s/metrics" % ADDRESS],
                             capture_output=True, text=True, timeout=10)
        self.assertEqual(out.returncode, 0, "no answer on %s: %s" % (ADDRESS, out.stderr))
        return out.stdout

    def check_with_promtool(self, text):
        checked = subprocess.run(["promtool", "check", "metrics"], input=text, capture_output=True, text=True,
                                 timeout=30)
        self.assertEqual(checked.returncode, 0, "promtool check metrics:\n%s%s\n%s" %
                         (checked.stdout, checked.stderr, text))

    def wait_for(self, series, value, timeout=15):
        """The scraped samples once `series` reads `value` (bounded)."""
        deadline = time.time() + timeout
        while True:
            samples = parse(self.scrape())
            if samples.get(series) == value or time.time() > deadline:
                self.assertEqual(samples.get(series), value, series)
                return samples
            time.sleep(0.1)

    def files(self, servers=(0, 1), extra_defaults=""):
        out = haproxy_files(self.h.runtime_dir, list(servers), extra_defaults=extra_defaults)
        out["keepalived.conf"] = KEEPALIVED_CONF % {"runtime": self.h.runtime_dir}
        return out

    def test_what_happened_is_counted(self):
        h = self.h
        h.add_veth()
        h.start_backends(2)
        apply = h.start_apply("--metrics-addr", ADDRESS)
        deadline = time.time() + 10
        while not os.path.exists(os.path.join(h.runtime_dir, "keepalived.fifo")) and time.time() < deadline:
            time.sleep(0.05)

        self.assertEqual(h.send(apply, self.files())["actions"], {"haproxy": "start", "keepalived": "start"})
        # keepalived says MASTER on its FIFO; the VIP is on veth0 and counted.
        samples = self.wait_for('k8slb_vrrp_state{vrrp_instance="test_local_v4",state="MASTER"}', 1)
        self.assertEqual(samples['k8slb_vrrp_state{vrrp_instance="test_local_v4",state="BACKUP"}'], 0)
        self.assertEqual(samples['k8slb_vrrp_transitions_total{vrrp_instance="test_local_v4",state="MASTER"}'], 1)
        samples = self.wait_for('k8slb_node_vips{family="IPv4"}', 1)
        self.assertEqual(samples['k8slb_node_vips{family="IPv6"}'], 0)
        self.assertGreater(samples["k8slb_last_apply_success_timestamp_seconds"], time.time() - 60)

        # A reload of haproxy, then new endpoints through the runtime API.
        self.assertEqual(h.send(apply, self.files(extra_defaults="  timeout queue 5s"))["actions"]["haproxy"], "reload")
        self.assertEqual(h.send(apply, self.files(servers=(1,), extra_defaults="  timeout queue 5s"))["actions"]
                         ["haproxy"], "runtime-update")
        # A config haproxy's checker refuses: counted, and both daemons run a stale config.
        refused = h.send(apply, self.files(extra_defaults="  no-such-keyword here"))
        self.assertEqual(refused["actions"], {"haproxy": "failed", "keepalived": "held"})
        samples = parse(self.scrape())
        self.assertEqual(samples['k8slb_daemon_reloads_total{daemon="haproxy",result="success"}'], 1)
        self.assertNotIn('k8slb_daemon_reloads_total{daemon="haproxy",result="failure"}', samples)
        self.assertEqual(samples['k8slb_runtime_updates_total{daemon="haproxy"}'], 1)
        self.assertEqual(samples['k8slb_config_rejected_total{daemon="haproxy"}'], 1)
        self.assertEqual(samples['k8slb_config_stale{daemon="haproxy"}'], 1)
        self.assertEqual(samples['k8slb_config_stale{daemon="keepalived"}'], 1)
        self.assertEqual(samples["k8slb_apply_duration_seconds_count"], 3)  # start, reload, runtime update
        self.check_with_promtool(self.scrape())

        # The next good config clears the stale flag.
        self.assertEqual(h.send(apply, self.files(extra_defaults="  timeout queue 6s"))["actions"]["haproxy"], "reload")
        samples = parse(self.scrape())
        self.assertEqual(samples['k8slb_config_stale{daemon="haproxy"}'], 0)
        self.assertEqual(samples['k8slb_config_stale{daemon="keepalived"}'], 0)
        self.assertEqual(samples['k8slb_daemon_reloads_total{daemon="haproxy",result="success"}'], 2)

        # A killed haproxy is restarted and counted.
        master = h.pid_file("haproxy.pid")
        os.kill(master, signal.SIGKILL)  # the master the tool under test started in our namespace
        samples = self.wait_for('k8slb_daemon_restarts_total{daemon="haproxy"}', 1)
        self.assertEqual(samples['k8slb_vrrp_state{vrrp_instance="test_local_v4",state="MASTER"}'], 1)

        # keepalived killed: its instance reads STOP until it is back, MASTER again.
        keepalived = h.pid_file("keepalived.pid")
        os.kill(keepalived, signal.SIGKILL)
        samples = self.wait_for('k8slb_daemon_restarts_total{daemon="keepalived"}', 1)
        self.wait_for('k8slb_vrrp_state{vrrp_instance="test_local_v4",state="MASTER"}', 1)
        samples = self.wait_for('k8slb_node_vips{family="IPv4"}', 1)
        self.assertGreaterEqual(samples['k8slb_vrrp_transitions_total{vrrp_instance="test_local_v4",state="MASTER"}'], 2)
        self.check_with_promtool(self.scrape())

    def test_scraping_does_not_slow_applies(self):
        """Runtime updates (the fastest change a node applies) timed with and without a scraper
        hammering /metrics; figures printed."""
        h = self.h
        h.start_backends(2)
        apply = h.start_apply("--no-keepalived", "--metrics-addr", ADDRESS)
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0]))["actions"], {"haproxy": "start"})

        def timed_changes(count):
            times = []
            for i in range(count):
                files = haproxy_files(h.runtime_dir, [0, 1] if i % 2 == 0 else [1])
                started = time.monotonic()
                self.assertEqual(h.send(apply, files)["actions"], {"haproxy": "runtime-update"})
                times.append(time.monotonic() - started)
            times.sort()
            return {"median_ms": round(1000 * times[len(times) // 2], 2),
                    "p90_ms": round(1000 * times[int(len(times) * 0.9)], 2),
                    "max_ms": round(1000 * times[-1], 2)}

        # A scraper: one connection per scrape, `rate` scrapes a second (0: as fast as it can), for
        # at most 60 s.
        scraper_code = (
            "import os, sys, time, urllib.request\n"
            "stop, rate, n, end = sys.argv[1], float(sys.argv[2]), 0, time.time() + 60\n"
            "while time.time() < end and not os.path.exists(stop):\n"
            "    urllib.request.urlopen('http://%s/metrics', timeout=5).read(); n += 1\n"
            "    if rate: time.sleep(1 / rate)\n"
            "print(n)\n" % ADDRESS)

        def with_scraper(rate, count):
            stop_file = os.path.join(h.tmp, "stop-scraper-%s" % rate)
            scraper = h.spawn([sys.executable, "-c", scraper_code, stop_file, str(rate)],
                              stdout=subprocess.PIPE, text=True)
            time.sleep(0.5)
            started = time.monotonic()
            result = timed_changes(count)
            seconds = time.monotonic() - started
            open(stop_file, "w").close()
            scrapes = int(scraper.communicate(timeout=30)[0])
            self.assertGreater(scrapes, 0, "the scraper never got an answer")
            return dict(result, scrapes_per_second=round(scrapes / (seconds + 0.5)))

        runs = {"no scraper": timed_changes(30), "10 scrapes/s": with_scraper(10, 30),
                "as fast as it can": with_scraper(0, 30), "no scraper again": timed_changes(30)}
        figures("metrics-scrape-vs-runtime-update", runs)
        samples = parse(self.scrape())
        self.assertEqual(samples['k8slb_runtime_updates_total{daemon="haproxy"}'], 120)


if __name__ == "__main__":
    unittest.main()
