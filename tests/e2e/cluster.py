"""A whole k8slb installation for the end-to-end tests and the demo, on one machine:

  * the Kubernetes API simulator (tests/kubesim) on the host's loopback, reached from the node
    namespaces through the harness's forwarders;
  * Nodes lb1..N labelled type=loadBalancer (InternalIP 192.0.2.1x) and one worker;
  * the config ConfigMap k8slb-system/global, test certificates for every pool;
  * the watcher (scripts/watcher.sh, or the same pipeline by hand) on the host;
  * one actor (scripts/actor.sh) inside every load-balancer node namespace.

Services and EndpointSlices are created with kubectl, as a user (or the endpoint controller,
which the simulator does not run) would.
"""

import ipaddress
import json
import os
import shutil
import subprocess
import sys
import time

import netns

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR", os.path.join(SOURCE_DIR, "build"))
KUBESIM = os.path.join(SOURCE_DIR, "tests", "kubesim", "kubesim.py")
ACTOR = os.path.join(SOURCE_DIR, "scripts", "actor.sh")
WATCHER = os.path.join(SOURCE_DIR, "scripts", "watcher.sh")

# Pools of the tests: a small range so that one certificate can name every dynamic IP.
DEFAULT_POOLS = {
    "default": {"network": "203.0.113.0/25", "range": "203.0.113.100-203.0.113.109"},
    "external": {"network": "203.0.113.128/25", "range": "203.0.113.160-203.0.113.169"},
    "ipv6": {"network": "2001:db8:203::/64", "range": "2001:db8:203::100-2001:db8:203::109"},
}


def http_service(name, namespace="default", port=80, target_port=8080):
    """A Service manifest as a user writes it: type LoadBalancer, one port named http."""
    return f"""
apiVersion: v1
kind: Service
metadata:
  name: {name}
  namespace: {namespace}
spec:
  type: LoadBalancer
  selector:
    app: {name}
  ports:
    - name: http
      port: {port}
      targetPort: {target_port}
"""


def tool(name):
    return os.path.join(BINARY_DIR, name)


def missing_tools(*names):
    return [name for name in names if not os.access(tool(name), os.X_OK)]


def pool_addresses(pool):
    """Every address of a pool's dynamic range and of its network's start (bounded: small)."""
    text = pool["range"]
    if "-" in text:
        first, last = (ipaddress.ip_address(part) for part in text.split("-"))
    else:
        network = ipaddress.ip_network(text)
        first, last = network[0], network[-1]
    count = int(last) - int(first) + 1
    if count > 64:
        raise ValueError(f"range {text} is too big for a test certificate")
    return [str(first + i) for i in range(count)]


def make_certificates(directory, pools, extra_ips=()):
    """A test CA and, for every pool, a certificate naming its dynamic IPs (and extra_ips):
    <pool>.pem (certificate + key, HAProxy's bundle), <pool>.crt, <pool>.key (nginx)."""
    os.makedirs(directory, exist_ok=True)

    def openssl(*args):
        netns.run(["openssl", *args], timeout=60)

    ca_key, ca_crt = os.path.join(directory, "ca.key"), os.path.join(directory, "ca.crt")
    openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
            "-keyout", ca_key, "-out", ca_crt, "-days", "2", "-subj", "/CN=k8slb test CA")
    for name, pool in pools.items():
        ips = pool_addresses(pool) + [ip for ip in extra_ips
                                      if ipaddress.ip_address(ip) in _network_of(pool)]
        key = os.path.join(directory, f"{name}.key")
        csr = os.path.join(directory, f"{name}.csr")
        crt = os.path.join(directory, f"{name}.crt")
        ext = os.path.join(directory, f"{name}.ext")
        with open(ext, "w") as out:
            out.write("subjectAltName=" + ",".join(f"IP:{ip}" for ip in ips) + "\n"
                      "extendedKeyUsage=serverAuth\n")
        openssl("req", "-new", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", key, "-out", csr, "-subj", f"/CN=k8slb pool {name}")
        openssl("x509", "-req", "-in", csr, "-CA", ca_crt, "-CAkey", ca_key, "-CAcreateserial",
                "-out", crt, "-days", "2", "-extfile", ext)
        with open(os.path.join(directory, f"{name}.pem"), "w") as bundle:
            for part in (crt, key):
                with open(part) as text:
                    bundle.write(text.read())
        shutil.copy(crt, os.path.join(directory, f"{name}.cert.pem"))
    return ca_crt


def _network_of(pool):
    text = pool["network"]
    if "-" in text:
        first, last = (ipaddress.ip_address(part) for part in text.split("-"))
        return list(ipaddress.summarize_address_range(first, last))[0]
    return ipaddress.ip_network(text)


class Cluster:
    """The simulator plus k8slb's watcher and actors, inside a netns.Topology."""

    def __init__(self, topology, workdir, proxy="haproxy", pools=None, keepalived=None,
                 proxy_settings=None, advert_int=None, unicast=False, vrrp_password="",
                 start_actors=True, cert_ips=(), settings=None, ip_families="IPv4", bgp=None):
        self.topology = topology
        # The simulated cluster's service IP families (kubesim --ip-families): single-stack
        # IPv4 as a default cluster is; a test with IPv6 Services says "IPv4,IPv6".
        self.ip_families = ip_families
        # What the watcher and every actor share (CONFIG_MAP, LB_CLASS), as the manifests set it.
        self.settings = dict(settings or {})
        config_ns, config_name = self.settings.get("CONFIG_MAP", "k8slb-system/global").split("/")
        self.workdir = workdir
        self.proxy = proxy
        self.pools = pools or DEFAULT_POOLS
        self.kube_dir = os.path.join(workdir, "kube")
        self.cert_dir = os.path.join(workdir, "certs")
        self.actors = {}
        self.advert_int = advert_int
        self.unicast = unicast
        self.vrrp_password = vrrp_password
        self.ca_crt = make_certificates(self.cert_dir, self.pools, extra_ips=cert_ips)
        self._start_simulator()
        topology.forward_api(self.port)
        self._create_nodes()
        config = {"pools": self.pools}
        if keepalived:
            config["keepalived"] = keepalived
        if bgp:
            config["bgp"] = bgp
        if proxy_settings and proxy in ("haproxy", "nginx"):
            config[proxy] = proxy_settings
        if config_ns != "k8slb-system":
            self.apply_objects([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": config_ns}}])
        self.apply_objects([{
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": config_name, "namespace": config_ns},
            "data": {"config": json.dumps(config, indent=2)}}])
        self._start_watcher()
        if start_actors:
            for node in topology.lb_nodes:
                self.start_actor(node)

    # --- the simulator and kubectl ------------------------------------------------------

    def _start_simulator(self):
        os.makedirs(self.kube_dir, exist_ok=True)
        self.simulator = self.topology.spawn(
            None, [sys.executable, KUBESIM, "--workdir", self.kube_dir,
                   "--ip-families", self.ip_families], "kubesim")
        port_file = os.path.join(self.kube_dir, "port")

        def ready():
            if self.simulator.poll() is not None:
                raise RuntimeError(f"kubesim exited: {open(self.simulator.log_path).read()[-2000:]}")
            with open(self.simulator.log_path) as log:
                return "ready https://" in log.read() and os.path.exists(port_file)
        netns.wait_until(ready, 30, interval=0.1, what="the API simulator")
        with open(port_file) as port:
            self.port = int(port.read().strip())
        self.kubeconfig = os.path.join(self.kube_dir, "kubeconfig")

    def kubectl(self, *args, input=None, check=True, timeout=30):
        result = netns.run(["kubectl", "--kubeconfig", self.kubeconfig, *args], check=False,
                           input=input, timeout=timeout)
        if check and result.returncode != 0:
            raise RuntimeError(f"kubectl {' '.join(args)}: {result.stderr.strip()}")
        return result

    def apply_objects(self, objects):
        # One YAML document per object (JSON is YAML), as a user's manifest would be.
        return self.kubectl("apply", "-f", "-", input="\n---\n".join(json.dumps(o) for o in objects))

    def apply_yaml(self, text):
        return self.kubectl("apply", "-f", "-", input=text)

    def get(self, *what):
        return json.loads(self.kubectl("get", *what, "-o", "json").stdout)

    # --- the cluster's contents -----------------------------------------------------------

    def _create_nodes(self):
        nodes = [(host.role, host.lan4, {"type": "loadBalancer"}) for host in self.topology.lb_nodes]
        nodes.append(("worker1", "192.0.2.40", {}))
        for name, address, labels in nodes:
            labels = dict(labels, **{"kubernetes.io/hostname": name})
            self.apply_objects([{"apiVersion": "v1", "kind": "Node",
                                 "metadata": {"name": name, "labels": labels}}])
            status = {"status": {
                "addresses": [{"type": "InternalIP", "address": address},
                              {"type": "Hostname", "address": name}],
                "conditions": [{"type": "Ready", "status": "True"}]}}
            self.kubectl("patch", "node", name, "--subresource=status", "--type=merge",
                         "-p", json.dumps(status))

    def create_endpoints(self, namespace, service, addresses, ports, name=None):
        """An EndpointSlice for a Service (the simulator runs no endpoint controller).
        ports: [(name, port, protocol)]."""
        family = "IPv6" if ":" in addresses[0] else "IPv4"
        slice_name = name or f"{service}-{family.lower()}"
        self.apply_objects([{
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
            "metadata": {"name": slice_name, "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "e2e.k8slb.test"}},
            "addressType": family,
            "endpoints": [{"addresses": [address], "conditions": {"ready": True},
                           "nodeName": "worker1",
                           "targetRef": {"kind": "Pod", "namespace": namespace,
                                         "name": f"{service}-{i}"}}
                          for i, address in enumerate(addresses)],
            "ports": [{"name": port_name, "port": port, "protocol": protocol}
                      for port_name, port, protocol in ports]}])

    def ingress_of(self, namespace, name):
        service = self.get("service", "-n", namespace, name)
        return service.get("status", {}).get("loadBalancer", {}).get("ingress", [])

    def wait_for_ip(self, namespace, name, timeout=30):
        """The first ingress IP of a Service once the watcher has published it."""
        def assigned():
            ingress = self.ingress_of(namespace, name)
            return ingress[0].get("ip") if ingress else None
        return netns.wait_until(assigned, timeout, interval=0.1,
                                what=f"an IP on Service {namespace}/{name}")

    # --- k8slb --------------------------------------------------------------------------

    def _environment(self, extra=None):
        env = dict(os.environ)
        env.update({"KUBECONFIG": self.kubeconfig, "K8SLB_BIN": BINARY_DIR,
                    "PATH": BINARY_DIR + os.pathsep + env.get("PATH", "")})
        env.update(self.settings)
        env.update(extra or {})
        return env

    def _start_watcher(self):
        env = self._environment({"PROXY": self.proxy, "POD_NAME": "watcher-0",
                                 "POD_NAMESPACE": "k8slb-system",
                                 "RUN_DIR": os.path.join(self.workdir, "watcher")})
        os.makedirs(env["RUN_DIR"], exist_ok=True)
        if os.access(WATCHER, os.X_OK):
            self.watcher = self.topology.spawn(None, [WATCHER], "watcher", env=env)
            return
        ip_mode = "VIP" if self.proxy == "kubeproxy" else "Proxy"
        pipeline = (f'"{tool("k8slb-watch")}" services configmap/k8slb-system/global'
                    f' | "{tool("k8slb-allocate")}" --ip-mode {ip_mode}'
                    f' | "{tool("k8slb-apply")}" cluster')
        self.watcher = self.topology.spawn(None, ["bash", "-c", f"set -o pipefail; {pipeline}"],
                                           "watcher", env=env)

    def actor_environment(self, node):
        base = os.path.join(self.workdir, node.role)
        env = self._environment({
            "NODE_NAME": node.role, "PROXY": self.proxy, "CERT_PATH": self.cert_dir,
            "UNICAST": "true" if self.unicast else "false",
            "RUN_DIR": os.path.join(base, "run"), "CONFIG_DIR": os.path.join(base, "etc"),
            "RESTART_DELAY_MAX": "2"})
        if self.advert_int is not None:  # else actor.sh's default, as the manifests ship
            env["ADVERT_INT"] = str(self.advert_int)
        if self.vrrp_password:
            env["VRRP_PASSWORD"] = self.vrrp_password
        return env

    def start_actor(self, node):
        env = self.actor_environment(node)
        for key in ("RUN_DIR", "CONFIG_DIR"):
            os.makedirs(env[key], exist_ok=True)
        self.actors[node.role] = node.spawn(["bash", ACTOR], f"actor-{node.role}", env=env)
        return self.actors[node.role]

    def run_dir(self, node):
        return os.path.join(self.workdir, node.role, "run")

    def daemon_pid(self, node, name, settle=1.0):
        """PID of a daemon the node's actor started, from its pid file, or None.

        HAProxy's master rewrites its pid file on every reload: for a few milliseconds
        (longer with a larger config) the file is missing or empty. Such a read is tried
        again for up to `settle` seconds; a pid that is not alive is None at once."""
        deadline = time.monotonic() + settle
        while True:
            try:
                with open(os.path.join(self.run_dir(node), f"{name}.pid")) as pid_file:
                    pid = int(pid_file.read().split()[0])
            except (OSError, ValueError, IndexError):
                if time.monotonic() < deadline:
                    time.sleep(0.02)
                    continue
                return None
            try:
                os.kill(pid, 0)
                return pid
            except OSError:
                return None
