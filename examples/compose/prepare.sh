#!/usr/bin/env bash
# Prepares the build contexts of this example without any registry: the Portico binary with the
# shared libraries it links against, and Debian's static busybox for the apps.
# Usage: ./prepare.sh            (builds and uses the release binary)
#        PROFILE=debug ./prepare.sh
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
profile="${PROFILE:-release}"

if [ "$profile" = release ]; then
  cargo build --release -p portico --manifest-path "$root/Cargo.toml"
else
  cargo build -p portico --manifest-path "$root/Cargo.toml"
fi
binary="$root/target/$profile/portico"

rootfs="$here/portico/rootfs"
rm -rf "$rootfs"
mkdir -p "$rootfs/tmp"
# Debug info is of no use in the image and makes it ten times larger.
objcopy --strip-debug "$binary" "$rootfs/portico" 2>/dev/null || cp "$binary" "$rootfs/portico"
# glibc and friends: the paths ldd names, copied to the same paths in the image.
ldd "$binary" | grep -o '/[^ ]*' | while read -r lib; do
  mkdir -p "$rootfs$(dirname "$lib")"
  cp -L "$lib" "$rootfs$lib"
done

[ -x /bin/busybox ] || { echo "install Debian's busybox-static first" >&2; exit 1; }
cp /bin/busybox "$here/app/busybox"
echo "ready: docker-compose up --build (in $here)"
