#!/bin/sh
# Write the port's Makefile.crates (CARGO_CRATES, as `make cargo-crates` would) from
# Cargo.lock: every crate from the registry, name-version, in lock order.
# A test fails when it is stale: run this after changing dependencies.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
out=$top/freebsd/ports/sysutils/jlayers/Makefile.crates
awk '
/^\[\[package\]\]/ { name = ""; version = "" }
/^name = /    { name = $3; gsub(/"/, "", name) }
/^version = / { version = $3; gsub(/"/, "", version) }
/^source = "registry\+/ { crates[n++] = name "-" version }
END {
    printf "CARGO_CRATES=\t"
    for (i = 0; i < n; i++) printf "%s%s\n", crates[i], (i < n - 1 ? " \\" : "") > "/dev/stdout"
}' "$top/Cargo.lock" | awk 'NR > 1 { printf "\t\t" } { print }' > "$out"
echo "$out"
