#!/usr/bin/env bash
# Type-check and lint the whole workspace, tests included, for FreeBSD
# (x86_64-unknown-freebsd) on a Linux machine. Debian 12's rustc-web ships the
# standard library's source (rust-web-src), so std is built for the target here
# (-Zbuild-std, allowed by RUSTC_BOOTSTRAP). Nothing is linked: this proves the
# FreeBSD code compiles and is lint-clean, not that it runs.
#   scripts/check-freebsd.sh [--install]   (--install: only install the toolchain)
set -euo pipefail
cd "$(dirname "$0")/.."
need=()
for p in rustc-web cargo-web rust-web-src rust-web-clippy; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ "${1:-}" != --install ] || exit 0
# Debian's cargo, rustc and clippy-driver, not rustup's (which has no std source).
PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc CARGO_TARGET_DIR=target/freebsd \
    /usr/bin/cargo clippy --locked -Zbuild-std=std,panic_abort \
    --target x86_64-unknown-freebsd --workspace --all-targets -- -D warnings
echo "check-freebsd: the workspace compiles for x86_64-unknown-freebsd without warnings"
