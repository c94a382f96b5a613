#!/usr/bin/env bash
# Benchmark jclean against its peers, pair by pair on fresh copies of one synthetic
# ports-like tree (bench/gen_tree.py), in one run, on a tmpfs in a private mount
# namespace:
#   prune: jclean vs rm -rf, jclean vs rmz          (lower is better; ratios)
#   count: jclean -n vs du -s, jclean -n vs diskus  (warm cache)
#   peak RSS of jclean (-n and real) at 1M files
# usage: bench/clean.sh [FILES] [RUNS] [BIG]   default 150000 files, 5 runs, 1000000
#        BENCH_ON_DISK=1 bench/clean.sh ...     on /tmp's file system, not a tmpfs
#        JLAYERS_BENCH_BASELINE=DIR bench/clean.sh ...
#                          also DIR/jclean (another build, e.g. an older commit's
#                          target/release) in the same prune runs
# Needs hyperfine (apt-get install hyperfine), rmz, diskus (cargo install rmz diskus),
# python3 and GNU time.
set -euo pipefail
FILES=${1:-150000}
RUNS=${2:-5}
BIG=${3:-1000000}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
export PATH=$HOME/.cargo/bin:$PATH
bench_need hyperfine rmz diskus python3 /usr/bin/time
bench_baseline jclean
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
# The median of each command's runs in the last hyperfine JSON, in order, on one line.
medians() {
    local i n
    n=$(python3 -c "import json; print(len(json.load(open('$json'))['results']))")
    for ((i = 0; i < n; i++)); do
        python3 -c "import json; [print('%.4f' % t) for t in json.load(open('$json'))['results'][$i]['times']]" |
            bench_median
    done | paste -sd ' '
}
ratio() { python3 -c "print('%.2f' % ($1 / $2))"; }

baseline=()
[ -z "$base" ] || baseline=(--prepare "bash -c 'fresh $U'" "$base/jclean -c $T/jlayers.conf -q b")
echo "== prune ($FILES files, median of $RUNS fresh copies each)"
hyperfine -N --style basic --runs "$RUNS" --export-json "$json" \
    --prepare "bash -c 'fresh $U'" "$bin/jclean -c $T/jlayers.conf -q b" \
    --prepare "bash -c 'fresh $T/rm'" "rm -rf $T/rm" \
    --prepare "bash -c 'fresh $T/rmz'" "rmz $T/rmz" "${baseline[@]}" >/dev/null
read -r jc rm rz jb <<<"$(medians)"
echo "jclean ${jc}s  rm -rf ${rm}s  rmz ${rz}s"
echo "prune ratio: jclean/rm -rf $(ratio "$jc" "$rm")   jclean/rmz $(ratio "$jc" "$rz")"
[ -z "$base" ] ||
    echo "baseline jclean ${jb}s: base/rmz $(ratio "$jb" "$rz")   jclean/base $(ratio "$jc" "$jb")"

echo "== count (warm cache)"
fresh "$U"
hyperfine -N --style basic --runs "$RUNS" --warmup 1 --export-json "$json" \
    "$bin/jclean -c $T/jlayers.conf -n -b b" "du -s $U" "diskus $U" >/dev/null
read -r jn du dk <<<"$(medians)"
echo "jclean -n ${jn}s  du -s ${du}s  diskus ${dk}s"
echo "count ratio: jclean -n/du -s $(ratio "$jn" "$du")   jclean -n/diskus $(ratio "$jn" "$dk")"

echo "== peak RSS at $BIG files"
rm -rf "$U" "$T/src"
python3 "$top/bench/gen_tree.py" "$U" "$BIG" >/dev/null
/usr/bin/time -f "jclean -n: %M KiB peak RSS, %e s" "$bin/jclean" -c "$T/jlayers.conf" -n -b b
/usr/bin/time -f "jclean:    %M KiB peak RSS, %e s" "$bin/jclean" -c "$T/jlayers.conf" -b b
