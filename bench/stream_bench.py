#!/usr/bin/env python3
"""Benchmark of k8slb-allocate and k8slb-render on watch events, without an API server.

--tool allocate (the default) feeds k8slb-allocate what `k8slb-watch --events` prints: one List
of N Services that already hold their IPs (plus the config ConfigMap), then new Services one at
a time as ADDED events, each followed, as in a cluster, by the MODIFIED event of its own status
write coming back. Measured per new Service: the time from writing its event to reading the
document that assigns its IP.

--tool render feeds `k8slb-render all --stream --events` what the actor's k8slb-watch prints on
a load-balancer node: one List of N Services holding their IPs, their EndpointSlices (one
endpoint each), the node and the ConfigMap; then, per new Service, its EndpointSlice and the
Service with its IP (the watcher's status write) as two events. Measured: the time from writing
the Service's event to reading the line whose haproxy.cfg carries its VIP.

Both: p50/p99/max, the time to the first line (the List), the CPU time per new Service, the
peak and final resident memory of the tool.

    python3 bench/stream_bench.py --binary-dir build [--tool allocate|render] [--services 100000]
                                  [--samples 200]

With --pipeline snapshots it instead sends, for each change, a whole List (as
WATCH_EVENTS=false does): the figure the events replace. Not part of ctest.
"""

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
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


def endpoint_slice(i, version):
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": f"svc-{i:06d}-1", "namespace": "default", "resourceVersion": str(version),
                         "labels": {"kubernetes.io/service-name": f"svc-{i:06d}"}},
            "addressType": "IPv6", "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}],
            "endpoints": [{"addresses": [f"2001:db8:1::{i % 0xffff + 1:x}"], "conditions": {"ready": True}}]}


NODE = {"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lb1", "labels": {"type": "loadBalancer"}},
        "status": {"addresses": [{"type": "InternalIP", "address": "2001:db8::2"}]}}
INTERFACES = [{"ifindex": 2, "ifname": "eth0", "flags": ["UP", "LOWER_UP"],
               "addr_info": [{"family": "inet6", "local": "2001:db8::2", "prefixlen": 64}]}]


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
    parser.add_argument("--tool", choices=("allocate", "render"), default="allocate")
    parser.add_argument("--json", help="also write the figures to this file")
    parser.add_argument("--shared-ports", action="store_true",
                        help="--tool render: k8slb-render --shared-ports 80 (the VIPs in haproxy-p80.map)")
    parser.add_argument("--min-server-slots", type=int, default=0,
                        help="--tool render: k8slb-render --min-server-slots (default: the tool's, 8)")
    args = parser.parse_args()

    render = args.tool == "render"
    items = [config_map()] + [service(i, 10 + i, address(i)) for i in range(args.services)]
    version = 10 + args.services
    if render:
        items += [NODE] + [endpoint_slice(i, version + i) for i in range(args.services)]
        version += args.services
        workdir = tempfile.mkdtemp(prefix="k8slb-stream-bench-")
        interfaces = os.path.join(workdir, "interfaces.json")
        with open(interfaces, "w") as f:
            json.dump(INTERFACES, f)
        command = [os.path.join(args.binary_dir, "k8slb-render"), "all", "--stream", "--events", "--node", "lb1",
                   "--interfaces", interfaces, "--runtime-dir", workdir, "--no-cert-check"]
        if args.shared_ports:
            command += ["--shared-ports", "80"]
        if args.min_server_slots:
            command += ["--min-server-slots", str(args.min_server_slots)]
    else:
        command = [os.path.join(args.binary_dir, "k8slb-allocate"), "--ip-mode", "Proxy"]
    process = subprocess.Popen(command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL,
                               text=True, bufsize=1)
    figures = {"tool": args.tool, "services": args.services, "pipeline": args.pipeline,
               "shared_ports": "80" if args.shared_ports else None}

    def send(*changes):
        """Writes the changes (watch events, or the whole List after them); returns the next line."""
        for kind, obj in changes:
            key = (obj["kind"], obj["metadata"]["name"])
            index = positions.setdefault(key, len(items))
            if index == len(items):
                items.append(obj)
            else:
                items[index] = obj
            if args.pipeline == "events":
                process.stdin.write(json.dumps({"type": kind, "object": obj}) + "\n")
        if args.pipeline == "snapshots":
            process.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}) + "\n")
        process.stdin.flush()
        return json.loads(process.stdout.readline())

    positions = {(x["kind"], x["metadata"]["name"]): n for n, x in enumerate(items)}
    try:
        started = time.monotonic()
        process.stdin.write(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}) + "\n")
        process.stdin.flush()
        process.stdout.readline()
        figures["first_list_seconds"] = round(time.monotonic() - started, 2)
        print(f"{args.services} Services: first List read and printed in {figures['first_list_seconds']} s",
              flush=True)
        cpu_before = cpu_seconds(process.pid)
        latencies = []
        deadline = time.monotonic() + 1800  # bounded whatever happens
        for n in range(args.samples):
            if time.monotonic() > deadline:
                break
            i = args.services + n
            version += 2
            if render:
                # The slice first (not timed; it prints nothing: a Service without an IP renders
                # nothing), then the Service with the IP the watcher wrote.
                if args.pipeline == "events":
                    slice_ = endpoint_slice(i, version - 1)
                    positions[("EndpointSlice", slice_["metadata"]["name"])] = len(items)
                    items.append(slice_)
                    process.stdin.write(json.dumps({"type": "ADDED", "object": slice_}) + "\n")
                else:
                    send(("ADDED", endpoint_slice(i, version - 1)))
                t0 = time.monotonic()
                line = send(("ADDED", service(i, version, address(i))))
                latencies.append(time.monotonic() - t0)
                served = line["files"]["haproxy-p80.map"] if args.shared_ports else line["files"]["haproxy.cfg"]
                if (f"{address(i)} " if args.shared_ports else f"[{address(i)}]:80") not in served:
                    raise SystemExit(f"svc-{i:06d}: its VIP is not in haproxy.cfg (or haproxy-p80.map)")
                continue
            new = service(i, version - 1)
            t0 = time.monotonic()
            document = send(("ADDED", new))
            latencies.append(time.monotonic() - t0)
            mine = [x for x in document["items"] if x["kind"] == "Service" and x["metadata"]["name"] == new["metadata"]["name"]]
            ingress = mine[0]["status"]["loadBalancer"].get("ingress") if mine else None
            if not ingress:
                raise SystemExit(f"{new['metadata']['name']}: no IP in the document")
            # Our status write comes back: the Service now holds its IP (a document only for
            # snapshots; on events it prints nothing).
            written = service(i, version, ingress[0]["ip"])
            if args.pipeline == "events":
                positions.setdefault(("Service", written["metadata"]["name"]), len(items))
                items[positions[("Service", written["metadata"]["name"])]] = written
                process.stdin.write(json.dumps({"type": "MODIFIED", "object": written}) + "\n")
                process.stdin.flush()
            else:
                send(("MODIFIED", written))
        cpu = cpu_seconds(process.pid) - cpu_before
        cuts = statistics.quantiles(latencies, n=100, method="inclusive")
        figures["new_service_seconds"] = {"p50": round(statistics.median(latencies), 4), "p99": round(cuts[98], 4),
                                          "max": round(max(latencies), 4), "samples": len(latencies)}
        figures["cpu_seconds_per_new_service"] = round(cpu / len(latencies), 4)
        figures["rss_mib"] = round(status_kib(process.pid, "VmRSS") / 1024, 1)
        figures["peak_rss_mib"] = round(status_kib(process.pid, "VmHWM") / 1024, 1)
        print(("new Service event -> its line" if render else "new Service event -> its document") +
              ": p50 {p50} s, p99 {p99} s, max {max} s ({samples} samples)"
              .format(**figures["new_service_seconds"]))
        print(f"CPU per new Service (its event and its status coming back): {figures['cpu_seconds_per_new_service']} s")
        print(f"k8slb-{args.tool} VmRSS {figures['rss_mib']} MiB, peak {figures['peak_rss_mib']} MiB "
              f"({figures['rss_mib'] * 1000 / args.services:.2f} MiB per 1,000 Services)")
    finally:
        if render:
            shutil.rmtree(workdir, ignore_errors=True)
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
