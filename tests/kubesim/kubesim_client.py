"""Start and drive the Kubernetes API simulator (kubesim.py) from Python tests.

    import kubesim_client
    sim = kubesim_client.start(workdir)        # waits for "ready"
    try:
        sim.request("POST", "/api/v1/namespaces/default/services", {...})
        sim.fault(errors_500=2)
        print(sim.stats()["requests"])
    finally:
        sim.stop()

Standard library only. The simulator runs as a child process that this module starts and
stops by its PID; stop() is also registered with atexit so a failing test does not leave it
running.
"""

import atexit
import http.client
import json
import os
import select
import signal
import ssl
import subprocess
import sys
import time
import urllib.parse

HERE = os.path.dirname(os.path.abspath(__file__))
KUBESIM = os.path.join(HERE, "kubesim.py")


class ApiResponse:
    def __init__(self, status, headers, body):
        self.status = status
        self.headers = headers
        self.body = body

    def __repr__(self):
        return f"ApiResponse({self.status}, {self.body!r})"


class Simulator:
    """A running kubesim: its URL, files and a small HTTPS client."""

    def __init__(self, process, workdir, url):
        self.process = process
        self.pid = process.pid
        self.workdir = workdir
        self.url = url
        self.port = int(urllib.parse.urlsplit(url).port)
        self.kubeconfig = os.path.join(workdir, "kubeconfig")
        self.ca_file = os.path.join(workdir, "ca.crt")
        with open(os.path.join(workdir, "token")) as f:
            self.token = f.read().strip()
        self.ssl_context = ssl.create_default_context(cafile=self.ca_file)

    # -- HTTP --

    def connection(self, timeout=30):
        return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout,
                                           context=self.ssl_context)

    # True: this client's requests carry X-Sim-Exempt: 1, so that injected faults hit only the
    # programs under test, never the test's own observer.
    exempt = False

    def request(self, method, path, body=None, content_type="application/json", token=None,
                headers=None, timeout=30):
        """One request on a fresh connection; returns ApiResponse with the decoded JSON body."""
        conn = self.connection(timeout)
        try:
            all_headers = {"Accept": "application/json",
                           "Authorization": f"Bearer {self.token if token is None else token}"}
            if self.exempt:
                all_headers["X-Sim-Exempt"] = "1"
            if token == "":
                del all_headers["Authorization"]
            data = None
            if body is not None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                all_headers["Content-Type"] = content_type
            all_headers.update(headers or {})
            conn.request(method, path, body=data, headers=all_headers)
            resp = conn.getresponse()
            raw = resp.read()
            try:
                decoded = json.loads(raw) if raw else None
            except ValueError:
                decoded = raw.decode(errors="replace")
            return ApiResponse(resp.status, dict(resp.getheaders()), decoded)
        finally:
            conn.close()

    def must(self, method, path, body=None, content_type="application/json", expect=(200, 201)):
        """request() that raises unless the status is one of `expect`; returns the body."""
        resp = self.request(method, path, body, content_type)
        if resp.status not in expect:
            raise AssertionError(f"{method} {path}: HTTP {resp.status}: {resp.body}")
        return resp.body

    def watch(self, path, timeout=30):
        """Opens a watch; returns a WatchStream that yields events (dicts) as they arrive."""
        return WatchStream(self, path, timeout)

    # -- faults and statistics --

    def fault(self, **faults):
        """POST /_sim/faults, e.g. fault(errors_500=2), fault(drop_watches=True)."""
        return self.must("POST", "/_sim/faults", faults)

    def reset_faults(self):
        return self.must("POST", "/_sim/reset", {})

    def stats(self):
        return self.must("GET", "/_sim/stats")

    def audit(self, since=0):
        """GET /_sim/audit: every value a Service's status.loadBalancer.ingress took."""
        return self.must("GET", f"/_sim/audit?since={since}")["items"]

    # -- lifetime --

    def stop(self, timeout=10):
        """SIGTERM, then SIGKILL after `timeout` seconds; only this simulator's own process."""
        if self.process.poll() is not None:
            return self.process.returncode
        try:
            os.kill(self.pid, signal.SIGTERM)
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(self.pid, signal.SIGKILL)
            return self.process.wait(timeout=timeout)
        except ProcessLookupError:
            return self.process.wait(timeout=timeout)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()


class WatchStream:
    """A watch response read line by line (one JSON event per line)."""

    def __init__(self, sim, path, timeout):
        self.conn = sim.connection(timeout)
        headers = {"Accept": "application/json", "Authorization": f"Bearer {sim.token}"}
        if sim.exempt:
            headers["X-Sim-Exempt"] = "1"
        self.conn.request("GET", path, headers=headers)
        self.response = self.conn.getresponse()
        self.status = self.response.status
        self.lines, self.partial = [], b""
        if self.response.chunked:
            self.fp, self.ended = self.response.fp, False  # chunks parsed here, see read_chunk
        else:  # an error answer, not a stream
            body = self.response.read()
            self.lines, self.ended = ([body] if body.strip() else []), True

    def next_event(self):
        """The next event, or None at the clean end of the stream (the terminating chunk).
        Raises ConnectionError when the stream breaks off without that chunk (a dropped
        watch), socket.timeout when nothing arrives within the timeout."""
        while not self.lines:
            if self.ended:
                return None
            self.read_chunk()
        return json.loads(self.lines.pop(0))

    def read_chunk(self):
        size_line = self.fp.readline(1024)
        if not size_line.endswith(b"\n"):
            raise ConnectionError("watch stream broken off (no terminating chunk)")
        size = int(size_line.split(b";")[0].strip(), 16)
        if size == 0:
            self.fp.readline(1024)
            self.ended = True
            return
        data = self.fp.read(size + 2)
        if len(data) < size + 2:
            raise ConnectionError("watch stream broken off inside a chunk")
        self.partial += data[:size]
        *complete, self.partial = self.partial.split(b"\n")
        self.lines += [line for line in complete if line.strip()]

    def events(self, count, types=None):
        """The next `count` events, skipping those whose type is not in `types` if given."""
        out = []
        while len(out) < count:
            event = self.next_event()
            if event is None:
                break
            if types is None or event["type"] in types:
                out.append(event)
        return out

    def close(self):
        self.conn.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def start(workdir, token=None, window=None, bookmark_interval=None, extra_args=(),
          timeout=30, state_dir=None, ip_families=None):
    """Starts kubesim with files in `workdir`; returns a Simulator once it printed `ready`.
    With `state_dir`, a simulator started again on the same directory comes back with the
    same objects, CA, token and port. `ip_families`: the cluster's service IP families,
    "IPv4" (the default), "IPv6", "IPv4,IPv6" or "IPv6,IPv4"."""
    os.makedirs(workdir, exist_ok=True)
    args = [sys.executable, KUBESIM, "--workdir", workdir, "--port", "0"]
    if state_dir:
        args += ["--state-dir", state_dir]
    if token:
        args += ["--token", token]
    if window is not None:
        args += ["--window", str(window)]
    if bookmark_interval is not None:
        args += ["--bookmark-interval", str(bookmark_interval)]
    if ip_families:
        args += ["--ip-families", ip_families]
    args += list(extra_args)
    log = open(os.path.join(workdir, "kubesim.log"), "ab")
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log, stdin=subprocess.DEVNULL)
    log.close()
    deadline = time.monotonic() + timeout
    line = b""
    while time.monotonic() < deadline:
        ready, _, _ = select.select([process.stdout], [], [], 0.2)
        if ready:
            line = process.stdout.readline()
            break
        if process.poll() is not None:
            break
    if not line.startswith(b"ready "):
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)
        with open(os.path.join(workdir, "kubesim.log"), "rb") as f:
            log_text = f.read().decode(errors="replace")
        raise RuntimeError(f"kubesim did not start (exit {process.returncode}): {log_text}")
    sim = Simulator(process, workdir, line.decode().split()[1])
    atexit.register(sim.stop)
    return sim
