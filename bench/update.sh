#!/usr/bin/env bash
# jupdate's per-jail overhead beyond the command itself: `jupdate JAIL -- /bin/true`
# (lock, mount, log, sandbox, run, unmount) against `chroot ROOT /bin/true`, and
# with the layers already mounted, in one run (hyperfine, mean of RUNS), in a
# private mount namespace on a tmpfs. Needs hyperfine and busybox-static.
# With JLAYERS_BENCH_BASELINE=DIR (a directory holding another build's jupdate,
# e.g. the previous commit's target/release), that jupdate runs in the same
# hyperfine runs and each figure is also given as a ratio to it.
#   usage: bench/update.sh [RUNS]
set -euo pipefail
RUNS=${1:-50}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
bench_namespace "jupdate jmount" "$@"
bin=$top/target/release
base=${JLAYERS_BENCH_BASELINE:-}
bench_tmpdir jlayers-bench
mount -t tmpfs bench "$T"
mkdir -p "$T/ports/editors/vim" "$T/j/bin"
cp "$(command -v busybox)" "$T/j/bin/busybox"; ln -s busybox "$T/j/bin/true"
printf '[defaults]\nupper_root = "%s/up"\nlock_dir = "%s/run"\nlog_dir = "%s/log"\n[[layer]]\nname = "ports"\nsource = "%s/ports"\ntarget = "usr/ports"\n[jail.j]\nroot = "%s/j"\n' \
    "$T" "$T" "$T" "$T" "$T" > "$T/c"
cmds=("$bin/jupdate -c $T/c -q j -- /bin/true")
[ -z "$base" ] || cmds+=("$base/jupdate -c $T/c -q j -- /bin/true")
hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$T/cold.json" \
    "${cmds[@]}" "chroot $T/j /bin/true" >/dev/null
"$bin/jmount" -c "$T/c" j
hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$T/warm.json" \
    "${cmds[@]}" >/dev/null
python3 - "$T" "$base" <<'PY'
import json, sys
t, base = sys.argv[1], sys.argv[2]
def means(f):
    return [r['mean'] * 1e3 for r in json.load(open('%s/%s.json' % (t, f)))['results']]
cold, warm = means('cold'), means('warm')
ch = cold[-1]
for what, m in (('mounts and unmounts', cold), ('layers already mounted', warm)):
    line = 'jupdate (%s): %.1f ms   overhead over chroot (%.1f ms): %.1f ms' % (what, m[0], ch, m[0] - ch)
    if base:
        line += '   baseline: %.1f ms (overhead %.1f ms); ratio %.2f, overhead ratio %.2f' % (
            m[1], m[1] - ch, m[0] / m[1], (m[0] - ch) / (m[1] - ch))
    print(line)
PY
