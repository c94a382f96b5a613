#!/usr/bin/env bash
# jupdate's peak RSS (GNU time) while its updater writes 200 MiB of output: real
# output (`yes | head -c 200M`) and a sparse one (its output extended 200 MiB by a
# seek past the end, as ftruncate does, then a line), with the size of the log
# after each; Linux backend, in a private mount namespace on a tmpfs. Needs GNU
# time and busybox-static. With JLAYERS_BENCH_BASELINE=DIR (a directory holding
# another build's jupdate, e.g. main's target/release), that jupdate runs the
# same updaters.
#   usage: bench/output.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
bench_need /usr/bin/time busybox
bench_baseline jupdate
bench_namespace "jupdate" "$@"
bin=$top/target/release
bench_tmpdir jlayers-bench
mount -t tmpfs bench "$T"
mkdir -p "$T/j/bin" "$T/j/proc" "$T/j/dev"
cp "$(command -v busybox)" "$T/j/bin/busybox"
for applet in sh yes head dd echo; do ln -s busybox "$T/j/bin/$applet"; done
printf '[defaults]\nupper_root = "%s/up"\nlock_dir = "%s/run"\nlog_dir = "%s/log"\n[jail.j]\nroot = "%s/j"\n' \
    "$T" "$T" "$T" "$T" > "$T/c"
declare -A updater=(
    [real]='yes 0123456789abcdef | head -c 209715200; exit 1'
    [sparse]='dd of=/proc/self/fd/1 bs=1 seek=209715200 count=0 2>/dev/null; echo after; exit 1'
)
builds=("this:$bin")
[ -z "$base" ] || builds+=("baseline:$base")
for build in "${builds[@]}"; do
    for output in real sparse; do
        rm -f "$T/log/j.log"
        /usr/bin/time -f %M -o "$T/rss" "${build#*:}/jupdate" -c "$T/c" -q j -- sh -c "${updater[$output]}" \
            >/dev/null 2>"$T/err" || true
        awk -v b="${build%%:*}" -v o="$output" -v rss="$(tail -n 1 "$T/rss")" \
            -v logsize="$(stat -c %s "$T/log/j.log")" -v err="$(stat -c %s "$T/err")" \
            'BEGIN { printf "%-8s 200 MiB of %-6s output: peak RSS %7.1f MiB   log %7.1f MiB   stderr %7.1f MiB\n",
                     b, o, rss / 1024, logsize / 1048576, err / 1048576 }'
    done
done
