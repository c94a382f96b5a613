#!/bin/sh
# Run shellcheck over every shell script of the project: CI's, scripts/, bench/, the simulated
# FreeBSD userland (tests/freebsd-sim/, its scripts sourcing common.sh) and the
# periodic(8) scripts under freebsd/. Any finding fails.
set -eu
cd "$(dirname "$0")/.."
files=$(
    for f in .ci/run scripts/* bench/* tests/freebsd-sim/* freebsd/periodic/*/*; do
        case $f in *.py|*.md) continue ;; esac
        echo "$f"
    done
)
# shellcheck disable=SC2086 # one path a word: the project's paths hold no space
shellcheck -x -P SCRIPTDIR $files
echo "shellcheck: $(echo "$files" | wc -l) scripts clean"
