# shellcheck shell=bash
# What the bench scripts share; sourced by them, after they set `top` (the
# repository). Not a script of its own.

# bench_need TOOL...: fail, naming the calling script, unless every TOOL is found.
bench_need() {
    local t
    for t in "$@"; do
        command -v "$t" >/dev/null || {
            echo "${0##*/}: $t is needed (see its header)" >&2
            exit 1
        }
    done
}

# bench_median: the median of the numbers on stdin, one a line (for an even count
# the lower of the two middle ones), printed as it was read. The one median of the
# bench scripts.
bench_median() {
    sort -g | awk '{ a[NR] = $1 } END { if (NR) print a[int((NR + 1) / 2)] }'
}

# bench_baseline TOOL...: `base`, the directory JLAYERS_BENCH_BASELINE names (another
# build's jmount, junmount, jclean and jupdate, e.g. an older commit's
# target/release), whose TOOLs the calling script runs in the same runs as this
# build's; empty when it is unset. Fails unless each TOOL is there.
bench_baseline() {
    base=${JLAYERS_BENCH_BASELINE:-}
    [ -n "$base" ] || return 0
    local t
    for t in "$@"; do
        [ -x "$base/$t" ] || {
            echo "${0##*/}: JLAYERS_BENCH_BASELINE=$base has no $t" >&2
            exit 1
        }
    done
}

# bench_namespace "PACKAGE..." ARGS...: outside the namespace, build the packages
# --release and run the calling script again with ARGS in a private mount
# namespace of its own, so that its mounts never reach the host; inside, return.
bench_namespace() {
    [ "${JLAYERS_BENCH_NS:-}" != 1 ] || return 0
    local p pkgs=()
    for p in $1; do pkgs+=(-p "$p"); done
    shift
    bench_need cargo unshare
    # shellcheck disable=SC2154 # top is the sourcing script's
    cargo build --release --locked --quiet --manifest-path "$top/Cargo.toml" "${pkgs[@]}"
    exec env JLAYERS_BENCH_NS=1 unshare -m --propagation private "$0" "$@"
}

# bench_tmpdir NAME: T, a fresh dir /tmp/NAME.XXXXXX, and everything mounted below
# it and itself gone at exit.
bench_tmpdir() {
    T=$(mktemp -d "/tmp/$1.XXXXXX")
    trap 'umount -R -l "$T" 2>/dev/null; rm -rf "$T"' EXIT
}

# bench_jail_b: $T/jlayers.conf with jail b (root $T/jail) and one union layer,
# ports ($T/ports at usr/ports), its upper in $T/up; U, b's ports upper.
bench_jail_b() {
    mkdir -p "$T/jail" "$T/ports" "$T/up/b"
    cat >"$T/jlayers.conf" <<CONF
[defaults]
upper_root = "$T/up"
lock_dir = "$T/run"
[[layer]]
name = "ports"
source = "$T/ports"
target = "usr/ports"
[jail.b]
root = "$T/jail"
CONF
    # shellcheck disable=SC2034 # for the sourcing script
    U=$T/up/b/ports
}
