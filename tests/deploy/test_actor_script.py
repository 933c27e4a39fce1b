"""actor.sh as the DaemonSet starts it, where /proc/sys is read-only (an unprivileged container
with hostNetwork): it warns about ip_nonlocal_bind only for the proxy that needs it (nginx;
HAProxy binds with `transparent`, kube-proxy binds nothing)."""

import os
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import pod  # noqa: E402

WHY_NOT = pod.usable()
ACTOR = os.path.join(pod.SOURCE_DIR, "scripts", "actor.sh")
WARNING = "cannot set net.ipv4.ip_nonlocal_bind=1"


def actor_log(proxy, workdir, seconds=1.5, env=None):
    """Starts actor.sh with a read-only /proc/sys (and ip_nonlocal_bind off in a fresh network
    namespace), stops it with SIGTERM after `seconds`, returns its log."""
    env = dict(os.environ, NODE_NAME="node1", PROXY=proxy, K8SLB_BIN=pod.BINARY_DIR,
               RUN_DIR=os.path.join(workdir, "run"), CONFIG_DIR=os.path.join(workdir, "etc"),
               KUBECONFIG=os.path.join(workdir, "no-kubeconfig"), RESTART_DELAY_MAX="1", **(env or {}))
    log_path = os.path.join(workdir, f"actor-{proxy}.log")
    with open(log_path, "wb") as log:
        process = subprocess.Popen(
            ["unshare", "--mount", "--net", "--propagation", "private", "--", "sh", "-c",
             'mount -o bind,ro /proc/sys /proc/sys && exec "$@"', "sh", "bash", ACTOR],
            env=env, stdout=log, stderr=log, stdin=subprocess.DEVNULL, start_new_session=True)
    try:
        time.sleep(seconds)
    finally:
        if process.poll() is None:
            os.kill(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=10)
    with open(log_path, errors="replace") as f:
        return f.read()


@unittest.skipIf(WHY_NOT, f"pods cannot run here: {WHY_NOT}")
class ActorSysctlTest(unittest.TestCase):
    CASES = [("haproxy", False), ("kubeproxy", False), ("nginx", True)]

    def test_ip_nonlocal_bind_warning_only_where_needed(self):
        for proxy, warns in self.CASES:
            with self.subTest(proxy=proxy), tempfile.TemporaryDirectory(prefix="k8slb-deploy-") as workdir:
                log = actor_log(proxy, workdir)
                self.assertIn("node node1, proxy", log, log)
                self.assertEqual(WARNING in log, warns, log)



class ActorToolsTest(unittest.TestCase):
    def test_missing_tools_are_an_error_at_start(self):
        env = dict(os.environ, NODE_NAME="node1", K8SLB_BIN="/nonexistent")
        result = subprocess.run(["bash", ACTOR, "once"], env=env, capture_output=True, text=True, timeout=20,
                                stdin=subprocess.DEVNULL)
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("/nonexistent/k8slb-watch: not found", result.stderr)

    def test_bad_settings_are_an_error_at_start(self):
        cases = [({"WATCH_EVENTS": "yes"}, "WATCH_EVENTS: 'yes' is not true or false"),
                 ({"WATCH_RESYNC": "10"}, "WATCH_RESYNC: '10' is not a duration such as 10m"),
                 ({"WATCH_EVENTS": "false", "WATCH_DEBOUNCE": "1h"}, "WATCH_DEBOUNCE: '1h' is not a duration"),
                 ({"EVENTS": "1"}, "EVENTS: '1' is not true or false"),
                 ({"SERVER_SLOTS": "0"}, "SERVER_SLOTS: '0' is not 1-4096"),
                 ({"SERVER_SLOTS": "8;rm"}, "SERVER_SLOTS: '8;rm' is not 1-4096"),
                 ({"SHARED_PORTS": "80 443"}, "SHARED_PORTS: '80 443' is not a list of ports such as 80,5432"),
                 ({"SHARED_PORTS": "80,$(id)"}, "SHARED_PORTS: '80,$(id)' is not a list of ports"),
                 ({"SHARED_PORTS": "80,70000"}, "SHARED_PORTS: 70000 is not a port 1-65535"),
                 ({"SHARED_PORTS": "0"}, "SHARED_PORTS: '0' is not a list of ports"),
                 ({"SHARED_PORTS": "080"}, "SHARED_PORTS: '080' is not a list of ports"),
                 ({"SHARED_PORTS": "80", "PROXY": "kubeproxy"},
                  "SHARED_PORTS: shared ports are for PROXY=haproxy or nginx, not kubeproxy")]
        for settings, message in cases:
            with self.subTest(settings=settings):
                env = dict(os.environ, NODE_NAME="node1", K8SLB_BIN=pod.BINARY_DIR, **settings)
                result = subprocess.run(["bash", ACTOR, "once"], env=env, capture_output=True, text=True, timeout=20,
                                        stdin=subprocess.DEVNULL)
                self.assertEqual(result.returncode, 2, result.stderr)
                self.assertIn(message, result.stderr)


if __name__ == "__main__":
    unittest.main()
