#!/usr/bin/env bash
# Cross-build the four tools for FreeBSD 14 amd64 on a Linux machine and pack a
# release tarball (binaries, man pages, sample configuration, periodic(8) scripts,
# shell completions, laid out under usr/local as scripts/install.sh puts them):
#   target/dist/jlayers-VERSION-x86_64-freebsd14.tar.gz
# std is built for the target from Debian's rust-web-src (scripts/freebsd-toolchain.sh,
# as for scripts/check-freebsd.sh); zig (the ziglang package from PyPI, in a venv
# under target/tools) links against FreeBSD 14's libc. The libc crate also asks
# for -lkvm -lmemstat -lprocstat -ldevstat, which zig does not ship and nothing here
# uses: empty shared libraries of those names satisfy the linker, and --as-needed
# leaves them out of the binaries. Each binary is checked: a FreeBSD ELF whose
# interpreter is /libexec/ld-elf.so.1 and which needs base system libraries only.
set -euo pipefail
cd "$(dirname "$0")/.."
top=$PWD
target=x86_64-unknown-freebsd
tools=(jmount junmount jclean jupdate)
version=$(sed -n 's/^version = "\(.*\)"/\1/p' Cargo.toml | head -1)

# Debian's rust-web toolchain; the lint is check-freebsd.sh's alone (CI runs it once).
scripts/freebsd-toolchain.sh
zigenv=$top/target/tools/zig
if ! "$zigenv/bin/python3" -c 'import ziglang' 2>/dev/null; then
    rm -rf "$zigenv"
    /usr/bin/python3 -m venv "$zigenv"
    "$zigenv/bin/pip" install -q --disable-pip-version-check 'ziglang>=0.13,<0.18'
fi
stubs=$top/target/tools/freebsd-stubs
mkdir -p "$stubs"
echo '/* stands in for a FreeBSD base library nothing here uses */' > "$stubs/empty.c"
for l in kvm memstat procstat devstat; do
    [ -e "$stubs/lib$l.so" ] || "$zigenv/bin/python3" -m ziglang cc -target x86_64-freebsd.14.0 \
        -shared -o "$stubs/lib$l.so" "$stubs/empty.c"
done
cc=$top/target/tools/zig-cc-freebsd
cat > "$cc" <<CC
#!/bin/sh
exec "$zigenv/bin/python3" -m ziglang cc -target x86_64-freebsd.14.0 -L "$stubs" "\$@"
CC
chmod +x "$cc"

build=$top/target/freebsd-release
CARGO_TARGET_DIR=$build CARGO_TARGET_X86_64_UNKNOWN_FREEBSD_LINKER=$cc \
    scripts/freebsd-toolchain.sh build --locked --release "${tools[@]/#/-p}"
bin=$build/$target/release

for t in "${tools[@]}"; do
    f=$bin/$t
    hdr=$(readelf -h "$f")
    # Branded for FreeBSD: the ELF OS/ABI, or the FreeBSD ABI note the kernel reads.
    grep -q 'OS/ABI: *UNIX - FreeBSD' <<<"$hdr" ||
        readelf -n "$f" | grep -q 'FreeBSD.*NT_VERSION' || { echo "$t: not a FreeBSD ELF" >&2; exit 1; }
    grep -q 'Machine: *Advanced Micro Devices X86-64' <<<"$hdr" || { echo "$t: not amd64" >&2; exit 1; }
    interp=$(readelf -l "$f" | sed -n 's/.*Requesting program interpreter: \(.*\)]/\1/p')
    [ "$interp" = /libexec/ld-elf.so.1 ] || { echo "$t: interpreter $interp" >&2; exit 1; }
    needed=$(readelf -d "$f" | sed -n 's/.*(NEEDED).*\[\(.*\)\]/\1/p' | tr '\n' ' ')
    for lib in $needed; do
        case $lib in
        libc.so.7|libthr.so.3|libm.so.5|libgcc_s.so.1|libutil.so.9|libexecinfo.so.1) ;;
        *) echo "$t: needs $lib, not a base system library" >&2; exit 1 ;;
        esac
    done
    echo "cross-freebsd: $t: FreeBSD amd64 ELF, $interp, needs: $needed"
done

stage=$top/target/dist/stage
rm -rf "$stage"
sh scripts/install.sh -o freebsd -b "$bin" -d "$stage" /usr/local
tarball=$top/target/dist/jlayers-$version-x86_64-freebsd14.tar.gz
tar -C "$stage" -czf "$tarball" --owner=0 --group=0 usr
echo "cross-freebsd: $tarball"
tar -tzf "$tarball" | grep -c -v '/$' | sed 's/^/cross-freebsd: files: /'
