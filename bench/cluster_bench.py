#!/usr/bin/env python3
"""Benchmark of the watcher pipeline (scripts/watcher.sh) against the API simulator.

With N LoadBalancer Services already in the simulator (created straight through the API by a
thread pool before the watcher starts), measures:
  - the time from the watcher's start until every Service carries an IP (cold start),
  - the time from a new Service's creation until its status carries an IP (median of samples),
  - the resident memory (VmRSS) of each process of the pipeline.

    python3 bench/cluster_bench.py --binary-dir build [--services 10000] [--samples 9] [--metrics]
                                   [--pipeline events|snapshots] [--pause 0.5]

--pipeline: events (the default, as shipped: k8slb-watch --events, one watch event per change)
or snapshots (WATCH_EVENTS=false: a whole List per change, as before 2026-11-28).

--metrics runs the watcher with METRICS_ADDR and scrapes its endpoint 10 times a second
throughout (a Prometheus scrapes every 15-30 s): compare the figures with and without it to
see what the metrics cost the pipeline.

Not part of ctest. The Services are headless (clusterIP None), as when the simulator handed out
cluster IPs from one /24 (now a /12): kept so that the figures stay comparable. IPs come from 2001:db8::/32 (the documentation prefix): 10,000 do not fit
in the IPv4 documentation ranges.
"""

import argparse
import concurrent.futures
import json
import os
import platform
import statistics
import sys
import socket
import tempfile
import threading
import time
import urllib.request

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "cluster"))

import harness  # noqa: E402
from harness import kubesim_client, wait_until  # noqa: E402

# 196,608 addresses: room for 100,000 Services and the samples.
POOLS = {"pools": {"default": {"network": "2001:db8::/64", "range": "2001:db8::1:0-2001:db8::3:ffff"}}}


def service(name):
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": "default"},
            "spec": {"type": "LoadBalancer", "selector": {"app": name},
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                     "allocateLoadBalancerNodePorts": False, "clusterIP": "None",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]}}


def rss_kib(pid):
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return None


def cpu_seconds(pid):
    """User + system CPU time of a process so far (utime + stime from /proc/PID/stat)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return None


def pipeline_cpu(sim, watcher):
    """CPU seconds so far of the simulator and of each process of the pipeline, by name."""
    out = {"kubesim": cpu_seconds(sim.pid)}
    for pid in children(watcher.pid):
        seconds = cpu_seconds(pid)
        if seconds is not None:
            out[process_name(pid)] = out.get(process_name(pid), 0) + seconds
    return out


def process_name(pid):
    try:
        with open(f"/proc/{pid}/comm") as f:
            return f.read().strip()
    except OSError:
        return "?"


def children(pid):
    out = []
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            with open(f"/proc/{pid}/task/{tid}/children") as f:
                out += [int(p) for p in f.read().split()]
    except OSError:
        pass
    return out


def count_assigned(sim):
    items = sim.request("GET", "/api/v1/namespaces/default/services", timeout=120).body["items"]
    return sum(1 for s in items if s.get("status", {}).get("loadBalancer", {}).get("ingress"))


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary-dir", default=os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE_DIR, "build")))
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=9)
    parser.add_argument("--threads", type=int, default=16)
    parser.add_argument("--metrics", action="store_true",
                        help="serve metrics (METRICS_ADDR) and scrape them 10 times a second throughout")
    parser.add_argument("--pipeline", choices=("events", "snapshots"), default="events")
    parser.add_argument("--pause", type=float, default=0.5, help="seconds between two samples")
    parser.add_argument("--lease-duration", type=int, default=15,
                        help="the watcher's LEASE_DURATION; LEASE_RENEW_DEADLINE is 2/3 of it. The simulator "
                             "(one Python process) answers nothing else while it serves a List of 100,000 "
                             "Services (tens of seconds), so a run at that size needs more than the default 15")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--keep-log", help="copy the watcher's log (stderr of the tools) to this file; "
                        "run with K8SLB_TIMING=1 in the environment for per-document timings")
    args = parser.parse_args()
    harness.BINARY_DIR = os.path.abspath(args.binary_dir)

    figures = {"services": args.services, "pipeline": args.pipeline, "lease_duration": args.lease_duration, "machine": {
        "cpus": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version()}}
    try:
        with open("/proc/cpuinfo") as f:
            figures["machine"]["cpu"] = next(l.split(":", 1)[1].strip() for l in f if l.startswith("model name"))
    except (OSError, StopIteration):
        pass
    with tempfile.TemporaryDirectory(prefix="k8slb-bench-") as workdir:
        # IPv6 Services (the pool is 2001:db8::/32), so an IPv6-capable cluster.
        sim = kubesim_client.start(os.path.join(workdir, "sim"), extra_args=["--window", "50000"],
                                   ip_families="IPv4,IPv6")
        watcher = None
        try:
            sim.must("POST", "/api/v1/namespaces/k8slb-system/configmaps", {
                "apiVersion": "v1", "kind": "ConfigMap",
                "metadata": {"name": "global", "namespace": "k8slb-system"},
                "data": {"config": json.dumps(POOLS)}})
            started = time.monotonic()
            with concurrent.futures.ThreadPoolExecutor(args.threads) as pool:
                list(pool.map(lambda i: sim.must("POST", "/api/v1/namespaces/default/services",
                                                 service(f"svc-{i:05d}")), range(args.services)))
            figures["create_seconds"] = round(time.monotonic() - started, 1)
            print(f"created {args.services} Services in {figures['create_seconds']} s", flush=True)

            started = time.monotonic()
            # WATCH_DEBOUNCE as shipped (k8slb-watch's 50 ms throttle; the figures before
            # 2026-11-28 ran with a 100 ms delay).
            settings = {"LEASE_DURATION": str(args.lease_duration),
                        "LEASE_RENEW_DEADLINE": str(args.lease_duration * 2 // 3), "LEASE_RETRY_PERIOD": "2",
                        "WATCH_EVENTS": "true" if args.pipeline == "events" else "false"}
            if args.metrics:
                with socket.socket() as s:
                    s.bind(("127.0.0.1", 0))
                    port = s.getsockname()[1]
                settings["METRICS_ADDR"] = f"127.0.0.1:{port}"
                scraping = threading.Event()
                scrapes = {"ok": 0, "failed": 0, "bytes": 0}

                def scrape():
                    deadline = time.monotonic() + 3600  # bounded, whatever happens to the main thread
                    while not scraping.is_set() and time.monotonic() < deadline:
                        try:
                            with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
                                scrapes["bytes"] = len(answer.read())
                                scrapes["ok"] += 1
                        except OSError:
                            scrapes["failed"] += 1
                        scraping.wait(0.1)
                scraper = threading.Thread(target=scrape, daemon=True)
                scraper.start()
            watcher = harness.Watcher(sim, workdir, "bench", settings)
            wait_until(lambda: count_assigned(sim) >= args.services, 1800, "every Service to get an IP",
                       interval=max(2, args.services / 5000))  # each poll is a List of every Service
            figures["cold_start_seconds"] = round(time.monotonic() - started, 1)
            print(f"cold start: all {args.services} Services assigned after "
                  f"{figures['cold_start_seconds']} s", flush=True)

            latencies = []
            cpu_before = pipeline_cpu(sim, watcher)
            samples_started = time.monotonic()
            for i in range(args.samples):
                name = f"new-{i:03d}"
                t0 = time.monotonic()
                sim.must("POST", "/api/v1/namespaces/default/services", service(name))
                wait_until(lambda: (sim.request("GET", f"/api/v1/namespaces/default/services/{name}").body
                                    .get("status", {}).get("loadBalancer", {}).get("ingress")),
                           120, f"{name} to get an IP", interval=0.01)
                latencies.append(time.monotonic() - t0)
                time.sleep(args.pause)
            cuts = statistics.quantiles(latencies, n=100, method="inclusive") if len(latencies) > 1 else latencies * 99
            figures["new_service_seconds"] = {"median": round(statistics.median(latencies), 3),
                                              "p90": round(cuts[89], 3), "p99": round(cuts[98], 3),
                                              "min": round(min(latencies), 3),
                                              "max": round(max(latencies), 3),
                                              "samples": len(latencies)}
            print("new Service -> IP: median {median} s, p90 {p90}, p99 {p99} (min {min}, max {max}, "
                  "{samples} samples; polled every 10 ms)".format(**figures["new_service_seconds"]), flush=True)
            # Who used the CPU while the samples ran (the 0.5 s pauses included): the simulator
            # is Python and shares the machine with the tools.
            cpu_after = pipeline_cpu(sim, watcher)
            figures["samples_wall_seconds"] = round(time.monotonic() - samples_started, 1)
            figures["samples_cpu_seconds"] = {
                name: round(cpu_after[name] - cpu_before.get(name, 0), 2)
                for name in cpu_after if cpu_after[name] is not None and cpu_before.get(name) is not None}
            print(f"CPU seconds during the samples ({figures['samples_wall_seconds']} s wall): " +
                  ", ".join(f"{name} {seconds}" for name, seconds in figures["samples_cpu_seconds"].items()),
                  flush=True)

            memory = {}
            for pid in children(watcher.pid):
                kib = rss_kib(pid)
                if kib is not None:
                    memory[f"{process_name(pid)} ({pid})"] = kib
            memory[f"watcher.sh ({watcher.pid})"] = rss_kib(watcher.pid)
            figures["rss_kib"] = memory
            for name, kib in memory.items():
                print(f"VmRSS {name}: {kib / 1024:.1f} MiB")
            if args.metrics:
                figures["scrapes"] = dict(scrapes)
                print(f"scrapes: {scrapes['ok']} answered ({scrapes['bytes']} bytes the last), "
                      f"{scrapes['failed']} not (before the endpoint was up)")
        finally:
            if args.metrics:
                scraping.set()
            if watcher:
                watcher.stop()
                if args.keep_log:
                    with open(args.keep_log, "w") as f:
                        f.write(watcher.log())
            sim.stop()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
