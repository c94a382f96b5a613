#!/usr/bin/env bash
# Type-check and lint the whole workspace, tests included, for FreeBSD
# (x86_64-unknown-freebsd) on a Linux machine, with the toolchain of
# scripts/freebsd-toolchain.sh (Debian's rustc-web, std built for the target).
# Nothing is linked: this proves the FreeBSD code compiles and is lint-clean, not
# that it runs.
#   scripts/check-freebsd.sh
set -euo pipefail
cd "$(dirname "$0")/.."
CARGO_TARGET_DIR=target/freebsd scripts/freebsd-toolchain.sh clippy --locked \
    --workspace --all-targets -- -D warnings
echo "check-freebsd: the workspace compiles for x86_64-unknown-freebsd without warnings"
