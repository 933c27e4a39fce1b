"""Test harness for k8slb-apply node with real daemons inside network namespaces.

Everything a test starts is recorded here and torn down in cleanup(), whatever happened:
processes are killed by PID (only those started by the test, or by the tool under test inside
the test's own namespace), namespaces are deleted. Addresses come from the documentation
prefixes: VIPs from 192.0.2.0/24, backends from 198.51.100.0/24.
"""

import json
import os
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR", os.path.join(HERE, "..", "..", "build"))
APPLY = os.path.join(BINARY_DIR, "k8slb-apply")
VIP = "192.0.2.10"


def backend_address(i):
    return "198.51.100.%d" % (i + 1)


class Harness:
    """One namespace, a temp dir, and the processes started in it."""

    counter = 0

    def __init__(self, test):
        Harness.counter += 1
        self.test = test
        self.ns = "k8slb-t-%d-%d" % (os.getpid(), Harness.counter)
        self.tmp = tempfile.mkdtemp(prefix="k8slb-node-")
        self.config_dir = os.path.join(self.tmp, "etc")
        self.runtime_dir = os.path.join(self.tmp, "run")
        os.makedirs(self.runtime_dir)
        self.processes = []
        self.ns_made = False
        if not os.path.exists(APPLY):
            raise unittest.SkipTest("no %s (build k8slb-apply first)" % APPLY)
        for tool in ("haproxy", "nginx", "keepalived"):
            if shutil.which(tool) is None:
                raise unittest.SkipTest("%s is not installed" % tool)
        made = subprocess.run(["ip", "netns", "add", self.ns], capture_output=True, text=True)
        if made.returncode != 0:
            raise unittest.SkipTest("cannot make a network namespace: " + made.stderr.strip())
        self.ns_made = True
        self.ip("link", "set", "lo", "up")
        self.ip("addr", "add", VIP + "/32", "dev", "lo")

    # ---- plumbing ----

    def ip(self, *args):
        subprocess.run(["ip", "-n", self.ns] + list(args), check=True, capture_output=True, text=True)

    def add_veth(self):
        """veth0 (192.0.2.1/24) and its peer veth1, up: an interface for keepalived's VIPs."""
        self.ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        self.ip("addr", "add", "192.0.2.1/24", "dev", "veth0")
        self.ip("link", "set", "veth0", "up")
        self.ip("link", "set", "veth1", "up")

    def netns_exec(self):
        return ["ip", "netns", "exec", self.ns]

    def spawn(self, argv, wrap=(), **kwargs):
        """Starts `argv` in the namespace; `wrap`: a command that execs the rest (unshare ...)."""
        process = subprocess.Popen(list(wrap) + self.netns_exec() + argv, **kwargs)
        self.processes.append(process)
        return process

    def cleanup(self):
        for process in reversed(self.processes):
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
                try:
                    process.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait(timeout=5)
            for stream in (process.stdin, process.stdout, process.stderr):
                if stream:
                    stream.close()
        if self.ns_made:
            # Whatever still runs in our namespace was started by this test (daemons the tool
            # started in one-shot mode, for instance).
            for _ in range(50):
                pids = subprocess.run(["ip", "netns", "pids", self.ns], capture_output=True, text=True).stdout.split()
                if not pids:
                    break
                for pid in pids:
                    try:
                        os.kill(int(pid), signal.SIGKILL)
                    except (ProcessLookupError, ValueError):
                        pass
                time.sleep(0.1)
            subprocess.run(["ip", "netns", "del", self.ns], capture_output=True)
        shutil.rmtree(self.tmp, ignore_errors=True)

    # ---- backends and load ----

    def start_backends(self, count, port=8080):
        for i in range(count):
            self.ip("addr", "add", backend_address(i) + "/32", "dev", "lo")
        addresses = ["%s:%d" % (backend_address(i), port) for i in range(count)]
        process = self.spawn([sys.executable, os.path.join(HERE, "backend.py")] + addresses,
                             stdout=subprocess.PIPE, text=True)
        line = read_line(process.stdout, 10)
        self.test.assertEqual(line.strip(), "ready", "backends did not start")
        return process

    def start_load(self, url="http://%s/" % VIP, workers=4, max_seconds=55):
        stop_file = os.path.join(self.tmp, "stop-load-%d" % len(self.processes))
        process = self.spawn([sys.executable, os.path.join(HERE, "load.py"), url, str(workers),
                              stop_file, str(max_seconds)], stdout=subprocess.PIPE, text=True)
        return process, stop_file

    def stop_load(self, load):
        process, stop_file = load
        open(stop_file, "w").close()
        out, _ = process.communicate(timeout=30)
        return json.loads(out)

    def wait_for_traffic(self, url="http://%s/" % VIP, timeout=10):
        deadline = time.time() + timeout
        while time.time() < deadline:
            probe = subprocess.run(self.netns_exec() + ["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}",
                                                        "--max-time", "2", url], capture_output=True, text=True)
            if probe.stdout == "200":
                return
            time.sleep(0.1)
        self.test.fail("no traffic through %s within %d s" % (url, timeout))

    # ---- the tool ----

    def start_apply(self, *extra, wrap=()):
        with open(os.path.join(self.tmp, "apply.stderr"), "w") as stderr:
            return self.spawn([APPLY, "node", "--config-dir", self.config_dir, "--runtime-dir", self.runtime_dir]
                              + list(extra), wrap=wrap, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              stderr=stderr, text=True)

    def send(self, apply, files, timeout=30):
        """Writes one set, returns the tool's result line for it."""
        apply.stdin.write(json.dumps({"files": files, "problems": []}) + "\n")
        apply.stdin.flush()
        line = read_line(apply.stdout, timeout)
        self.test.assertTrue(line, "k8slb-apply gave no answer; stderr:\n" + self.stderr())
        return json.loads(line)

    def stderr(self):
        with open(os.path.join(self.tmp, "apply.stderr")) as f:
            return f.read()

    def run_once(self, files, *extra, manifest=None):
        """k8slb-apply node --from-dir with `files` written as k8slb-render --output-dir writes
        them: the files, then the manifest k8slb-render.json (`manifest`: the files it names;
        default all of them; False: no manifest)."""
        source = os.path.join(self.tmp, "in")
        shutil.rmtree(source, ignore_errors=True)
        os.makedirs(source)
        for name, content in files.items():
            with open(os.path.join(source, name), "w") as f:
                f.write(content)
        if manifest is not False:
            with open(os.path.join(source, "k8slb-render.json"), "w") as f:
                f.write(render_manifest(files if manifest is None else manifest))
        return subprocess.run(self.netns_exec() + [APPLY, "node", "--from-dir", source, "--config-dir",
                                                   self.config_dir, "--runtime-dir", self.runtime_dir] + list(extra),
                              capture_output=True, text=True, timeout=60)

    def pid_file(self, name):
        try:
            with open(os.path.join(self.runtime_dir, name)) as f:
                return int(f.read().strip())
        except (OSError, ValueError):
            return None

    def master_cli(self, command):
        return socket_command(os.path.join(self.runtime_dir, "haproxy-master.sock"), command)

    def haproxy_proc(self):
        """(reloads, [current worker pids]) from the master CLI."""
        text = self.master_cli("show proc")
        reloads, workers, section = None, [], None
        for line in text.splitlines():
            words = line.split()
            if not words:
                continue
            if words[0].startswith("#"):
                section = "old" if "old" in line else ("workers" if "workers" in line else "master")
                continue
            if len(words) >= 3 and words[1] == "master":
                reloads = int(words[2])
            elif section == "workers" and words[1] == "worker":
                workers.append(int(words[0]))
        return reloads, workers


def stable_hash(data):
    """k8slb-render's stable hash: FNV-1a 64, then the splitmix64 finaliser."""
    mask = 0xFFFFFFFFFFFFFFFF
    value = 14695981039346656037
    for byte in data:
        value = ((value ^ byte) * 1099511628211) & mask
    value = (value + 0x9E3779B97F4A7C15) & mask
    value = ((value ^ (value >> 30)) * 0xBF58476D1CE4E5B9) & mask
    value = ((value ^ (value >> 27)) * 0x94D049BB133111EB) & mask
    return "%016x" % (value ^ (value >> 31))


def render_manifest(files):
    """The manifest k8slb-render --output-dir writes last: names, sizes and hashes."""
    return json.dumps({"k8slb-render": 1, "files": {
        name: {"bytes": len(content.encode()), "hash": stable_hash(content.encode())}
        for name, content in files.items()}}, indent=2) + "\n"


def socket_command(path, command, timeout=5):
    import socket
    s = socket.socket(socket.AF_UNIX)
    s.settimeout(timeout)
    s.connect(path)
    s.sendall((command + "\n").encode())
    out = b""
    while not out.endswith(b"\n\n"):
        chunk = s.recv(65536)
        if not chunk:
            break
        out += chunk
    s.close()
    return out.decode()


def read_line(stream, timeout):
    """One line from a pipe, waiting at most `timeout` seconds ("" on timeout or end)."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        ready, _, _ = select.select([stream], [], [], max(0.0, deadline - time.time()))
        if ready:
            return stream.readline()
    return ""


# ---- configs, in the shape k8slb-render prints them ----

def haproxy_files(runtime_dir, servers, slots=4, extra_defaults="", port=8080):
    """haproxy.cfg + haproxy-servers.json with `servers` (indexes of backends) filled in."""
    table = []
    lines = []
    for slot in range(slots):
        if slot < len(servers):
            address, enabled = backend_address(servers[slot]), True
            lines.append("  server s%d %s:%d check inter 1s" % (slot + 1, address, port))
            table.append({"name": "s%d" % (slot + 1), "address": address, "port": port, "enabled": True})
        else:
            lines.append("  server s%d 0.0.0.0:0 check inter 1s disabled" % (slot + 1))
            table.append({"name": "s%d" % (slot + 1), "address": "0.0.0.0", "port": 0, "enabled": False})
    cfg = """# Generated for tests/node; shaped like k8slb-render's output.
global
  master-worker
  stats socket %(runtime)s/haproxy.sock mode 600 level admin expose-fd listeners
  hard-stop-after 5s

defaults
  mode http
  timeout connect 2s
  timeout client 10s
  timeout server 10s
  timeout check 2s
  option redispatch
  retries 3
%(extra)s
frontend test_web_80_v4
  bind %(vip)s:80
  default_backend test_web_80

# test/web port 80: %(ready)d ready of %(slots)d slots
backend test_web_80
  mode http
%(servers)s
""" % {"runtime": runtime_dir, "extra": extra_defaults, "vip": VIP, "ready": len(servers), "slots": slots,
       "servers": "\n".join(lines)}
    return {"haproxy.cfg": cfg, "haproxy-servers.json": json.dumps({"test_web_80": table}, indent=2) + "\n"}


def nginx_files(runtime_dir, servers, extra_http="", port=8080):
    upstream = "\n".join("    server %s:%d;" % (backend_address(i), port) for i in servers)
    conf = """# Generated for tests/node; shaped like k8slb-render's output.
pid %(runtime)s/nginx.pid;
error_log stderr notice;
events {}
http {
  access_log off;
%(extra)s
  upstream test_web_80 {
%(upstream)s
  }
  server {
    listen %(vip)s:80;
    location / {
      proxy_pass http://test_web_80;
      proxy_next_upstream error timeout;
    }
  }
}
""" % {"runtime": runtime_dir, "extra": extra_http, "upstream": upstream, "vip": VIP}
    return {"nginx.conf": conf}
