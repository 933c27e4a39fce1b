#!/usr/bin/env bash
# Fuzzes the parsers with libFuzzer and runs the unit tests, all built with AddressSanitizer and
# UndefinedBehaviorSanitizer (clang), into build-fuzz/ (or $K8SLB_FUZZ_BUILD_DIR).
#
#   scripts/fuzz.sh [SECONDS]   each target runs SECONDS (default 30); 0 builds and runs only
#                               the seed corpus once
#
# Targets (tests/fuzz/): documents (JSON/YAML documents and streams), config (the config
# document), ip (addresses, CIDRs, ranges), watch (watch events into a store), ip_addr
# (`ip -j addr`). A crash, a sanitizer report, an exception other than k8slb::Error, a run over
# 2 GB or over 10 s on one input fails the script; the input is kept in build-fuzz/crashes/.
# K8SLB_FUZZ_UNIT: the unit tests built and run with the sanitizers: "all" (default), a list of
# parts ("core kube"), or 0 for none.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${K8SLB_FUZZ_BUILD_DIR:-$root/build-fuzz}
seconds=${1:-30}
unit=${K8SLB_FUZZ_UNIT:-all}
[ "$unit" = 0 ] && unit=""
if [ "$unit" = all ]; then
  unit=""
  for dir in "$root"/tests/unit/*/; do unit="$unit $(basename "$dir")"; done
fi
targets="documents config ip watch ip_addr"

sanitize="-fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer"
launcher=()
command -v ccache >/dev/null 2>&1 && launcher=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
started=$(date +%s)
cmake -S "$root" -B "$build" -DCMAKE_CXX_COMPILER="${K8SLB_FUZZ_CXX:-clang++}" -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O1 -g" -DCMAKE_CXX_FLAGS="$sanitize -fsanitize=fuzzer-no-link" \
  -DCMAKE_EXE_LINKER_FLAGS="$sanitize" -DK8SLB_FUZZ=ON "${launcher[@]}" >/dev/null
build_targets=()
for target in $targets; do build_targets+=("fuzz_$target"); done
for part in $unit; do build_targets+=("test_$part"); done
cmake --build "$build" -j"$(nproc)" --target "${build_targets[@]}"
echo "fuzz: built in $(( $(date +%s) - started )) s" >&2

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=1:strict_string_checks=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
status=0
mkdir -p "$build/crashes"
for target in $targets; do
  corpus="$build/corpus/$target"
  mkdir -p "$corpus"
  cp -r "$root/tests/fuzz/seeds/$target/." "$corpus/" 2>/dev/null || true
  case $target in
    documents) cp "$root"/examples/services.yml "$root"/examples/endpointslices.yml "$corpus/" ;;
    config) cp "$root"/examples/pools*.json "$corpus/" ;;
    ip_addr) cp "$root"/examples/node-interfaces.json "$corpus/" ;;
  esac
  if [ "$seconds" = 0 ]; then
    run=(-runs=0)
  else
    run=(-max_total_time="$seconds")
  fi
  echo "fuzz: $target (${seconds} s)" >&2
  if ! "$build/tests/fuzz/fuzz_$target" "${run[@]}" -rss_limit_mb=2048 -timeout=10 -max_len=65536 \
      -print_final_stats=1 -artifact_prefix="$build/crashes/$target-" "$corpus" >"$build/fuzz-$target.log" 2>&1; then
    echo "fuzz: $target FAILED (log: $build/fuzz-$target.log; input: $build/crashes/)" >&2
    tail -40 "$build/fuzz-$target.log" >&2
    status=1
  else
    grep -E "^stat::number_of_executed_units|^stat::peak_rss_mb" "$build/fuzz-$target.log" | sed "s/^/fuzz: $target: /" >&2
  fi
done

for part in $unit; do
    test="$build/tests/test_$part"
    echo "fuzz: $(basename "$test") with ASan+UBSan" >&2
    if ! (cd "$build" && K8SLB_SOURCE_DIR="$root" K8SLB_BINARY_DIR="$build" "$test" --gtest_brief=1 \
          >"$build/$(basename "$test").log" 2>&1); then
      echo "fuzz: $(basename "$test") FAILED (log: $build/$(basename "$test").log)" >&2
      tail -60 "$build/$(basename "$test").log" >&2
      status=1
    fi
done
echo "fuzz: done in $(( $(date +%s) - started )) s, status $status" >&2
exit $status
