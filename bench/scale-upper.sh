#!/usr/bin/env bash
# jclean on the uppers a jail's root can write to hurt the host (issue 20), on a
# tmpfs in a private mount namespace:
#   deep: a chain of 10,000 and 100,000 directories (`mkdir d; cd d` in a loop),
#         a file every 1,000 levels
#   wide: 50,000 sibling directories with a file each, under `ulimit -n 256`
# For each, every mode that walks an upper: -n (count), prune, --list,
# --list --only new, --only new; wall time, peak RSS and exit status, and the
# growth ratio from 10,000 to 100,000 levels (linear: about 10x).
#
# usage: bench/scale-upper.sh
#   JLAYERS_BENCH_BASELINE=DIR: another build's binaries (e.g. an older commit's
#   target/release), its jclean measured in the same run as "before"; ratios are
#   after/before.
#   DEEP=N WIDE=M: the shallower chain's levels (the deeper has 10x) and the wide
#   directory's width, for a quick run at small sizes (default 10000 and 50000).
#   JLAYERS_BENCH_BASELINE_MEM: address-space limit for the "before" runs, KiB (default
#   4194304, 4 GiB; main took 10 GB at 100,000 levels): a run over it fails.
# Needs python3 and GNU time (/usr/bin/time).
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
DEEP=${DEEP:-10000}
DEEP0=$((DEEP * 10))
WIDE=${WIDE:-50000}
[ $# -eq 0 ] || {
    echo "scale-upper.sh: no arguments; give the baseline as JLAYERS_BENCH_BASELINE=DIR" >&2
    exit 64
}
bench_need python3 /usr/bin/time
bench_baseline jclean
bench_namespace jclean "$@"
after=$top/target/release/jclean
bench_tmpdir jlayers-scale-upper
mount -t tmpfs -o size=50% bench "$T"
bench_jail_b

# make deep|wide N: the shape in a fresh upper, with *at calls (no path that long
# can be used).
make() {
    rm -rf "$U"
    mkdir -p "$U"
    python3 - "$1" "$U" "$2" <<'PY'
import os, sys
kind, top, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
fd = os.open(top, os.O_DIRECTORY)
flags = os.O_DIRECTORY | os.O_NOFOLLOW
for i in range(n):
    if kind == "deep":
        os.mkdir("d", dir_fd=fd)
        sub = os.open("d", flags, dir_fd=fd)
        os.close(fd)
        fd = sub
        if i % 1000 == 0:
            os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=fd))
    else:
        os.mkdir("w%d" % i, dir_fd=fd)
        sub = os.open("w%d" % i, flags, dir_fd=fd)
        os.close(os.open("f", os.O_CREAT | os.O_WRONLY, 0o644, dir_fd=sub))
        os.close(sub)
os.close(fd)
PY
}
# run BIN FDS MEM ARGS...: one run, output discarded; prints "SECONDS KIB STATUS".
run() {
    local bin=$1 fds=$2 mem=$3
    shift 3
    # shellcheck disable=SC2016 # expanded by the inner sh
    /usr/bin/time -f "%e %M %x" -o "$T/time" \
        sh -c 'ulimit -n "$0" && ulimit -v "$1" && shift && exec "$@"' "$fds" "$mem" \
        "$bin" -c "$T/jlayers.conf" "$@" b >/dev/null 2>"$T/err" || true
    tail -n 1 "$T/time"
}

printf '%-12s %-18s %9s %10s %5s' row mode "after s" "after KiB" exit
[ -z "$base" ] || printf ' %9s %10s %5s %7s %7s' "before s" "before KiB" exit "t a/b" "rss a/b"
echo
declare -A secs
# measure ROW SHAPE N FDS: every mode on a fresh shape, after (and before).
measure() {
    local row=$1 shape=$2 n=$3 fds=$4 mode bins b a r
    bins=("$after")
    [ -z "$base" ] || bins+=("$base/jclean")
    for mode in "-n" "--list" "--list --only new" "--only new" "prune"; do
        r=()
        for b in "${bins[@]}"; do
            local mem=unlimited
            [ "$b" = "$after" ] || mem=${JLAYERS_BENCH_BASELINE_MEM:-4194304}
            # Read-only modes share one tree; the others get a fresh one.
            case $mode in
            "-n") [ "$b" != "$after" ] || make "$shape" "$n" ;;
            "--only new" | prune) make "$shape" "$n" ;;
            esac
            # shellcheck disable=SC2086 # the mode is words
            case $mode in
            prune) a=$(run "$b" "$fds" "$mem" -q) ;;
            *) a=$(run "$b" "$fds" "$mem" $mode) ;;
            esac
            r+=("$a")
        done
        read -r s k x <<<"${r[0]}"
        secs["$row $mode"]=$s
        printf '%-12s %-18s %9s %10s %5s' "$row" "$mode" "$s" "$k" "$x"
        if [ -n "$base" ]; then
            read -r bs bk bx <<<"${r[1]}"
            printf ' %9s %10s %5s %7s %7s' "$bs" "$bk" "$bx" \
                "$(python3 -c "print('%.3f' % ($s / max($bs, 0.001)))")" \
                "$(python3 -c "print('%.3f' % ($k / max($bk, 1)))")"
        fi
        echo
    done
}
measure "deep-$DEEP" deep "$DEEP" 1024
measure "deep-$DEEP0" deep "$DEEP0" 1024
measure "wide-$WIDE" wide "$WIDE" 256
echo "growth, deep $DEEP0 / $DEEP levels (linear: about 10x; --list prints each"
echo "directory's whole path, N^2/2 bytes, so it grows with the square):"
for mode in "-n" "--list" "--list --only new" "--only new" "prune"; do
    python3 -c "print('  %-18s %.1fx' % ('$mode', ${secs["deep-$DEEP0 $mode"]} / max(${secs["deep-$DEEP $mode"]}, 0.001)))"
done
