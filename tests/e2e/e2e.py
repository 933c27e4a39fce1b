"""Shared pieces of the end-to-end tests: paths, skipping, backends, probes, SMTP sink."""

import json
import os
import shutil
import signal
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import netns  # noqa: E402

SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
PYTHON = sys.executable


def tool(name):
    """Path of a built k8slb tool (K8SLB_BINARY_DIR/<name>), or None when not built."""
    path = os.path.join(BINARY_DIR, name)
    return path if os.access(path, os.X_OK) else None


def require_tools(test, *names):
    missing = [name for name in names if not tool(name)]
    if missing:
        test.fail(f"not built in {BINARY_DIR}: {', '.join(missing)}")


class NetnsTestCase(unittest.TestCase):
    """A test with its own work directory and Topology, removed whatever happens.

    Skips (clearly) only when the machine cannot create network namespaces."""

    lb_count = 2
    pods = ()
    keep_workdir = os.environ.get("K8SLB_E2E_KEEP") == "1"

    def setUp(self):
        try:
            netns.check_available()
        except netns.Unavailable as error:
            self.skipTest(f"network namespaces unavailable: {error}")
        self.workdir = tempfile.mkdtemp(prefix=f"k8slb-e2e-{self._testMethodName}-")
        self.addCleanup(self._remove_workdir)
        self.topology = netns.Topology(self._testMethodName.removeprefix("test_"), self.workdir,
                                       lb_count=self.lb_count, pods=list(self.pods))
        self.addCleanup(self.topology.close)
        self.addCleanup(self._dump_logs_on_failure)

    def _remove_workdir(self):
        if not self.keep_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def _dump_logs_on_failure(self):
        outcome = getattr(self, "_outcome", None)
        failed = outcome is not None and not getattr(outcome, "success", True)
        if not failed and os.environ.get("K8SLB_E2E_VERBOSE") != "1":
            return
        for name in sorted(os.listdir(self.workdir)):
            if name.endswith(".log"):
                with open(os.path.join(self.workdir, name), errors="replace") as log:
                    tail = log.read()[-3000:]
                print(f"----- {name} (tail) -----\n{tail}", file=sys.stderr)

    # --- helpers ------------------------------------------------------------------------

    def start_backend(self, kind, address, port, name=""):
        """A pod: backend.py in the pods namespace, waited for (bounded)."""
        argv = [PYTHON, os.path.join(HERE, "backend.py"), kind, address, str(port)]
        if name:
            argv.append(name)
        process = self.topology.pods.spawn(argv, f"pod-{name or address}-{port}")
        netns.wait_until(
            lambda: netns.listening(self.topology.pods, address, port, udp=kind == "udp-echo"),
            10, what=f"backend {address}:{port}")
        return process

    def start_smtp_sink(self, host, port, directory):
        os.makedirs(directory, exist_ok=True)
        process = host.spawn([PYTHON, os.path.join(HERE, "smtp_sink.py"), "127.0.0.1", str(port),
                              directory], f"smtp-{host.role}")
        netns.wait_until(lambda: netns.listening(host, "127.0.0.1", port), 10,
                         what=f"SMTP sink in {host.role}")
        return process

    def curl(self, url, *extra, host=None, timeout=3):
        """curl from the client namespace; returns (exit status, body)."""
        host = host or self.topology.client
        result = host.run(["curl", "-sS", "-g", "--max-time", str(timeout), *extra, url],
                          check=False, timeout=timeout + 5)
        return result.returncode, result.stdout + result.stderr

    def wait_for_body(self, url, expected, *extra, timeout=30):
        """Waits until curl from the client returns a body containing `expected`."""
        def ok():
            status, body = self.curl(url, *extra, timeout=2)
            return status == 0 and expected in body
        return netns.wait_until(ok, timeout, interval=0.1, what=f"{expected!r} from {url}")

    def holder_of(self, vip):
        """The load-balancer nodes holding `vip` on eth0."""
        return [host.role for host in self.topology.lb_nodes if host.holds(vip)]

    def start_probe(self, url, duration):
        out = os.path.join(self.workdir, f"probe-{time.monotonic_ns()}.json")
        process = self.topology.client.spawn(
            [PYTHON, os.path.join(HERE, "probe.py"), url, "--interval", "0.02", "--timeout",
             "0.2", "--duration", str(duration), "--out", out], "probe")
        process.report_path = out
        return process

    def probe_report(self, process):
        with open(process.report_path) as report:
            return json.load(report)

    def stop_probe(self, process):
        open(process.report_path + ".stop", "w").close()
        self.topology.stop(process, timeout=10)
        return self.probe_report(process)


def record_figure(name, value, unit="s"):
    """Appends a measured figure to $K8SLB_E2E_FIGURES (or the work dir), for docs/e2e.md."""
    line = json.dumps({"figure": name, "value": value, "unit": unit, "time": time.time()})
    print(f"FIGURE {name} = {value} {unit}", file=sys.stderr)
    path = os.environ.get("K8SLB_E2E_FIGURES")
    if path:
        with open(path, "a") as figures:
            figures.write(line + "\n")
