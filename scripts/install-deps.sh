#!/usr/bin/env bash
# Installs the Debian 12 packages k8slb needs to build, test and run its demo (clang and its
# sanitizer and libFuzzer runtimes for scripts/fuzz.sh; valgrind for one lifetime test).
# Only what is missing is installed; safe to run again.
set -euo pipefail

PACKAGES="build-essential cmake pkg-config git ca-certificates curl openssl iproute2 procps psmisc python3 nlohmann-json3-dev libyaml-cpp-dev libfmt-dev libcurl4-openssl-dev libssl-dev libcli11-dev libboost-dev libboost-filesystem-dev libgtest-dev haproxy nginx libnginx-mod-stream keepalived prometheus wrk python3-yaml python3-kubernetes mmdebstrap podman runc clang libclang-rt-14-dev valgrind systemd logrotate"

missing=()
for package in $PACKAGES; do
  dpkg-query -W -f='${Status}' "$package" 2>/dev/null | grep -q "install ok installed" || missing+=("$package")
done
# kubectl: the machine's own if there is one, else Debian's kubernetes-client.
command -v kubectl >/dev/null 2>&1 || missing+=(kubernetes-client)

if [ "${#missing[@]}" -gt 0 ]; then
  echo "install-deps: installing ${missing[*]}" >&2
  if [ "$(id -u)" -ne 0 ]; then SUDO=sudo; else SUDO=; fi
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
# The Debian packages start their daemons where an init system runs; k8slb runs its own.
for daemon in haproxy nginx keepalived; do
  if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet "$daemon" 2>/dev/null; then
    echo "install-deps: note: the system's $daemon service is running; k8slb's tests run their own" >&2
  fi
done
