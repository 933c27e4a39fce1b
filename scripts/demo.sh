#!/usr/bin/env bash
# k8slb's live demo: a simulated cluster, two load-balancer nodes, a client and pods as network
# namespaces, the real watcher and actors (keepalived + HAProxy). Creates Services like the
# README's examples with kubectl, shows their IPs and traffic through the VIPs (plain and TLS),
# then removes everything it made. Needs root (network namespaces) and the built tools.
#
#   scripts/demo.sh [--proxy haproxy|nginx] [--timeout SECONDS] [--keep]
#
# The tools are taken from K8SLB_BINARY_DIR (default: build/ under the repository).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
export K8SLB_SOURCE_DIR="$root"
export K8SLB_BINARY_DIR=${K8SLB_BINARY_DIR:-${K8SLB_BUILD_DIR:-$root/build}}
export PYTHONDONTWRITEBYTECODE=1
exec timeout --kill-after=30 900 python3 "$root/tests/e2e/demo.py" "$@"
