#!/usr/bin/env bash
# Benchmark: how jlayers' costs grow with the work. Each row runs at two or more
# sizes and prints the time (median of ROUNDS runs; one run when a run takes more
# than 5 s), the peak RSS, and the growth between sizes: time ratio for the work
# ratio (linear shows about 3x for 3x the work). Runs in its own mount namespace
# on a tmpfs; never touches the host's mounts.
#   jails: a config of N jails x 3 layers (a union ports layer, a nested shared
#          distfiles layer, a read-only src layer), nothing mounted:
#            load    jmount -n ONE        (loading and validating the config)
#            dry     jmount -n --all
#            down0   junmount --all       (nothing mounted)
#   mounts: N jails x 3 layers (4 mounts a jail), really mounted:
#            up      jmount --all
#            again   jmount --all         (everything mounted: nothing to do)
#            clean   jclean -n --all      (everything mounted: each upper read)
#            down    junmount --all
#   upper:  deep and wide upper dirs (jclean): bench/scale-upper.sh.
# usage: bench/scale.sh [ROWS...]     ROWS: jails mounts upper (default: all)
#   JAILS="1000 3000 10000"  MOUNT_JAILS="250 1000"  ROUNDS=3
#   JLAYERS_BENCH_BASELINE=DIR  also run every row with the binaries in DIR
#             (another build's target/release) and print new/base time ratios,
#             same run
#   LIMIT=S   stop a command after S seconds: its time shows as ">S s" (a
#             quadratic old build can take hours at 10,000 jails)
# Needs root (mounts), GNU time (/usr/bin/time: peak RSS) and python3 (the upper
# rows); builds --release first.
set -euo pipefail
JAILS=${JAILS:-1000 3000 10000}
MOUNT_JAILS=${MOUNT_JAILS:-250 1000}
ROUNDS=${ROUNDS:-3}
LIMIT=${LIMIT:-0}
top=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=lib.sh
. "$top/bench/lib.sh"
bench_need /usr/bin/time python3 timeout
bench_baseline jmount junmount jclean
bench_namespace "jmount junmount jclean" "$@"
bin=$top/target/release
bench_tmpdir jlayers-scale
mount -t tmpfs -o size=50% scale "$T"
mkdir -p "$T/ports/editors/vim" "$T/ports/distfiles" "$T/distfiles" "$T/src/bin"

# A config of $1 jails (and their roots, with the layers' targets) at $T/$1.
make_jails() {
    local n=$1 d=$T/$1
    mkdir -p "$d"
    {
        printf '[defaults]\nupper_root = "%s/upper"\nlock_dir = "%s/run"\n' "$d" "$d"
        printf '[[layer]]\nname = "ports"\nsource = "%s/ports"\ntarget = "usr/ports"\n' "$T"
        printf '[[layer]]\nname = "distfiles"\nsource = "%s/distfiles"\n' "$T"
        printf 'target = "usr/ports/distfiles"\nmode = "shared"\n'
        printf '[[layer]]\nname = "src"\nsource = "%s/src"\ntarget = "usr/src"\nmode = "readonly"\n' "$T"
        seq "$n" | awk -v d="$d" '{printf "[jail.j%d]\nroot = \"%s/jails/j%d\"\n", $1, d, $1}'
    } > "$d/jlayers.conf"
    seq "$n" | awk -v d="$d" '{
        printf "%s/jails/j%d/usr/ports/distfiles\n%s/jails/j%d/usr/src\n", d, $1, d, $1
        printf "%s/upper/j%d/ports\n", d, $1
    }' | xargs mkdir -p
}

now() { date +%s%N; }

# Time one command: "NANOSECONDS PEAK_RSS_KIB" (its status is ignored: a row
# measures the work, and the old build fails some of them by being too slow).
once() {
    local t0 t1 rss
    : > "$T/rss"
    t0=$(now)
    timeout -s KILL "$LIMIT" /usr/bin/time -f %M -o "$T/rss" "$@" >/dev/null 2>&1 || true
    t1=$(now)
    if [ "$LIMIT" != 0 ] && [ $((t1 - t0)) -ge $((LIMIT * 1000000000)) ]; then
        t1=$((t0 + LIMIT * 1000000000))
    fi
    rss=$(tail -n 1 "$T/rss")
    echo "$((t1 - t0)) ${rss:-0}"
}

# The median time and the largest peak RSS of up to ROUNDS runs of a command
# (`prep`, if set, runs before each one, untimed).
measure() {
    local r out times=() rss=0
    for r in $(seq "$ROUNDS"); do
        if [ -n "${prep:-}" ]; then $prep; fi
        out=$(once "$@")
        times+=("${out% *}")
        [ "${out#* }" -gt "$rss" ] && rss=${out#* }
        [ "${out% *}" -gt 5000000000 ] && break
        : "$r"
    done
    echo "$(printf '%s\n' "${times[@]}" | bench_median) $rss"
}

# A time, or ">LIMIT s" for a command stopped at the limit.
secs() {
    awk -v n="$1" -v l="$LIMIT" 'BEGIN {
        if (l > 0 && n >= l * 1e9) printf ">%d s", l; else printf "%.3f s", n / 1e9 }'
}
mib() { awk -v k="$1" 'BEGIN {printf "%.1f MiB", k / 1024}'; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN {printf "%.2fx", a / b}'; }
printf '%-8s %-36s %6s %10s %10s %14s' row command size time 'peak RSS' growth
[ -z "$base" ] || printf ' %10s %10s %8s' 'base time' 'base RSS' new/base
echo

# Print one row: NAME DESC SIZE PREV_SIZE PREV_TIME TIME RSS [BASE_TIME BASE_RSS]
# (PREV_*: the row's smaller size, for the growth).
show() {
    local name=$1 desc=$2 size=$3 psize=$4 ptime=$5 t=$6 rss=$7 growth=-
    [ -z "$psize" ] || growth="$(ratio "$t" "$ptime")/$(ratio "$size" "$psize")"
    printf '%-8s %-36s %6s %10s %10s %14s' "$name" "$desc" "$size" "$(secs "$t")" "$(mib "$rss")" "$growth"
    # Against a base stopped at the limit, the ratio is at most what it shows.
    local under=""
    [ -z "${8:-}" ] || [ "$LIMIT" = 0 ] || [ "$8" -lt $((LIMIT * 1000000000)) ] || under="<"
    [ -z "${8:-}" ] || printf ' %10s %10s %8s' "$(secs "$8")" "$(mib "$9")" "$under$(ratio "$t" "$8")"
    echo
}

# Measure and print one row: NAME DESC SIZE PREV_SIZE PREV_TIME TOOL ARGS...;
# sets `last` to this size's time.
row() {
    local name=$1 desc=$2 size=$3 psize=$4 ptime=$5 tool=$6 r b=()
    shift 6
    r=$(measure "$bin/$tool" "$@")
    [ -z "$base" ] || read -ra b <<<"$(measure "$base/$tool" "$@")"
    show "$name" "$desc" "$size" "$psize" "$ptime" "${r% *}" "${r#* }" "${b[@]}"
    last=${r% *}
}

rows_jails() {
    local n prev="" p_load="" p_dry="" p_down0="" c
    for n in $JAILS; do
        make_jails "$n"
        c=$T/$n/jlayers.conf
        row load "jmount -n j$n" "$n" "$prev" "$p_load" jmount -c "$c" -n "j$n"
        p_load=$last
        row dry "jmount -n --all" "$n" "$prev" "$p_dry" jmount -c "$c" -n --all
        p_dry=$last
        row down0 "junmount --all (nothing mounted)" "$n" "$prev" "$p_down0" junmount -c "$c" --all
        p_down0=$last
        prev=$n
        rm -rf "${T:?}/$n"
    done
}

# jmount --all, jmount --all again, jclean -n --all, junmount --all with the
# binaries in $1, once each on the config $2: "TIME RSS" four times.
mount_cycle() {
    local dir=$1 c=$2 d
    d=$(dirname "$c")
    once "$dir/jmount" -c "$c" --all
    once "$dir/jmount" -c "$c" --all
    once "$dir/jclean" -c "$c" -n --all
    once "$dir/junmount" -c "$c" --all
    [ "$(grep -c " $d/" /proc/self/mountinfo || true)" = 0 ] ||
        { echo "scale.sh: $dir left mounts below $d" >&2; exit 1; }
}

rows_mounts() {
    local n prev="" p=(); local -a r b
    for n in $MOUNT_JAILS; do
        make_jails "$n"
        mapfile -t r < <(mount_cycle "$bin" "$T/$n/jlayers.conf")
        b=("" "" "" "")
        [ -z "$base" ] || mapfile -t b < <(mount_cycle "$base" "$T/$n/jlayers.conf")
        local names=(up again clean down)
        local descs=("jmount --all" "jmount --all (all mounted)" "jclean -n --all (all mounted)"
            "junmount --all")
        for i in 0 1 2 3; do
            # shellcheck disable=SC2086 # "TIME RSS" pairs split on purpose
            show "${names[i]}" "${descs[i]} (x3 layers)" "$n" "$prev" "${p[i]:-}" ${r[i]} ${b[i]}
            p[i]=${r[i]% *}
        done
        prev=$n
        rm -rf "${T:?}/$n"
    done
}

# ---- deep and wide upper dirs (jclean) -------------------------------------
# Rows `deep` (a 10,000- / 100,000-level chain of directories in an upper) and
# `wide` (50,000 sibling dirs under ulimit -n 256), in every mode jclean walks an
# upper: bench/scale-upper.sh (the baseline's jclean measured in the same run).
rows_upper() {
    "$top/bench/scale-upper.sh"
}
# ----------------------------------------------------------------------------

for what in "${@:-jails mounts upper}"; do
    for w in $what; do
        case $w in
            jails) rows_jails ;;
            mounts) rows_mounts ;;
            upper) rows_upper ;;
            *) echo "scale.sh: unknown row set $w (jails, mounts, upper)" >&2; exit 64 ;;
        esac
    done
done
