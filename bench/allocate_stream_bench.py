#!/usr/bin/env python3
"""Benchmark of k8slb-allocate on watch events, without an API server.

Feeds k8slb-allocate what `k8slb-watch --events` prints: one List of N Services that already
hold their IPs (plus the config ConfigMap), then new Services one at a time as ADDED events,
each followed, as in a cluster, by the MODIFIED event of its own status write coming back.
Measures, per new Service, the time from writing its event to reading the document that
assigns its IP (p50/p99), the time to the first document (the List), the CPU time and the
peak and final resident memory of k8slb-allocate.

    python3 bench/allocate_stream_bench.py --binary-dir build [--services 100000] [--samples 200]

With --pipeline snapshots it instead sends, for each new Service, a whole List (as
WATCH_EVENTS=false does): the figure the events replace. Not part of ctest.
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)

CONFIG = {"pools": {"default": {"network": "2001:db8::/64", "range": "2001:db8::1:0-2001:db8::3:ffff"}}}


def config_map():
    return {"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "global", "namespace": "k8slb-system", "resourceVersion": "1"},
            "data": {"config": json.dumps(CONFIG)}}


def service(i, version, ip=None):
    item = {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": f"svc-{i:06d}", "namespace": "default", "uid": f"uid-{i}",
                         "resourceVersion": str(version)},
            "spec": {"type": "LoadBalancer", "selector": {"app": f"svc-{i}"},
                     "ipFamilies": ["IPv6"], "ipFamilyPolicy": "SingleStack",
                     "ports": [{"name": "http", "port": 80, "protocol": "TCP", "targetPort": 8080}]},
            "status": {"loadBalancer": {}}}
    if ip:
        item["status"]["loadBalancer"]["ingress"] = [{"ip": ip, "ipMode": "Proxy"}]
    return item


def address(i):
    value = 0x10000 + i
    return f"2001:db8::{value >> 16:x}:{value & 0xffff:x}"


def status_kib(pid, field):
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    return None


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--binary-dir", default=os.path.join(SOURCE_DIR, "build"))
    parser.add_argument("--services", type=int, default=10000)
    parser.add_argument("--samples", type=int, default=200)
    parser.add_argument("--pipeline", choices=("events", "snapshots"), default="events")
    parser.add_argument("--json", help="also write the figures to this file")
    args = parser.parse_args()

    items = [config_map()] + [service(i, 10 + i, address(i)) for i in range(args.services)]
    version = 10 + args.services
    process = subprocess.Popen([os.path.join(args.binary_dir, "k8slb-allocate"), "--ip-mode", "Proxy"],
                               stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, bufsize=1)
    figures = {"services": args.services, "pipeline": args.pipeline}
    try:
        started = time.monotonic()
        process.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}) + "\n")
        process.stdin.flush()
        process.stdout.readline()
        figures["first_list_seconds"] = round(time.monotonic() - started, 2)
        print(f"{args.services} Services: first List allocated and printed in {figures['first_list_seconds']} s",
              flush=True)
        cpu_before = cpu_seconds(process.pid)
        latencies = []
        deadline = time.monotonic() + 1800  # bounded whatever happens
        for n in range(args.samples):
            if time.monotonic() > deadline:
                break
            i = args.services + n
            version += 1
            new = service(i, version)
            if args.pipeline == "events":
                line = json.dumps({"type": "ADDED", "object": new})
            else:
                items.append(new)
                line = json.dumps({"apiVersion": "v1", "kind": "List", "items": items})
            t0 = time.monotonic()
            process.stdin.write(line + "\n")
            process.stdin.flush()
            document = json.loads(process.stdout.readline())
            latencies.append(time.monotonic() - t0)
            mine = [x for x in document["items"] if x["kind"] == "Service" and x["metadata"]["name"] == new["metadata"]["name"]]
            ingress = mine[0]["status"]["loadBalancer"].get("ingress") if mine else None
            if not ingress:
                raise SystemExit(f"{new['metadata']['name']}: no IP in the document")
            # Our status write comes back: the Service now holds its IP.
            version += 1
            written = service(i, version, ingress[0]["ip"])
            if args.pipeline == "events":
                process.stdin.write(json.dumps({"type": "MODIFIED", "object": written}) + "\n")
            else:
                items[-1] = written
                process.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}) + "\n")
                process.stdin.flush()
                process.stdout.readline()
            process.stdin.flush()
        cpu = cpu_seconds(process.pid) - cpu_before
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        figures["new_service_seconds"] = {"p50": round(statistics.median(latencies), 4), "p99": round(cuts[98], 4),
                                          "max": round(max(latencies), 4), "samples": len(latencies)}
        figures["cpu_seconds_per_new_service"] = round(cpu / len(latencies), 4)
        figures["rss_mib"] = round(status_kib(process.pid, "VmRSS") / 1024, 1)
        figures["peak_rss_mib"] = round(status_kib(process.pid, "VmHWM") / 1024, 1)
        print("new Service event -> its document: p50 {p50} s, p99 {p99} s, max {max} s ({samples} samples)"
              .format(**figures["new_service_seconds"]))
        print(f"CPU per new Service (its event and its status coming back): {figures['cpu_seconds_per_new_service']} s")
        print(f"k8slb-allocate VmRSS {figures['rss_mib']} MiB, peak {figures['peak_rss_mib']} MiB "
              f"({figures['rss_mib'] * 1000 / args.services:.2f} MiB per 1,000 Services)")
    finally:
        process.stdin.close()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
    if args.json:
        with open(args.json, "w") as f:
            json.dump(figures, f, indent=2)
    return 0


if __name__ == "__main__":
    sys.exit(main())
