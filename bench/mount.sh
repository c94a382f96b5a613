#!/usr/bin/env bash
# Benchmark: jmount --all / junmount --all for JAILS jails x 2 layers (a union ports
# layer and a nested shared distfiles layer: 3 mounts a jail) against a sh loop that
# runs mount(8)/umount(8) for the same stacks. Runs in its own mount namespace on a
# tmpfs; prints the median of ROUNDS runs of each and the ratios. With
# JLAYERS_BENCH_BASELINE=DIR (another build's binaries, e.g. an older commit's
# target/release), its jmount and junmount run in the same rounds, with the ratios
# of this build's times to its.
#   usage: bench/mount.sh [JAILS] [ROUNDS]     (root; builds --release first)
set -eu
JAILS=${1:-200}
ROUNDS=${2:-7}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
bench_need mount umount
bench_baseline jmount junmount
bench_namespace "jmount junmount" "$@"
bin=$top/target/release
bench_tmpdir jlayers-bench
mount -t tmpfs bench "$T"
mkdir -p "$T/ports/editors/vim" "$T/ports/distfiles" "$T/distfiles"
{
    printf '[defaults]\nupper_root = "%s/upper"\nlock_dir = "%s/run"\n' "$T" "$T"
    printf '[[layer]]\nname = "ports"\nsource = "%s/ports"\ntarget = "usr/ports"\n' "$T"
    printf '[[layer]]\nname = "distfiles"\nsource = "%s/distfiles"\ntarget = "usr/ports/distfiles"\nmode = "shared"\n' "$T"
    for i in $(seq "$JAILS"); do printf '[jail.j%d]\nroot = "%s/jails/j%d"\n' "$i" "$T" "$i"; done
} > "$T/jlayers.conf"
for i in $(seq "$JAILS"); do mkdir -p "$T/jails/j$i/usr/ports/distfiles" "$T/upper/j$i/ports" "$T/upper/j$i/ports.work"; done

loop_up() {
    for i in $(seq "$JAILS"); do
        r=$T/jails/j$i; u=$T/upper/j$i/ports
        mount --bind "$T/ports" "$r/usr/ports"
        mount -t overlay overlay -o "noatime,lowerdir=$r/usr/ports,upperdir=$u,workdir=$u.work" "$r/usr/ports"
        mount --bind "$T/distfiles" "$r/usr/ports/distfiles"
    done
}
loop_down() {
    for i in $(seq "$JAILS"); do
        r=$T/jails/j$i
        umount "$r/usr/ports/distfiles"; umount "$r/usr/ports"; umount "$r/usr/ports"
    done
}
now() { date +%s%N; }
count() { grep -c " $T/jails/" /proc/self/mountinfo || true; }
# cycle DIR: jmount --all and junmount --all with the binaries in DIR, checked;
# prints "MOUNT_NS UNMOUNT_NS".
cycle() {
    local t0 t1 t2
    t0=$(now); ${JMOUNT_WRAP:-} "$1/jmount" -c "$T/jlayers.conf" --all; t1=$(now)
    [ "$(count)" = $((JAILS * 3)) ] || { echo "$1/jmount mounted $(count)" >&2; exit 1; }
    "$1/junmount" -c "$T/jlayers.conf" --all; t2=$(now)
    [ "$(count)" = 0 ] || { echo "$1/junmount left $(count)" >&2; exit 1; }
    echo "$((t1 - t0)) $((t2 - t1))"
}

for r in $(seq "$ROUNDS"); do
    t0=$(now); loop_up; t1=$(now)
    [ "$(count)" = $((JAILS * 3)) ] || { echo "sh loop mounted $(count)"; exit 1; }
    loop_down; t2=$(now)
    this=$(cycle "$bin")
    b=
    [ -z "$base" ] || b=$(cycle "$base")
    echo "$((t1 - t0)) $((t2 - t1)) $this $b" >> "$T/times"
    : "$r"
done
col() { awk -v c="$1" '{print $c}' "$T/times" | bench_median; }
lu=$(col 1); ld=$(col 2); ju=$(col 3); jd=$(col 4)
ms() { awk -v n="$1" 'BEGIN {printf "%.1f ms", n / 1e6}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.3f", a / b}'; }
echo "jails: $JAILS x 2 layers ($((JAILS * 3)) mounts), median of $ROUNDS runs"
printf 'mount:   jmount --all   %s   sh loop %s   ratio %s\n' "$(ms "$ju")" "$(ms "$lu")" "$(ratio "$ju" "$lu")"
printf 'unmount: junmount --all %s   sh loop %s   ratio %s\n' "$(ms "$jd")" "$(ms "$ld")" "$(ratio "$jd" "$ld")"
if [ -n "$base" ]; then
    bu=$(col 5); bd=$(col 6)
    printf 'baseline: jmount --all %s (this/baseline %s)   junmount --all %s (this/baseline %s)\n' \
        "$(ms "$bu")" "$(ratio "$ju" "$bu")" "$(ms "$bd")" "$(ratio "$jd" "$bd")"
fi
