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
