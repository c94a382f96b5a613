#!/usr/bin/env bash
# Install what jlayers' demo and tests need beyond a C linker, git and Rust, on
# Debian or Ubuntu, as root: mandoc (the man-page lint test), a static busybox (the
# jail userland of the demo's and the tests' jupdate runs), util-linux. Only what is
# missing is installed; with everything there it does nothing.
set -euo pipefail
need=()
command -v mandoc >/dev/null || need+=(mandoc)
[ -x /bin/busybox ] || [ -x /usr/bin/busybox ] || need+=(busybox-static)
command -v unshare >/dev/null || need+=(util-linux)
[ ${#need[@]} -gt 0 ] || exit 0
if [ "$(id -u)" != 0 ] || ! command -v apt-get >/dev/null; then
    echo "deps.sh: install ${need[*]} (as root, with your package manager)" >&2
    exit 1
fi
echo "deps.sh: installing ${need[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
