#!/usr/bin/env bash
# Passes the golden files and rendered variants through a daemon's own checker.
#   check.sh haproxy|nginx|keepalived RENDER_CHECK_GEN GOLDEN_DIR [K8SLB_RENDER ORIGINAL_DIR]
# With K8SLB_RENDER, the golden input is also rendered by the tool itself with each config
# document in the original's format in ORIGINAL_DIR (examples/original: haproxy.json,
# nginx.json, kubeproxy.json, the kinds of lines the original shipped), unchanged.
# A file passes when the checker exits 0 and prints no warning. Exit 77 (skip) when the
# checker or root (for the network namespace) is missing.
set -euo pipefail

checker=$1 gen=$2 golden=$3 render=${4:-} original=${5:-}
command -v "$checker" >/dev/null || { echo "skip: $checker is not installed"; exit 77; }
command -v openssl >/dev/null || { echo "skip: openssl is not installed"; exit 77; }
if [[ $checker != haproxy && $(id -u) != 0 ]]; then echo "skip: $checker check needs root for a network namespace"; exit 77; fi

work=$(mktemp -d /tmp/k8slb-render-check.XXXXXX)
netns=""
cleanup() {
  if [[ -n $netns ]]; then ip netns del "$netns" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# A throw-away CA and one certificate per pool: <pool>.pem is the haproxy bundle (certificate
# then key), <pool>.key the key for nginx.
mkdir -p "$work/certs" "$work/run" "$work/out"
openssl req -x509 -newkey rsa:2048 -nodes -days 1 -subj /CN=k8slb-test-ca \
  -keyout "$work/certs/ca.key" -out "$work/certs/ca.crt" 2>/dev/null
for pool in default external ipv6; do
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$pool.example.com" \
    -keyout "$work/certs/$pool.key" -out "$work/certs/$pool.csr" 2>/dev/null
  openssl x509 -req -in "$work/certs/$pool.csr" -CA "$work/certs/ca.crt" -CAkey "$work/certs/ca.key" \
    -CAcreateserial -days 1 -out "$work/certs/$pool.crt" 2>/dev/null
  cat "$work/certs/$pool.crt" "$work/certs/$pool.key" > "$work/certs/$pool.pem"
done

# Certificates offered by SNI besides the pools' own: a bundle for one name, a certificate and
# key pair for a wildcard and a long name, a CA file (no key), and a file whose name is unsafe.
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=one.example.test \
  -addext subjectAltName=DNS:one.example.test -keyout "$work/one.key" -x509 -days 1 -out "$work/one.crt" 2>/dev/null
cat "$work/one.crt" "$work/one.key" > "$work/certs/one.pem"
long=$(printf 'l%.0s' {1..40}).$(printf 'm%.0s' {1..40}).example.test
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj /CN=wild \
  -addext "subjectAltName=DNS:*.wild.example.test,DNS:$long" -keyout "$work/certs/wild.key" -x509 -days 1 \
  -out "$work/certs/wild.pem" 2>/dev/null
cp "$work/certs/ca.crt" "$work/certs/ca.pem"
cp "$work/certs/one.pem" "$work/certs/bad name.pem"

"$gen" "$work/out" "$work/certs" "$work/run"
# The SNI variant offers them (so that the checkers below see them), and not the unsafe one.
grep -q "ssl crt $work/certs/default.pem crt $work/certs/external.pem crt $work/certs/ipv6.pem crt $work/certs/one.pem" \
  "$work/out/sni/haproxy.cfg" || { echo "FAIL sni/haproxy.cfg offers no SNI certificates"; exit 1; }
grep -q "server_name \*.wild.example.test $long;" "$work/out/sni/nginx.conf" ||
  { echo "FAIL sni/nginx.conf offers no SNI certificates"; exit 1; }
if grep -q "bad name" "$work/out/sni/haproxy.cfg" "$work/out/sni/nginx.conf"; then echo "FAIL: an unsafe file name reached a config"; exit 1; fi
# The golden files themselves, with only the certificate and runtime directories moved.
mkdir -p "$work/out/golden-files"
for file in haproxy.cfg nginx.conf keepalived.conf; do
  sed -e "s#/etc/certs/#$work/certs/#g" -e "s#/run/k8slb/#$work/run/#g" "$golden/$file" > "$work/out/golden-files/$file"
done

# The original's config documents, through k8slb-render as a user runs it. Exit 3 is expected:
# the golden input holds Services in pools these documents do not have.
if [[ -n $render ]]; then
  for doc in "$original"/*.json; do
    name=$(basename "$doc" .json)
    mkdir -p "$work/out/original-$name"
    case $name in
      haproxy | nginx) what=(--output-dir "$work/out/original-$name" all --proxy "$name") ;;
      *) what=(--output-dir "$work/out/original-$name" keepalived --proxy "$name") ;;
    esac
    status=0
    "$render" "${what[@]}" -f "$golden/input.yaml" --config "$doc" --node lb-a \
      --interfaces "$golden/interfaces.json" --cert-dir "$work/certs" --runtime-dir "$work/run" \
      2>"$work/original-$name.err" || status=$?
    if [[ $status != 0 && $status != 3 ]]; then
      echo "FAIL k8slb-render with $doc (exit $status):"; cat "$work/original-$name.err"; exit 1
    fi
  done
fi

case $checker in
  haproxy) pattern='haproxy.cfg' ;;
  nginx) pattern='nginx.conf' ;;
  keepalived) pattern='keepalived.conf' ;;
esac

run=()
if [[ $checker != haproxy ]]; then
  netns="k8slb-rc-$checker-$$"
  ip netns add "$netns"
  ip -n "$netns" link set lo up
  if [[ $checker == nginx ]]; then
    # nginx -t binds the VIPs: let it bind addresses the namespace does not hold.
    ip netns exec "$netns" sysctl -q -w net.ipv4.ip_nonlocal_bind=1 net.ipv6.ip_nonlocal_bind=1
  else
    # keepalived -t wants the interfaces the config names.
    for i in 0 1; do
      ip -n "$netns" link add "eth$i" type veth peer name "peer$i"
      ip -n "$netns" link set "eth$i" up
    done
  fi
  run=(ip netns exec "$netns")
fi

failed=0 checked=0
for file in "$work"/out/*/"$pattern"; do
  checked=$((checked + 1))
  case $checker in
    haproxy) cmd=(haproxy -c -f "$file") ;;
    nginx) cmd=(nginx -t -q -c "$file" -p "$work/" -e stderr) ;;
    keepalived) cmd=(keepalived -t -f "$file") ;;
  esac
  status=0
  output=$(timeout 30 "${run[@]}" "${cmd[@]}" 2>&1) || status=$?
  warnings=$(grep -E -i 'warn|alert|emerg|error|invalid|unknown' <<<"$output" || true)
  if [[ $status != 0 || -n $warnings ]]; then
    echo "FAIL ${file#$work/out/} (exit $status):"
    echo "$output" | head -30
    failed=$((failed + 1))
  else
    echo "ok   ${file#$work/out/}"
  fi
done
echo "$checker: $checked checked, $failed failed"
[[ $checked -gt 0 && $failed == 0 ]]
