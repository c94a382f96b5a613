#!/usr/bin/env bash
# jupdate's per-jail overhead beyond the command itself: `jupdate JAIL -- /bin/true`
# (lock, mount, log, run, unmount) against `chroot ROOT /bin/true`, and with the
# layers already mounted, in one run (hyperfine, mean of RUNS), in a private mount
# namespace on a tmpfs. Needs hyperfine and busybox-static.
#   usage: bench/update.sh [RUNS]
set -euo pipefail
RUNS=${1:-50}
top=$(cd "$(dirname "$0")/.." && pwd)
if [ "${JLAYERS_BENCH_NS:-}" != 1 ]; then
    cargo build --release --locked --quiet --manifest-path "$top/Cargo.toml" -p jupdate -p jmount
    exec env JLAYERS_BENCH_NS=1 unshare -m --propagation private "$0" "$@"
fi
bin=$top/target/release
T=$(mktemp -d /tmp/jlayers-bench.XXXXXX)
trap 'umount -R -l "$T" 2>/dev/null; rm -rf "$T"' EXIT
mount -t tmpfs bench "$T"
mkdir -p "$T/ports/editors/vim" "$T/j/bin"
cp "$(command -v busybox)" "$T/j/bin/busybox"; ln -s busybox "$T/j/bin/true"
printf '[defaults]\nupper_root = "%s/up"\nlock_dir = "%s/run"\nlog_dir = "%s/log"\n[[layer]]\nname = "ports"\nsource = "%s/ports"\ntarget = "usr/ports"\n[jail.j]\nroot = "%s/j"\n' \
    "$T" "$T" "$T" "$T" "$T" > "$T/c"
json=$T/h.json
hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$json" \
    "$bin/jupdate -c $T/c -q j -- /bin/true" "chroot $T/j /bin/true" >/dev/null
cold=$(python3 -c "import json; r=json.load(open('$json'))['results']; print('%.1f %.1f' % (r[0]['mean']*1e3, r[1]['mean']*1e3))")
"$bin/jmount" -c "$T/c" j
hyperfine -N --style basic --runs "$RUNS" --warmup 3 --export-json "$json" "$bin/jupdate -c $T/c -q j -- /bin/true" >/dev/null
warm=$(python3 -c "import json; print('%.1f' % (json.load(open('$json'))['results'][0]['mean']*1e3))")
read -r jc ch <<<"$cold"
echo "jupdate (mounts and unmounts): $jc ms   chroot alone: $ch ms   overhead: $(python3 -c "print('%.1f' % ($jc - $ch))") ms"
echo "jupdate (layers already mounted): $warm ms   overhead: $(python3 -c "print('%.1f' % ($warm - $ch))") ms"
