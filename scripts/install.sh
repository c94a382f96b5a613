#!/bin/sh
# Install jlayers under a PREFIX, each file where hier(7) (FreeBSD) or the FHS
# (Linux) expects it:
#   sbin/jmount junmount jclean jupdate        system administration tools
#   share/man/man8/*.8, share/man/man5/jlayers.conf.5
#   etc/jlayers.conf.sample                    FreeBSD (the tools read PREFIX/etc/jlayers.conf)
#   share/doc/jlayers/jlayers.conf.sample      Linux (the tools read /etc/jlayers.conf)
#   etc/periodic/weekly/450.jupdate, 460.jclean    FreeBSD: periodic(8) jobs
#                                              (not with -p: the port's SUB_FILES)
#   etc/newsyslog.conf.d/jlayers.conf.sample   FreeBSD: jupdate's logs rotated,
#                                              copied to jlayers.conf when that is
#                                              missing (not with -p: the port's
#                                              @sample does it)
#   /etc/logrotate.d/jlayers                   Linux: the same (logrotate reads
#                                              only /etc, whatever the PREFIX)
#   lib/systemd/system/jlayers.service, jlayers-update.{service,timer},
#   jlayers-clean.{service,timer}              Linux: systemd(1) units (systemd
#                                              reads PREFIX/lib/systemd/system for
#                                              /usr and /usr/local)
#   share/bash-completion/completions/TOOL, share/zsh/site-functions/_TOOL,
#   share/fish/vendor_completions.d/TOOL.fish
#
# usage: scripts/install.sh [-o freebsd|linux] [-p] [-b BINDIR] [-d DESTDIR] [PREFIX]
#   -o  the layout (default: this system's); -p  for the FreeBSD port, which
#   installs the periodic scripts itself and puts the samples in place; -b  where
#   the built tools are (default: $CARGO_TARGET_DIR/release, else target/release);
#   -d  a staging root (as DESTDIR or the ports' STAGEDIR); PREFIX defaults to
#   /usr/local.
set -eu
top=$(cd "$(dirname "$0")/.." && pwd)
os=$(uname -s | tr '[:upper:]' '[:lower:]')
# Where cargo put the build: its own variable, as cargo reads it.
bin=${CARGO_TARGET_DIR:-$top/target}/release
dest=
port=
while getopts o:pb:d: opt; do
    case $opt in
    o) os=$OPTARG ;;
    p) port=1 ;;
    b) bin=$OPTARG ;;
    d) dest=$OPTARG ;;
    *) echo "usage: install.sh [-o freebsd|linux] [-p] [-b BINDIR] [-d DESTDIR] [PREFIX]" >&2; exit 64 ;;
    esac
done
shift $((OPTIND - 1))
prefix=${1:-/usr/local}
case $os in
freebsd|linux) ;;
*) echo "install.sh: $os: give -o freebsd or -o linux" >&2; exit 64 ;;
esac
root=$dest$prefix
tools="jmount junmount jclean jupdate"
for t in $tools; do
    [ -x "$bin/$t" ] || { echo "install.sh: $bin/$t missing: build first (make)" >&2; exit 66; }
done

install -d -m 755 "$root/sbin" "$root/share/man/man8" "$root/share/man/man5"
for t in $tools; do
    install -m 555 "$bin/$t" "$root/sbin/$t"
    install -m 444 "$top/man/$t.8" "$root/share/man/man8/$t.8"
done
install -m 444 "$top/man/jlayers.conf.5" "$root/share/man/man5/jlayers.conf.5"

if [ "$os" = freebsd ]; then
    install -d -m 755 "$root/etc"
    install -m 644 "$top/examples/jlayers.conf.sample" "$root/etc/jlayers.conf.sample"
    # The port fills in %%PREFIX%% itself (SUB_FILES) and installs the result.
    if [ -z "$port" ]; then
        install -d -m 755 "$root/etc/periodic/weekly"
        for p in 450.jupdate 460.jclean; do
            sed "s|%%PREFIX%%|$prefix|g" "$top/freebsd/periodic/weekly/$p" > "$root/etc/periodic/weekly/$p"
            chmod 555 "$root/etc/periodic/weekly/$p"
        done
    fi
    # A sample, as @sample installs it: the admin's edits of the entry survive an
    # upgrade. newsyslog(8) reads only the *.conf files there.
    nsl=$root/etc/newsyslog.conf.d
    install -d -m 755 "$nsl"
    install -m 644 "$top/freebsd/newsyslog.conf.d/jlayers.conf" "$nsl/jlayers.conf.sample"
    if [ -z "$port" ] && [ ! -e "$nsl/jlayers.conf" ]; then
        install -m 644 "$nsl/jlayers.conf.sample" "$nsl/jlayers.conf"
    fi
else
    install -d -m 755 "$root/share/doc/jlayers" "$dest/etc/logrotate.d"
    install -m 644 "$top/examples/jlayers.conf.sample" "$root/share/doc/jlayers/jlayers.conf.sample"
    install -m 644 "$top/linux/logrotate.d/jlayers" "$dest/etc/logrotate.d/jlayers"
    install -d -m 755 "$root/lib/systemd/system"
    for u in jlayers.service jlayers-update.service jlayers-update.timer \
        jlayers-clean.service jlayers-clean.timer; do
        sed "s|%%PREFIX%%|$prefix|g" "$top/linux/systemd/$u" > "$root/lib/systemd/system/$u"
        chmod 644 "$root/lib/systemd/system/$u"
    done
fi

install -d -m 755 "$root/share/bash-completion/completions" "$root/share/zsh/site-functions" \
    "$root/share/fish/vendor_completions.d"
for t in $tools; do
    install -m 444 "$top/completions/bash/$t" "$root/share/bash-completion/completions/$t"
    install -m 444 "$top/completions/zsh/_$t" "$root/share/zsh/site-functions/_$t"
    install -m 444 "$top/completions/fish/$t.fish" "$root/share/fish/vendor_completions.d/$t.fish"
done
