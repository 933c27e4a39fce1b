"""k8slb-apply node against the real haproxy, nginx and keepalived, in network namespaces.

Each test makes its own namespace (k8slb-t-<pid>-<n>), backends and load client inside it,
and tears everything down in tearDown. Figures (reloads, requests, failures) are printed as
"FIGURES <test>: {...}" lines; docs/node.md quotes them. Only zero failures is asserted.
"""

import json
import os
import signal
import socket
import subprocess
import threading
import time
import unittest

from helpers import APPLY, VIP, Harness, backend_address, haproxy_files, nginx_files, read_line


def figures(name, values):
    print("FIGURES %s: %s" % (name, json.dumps(values)), flush=True)


def running(pid):
    """True while `pid` runs (a zombie whose parent has not reaped it yet has ended)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


class NodeTest(unittest.TestCase):
    def setUp(self):
        self.h = Harness(self)
        self.addCleanup(self.h.cleanup)


class HaproxyTest(NodeTest):
    def test_rejected_config_keeps_old_running(self):
        h = self.h
        h.start_backends(2)
        apply = h.start_apply("--no-keepalived")
        good = haproxy_files(h.runtime_dir, [0, 1])
        self.assertEqual(h.send(apply, good)["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        load = h.start_load()
        time.sleep(0.5)

        bad = dict(good)
        bad["haproxy.cfg"] = good["haproxy.cfg"].replace("  retries 3", "  retries 3\n  no-such-keyword here")
        result = h.send(apply, bad)
        self.assertEqual(result["actions"], {"haproxy": "failed"})
        self.assertEqual([p["reason"] for p in result["problems"]], ["ConfigRejected"])
        self.assertIn("no-such-keyword", result["problems"][0]["message"])
        self.assertIn("haproxy.cfg: rejected by `haproxy -c`", h.stderr())
        with open(os.path.join(h.config_dir, "haproxy.cfg")) as f:
            self.assertEqual(f.read(), good["haproxy.cfg"], "the installed config was replaced")
        time.sleep(0.5)

        # The stream carries on: the next good config is applied.
        changed = haproxy_files(h.runtime_dir, [0, 1], extra_defaults="  timeout queue 5s")
        self.assertEqual(h.send(apply, changed)["actions"], {"haproxy": "reload"})
        time.sleep(0.5)
        stats = h.stop_load(load)
        figures("haproxy-rejected", stats)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])

    def test_failed_reload_leaves_the_running_config_installed(self):
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--no-keepalived", "--start-timeout", "3")
        good = haproxy_files(h.runtime_dir, [0])
        self.assertEqual(h.send(apply, good)["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        # `haproxy -c` accepts a listen address that is not on the node (it does not bind);
        # the new worker cannot bind it, so the reload fails and the old worker serves on.
        unbindable = dict(good)
        unbindable["haproxy.cfg"] = good["haproxy.cfg"].replace(
            "  bind %s:80\n" % VIP, "  bind %s:80\n  bind 203.0.113.99:80\n" % VIP, 1)
        self.assertNotEqual(unbindable["haproxy.cfg"], good["haproxy.cfg"])
        for attempt in ("first", "same input again"):
            with self.subTest(attempt):
                result = h.send(apply, unbindable)
                self.assertEqual([p["reason"] for p in result["problems"]], ["ReloadFailed"], result)
                with open(os.path.join(h.config_dir, "haproxy.cfg")) as f:
                    self.assertEqual(f.read(), good["haproxy.cfg"],
                                     "the installed file must say what runs")
                h.wait_for_traffic()
        self.assertEqual(h.send(apply, good)["actions"], {"haproxy": "none"})

    def test_one_shot_from_dir(self):
        h = self.h
        h.start_backends(1)
        first = h.run_once(haproxy_files(h.runtime_dir, [0]), "--no-keepalived")
        self.assertEqual(first.returncode, 0, first.stderr)
        self.assertEqual(json.loads(first.stdout)["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        master = h.pid_file("haproxy.pid")

        same = h.run_once(haproxy_files(h.runtime_dir, [0]), "--no-keepalived")
        self.assertEqual(json.loads(same.stdout)["actions"], {"haproxy": "none"})

        bad = haproxy_files(h.runtime_dir, [0])
        bad["haproxy.cfg"] = bad["haproxy.cfg"].replace("  mode http\n", "  mode carrier-pigeon\n", 1)
        rejected = h.run_once(bad, "--no-keepalived")
        self.assertEqual(rejected.returncode, 1)
        self.assertIn("k8slb-apply: error: haproxy.cfg: rejected by `haproxy -c`", rejected.stderr)
        self.assertIn("carrier-pigeon", rejected.stderr)
        self.assertTrue(os.path.exists(os.path.join(h.config_dir, "haproxy.cfg.rejected")))
        h.wait_for_traffic()
        self.assertEqual(h.pid_file("haproxy.pid"), master, "haproxy was restarted")

    def haproxy_log(self):
        with open(os.path.join(self.h.runtime_dir, "haproxy.log"), errors="replace") as f:
            return f.read()

    def test_stop_is_graceful_for_daemons_of_a_one_shot_run(self):
        """--stop ends what --from-dir left running (systemd's ExecStop, a node's shutdown):
        HAProxy by its soft stop, so its worker finishes and exits 0, not SIGTERM's 143."""
        h = self.h
        h.start_backends(1)
        first = h.run_once(haproxy_files(h.runtime_dir, [0]), "--no-keepalived")
        self.assertEqual(first.returncode, 0, first.stderr)
        h.wait_for_traffic()
        master = h.pid_file("haproxy.pid")
        stop = subprocess.run(h.netns_exec() + [APPLY, "node", "--stop", "--no-keepalived", "--config-dir",
                                                h.config_dir, "--runtime-dir", h.runtime_dir],
                              capture_output=True, text=True, timeout=60)
        self.assertEqual(stop.returncode, 0, stop.stderr)
        self.assertIn(f"stopped haproxy (pid {master}, User defined signal 1)", stop.stderr)
        self.assertFalse(running(master), "haproxy still runs")
        self.assertRegex(self.haproxy_log(), r"worker \(\d+\) exited with code 0")
        self.assertNotIn("exited with code 143", self.haproxy_log())
        again = subprocess.run(h.netns_exec() + [APPLY, "node", "--stop", "--no-keepalived", "--config-dir",
                                                 h.config_dir, "--runtime-dir", h.runtime_dir],
                               capture_output=True, text=True, timeout=60)
        self.assertEqual(again.returncode, 0, again.stderr)
        self.assertIn("nothing running from", again.stderr)

    def test_sigterm_soft_stops_haproxy(self):
        """The actor's stop (SIGTERM to k8slb-apply node): HAProxy's worker exits 0."""
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--no-keepalived")
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0]))["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        apply.send_signal(signal.SIGTERM)
        self.assertEqual(apply.wait(timeout=30), 0)
        # The daemons' output goes to k8slb-apply's stderr in this mode.
        self.assertIn("stopped haproxy", h.stderr())
        self.assertRegex(h.stderr(), r"worker \(\d+\) exited with code 0")
        self.assertNotIn("exited with code 143", h.stderr())

    def test_one_shot_refuses_an_incomplete_set(self):
        # Issue 7 item 1: a set from a failed, interrupted or unfinished render is never applied.
        h = self.h
        h.start_backends(1)
        good = haproxy_files(h.runtime_dir, [0])
        other = haproxy_files(h.runtime_dir, [0], extra_defaults="  timeout queue 5s")
        cases = [
            ("no manifest (render failed or was killed before its end)", good, False,
             "no k8slb-render.json: not a complete set"),
            ("a file differs from the manifest (render still writing)", good, other,
             "haproxy.cfg: differs from the manifest"),
            ("a file the manifest names is missing", {"haproxy.cfg": good["haproxy.cfg"]}, good,
             "haproxy-servers.json: missing"),
        ]
        for description, files, manifest, message in cases:
            with self.subTest(description):
                result = h.run_once(files, "--no-keepalived", manifest=manifest)
                self.assertEqual(result.returncode, 1, result.stderr)
                self.assertIn(message, result.stderr)
                self.assertEqual(result.stdout, "")
                self.assertIsNone(h.pid_file("haproxy.pid"), "something was started")
                self.assertFalse(os.path.exists(os.path.join(h.config_dir, "haproxy.cfg")))
        complete = h.run_once(good, "--no-keepalived")
        self.assertEqual(complete.returncode, 0, complete.stderr)
        h.wait_for_traffic()

    def test_one_shot_partial_is_exit_3(self):
        # HAProxy updated, keepalived's config refused (its checker fails): applied in part, the
        # refusal named; exit 3, apart from "nothing applied" (1).
        h = self.h
        h.start_backends(1)
        files = dict(haproxy_files(h.runtime_dir, [0]), **{"keepalived.conf": "vrrp_instance x {}\n"})
        partial = h.run_once(files, "--keepalived", "/bin/false")
        self.assertEqual(partial.returncode, 3, partial.stderr)
        self.assertEqual(json.loads(partial.stdout)["actions"], {"haproxy": "start", "keepalived": "failed"})
        self.assertIn("k8slb-apply: error: keepalived.conf:", partial.stderr)

    def test_100_reloads_under_load_fail_no_request(self):
        h = self.h
        h.start_backends(2)
        apply = h.start_apply("--no-keepalived")
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0, 1]))["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        load = h.start_load()
        time.sleep(0.5)
        started = time.time()
        actions = []
        for i in range(100):
            files = haproxy_files(h.runtime_dir, [0, 1], extra_defaults="  timeout queue %ds" % (i + 2))
            actions.append(h.send(apply, files)["actions"]["haproxy"])
        reload_seconds = time.time() - started
        time.sleep(0.5)
        stats = h.stop_load(load)
        reloads, _ = h.haproxy_proc()
        figures("haproxy-100-reloads", dict(stats, reloads=reloads, reload_seconds=round(reload_seconds, 2)))
        self.assertEqual(actions, ["reload"] * 100)
        self.assertEqual(reloads, 100)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])

    def test_endpoint_churn_goes_through_the_runtime_api(self):
        h = self.h
        h.start_backends(4)
        apply = h.start_apply("--no-keepalived")
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0]))["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        reloads_before, workers_before = h.haproxy_proc()
        load = h.start_load()
        time.sleep(0.3)
        # Scale 1 -> 4 -> 1 endpoints and around, slot by slot, as endpoints come and go.
        steps = [[0], [0, 1], [0, 1, 2], [0, 1, 2, 3], [1, 2, 3], [2, 3], [3], [3, 0], [3, 0, 1]] * 4
        steps.append([0, 1, 2, 3])
        actions = []
        for servers in steps[1:]:
            actions.append(h.send(apply, haproxy_files(h.runtime_dir, servers))["actions"]["haproxy"])
            time.sleep(0.05)
        time.sleep(1.0)
        stats = h.stop_load(load)
        reloads_after, workers_after = h.haproxy_proc()
        figures("haproxy-endpoint-churn", dict(stats, changes=len(actions), reloads=reloads_after - reloads_before))
        self.assertEqual(actions, ["runtime-update"] * len(actions))
        self.assertEqual(reloads_after, reloads_before, "haproxy was reloaded")
        self.assertEqual(workers_after, workers_before, "the haproxy worker changed")
        self.assertEqual(stats["failed"], 0, stats["errors"])
        # The last step has all four endpoints: each of them got traffic through the VIP.
        final = h.start_load()
        time.sleep(1.0)
        reached = h.stop_load(final)["backends"]
        self.assertEqual(sorted(reached), sorted(backend_address(i) for i in range(4)))

    def test_a_burst_of_sets_is_coalesced(self):
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--no-keepalived")
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0]))["actions"], {"haproxy": "start"})
        reloads_before, _ = h.haproxy_proc()
        burst = [haproxy_files(h.runtime_dir, [0], extra_defaults="  timeout queue %ds" % (i + 2)) for i in range(20)]
        apply.stdin.write("".join(json.dumps({"files": files, "problems": []}) + "\n" for files in burst))
        apply.stdin.flush()
        # One result line per set applied; the last set is installed whatever happened between.
        answers = []
        while True:
            line = read_line(apply.stdout, 3)
            if not line:
                break
            answers.append(json.loads(line)["actions"]["haproxy"])
        with open(os.path.join(h.config_dir, "haproxy.cfg")) as f:
            self.assertEqual(f.read(), burst[-1]["haproxy.cfg"])
        reloads_after, _ = h.haproxy_proc()
        figures("haproxy-burst-of-20", {"applied": len(answers), "reloads": reloads_after - reloads_before})
        self.assertEqual(answers, ["reload"] * len(answers))
        self.assertEqual(reloads_after - reloads_before, len(answers))
        self.assertLess(len(answers), len(burst), "nothing was coalesced")
        h.wait_for_traffic()

    def test_killed_daemon_is_restarted(self):
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--no-keepalived")
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0]))["actions"], {"haproxy": "start"})
        h.wait_for_traffic()
        master = h.pid_file("haproxy.pid")
        os.kill(master, signal.SIGKILL)  # the master the tool under test started in our namespace
        deadline = time.time() + 15
        while time.time() < deadline:
            pid = h.pid_file("haproxy.pid")
            if pid and pid != master and os.path.exists("/proc/%d" % pid):
                break
            time.sleep(0.1)
        self.assertNotEqual(h.pid_file("haproxy.pid"), master, "haproxy was not restarted:\n" + h.stderr())
        h.wait_for_traffic(timeout=15)
        self.assertIn("killed by signal 9", h.stderr())
        self.assertIn("restarted haproxy", h.stderr())
        # Still listening to its input after the restart.
        self.assertEqual(h.send(apply, haproxy_files(h.runtime_dir, [0], extra_defaults="  timeout queue 3s"))
                         ["actions"], {"haproxy": "reload"})


class NginxTest(NodeTest):
    def test_30_reloads_under_load_fail_no_request(self):
        h = self.h
        h.start_backends(2)
        apply = h.start_apply("--proxy", "nginx", "--no-keepalived")
        self.assertEqual(h.send(apply, nginx_files(h.runtime_dir, [0, 1]))["actions"], {"nginx": "start"})
        h.wait_for_traffic()
        load = h.start_load()
        time.sleep(0.5)
        actions = []
        for i in range(30):
            files = nginx_files(h.runtime_dir, [0, 1], extra_http="  keepalive_timeout %d;" % (i + 10))
            actions.append(h.send(apply, files)["actions"]["nginx"])
            time.sleep(0.1)
        time.sleep(1.0)
        stats = h.stop_load(load)
        figures("nginx-30-reloads", dict(stats, reloads=len(actions)))
        self.assertEqual(actions, ["reload"] * 30)
        self.assertEqual(stats["failed"], 0, stats["errors"])

    def test_rejected_config_keeps_old_running(self):
        h = self.h
        h.start_backends(1)
        apply = h.start_apply("--proxy", "nginx", "--no-keepalived")
        good = nginx_files(h.runtime_dir, [0])
        self.assertEqual(h.send(apply, good)["actions"], {"nginx": "start"})
        h.wait_for_traffic()
        bad = nginx_files(h.runtime_dir, [0], extra_http="  no_such_directive on;")
        result = h.send(apply, bad)
        self.assertEqual(result["actions"], {"nginx": "failed"})
        self.assertIn("no_such_directive", result["problems"][0]["message"])
        h.wait_for_traffic()
        # A listen address that is not on the node (a VIP another node holds): `nginx -t`
        # binds, so it refuses the config unless the namespace allows non-local binds.
        elsewhere = nginx_files(h.runtime_dir, [0])
        elsewhere["nginx.conf"] = elsewhere["nginx.conf"].replace(
            "    listen %s:80;" % VIP, "    listen %s:80;\n    listen 203.0.113.99:80;" % VIP)
        result = h.send(apply, elsewhere)
        self.assertEqual(result["actions"], {"nginx": "failed"})
        self.assertIn("203.0.113.99:80 failed", result["problems"][0]["message"])
        h.wait_for_traffic()
        subprocess.run(h.netns_exec() + ["sysctl", "-q", "-w", "net.ipv4.ip_nonlocal_bind=1"], check=True)
        self.assertEqual(h.send(apply, elsewhere)["actions"], {"nginx": "reload"})
        h.wait_for_traffic()


    def test_unread_log_blocks_no_request(self):
        """nginx writes a line per request (access_log to its stderr); the tool's stderr is a
        pipe nobody reads for a while: nginx keeps serving (its lines are dropped, and counted,
        rather than fill the pipe), and once the log is read again its lines come as nginx's."""
        h = self.h
        h.start_backends(1)
        apply = h.spawn([APPLY, "node", "--config-dir", h.config_dir, "--runtime-dir", h.runtime_dir,
                         "--proxy", "nginx", "--no-keepalived"],
                        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                        env=dict(os.environ, LOG_FORMAT="logfmt", LOG_LEVEL="info"))
        files = nginx_files(h.runtime_dir, [0])
        files["nginx.conf"] = files["nginx.conf"].replace("access_log off;", "access_log /dev/stderr;")
        apply.stdin.write(json.dumps({"files": files, "problems": []}) + "\n")
        apply.stdin.flush()
        started = read_line(apply.stdout, 30)
        if not started:
            apply.wait(timeout=10)
        self.assertEqual(json.loads(started or "{}").get("actions"), {"nginx": "start"},
                         started or apply.stderr.read())
        h.wait_for_traffic()
        # A pipe holds 64 KiB: some 600 lines of access log. The load makes thousands.
        stats = json.loads(h.start_load(max_seconds=8)[0].communicate(timeout=40)[0])
        figures("nginx-unread-log", stats)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])
        self.assertTrue(running(apply.pid))
        # The log read again: the lines kept, then how many were dropped, all logfmt.
        os.set_blocking(apply.stderr.fileno(), False)
        data, deadline = b"", time.time() + 10
        while b"dropped" not in data and time.time() < deadline:
            try:
                data += os.read(apply.stderr.fileno(), 1 << 20)
            except BlockingIOError:
                time.sleep(0.1)
        text = data.decode(errors="replace")
        text = text[:text.rfind("\n") + 1]
        self.assertIn("line(s) of the daemons' output dropped: the log's reader was behind", text)
        lines = [line for line in text.splitlines() if line]
        self.assertTrue(any('component=nginx msg="' in line and '"GET / HTTP/1.' in line for line in lines), text[-2000:])
        for line in lines:
            self.assertRegex(line, r'^time=\S+ level=(error|warn|info|debug) component=(nginx|k8slb-apply) msg=')
        # Still applying (its log read again).
        os.set_blocking(apply.stderr.fileno(), True)
        threading.Thread(target=apply.stderr.buffer.read if hasattr(apply.stderr, "buffer") else apply.stderr.read,
                         daemon=True).start()
        apply.stdin.write(json.dumps({"files": nginx_files(h.runtime_dir, [0]), "problems": []}) + "\n")
        apply.stdin.flush()
        answer = read_line(apply.stdout, 30)
        self.assertEqual(json.loads(answer or "{}").get("actions"), {"nginx": "reload"}, (answer, apply.poll()))


KEEPALIVED_CONF = """global_defs {
  vrrp_version 3
  script_user root
  enable_script_security
}
vrrp_instance test_pool {
  state BACKUP
  interface veth0
  virtual_router_id 51
  priority 150
  advert_int 0.2
  virtual_ipaddress {
%s
  }
}
"""


class KeepalivedTest(NodeTest):
    def vips(self):
        out = subprocess.run(["ip", "-n", self.h.ns, "-o", "addr", "show", "dev", "veth0"],
                             capture_output=True, text=True).stdout
        return {word.split("/")[0] for line in out.splitlines() for word in line.split() if word.startswith("192.0.2.")}

    def start_master(self, apply):
        """Gives `apply` keepalived with one VIP, 192.0.2.100, and waits until it holds it."""
        one = {"keepalived.conf": KEEPALIVED_CONF % "    192.0.2.100/32"}
        self.assertEqual(self.h.send(apply, one)["actions"], {"keepalived": "start"})
        deadline = time.time() + 15
        while "192.0.2.100" not in self.vips() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("192.0.2.100", self.vips(), "keepalived did not take the VIP:\n" + self.h.stderr())

    def test_sighup_keeps_the_vip_on_the_master(self):
        h = self.h
        h.add_veth()
        apply = h.start_apply("--proxy", "kubeproxy")
        self.start_master(apply)
        # keepalived.conf may carry the VRRP password: root only.
        self.assertEqual(os.stat(os.path.join(h.config_dir, "keepalived.conf")).st_mode & 0o777, 0o600)

        two = {"keepalived.conf": KEEPALIVED_CONF % "    192.0.2.100/32\n    192.0.2.101/32"}
        self.assertEqual(h.send(apply, two)["actions"], {"keepalived": "reload"})
        # The VIP never leaves during and after the reload; the new one arrives.
        samples, missing = 0, 0
        deadline = time.time() + 3
        while time.time() < deadline:
            vips = self.vips()
            samples += 1
            missing += "192.0.2.100" not in vips
            time.sleep(0.02)
        self.assertEqual(missing, 0, "VIP missing in %d of %d samples" % (missing, samples))
        self.assertIn("192.0.2.101", self.vips())

        bad = {"keepalived.conf": KEEPALIVED_CONF.replace("interface veth0", "interface no-such-if") % "    192.0.2.100/32"}
        result = h.send(apply, bad)
        self.assertEqual(result["actions"], {"keepalived": "failed"})
        self.assertEqual(result["problems"][0]["reason"], "ConfigRejected")
        self.assertIn("192.0.2.100", self.vips())
        self.assertEqual(h.stderr().count("Entering MASTER STATE"), 1, h.stderr())

    def test_keepalived_logs_to_stderr_not_syslog(self):
        """keepalived's messages reach k8slb-apply's stderr and nothing else. Were they also sent
        to syslog (with LOG_CONS, as -l does), a node without a syslog daemon would have glibc
        write each one to /dev/console, slow on a serial console (bench/keepalived_bench.py:
        0.33-0.36 s from a reload to the new VIP with 10,000 VIPs, 0.12 s without syslog).
        Here /dev/log is a socket the test reads, in a mount namespace of the tool's own."""
        h = self.h
        h.add_veth()
        dev = os.path.join(h.tmp, "dev")
        os.makedirs(dev)
        syslog = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.addCleanup(syslog.close)
        syslog.bind(os.path.join(dev, "log"))
        syslog.settimeout(0.1)
        received, done = [], threading.Event()

        def read_syslog():  # as it comes: a syslog reader that stops reading blocks its writers
            while not done.is_set():
                try:
                    received.append(syslog.recv(4096))
                except socket.timeout:
                    pass
        reader = threading.Thread(target=read_syslog)
        reader.start()
        self.addCleanup(reader.join, 5)  # after done is set (cleanups run last first)
        self.addCleanup(done.set)
        devices = ("null", "zero", "random", "urandom")
        for name in devices:
            open(os.path.join(dev, name), "w").close()
        private_dev = "set -e; %s; mount --rbind %s /dev; exec \"$@\"" % (
            "; ".join("mount --bind /dev/%s %s/%s" % (name, dev, name) for name in devices), dev)
        apply = h.start_apply("--proxy", "kubeproxy",
                              wrap=["unshare", "--mount", "--propagation", "private", "sh", "-c", private_dev, "sh"])
        self.start_master(apply)
        self.assertIn("Entering MASTER STATE", h.stderr())
        time.sleep(0.5)
        self.assertEqual(received, [], "keepalived wrote to syslog")


class ProxyFirstTest(NodeTest):
    """Issue 7 item 3: keepalived only ever holds the VIPs the running proxy serves."""
    vips = KeepalivedTest.vips

    def test_rejected_proxy_config_holds_keepalived(self):
        h = self.h
        h.add_veth()
        h.start_backends(2)
        apply = h.start_apply()

        def files(vip, extra_defaults=""):
            out = haproxy_files(h.runtime_dir, [0, 1], extra_defaults=extra_defaults)
            out["haproxy.cfg"] = out["haproxy.cfg"].replace("  bind %s:80\n" % VIP, "  bind %s:80 transparent\n" % vip)
            out["keepalived.conf"] = KEEPALIVED_CONF % ("    %s/32" % vip)
            return out

        good = files("192.0.2.100")
        self.assertEqual(h.send(apply, good)["actions"], {"haproxy": "start", "keepalived": "start"})
        deadline = time.time() + 15
        while "192.0.2.100" not in self.vips() and time.time() < deadline:
            time.sleep(0.05)
        self.assertIn("192.0.2.100", self.vips(), "keepalived did not take the VIP:\n" + h.stderr())
        h.wait_for_traffic("http://192.0.2.100/")
        load = h.start_load("http://192.0.2.100/")
        time.sleep(0.5)

        # The new set moves the Service to a new VIP, but HAProxy's checker rejects its config:
        # keepalived must not be reloaded (it would drop the VIP the running HAProxy serves).
        moved = files("192.0.2.101", extra_defaults="  no-such-keyword here")
        result = h.send(apply, moved)
        self.assertEqual(result["actions"], {"haproxy": "failed", "keepalived": "held"}, result)
        self.assertEqual([p["reason"] for p in result["problems"]], ["ConfigRejected", "ProxyNotUpdated"])
        self.assertIn("keepalived.conf: not applied: haproxy did not take its new config", h.stderr())
        time.sleep(1.0)
        self.assertEqual(self.vips() & {"192.0.2.100", "192.0.2.101"}, {"192.0.2.100"})
        with open(os.path.join(h.config_dir, "keepalived.conf")) as f:
            self.assertEqual(f.read(), good["keepalived.conf"], "the installed keepalived.conf was replaced")
        self.assertNotIn("Reloading", h.stderr())
        stats = h.stop_load(load)
        figures("proxy-first-rejected", stats)
        self.assertGreater(stats["ok"], 0)
        self.assertEqual(stats["failed"], 0, stats["errors"])

        # Once HAProxy takes the new config, keepalived follows.
        result = h.send(apply, files("192.0.2.101"))
        self.assertEqual(result["actions"], {"haproxy": "reload", "keepalived": "reload"}, result)


BIRD_CONF = """router id 192.0.2.1;
log stderr all;
protocol device k8slb_device {
}
protocol static k8slb_vips_v4 {
  ipv4;
%s}
protocol static k8slb_vips_v6 {
  ipv6;
%s}
"""


def bird_conf(*vips):
    v4 = "".join("  route %s/32 blackhole;\n" % v for v in vips if ":" not in v)
    v6 = "".join("  route %s/128 blackhole;\n" % v for v in vips if ":" in v)
    return BIRD_CONF % (v4, v6)


class BirdTest(NodeTest):
    """Issue 12: bird.conf checked with `bird -p`, bird started, reloaded with `birdc configure`,
    its VIPs on the loopback; a rejected file leaves bird and the installed file as they were; a
    stop withdraws the routes and takes the VIPs off the loopback."""

    def setUp(self):
        super().setUp()
        if subprocess.run(["which", "bird"], capture_output=True).returncode != 0:
            self.skipTest("bird is not installed")

    def loopback(self):
        out = subprocess.run(["ip", "-n", self.h.ns, "-o", "addr", "show", "dev", "lo"],
                             capture_output=True, text=True).stdout
        return {line.split()[3].split("/")[0] for line in out.splitlines()}

    def routes(self):
        out = subprocess.run(self.h.netns_exec() + ["birdc", "-s", os.path.join(self.h.runtime_dir, "bird.ctl"),
                                                    "show", "route"], capture_output=True, text=True).stdout
        return {word.split("/")[0] for word in out.split() if "/" in word}

    def bird_pid(self):
        with open(os.path.join(self.h.runtime_dir, "bird.pid")) as f:
            return int(f.read().split()[0])

    def test_checked_reloaded_and_on_the_loopback(self):
        h = self.h
        apply = h.start_apply("--proxy", "kubeproxy", "--no-keepalived")
        result = h.send(apply, {"bird.conf": bird_conf("192.0.2.100", "2001:db8::100")})
        self.assertEqual(result["actions"], {"bird": "start"}, h.stderr())
        self.assertTrue({"192.0.2.100", "2001:db8::100"} <= self.loopback(), self.loopback())
        self.assertTrue({"192.0.2.100", "2001:db8::100"} <= self.routes(), self.routes())
        # bird.conf may hold BGP passwords: root only.
        self.assertEqual(os.stat(os.path.join(h.config_dir, "bird.conf")).st_mode & 0o777, 0o600)
        pid = self.bird_pid()

        result = h.send(apply, {"bird.conf": bird_conf("192.0.2.101")})
        self.assertEqual(result["actions"], {"bird": "reload"}, h.stderr())
        self.assertEqual(self.bird_pid(), pid, "bird was restarted, not reconfigured")
        self.assertIn("192.0.2.101", self.loopback())
        self.assertFalse({"192.0.2.100", "2001:db8::100"} & self.loopback(), self.loopback())
        self.assertEqual(self.routes() & {"192.0.2.100", "192.0.2.101", "2001:db8::100"}, {"192.0.2.101"})

        bad = {"bird.conf": bird_conf("192.0.2.102").replace("log stderr all;", "log stderr all;\nno-such-option;")}
        result = h.send(apply, bad)
        self.assertEqual(result["actions"], {"bird": "failed"})
        self.assertEqual([p["reason"] for p in result["problems"]], ["ConfigRejected"])
        self.assertIn("bird.conf: rejected by `bird -p`", h.stderr())
        with open(os.path.join(h.config_dir, "bird.conf")) as f:
            self.assertEqual(f.read(), bird_conf("192.0.2.101"), "the installed bird.conf was replaced")
        self.assertNotIn("192.0.2.102", self.loopback())
        self.assertEqual(self.bird_pid(), pid)

        apply.send_signal(signal.SIGTERM)
        apply.wait(timeout=30)
        self.assertFalse(running(pid), "bird still runs after the stop")
        self.assertNotIn("192.0.2.101", self.loopback())
        self.assertIn("bird: VIP routes withdrawn", h.stderr())


if __name__ == "__main__":
    unittest.main()
