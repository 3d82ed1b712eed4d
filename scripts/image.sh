#!/usr/bin/env bash
# Builds the tapway container image with podman, FROM scratch (no registry needed): tapwayd,
# tapwayctl, the CNI plugins tapway and tapway-ipam (static, since install-cni copies them onto the
# node), install-cni.sh
# with busybox-static for its shell, and the shared libraries tapwayd and tapwayctl link (as
# `ldd` lists them, with the loader). Tagged localhost/tapway:VERSION (the workspace version).
#
#   scripts/image.sh [--debug] [--tag NAME:TAG] [--save FILE] [--no-build]
#
#   --debug      use (and build) the debug binaries instead of release ones (the tests do)
#   --tag T      image name [localhost/tapway:VERSION]
#   --save FILE  also write the image as a docker-archive tar, for
#                `ctr -n k8s.io images import FILE` on each node
#   --no-build   use the binaries already built
#
# podman honours CONTAINERS_CONF and CONTAINERS_STORAGE_CONF (the image test points them at a
# private store). Needs podman, busybox-static and the Rust toolchain (scripts/deps.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$(pwd)

profile=release
tag=""
save=""
build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --debug) profile=debug; shift ;;
    --tag) tag=$2; shift 2 ;;
    --save) save=$2; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
    *) echo "image.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
version=$(awk -F'"' '/^\[workspace.package\]/ { p = 1 } p && /^version *=/ { print $2; exit }' Cargo.toml)
[ -n "$version" ] || { echo "image.sh: no workspace version in Cargo.toml" >&2; exit 1; }
tag=${tag:-localhost/tapway:$version}
command -v podman >/dev/null || { echo "image.sh: podman is missing (scripts/deps.sh installs it)" >&2; exit 1; }
# install-cni.sh needs a shell in an image without libc of its own for it: a static busybox.
case "$(ldd /bin/busybox 2>&1 || true)" in
  *"not a dynamic executable"*) ;;
  *) echo "image.sh: /bin/busybox is not busybox-static (scripts/deps.sh installs it)" >&2; exit 1 ;;
esac

# The plugin runs on the node, not in the image: linked statically (glibc's static libc, no
# NSS use), it runs whatever libc the node has. It is built for the explicit host target so
# its RUSTFLAGS do not touch the build scripts or the other binaries' cache.
host=$(rustc -vV | awk '/^host:/ { print $2 }')
flag=(); [ "$profile" = release ] && flag=(--release)
if [ "$build" = 1 ]; then
  echo "==> cargo build ${flag[*]} (tapwayd, tapwayctl; static tapway plugin for $host)"
  cargo build "${flag[@]}" --quiet -p tapway-switch --bin tapwayd --bin tapwayctl
  RUSTFLAGS="-C target-feature=+crt-static" cargo build "${flag[@]}" --quiet -p tapway-cni --bin tapway --bin tapway-ipam --target "$host"
fi
bin=$root/target/$profile
plugin=$root/target/$host/$profile/tapway
for b in "$bin/tapwayd" "$bin/tapwayctl" "$plugin" "$plugin-ipam"; do
  [ -x "$b" ] || { echo "image.sh: $b is missing (run without --no-build)" >&2; exit 1; }
done

ctx=$(mktemp -d /tmp/tapway-image.XXXXXX)
trap 'rm -rf "$ctx"' EXIT
r=$ctx/rootfs
mkdir -p "$r"/{usr/bin,bin,opt/tapway/cni,etc/tapway,var/lib/tapway,var/run,run/tapway,tmp,proc,sys,dev}
chmod 1777 "$r/tmp"
# Debug info stays in target/; the image gets the code and symbols only.
for b in tapwayd tapwayctl; do strip --strip-debug -o "$r/usr/bin/$b" "$bin/$b"; done
strip --strip-debug -o "$r/opt/tapway/cni/tapway" "$plugin"
strip --strip-debug -o "$r/opt/tapway/cni/tapway-ipam" "$plugin-ipam"
install -m 0755 plugin/install-cni.sh "$r/opt/tapway/install-cni.sh"
cp /bin/busybox "$r/bin/busybox"
for a in $(/bin/busybox --list); do
  [ -e "$r/bin/$a" ] || ln -s busybox "$r/bin/$a"
done
# Every library tapwayd and tapwayctl load, at the path the loader looks for it, and the loader.
for lib in $(ldd "$bin/tapwayd" "$bin/tapwayctl" | awk '/=> \// { print $3 } /^\t\/[^ ]+ \(/ { print $1 }' | sort -u); do
  mkdir -p "$r$(dirname "$lib")"
  cp -L "$lib" "$r$lib"
done
echo "root:x:0:0:root:/:/bin/sh" >"$r/etc/passwd"
echo "root:x:0:" >"$r/etc/group"
cat >"$ctx/Containerfile" <<EOF
FROM scratch
COPY rootfs/ /
ENV PATH=/usr/bin:/bin
LABEL org.opencontainers.image.title="tapway" \\
      org.opencontainers.image.description="tapwayd, tapwayctl and the tapway CNI plugin" \\
      org.opencontainers.image.version="$version" \\
      org.opencontainers.image.revision="$(git rev-parse --short HEAD 2>/dev/null || echo unknown)" \\
      org.opencontainers.image.licenses="Apache-2.0"
ENTRYPOINT ["/usr/bin/tapwayd"]
EOF
echo "==> podman build $tag ($profile binaries)"
podman build --quiet --pull=never --tag "$tag" -f "$ctx/Containerfile" "$ctx" >/dev/null
echo "built $tag ($(podman image inspect --format '{{.Size}}' "$tag" | awk '{ printf "%.1f MiB", $1 / 1048576 }'))"
if [ -n "$save" ]; then
  podman save --quiet --format docker-archive -o "$save" "$tag"
  echo "saved $save (ctr -n k8s.io images import $save)"
fi
