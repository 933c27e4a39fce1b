#!/usr/bin/env python3
"""k8slb's live demo (run by scripts/demo.sh): the whole system on this machine.

The API simulator plays the cluster; two load-balancer nodes, a client and the pods are network
namespaces; the real watcher and two real actors (keepalived + HAProxy) run k8slb. Services
shaped like the README's examples are created with kubectl, and traffic goes through their VIPs.
Everything is removed at the end (namespaces, processes, the work directory), also on Ctrl-C,
and the whole demo is bounded in time (--timeout)."""

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)

import cluster as cluster_module  # noqa: E402
import netns  # noqa: E402

PODS = {"myapp-1": "198.51.100.200", "myapp-2": "198.51.100.201", "rancher-1": "198.51.100.210",
        "myapp6-1": "2001:db8:100::200"}
RANCHER_IP = "203.0.113.150"  # static, from the "external" pool's network, outside its range

SERVICES = f"""
apiVersion: v1
kind: Service
metadata:
  name: myapp-loadbalancer
  namespace: default
spec:
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
  selector:
    app: myapp
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: myapp-tls
  namespace: default
spec:
  ports:
    - name: https
      port: 443
      protocol: TCP
      targetPort: 8080
  selector:
    app: myapp
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: rancher-loadbalancer
  namespace: cattle-system
  annotations:
    loadbalancer/pool: external
spec:
  loadBalancerIP: {RANCHER_IP}
  ports:
    - name: https
      port: 443
      protocol: TCP
      targetPort: 8080
  selector:
    app: rancher
  type: LoadBalancer
---
apiVersion: v1
kind: Service
metadata:
  name: myapp-loadbalancer6
  namespace: default
  annotations:
    loadbalancer/pool: ipv6
spec:
  ipFamilies: [IPv6]
  ports:
    - name: http
      port: 80
      protocol: TCP
      targetPort: 8080
  selector:
    app: myapp6
  type: LoadBalancer
"""


def say(text):
    print(f"\n==> {text}", flush=True)


def show(command, output):
    print(f"$ {command}\n{output.rstrip()}", flush=True)


def main(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--proxy", default="haproxy", choices=["haproxy", "nginx"])
    parser.add_argument("--timeout", type=float, default=300, help="seconds the demo may take")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    options = parser.parse_args(argv)

    try:
        netns.check_available()
    except netns.Unavailable as error:
        print(f"demo: cannot run: {error}", file=sys.stderr)
        return 77
    missing = cluster_module.missing_tools("k8slb-watch", "k8slb-allocate", "k8slb-render",
                                           "k8slb-apply")
    if missing:
        print(f"demo: not built in {cluster_module.BINARY_DIR}: {', '.join(missing)} "
              "(run scripts/build.sh, or set K8SLB_BINARY_DIR)", file=sys.stderr)
        return 1

    def out_of_time(signum, frame):
        raise TimeoutError(f"the demo took longer than {options.timeout:.0f} s")
    signal.signal(signal.SIGALRM, out_of_time)
    signal.alarm(int(options.timeout))

    workdir = tempfile.mkdtemp(prefix="k8slb-demo-")
    topology = None
    try:
        say("Building the data centre: switch, lb1, lb2, client, pods (network namespaces)")
        topology = netns.Topology("demo", workdir, pods=list(PODS.values()))
        for name, address in PODS.items():
            topology.pods.spawn([sys.executable, os.path.join(HERE, "backend.py"), "http",
                                 address, "8080", name], f"pod-{name}")
        for host in topology.hosts.values():
            print(f"    {host.namespace}")

        say(f"Starting the cluster (API simulator), the watcher and two actors ({options.proxy})")
        pools = dict(cluster_module.DEFAULT_POOLS)
        c = cluster_module.Cluster(topology, workdir, proxy=options.proxy, pools=pools,
                                   cert_ips=[RANCHER_IP], ip_families="IPv4,IPv6")
        show("kubectl get nodes -L type", c.kubectl("get", "nodes", "-L", "type").stdout)
        config = c.get("configmap", "-n", "k8slb-system", "global")["data"]["config"]
        show("kubectl -n k8slb-system get configmap global -o jsonpath='{.data.config}'", config)

        say("Creating Services shaped like the README's examples (and their EndpointSlices)")
        c.apply_objects([{"apiVersion": "v1", "kind": "Namespace",
                          "metadata": {"name": "cattle-system"}}])
        c.create_endpoints("default", "myapp-loadbalancer", [PODS["myapp-1"], PODS["myapp-2"]],
                           [("http", 8080, "TCP")])
        c.create_endpoints("default", "myapp-tls", [PODS["myapp-1"], PODS["myapp-2"]],
                           [("https", 8080, "TCP")])
        c.create_endpoints("cattle-system", "rancher-loadbalancer", [PODS["rancher-1"]],
                           [("https", 8080, "TCP")])
        c.create_endpoints("default", "myapp-loadbalancer6", [PODS["myapp6-1"]],
                           [("http", 8080, "TCP")])
        started = time.monotonic()
        show("kubectl apply -f services.yml", c.apply_yaml(SERVICES).stdout)
        ips = {}
        for ns, name in (("default", "myapp-loadbalancer"), ("default", "myapp-tls"),
                         ("cattle-system", "rancher-loadbalancer"),
                         ("default", "myapp-loadbalancer6")):
            ips[name] = c.wait_for_ip(ns, name, timeout=60)
        show("kubectl get svc -A", c.kubectl("get", "svc", "-A").stdout)

        say("Traffic from the client namespace through the VIPs")
        client = topology.client

        def curl(url, *extra):
            def ok():
                result = client.run(["curl", "-sS", "-g", "--max-time", "2", *extra, url],
                                    check=False, timeout=10)
                return result if result.returncode == 0 else None
            result = netns.wait_until(ok, 60, interval=0.2, what=url)
            show(f"ip netns exec {client.namespace} curl {' '.join(extra)} {url}".replace("  ", " "),
                 result.stdout)
        curl(f"http://{ips['myapp-loadbalancer']}/")
        print(f"    (first byte {time.monotonic() - started:.2f} s after kubectl apply)")
        curl(f"https://{ips['myapp-tls']}/", "--cacert", c.ca_crt)
        curl(f"https://{ips['rancher-loadbalancer']}/", "--cacert", c.ca_crt)
        curl(f"http://[{ips['myapp-loadbalancer6']}]/")

        say("Who holds which VIP (keepalived, active/active)")
        for node in topology.lb_nodes:
            held = [a for a in node.addresses_on() if a in ips.values()]
            print(f"    {node.role}: {', '.join(held) or '(none)'}")

        say("Stopping: actors (keepalived hands over, proxies drain), watcher, simulator")
        for role, actor in c.actors.items():
            topology.stop(actor, signal.SIGTERM, timeout=30)
        return 0
    except (TimeoutError, RuntimeError) as error:
        print(f"demo: error: {error}", file=sys.stderr)
        if topology:
            for name in sorted(os.listdir(workdir)):
                if name.endswith(".log"):
                    with open(os.path.join(workdir, name), errors="replace") as log:
                        print(f"----- {name} -----\n{log.read()[-1500:]}", file=sys.stderr)
        return 1
    finally:
        signal.alarm(0)
        if topology:
            topology.close()
        if options.keep:
            print(f"demo: work directory kept: {workdir}")
        else:
            shutil.rmtree(workdir, ignore_errors=True)
        left = []
        if topology and os.path.isdir(netns.NETNS_DIR):
            left += [n for n in os.listdir(netns.NETNS_DIR) if n.startswith(topology.prefix + "-")]
        if not options.keep and os.path.exists(workdir):
            left.append(workdir)
        print("demo: cleaned up" + (f", but left: {', '.join(left)}" if left else
                                    ": its namespaces (and every process in them) and its files are gone"))

if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
