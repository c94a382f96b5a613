#!/usr/bin/env bash
# Make (once) and print the path of a Debian bookworm minbase root for the tests'
# real-userland jupdate runs: target/debian/bookworm-minbase. debootstrap writes into
# a temp dir beside it that is renamed into place only when complete, under a lock, so
# concurrent test processes (and an interrupted run) never see a half-made root.
# Mirror: $JLAYERS_DEBIAN_MIRROR, else the Debian archive the host's apt already
# uses (its sources.list or deb822 .sources; a local mirror or proxy works), else
# debootstrap's own default. Needs root.
#   scripts/debian-root.sh [--print-mirror]   ($JLAYERS_APT_DIR: apt's dir, /etc/apt)
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
dir=$top/target/debian
root=$dir/bookworm-minbase

# The first main archive URI apt has (not security, updates or backports: those
# have no full suite).
apt_mirror() {
    local apt=${JLAYERS_APT_DIR:-/etc/apt} f
    for f in "$apt"/sources.list "$apt"/sources.list.d/*.list; do
        [ -r "$f" ] || continue
        # deb [options] URI SUITE COMPONENTS...
        sed -e 's/#.*//' -e 's/\[[^]]*\]//' "$f" |
            awk '$1 == "deb" && $3 !~ /-(security|updates|backports)$/ && $3 !~ /\// { print $2; exit }'
    done
    for f in "$apt"/sources.list.d/*.sources; do
        [ -r "$f" ] || continue
        # deb822 stanzas: Types, URIs, Suites; Enabled: no skips one.
        awk 'BEGIN { RS = ""; FS = "\n" }
            {
                types = uris = suites = ""; enabled = 1
                for (i = 1; i <= NF; i++) {
                    line = $i; sub(/#.*/, "", line)
                    if (line ~ /^Types:/) types = line
                    else if (line ~ /^URIs:/) { uris = line; sub(/^URIs:[ \t]*/, "", uris) }
                    else if (line ~ /^Suites:/) suites = line
                    else if (line ~ /^Enabled:[ \t]*no/) enabled = 0
                }
                if (!enabled || types !~ /(^|[ \t])deb([ \t]|$)/) next
                split(suites, s, /[ \t]+/)
                for (j = 2; j in s; j++)
                    if (s[j] != "" && s[j] !~ /-(security|updates|backports)$/ && s[j] !~ /\//) {
                        split(uris, u, /[ \t]+/); print u[1]; exit
                    }
            }' "$f"
    done
}
mirror=${JLAYERS_DEBIAN_MIRROR:-$(apt_mirror | sed -n 1p)}
if [ "${1:-}" = --print-mirror ]; then
    echo "${mirror:-(the default of debootstrap)}"
    exit 0
fi
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
    echo "debian-root.sh: debootstrap bookworm into $root from ${mirror:-the default mirror of debootstrap} (a few minutes, once)" >&2
    # In a mount namespace of its own: the /proc and /sys debootstrap mounts in
    # the new root go away with it, even if it is interrupted.
    if ! unshare -m --propagation private \
        debootstrap --variant=minbase bookworm "$tmp" ${mirror:+"$mirror"} >"$dir/debootstrap.log" 2>&1
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
