#!/usr/bin/env bash
# jupdate's per-jail overhead beyond the command itself: `jupdate JAIL -- /bin/true`
# (lock, mount, log, sandbox, run, unmount) against `chroot ROOT /bin/true` and
# against bubblewrap's sandbox for the same command in the same root (`bwrap
# --unshare-all --die-with-parent --new-session`), and with the layers already
# mounted, in one run (hyperfine, mean and fastest of RUNS), in a private mount
# namespace on a tmpfs. Needs hyperfine, busybox-static, bubblewrap and python3.
# With JLAYERS_BENCH_BASELINE=DIR (a directory holding another build's jupdate,
# e.g. the previous commit's target/release), that jupdate runs in the same
# hyperfine runs and each figure is also given as a ratio to it.
#   usage: bench/update.sh [RUNS]
set -euo pipefail
RUNS=${1:-50}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
bench_need hyperfine busybox bwrap chroot python3
bench_baseline jupdate
bench_namespace "jupdate jmount" "$@"
bin=$top/target/release
bench_tmpdir jlayers-bench
mount -t tmpfs bench "$T"
mkdir -p "$T/ports/editors/vim" "$T/j/bin"
cp "$(command -v busybox)" "$T/j/bin/busybox"; ln -s busybox "$T/j/bin/true"
printf '[defaults]\nupper_root = "%s/up"\nlock_dir = "%s/run"\nlog_dir = "%s/log"\n[[layer]]\nname = "ports"\nsource = "%s/ports"\ntarget = "usr/ports"\n[jail.j]\nroot = "%s/j"\n' \
    "$T" "$T" "$T" "$T" "$T" > "$T/c"
cmds=("$bin/jupdate -c $T/c -q j -- /bin/true")
[ -z "$base" ] || cmds+=("$base/jupdate -c $T/c -q j -- /bin/true")
hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$T/cold.json" \
    "${cmds[@]}" "chroot $T/j /bin/true" \
    "bwrap --unshare-all --die-with-parent --new-session --bind $T/j / /bin/true" >/dev/null
"$bin/jmount" -c "$T/c" j
hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$T/warm.json" \
    "${cmds[@]}" >/dev/null
python3 - "$T" "$base" <<'PY'
import json, sys
t, base = sys.argv[1], sys.argv[2]
def runs(f):
    return [(r['mean'] * 1e3, r['min'] * 1e3) for r in json.load(open('%s/%s.json' % (t, f)))['results']]
cold, warm = runs('cold'), runs('warm')
(ch, _), (bw, bw_min) = cold[-2], cold[-1]
print('chroot: %.1f ms   bwrap --unshare-all --die-with-parent --new-session: %.1f ms (fastest %.1f ms)'
      % (ch, bw, bw_min))
for what, m in (('mounts and unmounts', cold), ('layers already mounted', warm)):
    (mean, fast) = m[0]
    line = 'jupdate (%s): %.1f ms (fastest %.1f ms)   overhead over chroot: %.1f ms   ratio to bwrap: %.2f (fastest %.2f)' % (
        what, mean, fast, mean - ch, mean / bw, fast / bw_min)
    if base:
        (b_mean, b_fast) = m[1]
        line += '\n  baseline: %.1f ms (fastest %.1f ms); ratio %.2f (fastest %.2f), overhead ratio %.2f' % (
            b_mean, b_fast, mean / b_mean, fast / b_fast, (mean - ch) / (b_mean - ch))
    print(line)
PY
