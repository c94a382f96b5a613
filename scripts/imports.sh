#!/usr/bin/env bash
# The module graph of common/src as its `crate::` and `super::` paths draw it
# (comments and test modules left out), checked two ways: no circle (tsort), and
# no edge from a data module (what the configuration and the plan are made of) to
# a module that acts (mounts, runs, deletes).
#   scripts/imports.sh [--graph]   (--graph: print the edges)
set -euo pipefail
cd "$(dirname "$0")/../common/src"

# Modules that only hold data, and what each may import: other data modules.
data="config exit mounts os plan step target"

# A module's name: its file's path without .rs and /mod; platform's backends and
# their parts are nodes of their own, every other module's files are one node.
node() {
    local m=${1%.rs}
    m=${m%/mod}
    case $m in
    platform/*/*) m=${m#platform/}; echo "platform/${m%%/*}" ;;
    platform/*) echo "$m" ;;
    */*) echo "${m%%/*}" ;;
    *) echo "$m" ;;
    esac
}

edges() {
    local file from
    find . -name '*.rs' ! -name tests.rs | sed 's|^\./||' | sort | while read -r file; do
        from=$(node "$file")
        # Up to the first test module; no comment lines.
        awk '/^ *#\[cfg\(test\)\]/ { test = 1; next }
             test && /^ *mod [a-z_]+ \{/ { exit }
             { test = 0; print }' "$file" |
            { grep -v '^ *//' || true; } |
            { grep -oE '(crate|super)(::super)?::[a-z_]+(::[a-z_]+)?' || true; } |
            sort -u |
            while read -r path; do
                local to
                case $path in
                crate::platform::freebsd* | crate::platform::linux*)
                    to=$(echo "$path" | cut -d: -f3,5 | tr : /) ;;
                crate::*) to=$(echo "$path" | cut -d: -f3) ;;
                super::super::*) to=$(node "$(dirname "$(dirname "$file")")") ;;
                super::*)
                    # A sibling module, else an item of the parent.
                    local dir name
                    dir=$(dirname "$file")
                    name=$(echo "$path" | cut -d: -f3)
                    if [ "${file##*/}" = mod.rs ]; then dir=$(dirname "$dir"); fi
                    if [ -e "$dir/$name.rs" ] || [ -e "$dir/$name/mod.rs" ]; then
                        to=$(node "$dir/$name.rs")
                    else
                        to=$(node "$dir/mod.rs")
                    fi ;;
                esac
                # A backend using its parent's helpers is one module with it.
                [ "$to" = platform ] && [ "${from%%/*}" = platform ] && continue
                [ "$to" = "$from" ] || [ "$to" = . ] || echo "$from $to"
            done
    done | sort -u
}

graph=$(edges)
if [ "${1:-}" = --graph ]; then
    echo "$graph"
    exit 0
fi
status=0
if ! out=$(echo "$graph" | tsort 2>&1 >/dev/null); then
    echo "imports: a circle among modules:" >&2
    echo "${out//tsort: /}" >&2
    status=1
fi
while read -r from to; do
    case " $data " in *" $from "*) ;; *) continue ;; esac
    case " $data " in *" $to "*) ;; *)
        echo "imports: data module $from imports $to, which acts" >&2
        status=1 ;;
    esac
done <<<"$graph"
[ $status = 0 ] && echo "imports: $(echo "$graph" | wc -l) edges, no circle, data modules import only data"
exit $status
