"""Runs a container of a shipped manifest the way the kubelet and the container runtime do, with
no container engine: what the pod spec says about the file system, the user, the capabilities,
the environment and the service account, applied with Linux's own tools.

- a private mount namespace (`unshare --mount`) in which
  - the image's files (the table IMAGES, checked against the Dockerfiles) are the only content
    of /usr/local/bin;
  - /run is empty (a tmpfs) apart from the service account's token, CA and namespace at
    /var/run/secrets/kubernetes.io/serviceaccount (read-only, as the kubelet mounts them);
  - every emptyDir volumeMount is an empty, writable tmpfs at its mountPath;
  - with `readOnlyRootFilesystem: true`, everything else is read-only, /tmp included;
- the process runs as the pod's runAsUser/runAsGroup, with no supplementary groups, only the
  capabilities the container adds to an empty set, and no_new_privs when
  `allowPrivilegeEscalation: false` (`setpriv`);
- its environment is the container's `env` (plain values and the downward API's fieldRefs) plus
  what the kubelet adds: KUBERNETES_SERVICE_HOST/PORT, HOSTNAME, PATH of the image.

The API server is the simulator on 127.0.0.1, so the tools use the in-cluster config exactly as
they do in a pod. Processes are started here and stopped here by PID.
"""

import os
import shlex
import shutil
import signal
import subprocess
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR") or os.path.join(SOURCE_DIR, "build")

# What each image puts in /usr/local/bin: (file in the image, where it comes from here).
IMAGES = {
    "watcher": [("k8slb-watch", os.path.join(BINARY_DIR, "k8slb-watch")),
                ("k8slb-allocate", os.path.join(BINARY_DIR, "k8slb-allocate")),
                ("k8slb-apply", os.path.join(BINARY_DIR, "k8slb-apply")),
                ("watcher.sh", os.path.join(SOURCE_DIR, "scripts", "watcher.sh"))],
}
IMAGE_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def image_of(container):
    """'k8slb/watcher:0.1.0' -> 'watcher'."""
    return container["image"].rsplit("/", 1)[-1].split(":", 1)[0]


def dockerfile_installs(image):
    """The names the image's Dockerfile installs into /usr/local/bin."""
    with open(os.path.join(SOURCE_DIR, "docker", f"Dockerfile.{image}")) as f:
        text = f.read()
    return {name for name, _ in IMAGES[image] if name in text}


def environment(container, pod_name, namespace, node_name, api_port, config_maps):
    """The container's environment as the kubelet makes it: envFrom (ConfigMaps, by name in
    `config_maps`), then env (plain values, the downward API's fieldRefs)."""
    fields = {"metadata.name": pod_name, "metadata.namespace": namespace, "spec.nodeName": node_name}
    env = {"PATH": IMAGE_PATH, "HOSTNAME": pod_name, "HOME": "/",
           "KUBERNETES_SERVICE_HOST": "127.0.0.1", "KUBERNETES_SERVICE_PORT": str(api_port)}
    for source in container.get("envFrom", []):
        env.update(config_maps[source["configMapRef"]["name"]]["data"])
    for entry in container.get("env", []):
        if "value" in entry:
            env[entry["name"]] = entry["value"]
        elif "fieldRef" in entry.get("valueFrom", {}):
            env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
        elif entry.get("valueFrom", {}).get("secretKeyRef", {}).get("optional"):
            continue  # no such Secret in the test cluster: an optional key is left unset
        else:
            raise ValueError(f"env {entry['name']}: source not supported by the test: {entry}")
    return env


class Pod:
    """One container of a pod spec, running in its own mount namespace."""

    def __init__(self, pod_spec, container, name, namespace, sim, workdir, node_name="node1",
                 config_maps=None):
        self.name = name
        self.workdir = tempfile.mkdtemp(prefix=f"{name}-", dir=workdir)
        self.log_path = os.path.join(self.workdir, "log")
        security = dict(pod_spec.get("securityContext", {}))
        security.update(container.get("securityContext", {}))
        self.security = security
        self.container = container
        self.env = environment(container, name, namespace, node_name, sim.port, config_maps or {})
        # The service account's files, copied into the pod's own tmpfs by the prelude.
        account = os.path.join(self.workdir, "serviceaccount")
        os.makedirs(account)
        shutil.copy(sim.ca_file, os.path.join(account, "ca.crt"))
        with open(os.path.join(account, "token"), "w") as f:
            f.write(sim.token)
        with open(os.path.join(account, "namespace"), "w") as f:
            f.write(namespace)
        self.prelude = self._prelude(pod_spec, container, account)
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                ["unshare", "--mount", "--propagation", "private", "--", "sh", "-c", self.prelude,
                 "pod"] + self._exec(container["command"] + container.get("args", [])),
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True)
        self.pid = self.process.pid  # the container's process once the prelude has exec'd

    def _prelude(self, pod_spec, container, account):
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        steps = ["set -e",
                 "mount -t tmpfs -o mode=0755 pod-run /run",
                 f"mkdir -p {SERVICE_ACCOUNT_DIR}",
                 f"mount -t tmpfs -o mode=0755 pod-sa {SERVICE_ACCOUNT_DIR}",
                 f"cp {shlex.quote(account)}/* {SERVICE_ACCOUNT_DIR}/",
                 f"chmod 0644 {SERVICE_ACCOUNT_DIR}/*",
                 f"mount -o remount,ro,bind {SERVICE_ACCOUNT_DIR}",
                 "mount -t tmpfs -o mode=0755 pod-image /usr/local/bin"]
        for name, source in IMAGES[image_of(container)]:
            steps.append(f"cp {shlex.quote(source)} /usr/local/bin/{name}")
        steps.append("chmod 0755 /usr/local/bin/*")
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" not in volume:
                raise ValueError(f"volume {mount['name']}: only emptyDir is supported by the test")
            path = shlex.quote(mount["mountPath"])
            steps += [f"mkdir -p {path}", f"mount -t tmpfs -o mode=1777 pod-{mount['name']} {path}"]
        if self.security.get("readOnlyRootFilesystem"):
            steps += ["mount -o remount,ro,bind /", "mount -o remount,ro /run",
                      "mount -o remount,ro /usr/local/bin"]
        else:
            steps += ["mount -o remount,ro /usr/local/bin"]
        steps.append('exec "$@"')
        return "\n".join(steps)

    def _exec(self, argv, user_env=True):
        """setpriv + env -i: the container's user, capabilities and environment."""
        user = self.security.get("runAsUser", 0)
        group = self.security.get("runAsGroup", user)
        added = self.security.get("capabilities", {}).get("add", [])
        dropped = self.security.get("capabilities", {}).get("drop", [])
        if dropped != ["ALL"]:
            raise ValueError("the test runs containers that drop ALL capabilities only")
        caps = ",".join(["-all"] + [f"+{c.lower()}" for c in added])
        command = ["setpriv", f"--reuid={user}", f"--regid={group}", "--clear-groups",
                   f"--inh-caps={caps}", f"--bounding-set={caps}"]
        if added and user != 0:
            command.append(f"--ambient-caps={caps}")
        if self.security.get("allowPrivilegeEscalation") is False:
            command.append("--no-new-privs")
        env = [f"{k}={v}" for k, v in sorted(self.env.items())] if user_env else []
        return command + ["env", "-i"] + env + argv

    def exec_probe(self, probe, timeout=10):
        """Runs an exec probe in the container's namespaces; returns its exit status."""
        argv = ["nsenter", f"--target={self.pid}", "--mount", "--"] + self._exec(probe["exec"]["command"])
        try:
            return subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            return -1

    def log(self):
        with open(self.log_path, errors="replace") as f:
            return f.read()

    def running(self):
        return self.process.poll() is None

    def stop(self, grace=30):
        """As the kubelet stops a container: SIGTERM, SIGKILL after the grace period. Returns
        the exit status."""
        if self.process.poll() is None:
            os.kill(self.pid, signal.SIGTERM)
            try:
                self.process.wait(timeout=grace)
            except subprocess.TimeoutExpired:
                pass
        try:
            os.killpg(self.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        if self.process.poll() is None:
            self.process.wait(timeout=10)
        return self.process.returncode


def usable():
    """None when this machine can run pods this way, else why not."""
    if os.geteuid() != 0:
        return "needs root (mount namespaces)"
    for tool in ("unshare", "setpriv", "nsenter"):
        if not shutil.which(tool):
            return f"{tool} not found"
    probe = subprocess.run(["unshare", "--mount", "--propagation", "private", "--", "sh", "-c",
                            "mount -t tmpfs probe /run && mount -o remount,ro,bind /"],
                           capture_output=True, text=True)
    if probe.returncode != 0:
        return f"mount namespaces unavailable: {probe.stderr.strip()}"
    return None


def tempdir():
    """A work directory that the pod's unprivileged user can read (the copies are made as root)."""
    path = tempfile.mkdtemp(prefix="k8slb-deploy-")
    os.chmod(path, 0o755)
    return path
