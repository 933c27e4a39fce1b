#!/usr/bin/env bash
# Allocates IPs to the bundled examples and renders the configs, with nothing but the tools.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${K8SLB_BUILD_DIR:-$root/build}
bin() { echo "$build/$1"; }
allocate=$(bin k8slb-allocate); render=$(bin k8slb-render)
ex="$root/examples"
echo "== k8slb-allocate --config examples/pools.json -f examples/services.yml"
"$allocate" --config "$ex/pools.json" -f "$ex/services.yml" > /tmp/k8slb-offline-$$.json || true
python3 - /tmp/k8slb-offline-$$.json <<'PY'
import json, sys
doc = json.load(open(sys.argv[1]))
for item in doc["items"]:
    if item.get("kind") == "Service":
        ips = [i["ip"] for i in item.get("status", {}).get("loadBalancer", {}).get("ingress", [])]
        print(f'  {item["metadata"].get("namespace","default")}/{item["metadata"]["name"]}: {", ".join(ips) or "<none>"}')
    elif item.get("kind") == "Event":
        print(f'  event {item["reason"]}: {item["message"]}')
PY
echo "== k8slb-render haproxy (with examples/endpointslices.yml)"
"$render" haproxy --config "$ex/pools.json" --interfaces "$ex/node-interfaces.json" --no-cert-check \
  -f /tmp/k8slb-offline-$$.json -f "$ex/endpointslices.yml" | sed 's/^/  /'
echo "== k8slb-render keepalived"
"$render" keepalived --config "$ex/pools.json" --interfaces "$ex/node-interfaces.json" \
  -f /tmp/k8slb-offline-$$.json | sed 's/^/  /'
rm -f /tmp/k8slb-offline-$$.json
