#!/usr/bin/env bash
# The test command: installs what is missing, builds, runs every test (unit, tools, real
# daemons, simulator, network namespaces), then a bounded fuzz run of the parsers and of the
# parsers' unit tests built with ASan+UBSan (scripts/fuzz.sh; K8SLB_FUZZ_SECONDS per target,
# default 5, 0 to skip; K8SLB_FUZZ_UNIT=all for every unit test).
# Arguments go to ctest (e.g. -R tools) and skip the fuzz run.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
"$root/scripts/install-deps.sh"
"$root/scripts/build.sh"
build=${K8SLB_BUILD_DIR:-$root/build}
cd "$build"
ctest --output-on-failure --timeout 300 -j"${K8SLB_TEST_JOBS:-2}" "$@"
if [ "$#" -eq 0 ] && [ "${K8SLB_FUZZ_SECONDS:-5}" != 0 ]; then
  K8SLB_FUZZ_UNIT=${K8SLB_FUZZ_UNIT:-core kube} "$root/scripts/fuzz.sh" "${K8SLB_FUZZ_SECONDS:-5}"
fi
