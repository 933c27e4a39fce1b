"""Runs a container of a shipped manifest from the image scripts/build-images.sh built, with
podman, translating the pod spec as the kubelet applies it:

  securityContext    --user, --read-only (and no tmpfs of podman's own: --read-only-tmpfs=false),
                     --cap-drop ALL / --cap-add, no-new-privileges, the default seccomp profile
  volumes            emptyDir -> tmpfs, hostPath -> bind mount (read-only where the mount says)
  env, envFrom       plain values, the downward API's fieldRefs, ConfigMaps
  service account    token, ca.crt, namespace at /var/run/secrets/kubernetes.io/serviceaccount,
                     KUBERNETES_SERVICE_HOST/PORT
  hostNetwork        the node's network namespace (--network ns:...); a pod network otherwise is
                     the host's loopback here, where the API simulator listens
  probes             podman exec of the probe's command
  stop               podman stop with the pod's terminationGracePeriodSeconds

Debian's podman 4.3 runs here with vfs storage, cgroupfs and runc, and rlimits within the
sandbox's own (no CAP_SYS_RESOURCE).
"""

import os
import shutil
import subprocess

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("K8SLB_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
BINARY_DIR = os.environ.get("K8SLB_BINARY_DIR") or os.path.join(SOURCE_DIR, "build")
IMAGE_DIR = os.path.join(BINARY_DIR, "images")
IMAGE_REPO = "localhost/k8slb"
SERVICE_ACCOUNT_DIR = "/var/run/secrets/kubernetes.io/serviceaccount"


def podman(*args, check=True, timeout=120, input=None):
    command = ["podman", "--root", os.path.join(IMAGE_DIR, "storage"),
               "--runroot", os.path.join(IMAGE_DIR, "run"), "--storage-driver", "vfs",
               "--cgroup-manager", "cgroupfs", "--runtime", "runc", *args]
    result = subprocess.run(command, capture_output=True, text=True, timeout=timeout, input=input)
    if check and result.returncode != 0:
        raise RuntimeError(f"{' '.join(command)}: {result.stderr.strip()}")
    return result


def local_image(manifest_image, tag):
    """registry.invalid/k8slb/watcher:0.1.0 -> localhost/k8slb/watcher:<tag>, as kustomize's
    `images:` would point it at the user's registry."""
    name = manifest_image.rsplit("/", 1)[-1].split(":", 1)[0]
    return f"{IMAGE_REPO}/{name}:{tag}"


class PodmanPod:
    """One container of a pod spec, run by podman from the built image."""

    def __init__(self, pod_spec, container, name, namespace, workdir, api_host, api_port,
                 token, ca_file, tag, node_name="node1", config_maps=None, netns=None,
                 host_paths=None):
        self.name = name
        self.grace = pod_spec.get("terminationGracePeriodSeconds", 30)
        security = dict(pod_spec.get("securityContext", {}))
        security.update(container.get("securityContext", {}))
        account = os.path.join(workdir, f"{name}-serviceaccount")
        os.makedirs(account)
        shutil.copy(ca_file, os.path.join(account, "ca.crt"))
        for file_name, text in (("token", token), ("namespace", namespace)):
            with open(os.path.join(account, file_name), "w") as f:
                f.write(text)
        os.chmod(account, 0o755)
        for entry in os.listdir(account):
            os.chmod(os.path.join(account, entry), 0o644)

        args = ["run", "--detach", "--name", name, "--hostname", name,
                "--ulimit", "nofile=16384:16384", "--ulimit", "nproc=4096:4096",
                "--log-driver", "k8s-file", "--log-opt", f"path={os.path.join(workdir, name + '.log')}"]
        args += ["--network", f"ns:/var/run/netns/{netns}" if netns else "host"]
        if security.get("readOnlyRootFilesystem"):
            args += ["--read-only", "--read-only-tmpfs=false"]
        if "runAsUser" in security:
            args += ["--user", f"{security['runAsUser']}:{security.get('runAsGroup', security['runAsUser'])}"]
        capabilities = security.get("capabilities", {})
        for cap in capabilities.get("drop", []):
            args += ["--cap-drop", cap]
        for cap in capabilities.get("add", []):
            args += ["--cap-add", cap]
        if security.get("allowPrivilegeEscalation") is False:
            args += ["--security-opt", "no-new-privileges"]
        if security.get("privileged"):
            args += ["--privileged"]
        # Volumes.
        volumes = {v["name"]: v for v in pod_spec.get("volumes", [])}
        for mount in container.get("volumeMounts", []):
            volume = volumes[mount["name"]]
            if "emptyDir" in volume:
                options = f"type=tmpfs,destination={mount['mountPath']},tmpfs-mode=1777"
                args += ["--mount", options]
            elif "hostPath" in volume:
                source = (host_paths or {}).get(volume["hostPath"]["path"], volume["hostPath"]["path"])
                suffix = ":ro" if mount.get("readOnly") else ""
                args += ["--volume", f"{source}:{mount['mountPath']}{suffix}"]
            else:
                raise ValueError(f"volume {mount['name']}: not supported by the test")
        args += ["--volume", f"{account}:{SERVICE_ACCOUNT_DIR}:ro"]
        # Environment.
        fields = {"metadata.name": name, "metadata.namespace": namespace, "spec.nodeName": node_name}
        env = {"KUBERNETES_SERVICE_HOST": api_host, "KUBERNETES_SERVICE_PORT": str(api_port)}
        for source in container.get("envFrom", []):
            env.update((config_maps or {})[source["configMapRef"]["name"]]["data"])
        for entry in container.get("env", []):
            if "value" in entry:
                env[entry["name"]] = entry["value"]
            elif "fieldRef" in entry.get("valueFrom", {}):
                env[entry["name"]] = fields[entry["valueFrom"]["fieldRef"]["fieldPath"]]
            elif not entry.get("valueFrom", {}).get("secretKeyRef", {}).get("optional"):
                raise ValueError(f"env {entry['name']}: not supported by the test")
        for key, value in sorted(env.items()):
            args += ["--env", f"{key}={value}"]
        command = container.get("command", [])
        if command:
            args += ["--entrypoint", command[0]]
        args.append(local_image(container["image"], tag))
        args += command[1:] + container.get("args", [])
        podman(*args)

    def exec_probe(self, probe, timeout=20):
        result = podman("exec", self.name, *probe["exec"]["command"], check=False, timeout=timeout)
        return result.returncode

    def running(self):
        result = podman("inspect", "--format", "{{.State.Running}}", self.name, check=False)
        return result.stdout.strip() == "true"

    def log(self):
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def stop(self, grace=None):
        """As the kubelet stops it: SIGTERM, SIGKILL after the grace period; returns the exit code."""
        podman("stop", "--time", str(self.grace if grace is None else grace), self.name,
               check=False, timeout=(grace or self.grace) + 30)
        code = podman("inspect", "--format", "{{.State.ExitCode}}", self.name, check=False).stdout.strip()
        return int(code) if code.isdigit() else None

    def remove(self):
        podman("rm", "--force", "--time", "0", self.name, check=False, timeout=60)


def usable():
    """None when podman can run the built images here, else why not."""
    if os.geteuid() != 0:
        return "needs root"
    if not shutil.which("podman"):
        return "podman not installed"
    return None
