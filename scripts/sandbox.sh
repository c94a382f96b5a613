#!/usr/bin/env bash
# The whole jlayers life cycle on a throwaway sandbox: its own mount namespace and a
# temp dir, touching nothing else on the machine. Run as root after building:
#   cargo build --release --locked && sudo scripts/sandbox.sh
set -euo pipefail
top=$(cd "$(dirname "$0")/.." && pwd)
bin=${JLAYERS_BIN:-$top/target/release}
if [ "${JLAYERS_SANDBOX_NS:-}" != 1 ]; then
    exec env JLAYERS_SANDBOX_NS=1 unshare --mount --propagation private "$0" "$@"
fi
T=$(mktemp -d /tmp/jlayers-sandbox.XXXXXX)
trap 'umount -R -l "$T" 2>/dev/null || true; rm -rf "$T"' EXIT
say() { printf '\n== %s\n' "$*"; }
run() { printf '$ %s\n' "$*"; "$@"; }

say "a small ports tree and two jails in $T"
mkdir -p "$T/ports/editors/vim" "$T/ports/Mk" "$T/ports/distfiles" "$T/jails/server/usr" "$T/jails/web/usr"
echo "PORTNAME= vim" > "$T/ports/editors/vim/Makefile"
echo "# framework" > "$T/ports/Mk/bsd.port.mk"
cat > "$T/jlayers.conf" <<CONF
[defaults]
upper_root = "$T/upper"
lock_dir   = "$T/run"
log_dir    = "$T/log"

[[layer]]
name   = "ports"
source = "$T/ports"
target = "usr/ports"

[[layer]]
name   = "distfiles"
source = "$T/ports/distfiles"
target = "usr/ports/distfiles"
mode   = "shared"

[jail.server]
root        = "$T/jails/server"
upper.ports = "usr/tmp/foo"

[jail.web]
root = "$T/jails/web"
CONF
cat "$T/jlayers.conf"
export JLAYERS_CONF=$T/jlayers.conf
( cd "$T/ports" && find . -type f | sort | xargs sha256sum ) > "$T/host.before"

say "what jmount would do"
run "$bin/jmount" -n --all
say "mount both jails"
run "$bin/jmount" -v --all

say "a build-like write in each jail"
mkdir -p "$T/jails/server/usr/ports/editors/vim/work" "$T/jails/web/usr/ports/editors/vim/work"
echo built > "$T/jails/server/usr/ports/editors/vim/work/.build_done.vim._usr_local"
echo patched >> "$T/jails/web/usr/ports/editors/vim/Makefile"
rm "$T/jails/web/usr/ports/Mk/bsd.port.mk"
echo "tarball" > "$T/jails/server/usr/ports/distfiles/vim-9.1.tar.gz"
run ls -la "$T/jails/server/usr/tmp/foo/editors/vim/work" "$T/upper/web/ports/Mk"

say "update the ports inside each jail (a stand-in portmaster in a busybox chroot)"
if command -v busybox >/dev/null; then
    for j in server web; do
        mkdir -p "$T/jails/$j/bin" "$T/jails/$j/usr/local/sbin"
        cp "$(command -v busybox)" "$T/jails/$j/bin/busybox"
        for a in sh mkdir echo; do ln -sf busybox "$T/jails/$j/bin/$a"; done
        # shellcheck disable=SC2016 # $* and $BATCH expand in the jail
        printf '#!/bin/sh\necho "portmaster $*: BATCH=$BATCH"\nmkdir -p /usr/ports/editors/vim/work\necho updated > /usr/ports/editors/vim/work/.update_done\n' \
            > "$T/jails/$j/usr/local/sbin/portmaster"
        chmod +x "$T/jails/$j/usr/local/sbin/portmaster"
    done
    run "$bin/jupdate" -j 2 --all
    run cat "$T/log/server.log"
else
    echo "(busybox not installed: apt-get install busybox-static to see jupdate run)"
fi

say "unmount both jails"
run "$bin/junmount" -v --all
echo "left mounted under $T: $(grep -c " $T" /proc/self/mountinfo || true)"

say "the host tree is untouched but for the shared distfiles"
( cd "$T/ports" && find . -type f | sort | xargs sha256sum ) > "$T/host.after"
diff "$T/host.before" "$T/host.after" || true
grep -v distfiles "$T/host.after" | diff <(grep -v distfiles "$T/host.before") - && echo "ports tree: unchanged"
say "what each jail changed, entry by entry, as the host tree sees it"
run "$bin/jclean" --list --all
say "prune what the jails wrote: the upper dirs, with a report"
run "$bin/jclean" --all
run ls -A "$T/upper/web/ports" "$T/jails/server/usr/tmp/foo"
echo "sandbox done; $T is removed on exit"
