#!/usr/bin/env bash
# Passes bird.conf through BIRD's own parser (`bird -p -c`): the golden file, and what
# k8slb-render writes as a user runs it for a config document with a bgp section (passwords
# from files, BFD, IPv4 and IPv6 peers), with VIPs and without any.
#   check_bird.sh GOLDEN_DIR K8SLB_RENDER
# Exit 77 (skip) when bird is not installed.
set -euo pipefail
golden=$1 render=$2
command -v bird >/dev/null || { echo "skip: bird is not installed"; exit 77; }
work=$(mktemp -d /tmp/k8slb-bird-check.XXXXXX)
trap 'rm -rf "$work"' EXIT

check() {
  if ! out=$(bird -p -c "$1" 2>&1); then echo "FAIL $1 rejected by bird -p:"; echo "$out"; cat -n "$1"; exit 1; fi
  if [[ -n $out ]]; then echo "FAIL $1: bird -p printed: $out"; exit 1; fi
  echo "ok $1"
}

check "$golden/bird.conf"

printf 'md5-secret\n' > "$work/peer1"
cat > "$work/config.json" <<JSON
{"pools": {
   "vrrp": {"network": "192.0.2.0/24", "range": "192.0.2.200-192.0.2.250"},
   "external": {"network": "198.51.100.0/24", "range": "198.51.100.10-198.51.100.50", "announce": "bgp"},
   "ipv6": {"network": "2001:db8::/64", "range": "2001:db8::100-2001:db8::1ff", "announce": "bgp"}},
 "bgp": {"asn": 64512, "peers": [
   {"address": "203.0.113.1", "asn": 65000, "passwordFile": "$work/peer1", "bfd": true, "holdTime": 9},
   {"address": "203.0.113.2", "asn": 64512, "port": 1179},
   {"address": "2001:db8:ffff::1", "asn": 4200000000, "bfd": true}]}}
JSON
for input in "$golden/input.yaml"; do
  name=$(basename "$input")
  mkdir -p "$work/$name"
  status=0
  "$render" --output-dir "$work/$name" all --proxy kubeproxy -f "$golden/input.yaml" --config "$work/config.json" \
    --node lb-a --interfaces "$golden/interfaces.json" 2>"$work/$name.err" || status=$?
  if [[ $status != 0 && $status != 3 ]]; then echo "FAIL k8slb-render (exit $status):"; cat "$work/$name.err"; exit 1; fi
  grep -q 'password "md5-secret";' "$work/$name/bird.conf" || { echo "FAIL: no password from the file"; exit 1; }
  check "$work/$name/bird.conf"
done
# Without Services: no routes, the same peers.
echo '{"apiVersion": "v1", "kind": "Node", "metadata": {"name": "lb-a", "labels": {"type": "loadBalancer"}}}' > "$work/node.json"
mkdir -p "$work/empty"
"$render" --output-dir "$work/empty" bird -f "$work/node.json" --config "$work/config.json" --node lb-a \
  --interfaces "$golden/interfaces.json"
if grep -q '  route ' "$work/empty/bird.conf"; then echo "FAIL: routes without Services"; exit 1; fi
check "$work/empty/bird.conf"
