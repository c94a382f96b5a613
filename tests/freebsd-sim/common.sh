# SIMULATION of FreeBSD tools for jlayers' tests: shared helpers. Not FreeBSD.
# shellcheck shell=sh
: "${SIM_STATE:?SIM_STATE must name the state directory of the simulation}"
mkdir -p "$SIM_STATE/running" "$SIM_STATE/jails"
touch "$SIM_STATE/mounts" "$SIM_STATE/zfs"
PROG=${0##*/}

# The id of the newest mount at a mount point (paths here carry no white space).
newest_mount_id() {
    awk -v mp="$1" '$5 == mp { id = $1 } END { print id }' /proc/self/mountinfo
}

# A mount id is given again once its mount is gone (Linux takes the lowest free
# one), also to a mount the simulation did not make: a record holds for the id at
# its own mount point only.
record() { # id type device mount-point
    printf '%s\t%s\t%s\t%s\n' "$1" "$2" "$3" "$4" >> "$SIM_STATE/mounts"
}

real_dir() { # the realpath(3) of an existing directory, or the tool's error
    if [ ! -e "$1" ]; then
        echo "$PROG: $1: No such file or directory" >&2; exit 64
    fi
    realpath -e -- "$1"
}

# Test hook: SIM_KILL_AT="TOOL N" kills the calling jlayers tool with SIGKILL right
# after the N-th call of TOOL in this state dir did its work, as a crash or power loss
# between two steps would.
sim_done() {
    [ -n "${SIM_KILL_AT:-}" ] || return 0
    # shellcheck disable=SC2086 # "TOOL N": two words
    set -- $SIM_KILL_AT
    [ "$1" = "$PROG" ] || return 0
    n=$(( $(cat "$SIM_STATE/calls.$PROG" 2>/dev/null || echo 0) + 1 ))
    echo "$n" > "$SIM_STATE/calls.$PROG"
    [ "$n" != "$2" ] || kill -9 "$PPID"
}

# The pids of the processes in a jail: those whose root is the jail's root (what
# ps -J and jls -d go by in the simulation).
jail_pids() { # root
    for d in /proc/[0-9]*; do
        [ "$(readlink "$d/root" 2>/dev/null)" = "$1" ] && echo "${d#/proc/}"
    done
    return 0
}

# Test hook: an executable $SIM_STATE/before-TOOL runs once, right before TOOL
# resolves its paths (where a jail could swap a component), then is put aside.
sim_before() {
    hook=$SIM_STATE/before-$PROG
    [ -x "$hook" ] || return 0
    mv "$hook" "$hook.ran"
    "$hook.ran"
}
