#!/usr/bin/env python3
"""Benchmark of what an nginx shared port costs per request (issue 11).

With SHARED_PORTS, nginx passes each request (http) or connection (layer 4) of a shared port
to `proxy_pass http://$k8slb_shared_PORT`, and nginx looks an upstream named by a variable up
in a linear scan of all `upstream` blocks. This bench runs the real nginx, in a network
namespace of its own (`unshare -n`, loopback only), with a config shaped like k8slb-render's
(a geo block on $server_addr, N upstream blocks, one shared server) and one worker, sends
keep-alive GETs from one client to the VIP 127.0.0.2 and reports the worker's CPU time per
request. Its upstream points at a `return 200` server of the same nginx, so the figure is
nginx's own work: proxying plus the lookup.

Two layouts per N: "varied" (names of varied lengths, the VIP's upstream in the middle: what a
cluster's names look like) and "worst" (names of one length, the VIP's upstream last).

    python3 bench/nginx_lookup_bench.py [--sizes 1,1000,10000] [--requests 10000]

Not part of ctest (root: it makes a network namespace). Output: one JSON document on stdout.
Every wait is bounded; nginx is stopped by PID whatever happens.
"""

import argparse
import http.client
import json
import os
import random
import subprocess
import sys
import tempfile
import time


def names(count, layout):
    if layout == "worst":
        return [f"default_bulk-{i:05d}_80" for i in range(count)]
    rng = random.Random(1)
    return [f"team{i % 9}_{''.join(rng.choice('abcdefghijklmnop-') for _ in range(rng.randint(3, 20)))}{i}_80"
            for i in range(count)]


def config(workdir, count, layout):
    upstreams = names(count, layout)
    target = upstreams[-1] if layout == "worst" else upstreams[count // 2]
    lines = ["load_module /usr/lib/nginx/modules/ngx_stream_module.so;", f"pid {workdir}/nginx.pid;",
             f"error_log {workdir}/error.log notice;", "worker_processes 1;",
             "events { worker_connections 4096; }", "http {", "  access_log off;",
             "  geo $server_addr $k8slb_shared_80 {", "    default k8slb_no_vip;", f"    127.0.0.2 {target};", "  }",
             "  upstream k8slb_no_vip { server 127.0.0.1:1 down; }"]
    for name in upstreams:
        lines += [f"  upstream {name} {{", "    server 127.0.0.1:8081;", "    keepalive 8;", "  }"]
    lines += ["  server { listen 127.0.0.1:8081; location / { return 200 ok; } }",
              "  server {", "    listen 0.0.0.0:80 default_server;", "    location / {",
              "      proxy_pass http://$k8slb_shared_80;", "      proxy_http_version 1.1;",
              '      proxy_set_header Connection "";', "    }", "  }", "}"]
    path = os.path.join(workdir, f"nginx-{count}-{layout}.conf")
    with open(path, "w") as out:
        out.write("\n".join(lines) + "\n")
    return path


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(workdir, path, requests):
    """Inside the namespace: start nginx, time `requests` GETs, stop it. Returns the figures."""
    master = subprocess.Popen(["nginx", "-c", path, "-p", workdir + "/", "-g", "daemon off;"])
    try:
        deadline = time.monotonic() + 120  # 10,000 upstreams take a while to load
        worker = None
        while time.monotonic() < deadline and worker is None:
            if master.poll() is not None:
                raise RuntimeError(f"nginx exited with {master.returncode}; see {workdir}/error.log")
            try:
                with open(f"/proc/{master.pid}/task/{master.pid}/children") as children:
                    pids = children.read().split()
                worker = int(pids[0]) if pids else None
            except OSError:
                pass
            if worker is None:
                time.sleep(0.1)
        if worker is None:
            raise RuntimeError("nginx started no worker within 120 s")
        connection = None
        while time.monotonic() < deadline and connection is None:
            try:
                connection = http.client.HTTPConnection("127.0.0.2", 80, timeout=5)
                connection.request("GET", "/")
                connection.getresponse().read()
            except OSError:
                connection = None
                time.sleep(0.1)
        for _ in range(200):  # warm up: the upstream's keep-alive connections
            connection.request("GET", "/")
            connection.getresponse().read()
        cpu_before, started = cpu_seconds(worker), time.monotonic()
        for _ in range(requests):
            connection.request("GET", "/")
            answer = connection.getresponse()
            body = answer.read()
            if answer.status != 200:
                raise RuntimeError(f"answer {answer.status}: {body[:200]!r}")
        return {"worker_cpu_us_per_request": round((cpu_seconds(worker) - cpu_before) / requests * 1e6, 1),
                "wall_us_per_request": round((time.monotonic() - started) / requests * 1e6)}
    finally:
        master.terminate()
        try:
            master.wait(timeout=10)
        except subprocess.TimeoutExpired:
            master.kill()
            master.wait(timeout=10)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", default="1,1000,10000", help="upstream blocks, comma-separated")
    parser.add_argument("--requests", type=int, default=10000, help="timed requests per run (at most 100,000)")
    parser.add_argument("--inside", help=argparse.SUPPRESS)  # the namespace side: WORKDIR
    options = parser.parse_args(argv)
    sizes = [max(1, min(int(s), 20000)) for s in options.sizes.split(",") if s]
    requests = max(100, min(options.requests, 100000))
    if options.inside:
        subprocess.run(["ip", "link", "set", "lo", "up"], check=True)
        results = []
        for count in sizes:
            for layout in ("varied", "worst") if count > 1 else ("varied",):
                row = {"upstreams": count, "layout": layout}
                row.update(measure(options.inside, config(options.inside, count, layout), requests))
                print(json.dumps(row), file=sys.stderr, flush=True)
                results.append(row)
        print(json.dumps(results))
        return 0
    with tempfile.TemporaryDirectory(prefix="k8slb-nginx-lookup-") as workdir:
        done = subprocess.run(["unshare", "-n", sys.executable, os.path.abspath(__file__), "--inside", workdir,
                               "--sizes", ",".join(map(str, sizes)), "--requests", str(requests)],
                              stdout=subprocess.PIPE, text=True, timeout=1800)
        if done.returncode != 0:
            return done.returncode
        print(json.dumps({"nginx": subprocess.run(["nginx", "-v"], capture_output=True, text=True).stderr.strip(),
                          "requests": requests, "results": json.loads(done.stdout)}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
