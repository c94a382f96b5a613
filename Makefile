# make && make install [PREFIX=/usr/local] [DESTDIR=/staging]
# (BSD make and GNU make alike; scripts/install.sh says where each file goes.)
# A build elsewhere (CARGO_TARGET_DIR in the environment) is installed from there.
PREFIX ?= /usr/local
DESTDIR ?=

all:
	cargo build --release --locked -p jmount -p junmount -p jclean -p jupdate

install:
	sh scripts/install.sh -d "$(DESTDIR)" "$(PREFIX)"

.PHONY: all install
