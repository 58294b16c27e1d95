# SPDX-License-Identifier: GPL-2.0
#
# rvsock top-level Makefile.  Kbuild does the module build; this file wraps it and adds the
# project's commands.  See README.md.
#
#   make                   build the modules against $(KDIR) (default: the cached test kernel)
#   make KDIR=<dir>        build against any Rust-enabled kernel build directory
#   make kdir              print the test kernel's build directory
#   make setup             install what is missing (packages, bindgen, virtme-ng)
#   make kernel            build the cached test kernel and the upstream vsock tools
#   make demo              set up, build, boot the test kernel and show rvsock working
#   make check             the whole test suite (what CI runs)
#   make bench             rvsock against the upstream C stack, same boot
#                          (BENCH_ARGS="--transport virtio": the virtio drivers, guest to host)
#   make stress            the long stress suite (make check runs its short form)
#   make fuzz-kernel       the in-kernel packet fuzzer, 1,000,000 packets (make check: 100,000)
#   make clippy            the module build under clippy
#   make fmt / fmt-check   rustfmt over every Rust source
#   make rust-analyzer     rust-project.json for editors (against $(KDIR))
#
# Installing (README "Installing"; these build against the running kernel unless KDIR is given,
# with the toolchain that kernel was built with, see packaging/toolchain.sh):
#   make shipped           build only the modules a user installs (no test modules)
#   make install           shipped + modules_install into $(INSTALL_MOD_PATH) + depmod + the
#                          modprobe configuration /etc/modprobe.d/rvsock.conf
#   make uninstall         remove what make install installed
#   make dkms-src          copy the sources DKMS builds to $(DESTDIR)/usr/src/rvsock-<version>

TOP := $(abspath $(dir $(lastword $(MAKEFILE_LIST))))
KDIR ?= $(shell bash -c '. $(TOP)/tools/testing/lib.sh && echo $$(kernel_dir)/build')
RVSOCK_CACHE ?= /var/cache/rvsock

# The toolchain the test kernel was built with; override these with your own kernel's.
LLVM ?= -19
KRUSTC ?= /usr/bin/rustc
KBINDGEN ?= $(RVSOCK_CACHE)/bindgen-0.72.1/bin/bindgen
KCLIPPY ?= /usr/bin/clippy-driver
KRUSTFMT ?= /usr/bin/rustfmt
export LIBCLANG_PATH ?= /usr/lib/llvm-19/lib

KMAKE = $(MAKE) -C $(KDIR) M=$(TOP) LLVM=$(LLVM) RUSTC=$(KRUSTC) BINDGEN=$(KBINDGEN) \
	CLIPPY_DRIVER=$(KCLIPPY) RUSTFMT=$(KRUSTFMT)

# Every Rust source file of the modules and the host crates.
RUST_SOURCES = $(shell git -C $(TOP) ls-files --cached --others --exclude-standard '*.rs')

.PHONY: all modules clippy clean kdir setup kernel demo check check-virtio bench fmt fmt-check stress \
	fuzz-kernel

all: modules

modules:
	$(KMAKE) modules

clippy:
	$(KMAKE) CLIPPY=1 modules

clean:
	$(KMAKE) clean
	rm -rf $(TOP)/target

kdir:
	@echo $(KDIR)

setup:
	$(TOP)/tools/testing/setup.sh

kernel: setup
	$(TOP)/tools/testing/kernel/build.sh

demo:
	$(TOP)/tools/testing/demo.sh

check:
	$(TOP)/tools/testing/check.py

# make bench BENCH_ARGS="--transport virtio": guest to host over the virtio device.
bench:
	$(TOP)/tools/testing/bench/bench.py $(BENCH_ARGS)

# The long forms of two guest suites, each in one boot, followed by the unload and dmesg checks.
stress:
	RVSOCK_STRESS=full RVSOCK_VM_TIMEOUT=$${RVSOCK_VM_TIMEOUT:-3600} \
		$(TOP)/tools/testing/check.py --only setup,build,stress,unload,dmesg

# The virtio suite's long form: 1 GiB each way in its big guest-host flows, per driver.
check-virtio:
	RVSOCK_VIRTIO_BIG=1073741824 RVSOCK_VIRTIO_JOB_TIMEOUT=1500 \
		RVSOCK_VIRTIO_TIMEOUT=$${RVSOCK_VIRTIO_TIMEOUT:-7200} \
		$(TOP)/tools/testing/check.py --only setup,build,virtio

FUZZ_PACKETS ?= 1000000
fuzz-kernel:
	RVSOCK_FUZZ_PACKETS=$(FUZZ_PACKETS) RVSOCK_VM_TIMEOUT=$${RVSOCK_VM_TIMEOUT:-3600} \
		$(TOP)/tools/testing/check.py --only setup,build,fuzz,unload,dmesg

fmt:
	$(KRUSTFMT) --edition 2021 --config-path $(TOP)/.rustfmt.toml $(RUST_SOURCES)

fmt-check:
	$(KRUSTFMT) --check --edition 2021 --config-path $(TOP)/.rustfmt.toml $(RUST_SOURCES)

# Fuzz the packet-receive path of the protocol logic (needs a nightly toolchain and cargo-fuzz).
FUZZ_SECONDS ?= 60
.PHONY: fuzz
fuzz:
	cd $(TOP)/vsock_core/proto && cargo +nightly fuzz run recv_path -- -max_total_time=$(FUZZ_SECONDS)

# ---- Installing --------------------------------------------------------------------------------

# The modules a user installs; the test-only ones (Kbuild, RVSOCK_SHIPPED) never are.
SHIPPED_MODULES := rvsock rvsock_loopback rvsock_virtio
RVSOCK_VERSION := $(shell sed -n 's/^PACKAGE_VERSION="\(.*\)"/\1/p' $(TOP)/dkms.conf)

# The kernel to install for: KDIR when given (command line or environment), else the running one.
ifneq ($(filter command line environment,$(origin KDIR)),)
IKDIR = $(KDIR)
else
IKDIR = /lib/modules/$(shell uname -r)/build
endif
# The toolchain: what was given explicitly, the rest as the kernel records it (toolchain.sh).
TOOLCHAIN_GIVEN = $(foreach v,LLVM KRUSTC KBINDGEN LIBCLANG_PATH,$(if $(filter command line \
	environment,$(origin $(v))),$(v)=$($(v))))
TOOLCHAIN = env -u LLVM -u KRUSTC -u KBINDGEN -u LIBCLANG_PATH $(TOOLCHAIN_GIVEN) \
	$(TOP)/packaging/toolchain.sh $(IKDIR)
IMAKE = $(MAKE) -C $(IKDIR) M=$(TOP) RVSOCK_SHIPPED=1
KRELEASE = $(shell cat $(IKDIR)/include/config/kernel.release 2>/dev/null)
INSTALL_MOD_DIR ?= updates
MODDIR = $(INSTALL_MOD_PATH)/lib/modules/$(KRELEASE)/$(INSTALL_MOD_DIR)
MODPROBE_CONF = $(INSTALL_MOD_PATH)/etc/modprobe.d/rvsock.conf
DEPMOD = depmod $(if $(INSTALL_MOD_PATH),-b $(INSTALL_MOD_PATH)) $(KRELEASE)

.PHONY: shipped install uninstall dkms-src rust-analyzer

shipped:
	+@args=$$($(TOOLCHAIN)) && $(IMAKE) $$args modules

# modules_install runs depmod only where the kernel's System.map is (a distribution's headers
# package has none): depmod again.
install: shipped
	+@args=$$($(TOOLCHAIN)) && $(IMAKE) $$args INSTALL_MOD_PATH=$(INSTALL_MOD_PATH) \
		INSTALL_MOD_DIR=$(INSTALL_MOD_DIR) modules_install
	install -D -m 0644 $(TOP)/packaging/rvsock-modprobe.conf $(MODPROBE_CONF)
	$(DEPMOD)

uninstall:
	@[ -n "$(KRELEASE)" ] || { echo "rvsock: no kernel release in $(IKDIR)" >&2; exit 1; }
	rm -f $(foreach m,$(SHIPPED_MODULES),$(foreach z,.ko .ko.gz .ko.xz .ko.zst,$(MODDIR)/$(m)$(z)))
	-rmdir --ignore-fail-on-non-empty $(MODDIR)
	rm -f $(MODPROBE_CONF)
	$(DEPMOD)

# What DKMS builds: the shipped modules' sources (git's view of them: no build products).
DKMS_SRC = $(DESTDIR)/usr/src/rvsock-$(RVSOCK_VERSION)
DKMS_FILES = dkms.conf Makefile Kbuild Kconfig README.md packaging rust vsock_core transports
dkms-src:
	rm -rf $(DKMS_SRC)
	mkdir -p $(DKMS_SRC)
	@cd $(TOP) && if git rev-parse --git-dir >/dev/null 2>&1; then \
		git ls-files --cached --others --exclude-standard -- $(DKMS_FILES); \
	else find $(DKMS_FILES) -type f ! -name '*.o' ! -name '*.ko' ! -name '.*'; fi | \
		tar -cf - --files-from=- | tar -xf - -C $(DKMS_SRC)
	@echo "rvsock $(RVSOCK_VERSION) in $(DKMS_SRC): dkms install rvsock/$(RVSOCK_VERSION)"

# The kernel's own rust-analyzer support (rust-project.json with the kernel's crates, from
# scripts/generate_rust_analyzer.py), then our crate roots, which it does not find: it takes a
# .rs file for a crate root only when its own directory's Kbuild names the object.  For external
# modules 6.12 reads rust/Makefile relative to the build directory, which a build with O= (the
# test kernel, a distribution's headers) does not have: VPATH=<the source tree> finds it.
KSRC = $(realpath $(or $(wildcard $(KDIR)/source),$(KDIR)))
rust-analyzer:
	$(KMAKE) VPATH=$(KSRC) rust-analyzer
	python3 $(TOP)/packaging/rust_analyzer.py $(TOP) $(KDIR)
