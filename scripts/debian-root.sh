#!/usr/bin/env bash
# Make (once) and print the path of a Debian bookworm minbase root for the tests'
# real-userland jupdate runs: target/debian/bookworm-minbase. debootstrap writes into
# a temp dir beside it that is renamed into place only when complete, under a lock, so
# concurrent test processes (and an interrupted run) never see a half-made root.
# Mirror: $JLAYERS_DEBIAN_MIRROR, else http://deb.debian.org/debian. Needs root.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/target/debian
root=$dir/bookworm-minbase
mirror=${JLAYERS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
mkdir -p "$dir"
exec 9>"$dir/.lock"
flock 9
if [ ! -x "$root/bin/bash" ]; then
    command -v debootstrap >/dev/null ||
        { echo "debian-root.sh: debootstrap is missing (scripts/deps.sh installs it)" >&2; exit 1; }
    # An interrupted run's leftovers; --one-file-system: never into a mount.
    rm -rf --one-file-system "$dir"/tmp.*
    tmp=$(mktemp -d "$dir/tmp.XXXXXX")
    chmod 0755 "$tmp"
    echo "debian-root.sh: debootstrap bookworm into $root (a few minutes, once)" >&2
    # In a mount namespace of its own: the /proc and /sys debootstrap mounts in
    # the new root go away with it, even if it is interrupted.
    if ! unshare -m --propagation private \
        debootstrap --variant=minbase bookworm "$tmp" "$mirror" >"$dir/debootstrap.log" 2>&1
    then
        echo "debian-root.sh: debootstrap failed; last lines of $dir/debootstrap.log:" >&2
        tail -n 20 "$dir/debootstrap.log" >&2
        rm -rf "$tmp"
        exit 1
    fi
    rm -rf "$root"
    mv "$tmp" "$root"
fi
echo "$root"
