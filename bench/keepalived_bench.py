#!/usr/bin/env python3
"""Benchmark of keepalived's reload to a new VIP, as k8slb-apply node runs keepalived.

One network namespace with a veth pair; `k8slb-apply node --proxy kubeproxy` (the real tool,
which starts keepalived with its own arguments) is given a keepalived.conf with VIPS IPv6 VIPs
in INSTANCES VRRP instances, all master on this node, the lowest VIP of each advertised and the
others excluded, as k8slb-render writes them. Once every VIP is on the interface, RUNS times: a
keepalived.conf with one more VIP is sent, and the time from the line sent to the new address
on the interface (`ip monitor address`) is taken, with the VRRP process's CPU time over the run.

    python3 bench/keepalived_bench.py --binary-dir build [--sizes 1,1000,10000] [--runs 5]

Not part of ctest (root: it makes a network namespace). Output: one JSON document on stdout,
progress on stderr. docs/figures.md quotes it.
"""

import argparse
import json
import os
import select
import statistics
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.path.dirname(HERE)
NAMESPACE = "k8slb-kabench-%d" % os.getpid()
PREFIX = "2001:db8:2::"  # the VIPs: 2001:db8:2::1 and up


def log(*args):
    print(time.strftime("%H:%M:%S"), *args, file=sys.stderr, flush=True)


def vip(index):
    return "%s%x" % (PREFIX, index + 1)


def keepalived_conf(count, per):
    """`count` VIPs, `per` to an instance, the first of each advertised."""
    out = ["global_defs {\n  router_id lb1\n  vrrp_version 3\n}\n"]
    for number, start in enumerate(range(0, count, per)):
        vips = [vip(i) for i in range(start, min(count, start + per))]
        out.append("vrrp_instance i%d {\n  state MASTER\n  interface veth0\n  virtual_router_id %d\n"
                   "  priority 255\n  advert_int 0.05\n  virtual_ipaddress {\n    %s\n  }\n"
                   % (number, number % 255 + 1, vips[0]))
        if len(vips) > 1:
            out.append("  virtual_ipaddress_excluded {\n%s  }\n" % "".join("    %s\n" % v for v in vips[1:]))
        out.append("}\n")
    return "".join(out)


def read_line(stream, timeout):
    """The next line of `stream` (which writes a line per request), or "" after `timeout`
    seconds without one."""
    ready, _, _ = select.select([stream], [], [], timeout)
    return stream.readline() if ready else ""


def ip(*args, check=True):
    return subprocess.run(["ip", "-n", NAMESPACE] + list(args), check=check, capture_output=True, text=True)


def held():
    return ip("-6", "-o", "addr", "show", "dev", "veth0").stdout.count(PREFIX)


def cpu_seconds(pid):
    with open("/proc/%d/stat" % pid) as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def measure(apply_bin, count, instances, runs, workdir):
    config_dir, runtime_dir = os.path.join(workdir, "etc"), os.path.join(workdir, "run")
    os.makedirs(runtime_dir, exist_ok=True)
    with open(os.path.join(workdir, "apply-%d.log" % count), "w") as stderr:
        apply = subprocess.Popen(["ip", "netns", "exec", NAMESPACE, apply_bin, "node", "--proxy", "kubeproxy",
                                  "--config-dir", config_dir, "--runtime-dir", runtime_dir],
                                 stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=stderr, text=True)
    monitor = None
    try:
        def send(conf):
            apply.stdin.write(json.dumps({"files": {"keepalived.conf": conf}, "problems": []}) + "\n")
            apply.stdin.flush()
            answer = read_line(apply.stdout, 120)
            if not answer:
                raise RuntimeError("k8slb-apply gave no answer within 120 s")
            return json.loads(answer)["actions"]

        per = max(1, -(-count // instances))  # kept as VIPs are added: one VIP more, not a new layout
        started = time.monotonic()
        send(keepalived_conf(count, per))
        deadline = time.monotonic() + 60 + count / 20
        while held() < count and time.monotonic() < deadline:
            time.sleep(0.5)
        if held() < count:
            raise RuntimeError("%d of %d VIPs held after %.0f s" % (held(), count, time.monotonic() - started))
        setup_s = time.monotonic() - started
        time.sleep(2)
        with open(os.path.join(runtime_dir, "keepalived-vrrp.pid")) as pid_file:
            vrrp_pid = int(pid_file.read())
        times, cpu = [], []
        for run in range(1, runs + 1):
            new = vip(count + run - 1) + "/128"
            monitor = subprocess.Popen(["ip", "-n", NAMESPACE, "-6", "monitor", "address"],
                                       stdout=subprocess.PIPE)
            time.sleep(0.2)
            cpu_before = cpu_seconds(vrrp_pid)
            at = time.monotonic()
            actions = send(keepalived_conf(count + run, per))
            if actions != {"keepalived": "reload"}:
                raise RuntimeError("k8slb-apply: %s" % actions)
            seen = ""  # read unbuffered: a line left in a reader's buffer would wait for the next
            while not any(new in line and not line.startswith("Deleted") for line in seen.splitlines()):
                ready, _, _ = select.select([monitor.stdout], [], [], max(0.0, at + 60 - time.monotonic()))
                chunk = os.read(monitor.stdout.fileno(), 65536).decode() if ready else ""
                if not chunk:
                    raise RuntimeError("no %s within 60 s" % new)
                seen += chunk
            times.append(round(time.monotonic() - at, 4))
            monitor.terminate()
            monitor.wait(timeout=10)
            monitor = None
            time.sleep(1)
            cpu.append(round(cpu_seconds(vrrp_pid) - cpu_before, 3))
            log("%d VIPs, %d instances, run %d: new VIP after %.4f s" % (count, instances, run, times[-1]))
        return {"vips": count, "instances": instances, "setup_s": round(setup_s, 1),
                "reload_to_new_vip_s": {"p50": statistics.median(times), "max": max(times), "all": times},
                "vrrp_cpu_s_per_run": {"p50": statistics.median(cpu), "all": cpu,
                                       "note": "from the line sent to 1 s after the new VIP, adverts included"}}
    finally:
        if monitor:
            monitor.kill()
            monitor.wait()
        apply.stdin.close()
        try:
            apply.wait(timeout=30)
        except subprocess.TimeoutExpired:
            apply.kill()
            apply.wait()


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--binary-dir", default=os.path.join(SOURCE_DIR, "build"))
    parser.add_argument("--sizes", default="1,1000,10000", help="VIPs held, comma-separated")
    parser.add_argument("--runs", type=int, default=5)
    options = parser.parse_args(argv)
    sizes = sorted({max(1, min(int(s), 20000)) for s in options.sizes.split(",") if s})
    runs = max(1, min(options.runs, 20))
    apply_bin = os.path.join(os.path.abspath(options.binary_dir), "k8slb-apply")
    keepalived = subprocess.run(["keepalived", "--version"], capture_output=True, text=True)
    result = {"binary_dir": os.path.dirname(apply_bin), "keepalived": (keepalived.stderr or keepalived.stdout).split("\n")[0],
              "cores": os.cpu_count(), "sizes": []}
    subprocess.run(["ip", "netns", "add", NAMESPACE], check=True)
    workdir = tempfile.mkdtemp(prefix="k8slb-keepalived-bench-")
    try:
        ip("link", "set", "lo", "up")
        ip("link", "add", "veth0", "type", "veth", "peer", "name", "veth1")
        ip("addr", "add", "2001:db8:1::1/64", "dev", "veth0", "nodad")
        ip("link", "set", "veth0", "up")
        ip("link", "set", "veth1", "up")
        for count in sizes:
            instances = max(1, min(128, count // 78))  # about as many VIPs per instance as node_bench's 10,000
            result["sizes"].append(measure(apply_bin, count, instances, runs, os.path.join(workdir, str(count))))
            ip("-6", "addr", "flush", "dev", "veth0", "to", PREFIX + "/64", check=False)
    finally:
        pids = subprocess.run(["ip", "netns", "pids", NAMESPACE], capture_output=True, text=True).stdout.split()
        for pid in pids:  # only what this bench started runs there
            try:
                os.kill(int(pid), 9)
            except (ProcessLookupError, ValueError):
                pass
        subprocess.run(["ip", "netns", "del", NAMESPACE], capture_output=True)
        subprocess.run(["rm", "-rf", workdir])
    json.dump(result, sys.stdout, indent=1)
    print()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
