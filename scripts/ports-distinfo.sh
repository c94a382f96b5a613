#!/bin/sh
# Write the port's distinfo as `make makesum` would, without a FreeBSD machine:
#   scripts/ports-distinfo.sh [-o FILE] RELEASE-TARBALL
# TIMESTAMP, then SHA256 and SIZE of each distfile in DISTFILES order: the release
# tarball (jlayers-VERSION.tar.gz, as published at MASTER_SITES), then each crate of
# Makefile.crates as rust/crates/NAME-VERSION.crate (Mk/Uses/cargo.mk). A crate's
# SHA256 is Cargo.lock's checksum (cargo checks every download against it), its
# SIZE that of the .crate in cargo's cache (`cargo fetch --locked` fills it).
# On FreeBSD, `make makesum` in the port's directory writes the same file.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/freebsd/ports/sysutils/jlayers/distinfo
if [ "${1:-}" = -o ]; then out=$2; shift 2; fi
[ $# -eq 1 ] || { echo "usage: ports-distinfo.sh [-o FILE] RELEASE-TARBALL" >&2; exit 64; }
tarball=$1
cache=${CARGO_HOME:-$HOME/.cargo}/registry/cache
size() { wc -c < "$1" | tr -d ' '; }
# Every crate of Cargo.lock in cargo's cache, those of other platforms too.
cargo fetch --locked --quiet --manifest-path "$top/Cargo.toml"
{
    echo "TIMESTAMP = $(date +%s)"
    name=${tarball##*/}
    echo "SHA256 ($name) = $(sha256sum "$tarball" | cut -d' ' -f1)"
    echo "SIZE ($name) = $(size "$tarball")"
    awk '
    /^\[\[package\]\]/ { name = ""; version = ""; registry = 0 }
    /^name = /    { name = $3; gsub(/"/, "", name) }
    /^version = / { version = $3; gsub(/"/, "", version) }
    /^source = "registry\+/ { registry = 1 }
    /^checksum = / && registry { sum = $3; gsub(/"/, "", sum); print name "-" version, sum }
    ' "$top/Cargo.lock" | while read -r crate sum; do
        f=
        for c in "$cache"/*/"$crate.crate"; do [ -e "$c" ] && f=$c; done
        [ -n "$f" ] || { echo "ports-distinfo: $crate.crate is not in $cache: run cargo fetch --locked" >&2; exit 1; }
        echo "SHA256 (rust/crates/$crate.crate) = $sum"
        echo "SIZE (rust/crates/$crate.crate) = $(size "$f")"
    done
} > "$out.tmp"
mv "$out.tmp" "$out"
echo "$out"
