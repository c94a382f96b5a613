#!/usr/bin/env bash
# Benchmark jclean against its peers, pair by pair on fresh copies of one synthetic
# ports-like tree (bench/gen_tree.py), in one run, on a tmpfs in a private mount
# namespace:
#   prune: jclean vs rm -rf, jclean vs rmz          (lower is better; ratios)
#   count: jclean -n vs du -s, jclean -n vs diskus  (warm cache)
#   peak RSS of jclean (-n and real) at 1M files
# usage: bench/clean.sh [FILES] [RUNS] [BIG]   default 150000 files, 5 runs, 1000000
#        BENCH_ON_DISK=1 bench/clean.sh ...     on /tmp's file system, not a tmpfs
#        BENCH_BASE=DIR bench/clean.sh ...      also DIR/jclean (another build, e.g.
#                                               main's target/release) in the same runs
# Needs hyperfine (apt-get install hyperfine) and rmz, diskus (cargo install rmz diskus).
set -euo pipefail
FILES=${1:-150000}
RUNS=${2:-5}
BIG=${3:-1000000}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
export PATH=$HOME/.cargo/bin:$PATH
bench_need hyperfine rmz diskus python3
bench_namespace jclean "$@"
bin=$top/target/release
bench_tmpdir jlayers-bench
# BENCH_ON_DISK=1: measure on the file system of /tmp instead of a tmpfs.
[ "${BENCH_ON_DISK:-}" = 1 ] || mount -t tmpfs -o size=80% bench "$T"
bench_jail_b
python3 "$top/bench/gen_tree.py" "$T/src" "$FILES"
fresh() { rm -rf "$1"; cp -a "$T/src" "$1"; }
export -f fresh; export T U

json=$T/h.json
median() { python3 -c "import json,sys; r=json.load(open('$json'))['results']; print(' '.join('%.4f' % x['median'] for x in r))"; }
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }

base=()
[ -z "${BENCH_BASE:-}" ] || base=(--prepare "bash -c 'fresh $U'" "$BENCH_BASE/jclean -c $T/jlayers.conf -q b")
echo "== prune ($FILES files, median of $RUNS fresh copies each)"
hyperfine -N --style basic --runs "$RUNS" --export-json "$json" \
    --prepare "bash -c 'fresh $U'" "$bin/jclean -c $T/jlayers.conf -q b" \
    --prepare "bash -c 'fresh $T/rm'" "rm -rf $T/rm" \
    --prepare "bash -c 'fresh $T/rmz'" "rmz $T/rmz" "${base[@]}" >/dev/null
read -r jc rm rz jb <<<"$(median)"
echo "jclean ${jc}s  rm -rf ${rm}s  rmz ${rz}s"
echo "prune ratio: jclean/rm -rf $(ratio "$jc" "$rm")   jclean/rmz $(ratio "$jc" "$rz")"
[ -z "${BENCH_BASE:-}" ] ||
    echo "base jclean ${jb}s: base/rmz $(ratio "$jb" "$rz")   jclean/base $(ratio "$jc" "$jb")"

echo "== count (warm cache)"
fresh "$U"
hyperfine -N --style basic --runs "$RUNS" --warmup 1 --export-json "$json" \
    "$bin/jclean -c $T/jlayers.conf -n -b b" "du -s $U" "diskus $U" >/dev/null
read -r jn du dk <<<"$(median)"
echo "jclean -n ${jn}s  du -s ${du}s  diskus ${dk}s"
echo "count ratio: jclean -n/du -s $(ratio "$jn" "$du")   jclean -n/diskus $(ratio "$jn" "$dk")"

echo "== peak RSS at $BIG files"
rm -rf "$U" "$T/src"
python3 "$top/bench/gen_tree.py" "$U" "$BIG" >/dev/null
/usr/bin/time -f "jclean -n: %M KiB peak RSS, %e s" "$bin/jclean" -c "$T/jlayers.conf" -n -b b
/usr/bin/time -f "jclean:    %M KiB peak RSS, %e s" "$bin/jclean" -c "$T/jlayers.conf" -b b
