#!/usr/bin/env bash
# Builds the images of this example without any registry: Portico with the shared libraries it
# links against, and an app on Debian's static busybox. `docker stack deploy` builds nothing, so
# the images are built here, under the tags stack.yml names.
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

# The classic builder: it needs no buildx plugin, and nothing here needs BuildKit.
export DOCKER_BUILDKIT=0
docker build -q -t portico-example-swarm-portico:local "$here/portico"
docker build -q -t portico-example-swarm-app:local "$here/app"
echo "ready: docker stack deploy --resolve-image never -c stack.yml portico (in $here)"
