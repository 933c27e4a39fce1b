#!/usr/bin/env python3
"""Probes an HTTP URL every INTERVAL seconds and reports the longest outage.

    probe.py URL --interval 0.02 --timeout 0.2 --duration 20 --out FILE

Each probe opens a new TCP connection, sends GET and waits for a 200 status line, bounded by
--timeout. The probe loop runs until --duration passes or the file FILE.stop exists; it is
bounded in time and in count. After every probe it rewrites FILE with one JSON document:
    {"probes": n, "failures": n, "gaps": [[t_last_ok, t_next_ok], ...], "first_ok": t,
     "last_ok": t, "failing_now": bool}
Times are wall-clock seconds (time.time()); a gap runs from the last success before a run of
failures to the first success after it: the outage a client saw.
"""

import argparse
import json
import os
import socket
import sys
import time
import urllib.parse


def probe_once(host, port, path, timeout):
    try:
        with socket.create_connection((host, port), timeout=timeout) as sock:
            sock.settimeout(timeout)
            sock.sendall(f"GET {path} HTTP/1.0\r\nHost: probe\r\n\r\n".encode())
            data = sock.recv(64)
            return data.startswith(b"HTTP/1.") and b" 200 " in data[:16]
    except OSError:
        return False


def main(argv):
    parser = argparse.ArgumentParser()
    parser.add_argument("url")
    parser.add_argument("--interval", type=float, default=0.02)
    parser.add_argument("--timeout", type=float, default=0.2)
    parser.add_argument("--duration", type=float, default=20)
    parser.add_argument("--out", required=True)
    options = parser.parse_args(argv)
    url = urllib.parse.urlsplit(options.url)
    host, port = url.hostname, url.port or 80
    start = time.monotonic()
    max_count = int(options.duration / options.interval) + 1
    probes = failures = 0
    last_ok = first_ok = None  # wall-clock times (time.time()), comparable with the test's
    gaps = []                  # [last success before failures, first success after them]
    failing = False
    for _ in range(max_count):
        if time.monotonic() - start > options.duration or os.path.exists(options.out + ".stop"):
            break
        began = time.monotonic()
        ok = probe_once(host, port, url.path or "/", options.timeout)
        probes += 1
        at = time.time()
        if ok:
            if first_ok is None:
                first_ok = at
            if failing and last_ok is not None and len(gaps) < 1000:
                gaps.append([last_ok, at])
            last_ok, failing = at, False
        else:
            failures += 1
            failing = True
        with open(options.out + ".tmp", "w") as report:
            json.dump({"probes": probes, "failures": failures, "gaps": gaps, "first_ok": first_ok,
                       "last_ok": last_ok, "failing_now": failing}, report)
        os.replace(options.out + ".tmp", options.out)
        time.sleep(max(0.0, options.interval - (time.monotonic() - began)))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
