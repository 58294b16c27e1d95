// SPDX-License-Identifier: GPL-2.0

//! The kernel-independent protocol logic of `vsock_core/proto` (the `rvsock-proto` crate that
//! `cargo test` checks on the host), compiled into this module.

#![allow(dead_code, unreachable_pub)]

#[path = "../vsock_core/proto/src/addr.rs"]
pub(crate) mod addr;
#[path = "../vsock_core/proto/src/conn.rs"]
pub(crate) mod conn;
#[path = "../vsock_core/proto/src/credit.rs"]
pub(crate) mod credit;
#[path = "../vsock_core/proto/src/errno.rs"]
pub(crate) mod errno;
#[path = "../vsock_core/proto/src/hdr.rs"]
pub(crate) mod hdr;
#[path = "../vsock_core/proto/src/opts.rs"]
pub(crate) mod opts;
#[path = "../vsock_core/proto/src/poll.rs"]
pub(crate) mod poll;
#[path = "../vsock_core/proto/src/ports.rs"]
pub(crate) mod ports;
#[path = "../vsock_core/proto/src/queue.rs"]
pub(crate) mod queue;
#[path = "../vsock_core/proto/src/route.rs"]
pub(crate) mod route;
#[path = "../vsock_core/proto/src/vhost.rs"]
pub(crate) mod vhost;
#[path = "../vsock_core/proto/src/virtio.rs"]
pub(crate) mod virtio;
