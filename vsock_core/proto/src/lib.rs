// SPDX-License-Identifier: GPL-2.0

//! Kernel-independent protocol logic of rvsock, the Rust AF_VSOCK stack.
//!
//! Everything here is plain `core` Rust with no allocation, so the same source is compiled into
//! the kernel modules (as `mod proto`, see `vsock_core/rvsock_main.rs`) and tested on the host
//! with `cargo test`, property tests and fuzz targets.  It decides; the kernel glue acts:
//!
//! - [`hdr`]: the 44-byte little-endian virtio-vsock packet header;
//! - [`addr`]: `struct sockaddr_vm` parsing and the well-known CIDs and ports;
//! - [`credit`]: credit-based flow control, sender and receiver sides;
//! - [`conn`]: the connection state machine, fed with packets and local events;
//! - [`poll`]: the poll/epoll mask of a connectible socket;
//! - [`queue`]: where a received packet goes (merged, packed or on its own, and on a backlog);
//! - [`route`]: which transport slot serves a remote address;
//! - [`virtio`]: the checks a virtio-vsock guest driver makes of its device's buffers;
//! - [`vhost`]: what the host side decides about its guest: CID, tx chains, rx pieces;
//! - [`ports`]: bind-table matching and ephemeral port allocation;
//! - [`opts`]: socket option rules (buffer sizes, connect timeout);
//! - [`errno`]: the Linux error numbers the above return.

#![no_std]
#![deny(missing_docs)]
#![forbid(unsafe_code)]

pub mod addr;
pub mod conn;
pub mod credit;
pub mod errno;
pub mod hdr;
pub mod opts;
pub mod poll;
pub mod ports;
pub mod queue;
pub mod route;
pub mod vhost;
pub mod virtio;

#[cfg(test)]
extern crate std;
