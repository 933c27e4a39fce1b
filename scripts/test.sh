#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (unit, tools, real
# daemons, simulator, network namespaces).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${K8SLB_BUILD_DIR:-$root/build}
cd "$build"
ctest --output-on-failure --timeout 300 -j"${K8SLB_TEST_JOBS:-2}" "$@"
