#!/usr/bin/env bash
# Install what jlayers' demo and tests need beyond a C linker, git and Rust, on
# Debian or Ubuntu, as root: mandoc (the man-page lint test), a static busybox (the
# jail userland of the demo's and the tests' jupdate runs), util-linux, GNU time, the
# shell linter CI runs (shellcheck), systemd-analyze (the systemd units' check),
# debootstrap (the Debian jail root of the sandbox tests, made by
# scripts/debian-root.sh), and
# ansible-core from PyPI in a venv under target/tools (the Ansible example's test).
# Only what is missing is installed; with everything there it does nothing.
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
venv=$top/target/tools/ansible
need=()
command -v mandoc >/dev/null || need+=(mandoc)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v unshare >/dev/null || need+=(util-linux)
command -v shellcheck >/dev/null || need+=(shellcheck)
command -v debootstrap >/dev/null || [ -x /usr/sbin/debootstrap ] || need+=(debootstrap)
# systemd-analyze: the systemd units' check (tests/tests/install.rs).
command -v systemd-analyze >/dev/null || need+=(systemd)
# GNU time: a child's own peak RSS (tests/tests/upper_scale.rs, bench/).
[ -x /usr/bin/time ] || need+=(time)
# Debian's python3 has venv but not ensurepip without python3-venv.
[ -x "$venv/bin/ansible-playbook" ] || /usr/bin/python3 -c 'import ensurepip' 2>/dev/null ||
    need+=(python3-venv)
if [ ${#need[@]} -gt 0 ]; then
    if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
        echo "deps.sh: install ${need[*]} (as root, with your package manager)" >&2
        exit 1
    fi
    echo "deps.sh: installing ${need[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
if [ ! -x "$venv/bin/ansible-playbook" ]; then
    echo "deps.sh: installing ansible-core in $venv" >&2
    rm -rf "$venv"
    /usr/bin/python3 -m venv "$venv"
    "$venv/bin/pip" install -q --disable-pip-version-check 'ansible-core>=2.17,<2.20'
fi
