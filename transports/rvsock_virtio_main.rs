// SPDX-License-Identifier: GPL-2.0

//! rvsock_virtio: the virtio-vsock guest driver (G2H transport) for rvsock.
//!
//! First step: the driver binds to the virtio-vsock device, reads the guest's CID from its
//! configuration space, finds its three queues (rx, tx, event) and marks it ready; the queue
//! callbacks only count notifications.  It does not yet register with rvsock's core as a
//! transport, add receive buffers or send anything; the event queue gets its 8 buffers, whose
//! events are only counted.  On removal the device is reset, the buffers it held are taken back
//! and the queues are deleted.

#![deny(unsafe_code)]

use core::sync::atomic::{AtomicU64, Ordering};
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow};

#[allow(dead_code, unsafe_code)]
#[path = "../rust/lib.rs"]
mod kx;

#[path = "../rust/proto.rs"]
mod proto;

use kx::skb::SkBuff;
use kx::virtio::{self, Device, DeviceId, Virtqueues, VqHandler};
use kx::Gfp;

kx::import_rvsock_namespace!();

module! {
    type: RvsockVirtio,
    name: "rvsock_virtio",
    author: "rvsock developers",
    description: "AF_VSOCK virtio transport (guest driver) for rvsock",
    license: "GPL",
    alias: ["virtio:d00000013v*"],
}

/// Queue indices, in the order of the virtio-vsock specification.
const VQ_RX: usize = 0;
const VQ_TX: usize = 1;
const VQ_EVENT: usize = 2;
const VQ_NAMES: [&CStr; 3] = [c_str!("rx"), c_str!("tx"), c_str!("event")];

/// Offset of `guest_cid` (le64) in `struct virtio_vsock_config`.
const CONFIG_GUEST_CID: u32 = 0;

/// Event buffers kept in the event queue, as upstream.
const EVENT_BUFS: usize = 8;
/// `struct virtio_vsock_event`: a le32 event id.
const EVENT_LEN: u32 = 4;

/// Fills the event queue, so that the device can report events (read in the next step; for now
/// they are only counted, and the buffers taken back on removal).
fn fill_events(vqs: &Virtqueues<SkBuff>) -> Result {
    let mut vq = vqs.lock(VQ_EVENT).ok_or(EINVAL)?;
    for _ in 0..EVENT_BUFS {
        let skb = SkBuff::alloc_linear_pkt(EVENT_LEN, Gfp::Kernel)?;
        vq.add_inbuf(skb, Gfp::Kernel, |s| s.linear_room_mut().unwrap_or(&mut []))
            .map_err(|(e, _)| e)?;
    }
    vq.kick();
    Ok(())
}

/// Notifications per queue (interrupt context: atomics only).
struct Counts([AtomicU64; 3]);

impl VqHandler for Counts {
    fn notified(this: ArcBorrow<'_, Self>, index: usize) {
        if let Some(c) = this.0.get(index) {
            c.fetch_add(1, Ordering::Relaxed);
        }
    }
}

/// What the driver keeps per device.
struct VsockDev {
    vqs: Virtqueues<SkBuff>,
    counts: Arc<Counts>,
    guest_cid: u64,
}

struct VirtioVsock;

#[vtable]
impl virtio::Driver for VirtioVsock {
    type Data = VsockDev;

    const NAME: &'static CStr = c_str!("rvsock_virtio");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId {
        device: virtio::ID_VSOCK,
        vendor: virtio::DEV_ANY_ID,
    }];
    const FEATURES: &'static [u32] = &[virtio::VSOCK_F_SEQPACKET];

    fn probe(dev: &Device) -> Result<VsockDev> {
        let counts = Arc::new(
            Counts([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]),
            GFP_KERNEL,
        )?;
        let vqs = dev.find_vqs::<Counts, SkBuff>(&VQ_NAMES, counts.clone())?;
        let guest_cid = dev.read_config_le64(CONFIG_GUEST_CID);
        dev.ready();
        fill_events(&vqs)?;
        let ring = |i| vqs.lock(i).map_or(0, |vq| vq.vring_size());
        pr_info!(
            "virtio{}: guest CID {}, seqpacket {}, rings rx {} tx {} event {}\n",
            dev.index(),
            guest_cid,
            dev.has_feature(virtio::VSOCK_F_SEQPACKET),
            ring(VQ_RX),
            ring(VQ_TX),
            ring(VQ_EVENT)
        );
        Ok(VsockDev {
            vqs,
            counts,
            guest_cid,
        })
    }

    fn remove(dev: &Device, data: VsockDev) {
        let VsockDev {
            vqs,
            counts,
            guest_cid,
        } = data;
        let vqs = vqs.shutdown();
        let mut unused = 0usize;
        for i in 0..VQ_NAMES.len() {
            while vqs.detach_unused(i).is_some() {
                unused += 1;
            }
        }
        drop(vqs);
        let n = |i: usize| counts.0[i].load(Ordering::Relaxed);
        pr_info!(
            "virtio{}: removed (guest CID {}); {} unused buffers; notifications rx {} tx {} event {}\n",
            dev.index(),
            guest_cid,
            unused,
            n(VQ_RX),
            n(VQ_TX),
            n(VQ_EVENT)
        );
    }
}

struct RvsockVirtio {
    _reg: Pin<KBox<virtio::Registration<VirtioVsock>>>,
}

impl kernel::Module for RvsockVirtio {
    fn init(module: &'static ThisModule) -> Result<Self> {
        Ok(RvsockVirtio {
            _reg: virtio::Registration::register(module)?,
        })
    }
}
