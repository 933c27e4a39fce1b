#!/usr/bin/env bash
# Builds the watcher and actor images from Debian's packages alone, with no container engine
# and no registry but Debian's mirror:
#
#   1. the tools are built here (scripts/build.sh, if not yet) and stripped;
#   2. mmdebstrap makes each image's root file system (Debian 12 minbase) with the runtime
#      packages that the image's Dockerfile installs, read from its last stage, and copies in
#      the tools and the entrypoint script as the Dockerfile does;
#   3. podman imports it with the Dockerfile's ENTRYPOINT and USER, and saves an OCI archive.
#
# The Dockerfiles stay the recipe for `docker build`; this script reads its package list,
# copies, USER and ENTRYPOINT from them, so both make the same image.
#
# Usage: scripts/build-images.sh [--if-changed] [watcher] [actor]     (default: both)
#   --if-changed  keep an image whose inputs (tools, scripts, Dockerfile) have not changed since
#                 it was built (the tests use this: one build per build directory)
# Environment:
#   IMAGE_REPO   name prefix of the images (default localhost/k8slb): IMAGE_REPO/watcher:IMAGE_TAG
#   IMAGE_TAG    (default: the project version, 0.1.0)
#   IMAGE_DIR    where the OCI archives, the apt cache and podman's image store go
#                (default build/images)
#   DEBIAN_MIRROR  (default http://deb.debian.org/debian)
#
# Push to your registry afterwards, for example:
#   skopeo copy oci-archive:build/images/watcher.tar docker://registry.example.com/k8slb/watcher:0.1.0
#   or: IMAGE_REPO=registry.example.com/k8slb scripts/build-images.sh && podman push ...
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
build=${K8SLB_BUILD_DIR:-$root/build}
IMAGE_REPO=${IMAGE_REPO:-localhost/k8slb}
IMAGE_TAG=${IMAGE_TAG:-$(sed -n 's/^project(k8slb VERSION \([0-9.]*\).*/\1/p' "$root/CMakeLists.txt")}
IMAGE_DIR=${IMAGE_DIR:-$build/images}
DEBIAN_MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
if_changed=0
images=()
for arg in "$@"; do
  case $arg in
    --if-changed) if_changed=1 ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    watcher | actor) images+=("$arg") ;;
    *) echo "build-images: usage: build-images.sh [--if-changed] [watcher] [actor]" >&2; exit 2 ;;
  esac
done
[ "${#images[@]}" -gt 0 ] || images=(watcher actor)

log() { echo "build-images: $*" >&2; }
die() { log "error: $*"; exit 1; }

for tool in mmdebstrap podman; do
  command -v "$tool" >/dev/null || die "$tool is missing (scripts/install-deps.sh installs it)"
done
[ -n "$IMAGE_TAG" ] || die "IMAGE_TAG: cannot read the version from CMakeLists.txt"
[[ $IMAGE_REPO =~ ^[a-z0-9]([a-z0-9._:/-]*[a-z0-9])?$ ]] || die "IMAGE_REPO: '$IMAGE_REPO' is not an image name prefix"
[[ $IMAGE_TAG =~ ^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$ ]] || die "IMAGE_TAG: '$IMAGE_TAG' is not a tag"

# podman with a store of its own (nothing of the machine's podman is touched), as it runs on
# this kind of machine: vfs storage, cgroupfs, runc.
podman_cmd() {
  podman --root "$IMAGE_DIR/storage" --runroot "$IMAGE_DIR/run" --storage-driver vfs \
    --cgroup-manager cgroupfs --runtime runc "$@"
}

# The last stage of a Dockerfile: its apt-get install packages, COPY --from=build of the tools
# (the tool names it installs), COPY of scripts, `rm -f` steps, USER and ENTRYPOINT.
dockerfile_last_stage() { awk '/^FROM /{stage=""} {stage = stage $0 "\n"} END{printf "%s", stage}' "$1"; }

build_image() {
  local name=$1 dockerfile="$root/docker/Dockerfile.$1" stage packages tools scripts removals user entrypoint
  [ -r "$dockerfile" ] || die "$dockerfile: no such Dockerfile"
  stage=$(dockerfile_last_stage "$dockerfile")
  packages=$(printf '%s' "$stage" | sed -n '/apt-get install/,/&&/p' | tr ' \\' '\n\n' \
    | grep -E '^[a-z0-9][a-z0-9.+-]+$' | grep -vxE 'apt-get|install|rm' | paste -sd, -)
  # The tools: what the build stage installs into /out/usr/local/bin.
  tools=$(sed -n '/install -D -m 0755 -t \/out\/usr\/local\/bin/,/^$/p' "$dockerfile" \
    | grep -oE '/build/k8slb-[a-z]+' | sed 's|/build/||' | sort -u)
  scripts=$(printf '%s' "$stage" | sed -n 's|^COPY \(scripts/[a-z0-9.-]*\) /usr/local/bin/.*|\1|p')
  removals=$(printf '%s' "$stage" | grep -oE 'rm -f /etc/[^ ]+' | sed 's/^rm -f //' || true)
  user=$(printf '%s' "$stage" | sed -n 's/^USER //p')
  entrypoint=$(printf '%s' "$stage" | sed -n 's/^ENTRYPOINT //p')
  [ -n "$packages" ] && [ -n "$tools" ] && [ -n "$entrypoint" ] || die "$dockerfile: cannot read its last stage"

  # What the image is made of; with --if-changed an image made of the same is kept.
  local inputs image="$IMAGE_REPO/$name:$IMAGE_TAG"
  inputs=$( (cat "$dockerfile"; for tool in $tools; do cat "$build/$tool"; done
             for script in $scripts; do cat "$root/$script"; done) | sha256sum | cut -d' ' -f1)
  local built
  built=$(cat "$IMAGE_DIR/$name.inputs" 2>/dev/null || true)
  if [ "$if_changed" = 1 ] && [ "${built%% *}" = "$inputs" ] && podman_cmd image exists "${built#* }"; then
    if [ "${built#* }" != "$image" ]; then
      podman_cmd tag "${built#* }" "$image"
      podman_cmd save --quiet --format oci-archive -o "$IMAGE_DIR/$name.tar" "$image" >/dev/null
      echo "$inputs $image" >"$IMAGE_DIR/$name.inputs"
    fi
    log "$name: $image is up to date"
    return 0
  fi

  local work="$IMAGE_DIR/$name.d"
  rm -rf "$work"
  mkdir -p "$work/bin" "$IMAGE_DIR/apt-cache"
  local tool script
  for tool in $tools; do
    [ -x "$build/$tool" ] || die "$build/$tool is not built"
    install -s -m 0755 "$build/$tool" "$work/bin/$tool"
  done
  for script in $scripts; do install -m 0755 "$root/$script" "$work/bin/"; done

  log "$name: Debian 12 minbase + $packages"
  local hooks=(
    --setup-hook='mkdir -p "$1"/var/cache/apt/archives/'
    --setup-hook="sync-in $IMAGE_DIR/apt-cache /var/cache/apt/archives/"
    --customize-hook="sync-out /var/cache/apt/archives $IMAGE_DIR/apt-cache"
    --customize-hook="copy-in $(printf '%s ' "$work"/bin/*) /usr/local/bin/"
  )
  local path
  for path in $removals; do hooks+=(--customize-hook="rm -f \"\$1\"$path"); done
  mmdebstrap --quiet --variant=minbase --include="$packages" \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-exclude=/usr/share/man/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' "${hooks[@]}" \
    bookworm "$work/rootfs.tar" \
    "deb $DEBIAN_MIRROR bookworm main" "deb $DEBIAN_MIRROR bookworm-updates main" \
    "deb ${DEBIAN_MIRROR%/debian}/debian-security bookworm-security main"

  # debian:12-slim's PATH, which the Dockerfile's image inherits.
  local changes=(--change "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
                 --change "ENTRYPOINT $entrypoint")
  [ -n "$user" ] && changes+=(--change "USER $user")
  podman_cmd import --quiet "${changes[@]}" "$work/rootfs.tar" "$image" >/dev/null
  rm -f "$IMAGE_DIR/$name.tar"
  podman_cmd save --quiet --format oci-archive -o "$IMAGE_DIR/$name.tar" "$image" >/dev/null
  rm -rf "$work"
  echo "$inputs $image" >"$IMAGE_DIR/$name.inputs"
  podman_cmd image prune --force >/dev/null # the image this one replaced, now untagged
  log "$name: $image ($(du -h "$IMAGE_DIR/$name.tar" | cut -f1), $IMAGE_DIR/$name.tar)"
}

if [ ! -x "$build/k8slb-render" ]; then "$root/scripts/build.sh"; fi
mkdir -p "$IMAGE_DIR"
for name in "${images[@]}"; do build_image "$name"; done
