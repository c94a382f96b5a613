#!/usr/bin/env bash
# The FreeBSD toolchain of scripts/check-freebsd.sh and scripts/cross-freebsd.sh, set
# up in one place: Debian 12's rustc-web ships the standard library's source
# (rust-web-src), so std is built for x86_64-unknown-freebsd here (-Zbuild-std,
# allowed by RUSTC_BOOTSTRAP), with Debian's cargo, rustc and clippy-driver (rustup's
# have no std source). Installs the packages the first time.
#   scripts/freebsd-toolchain.sh                      install only
#   scripts/freebsd-toolchain.sh SUBCOMMAND ARGS...   cargo SUBCOMMAND for the target
#                                                     (CARGO_TARGET_DIR and the
#                                                     linker from the environment)
set -euo pipefail
need=()
for p in rustc-web cargo-web rust-web-src rust-web-clippy; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
[ $# -gt 0 ] || exit 0
sub=$1
shift
PATH=/usr/bin:$PATH RUSTC_BOOTSTRAP=1 RUSTC=/usr/bin/rustc exec /usr/bin/cargo "$sub" \
    -Zbuild-std=std,panic_abort --target x86_64-unknown-freebsd "$@"
