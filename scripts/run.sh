#!/usr/bin/env bash
# The main command: installs what is missing, builds, and runs k8slb's live demo (a simulated
# cluster, two load-balancer nodes and a client in network namespaces, real keepalived and
# HAProxy). Without network namespaces (no root), it runs the offline pipeline on the bundled
# examples instead.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${K8SLB_BUILD_DIR:-$root/build}
export PATH="$build:$PATH"
if [ "${1:-}" != "--offline" ] && [ -x "$root/scripts/demo.sh" ] && ip netns add "k8slb-probe-$$" 2>/dev/null; then
  ip netns del "k8slb-probe-$$"
  exec "$root/scripts/demo.sh"
fi
exec "$root/scripts/offline-demo.sh"
