// SPDX-License-Identifier: GPL-2.0

//! rvsock_virtio: the virtio-vsock guest driver (G2H transport) for rvsock.
//!
//! The behaviour is that of Linux 6.12.117's `net/vmw_vsock/virtio_transport.c`:
//!
//! - one device at a time (a second one gets `EBUSY`); its guest CID, read from the
//!   configuration space, is the transport's local CID;
//! - three queues: rx (header and payload in one descriptor, refilled below half), tx, and
//!   event (8 buffers);
//! - every used rx buffer is checked against what was lent and against the header's `len`
//!   before the core sees it (`proto::virtio::validate_rx`); the device is untrusted;
//! - reply backpressure: while the replies (RESPONSE, RST) waiting in the send queue reach the
//!   rx ring's size, rx stops, and restarts when they drain;
//! - `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` re-reads the CID and resets every connection;
//! - `SOCK_SEQPACKET` only with `VIRTIO_VSOCK_F_SEQPACKET`;
//! - `MSG_ZEROCOPY`: a packet goes on the tx ring as its header, linear payload and page
//!   fragments (user pages of a zerocopy send included), never copied; the send completes when
//!   the device gives the buffer back and it is freed.
//! - suspend (`freeze`): the device's connections are reset, its work stopped and its queues
//!   deleted, as upstream's `virtio_vsock_freeze`; `restore` finds the queues again, re-reads
//!   the guest CID and serves new connections (listeners and bound sockets stay).
//!
//! Beyond upstream: rx buffers can be larger: the `rx_buf_size` module parameter sets their
//! size, header included, from upstream's `SKB_WITH_OVERHEAD(4096)` (the default) to a header
//! and a 64 KiB payload (clamped, with a warning); 65216 fills an order-4 allocation.
//! Upstream's 4 KiB buffers cost 18 packets, and as many used buffers to reap, per 64 KiB the
//! host sends; 64 KiB ones, two.  At most 128 buffers are posted, and at most as many as fit in
//! 2 MiB (`proto::virtio::rx_buf_count`): 128 (the ring, as upstream) at 4 KiB, 32 at 64 KiB.
//! A large buffer that cannot be allocated is replaced by one of upstream's size.  (64 KiB
//! buffers are not the default yet: with vhost-device-vsock 0.3.0 a 64 MiB host-to-guest
//! stream was reset with `ENOBUFS` when the device sent 65,172 bytes against 22,416 of credit
//! left; which side miscounts is not settled.)  Also, a packet is added to the tx ring straight
//! from the sender's context when nothing waits in the send queue (it falls back to the queue
//! and the send work when the ring is full), and the send work kicks once per batch.
//!
//! Work runs on a private workqueue; the queue callbacks (interrupt context) only schedule it.

#![deny(unsafe_code)]

use core::ffi::c_void;
use core::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use kernel::c_str;
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, Mutex};
use kernel::workqueue::{HasWork, Work, WorkItem};
use kernel::{impl_has_work, new_mutex, new_work};

#[allow(dead_code, unsafe_code)]
#[path = "../rust/lib.rs"]
mod kx;

#[path = "../rust/proto.rs"]
mod proto;

use kx::skb::{SkBuff, SkbList};
use kx::transport::{features, Core, Info, Registration, Transport};
use kx::virtio::{self, Device, DeviceId, Virtqueue, Virtqueues, VqHandler, WorkQueue};
use kx::Gfp;
use proto::hdr::{Hdr, Op, HDR_LEN};
use proto::virtio::{
    event_id, rx_buf_cost, rx_buf_count, rx_buf_size, validate_rx, EVENT_LEN,
    EVENT_TRANSPORT_RESET, RX_BUF_MAX,
};

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

/// The smallest rx buffer, header included: upstream's (`VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE`,
/// one page less the `skb_shared_info`).
const RX_BUF_MIN: u32 = kx::sys::SKB_WITH_OVERHEAD_4K;
/// `SKB_DATA_ALIGN(sizeof(struct skb_shared_info))`: what a linear skb adds to its data.
const SKB_SHINFO: u32 = 4096 - RX_BUF_MIN;
/// Rx buffers handed to the core per round, so that the reply count is checked between rounds.
const RX_BATCH: usize = 64;

/// Event buffers kept in the event queue, as upstream.
const EVENT_BUFS: usize = 8;

/// The jobs of [`Notify`]'s work items: the id of each one's `Work` field.
const W_RX: u64 = 0;
const W_TX_DONE: u64 = 1;
const W_SEND: u64 = 2;
const W_EVENT: u64 = 3;

/// Whether a device is bound (one at a time, as upstream).
static BOUND: AtomicBool = AtomicBool::new(false);

/// Whether a packet counts as a reply for the rx backpressure (upstream's `reply` packets: the
/// RESPONSE to a request and the RST answering a packet).
fn is_reply(hdr: &Hdr) -> bool {
    matches!(hdr.op(), Some(Op::Response | Op::Rst))
}

/// The queues' notification handler and the work items it schedules, on the driver's own
/// workqueue.  The work reaches the device through `dev`, which `remove` clears.
#[pin_data]
struct Notify {
    wq: WorkQueue,
    #[pin]
    rx_work: Work<Notify, W_RX>,
    #[pin]
    tx_done_work: Work<Notify, W_TX_DONE>,
    #[pin]
    send_work: Work<Notify, W_SEND>,
    #[pin]
    event_work: Work<Notify, W_EVENT>,
    #[pin]
    dev: Mutex<Option<Arc<Dev>>>,
}

impl_has_work! {
    impl HasWork<Self, W_RX> for Notify { self.rx_work }
    impl HasWork<Self, W_TX_DONE> for Notify { self.tx_done_work }
    impl HasWork<Self, W_SEND> for Notify { self.send_work }
    impl HasWork<Self, W_EVENT> for Notify { self.event_work }
}

impl Notify {
    /// Schedules the work item of job `W` (any context); nothing if it is pending already.
    fn schedule<const W: u64>(&self, this: Arc<Notify>)
    where
        Notify: HasWork<Notify, W>,
    {
        // An item already queued gives the reference back, which is dropped here; it is never
        // the last one (the caller holds another).
        drop(self.wq.enqueue::<_, W>(this));
    }

    /// The device, while bound.
    fn dev(&self) -> Option<Arc<Dev>> {
        self.dev.lock().clone()
    }
}

impl VqHandler for Notify {
    fn notified(this: ArcBorrow<'_, Self>, index: usize) {
        match index {
            VQ_RX => this.schedule::<W_RX>(this.into()),
            VQ_TX => this.schedule::<W_TX_DONE>(this.into()),
            VQ_EVENT => this.schedule::<W_EVENT>(this.into()),
            _ => {}
        }
    }
}

/// Every work item of [`Notify`] runs its job on the device, while bound.
impl<const W: u64> WorkItem<W> for Notify
where
    Notify: HasWork<Notify, W>,
{
    type Pointer = Arc<Notify>;

    fn run(this: Arc<Notify>) {
        if let Some(d) = this.dev() {
            d.run_job(W);
        }
    }
}

/// A bound device.
///
/// Lock order: `reg`, then `send_q`, then the tx queue; the rx and event queues are never held
/// with another lock.  The core is called (`recv`, `set_local_cid`, `reset_all`) with `reg`
/// held and no queue lock; it may call `send_pkt` from there.
#[pin_data]
struct Dev {
    vqs: Virtqueues<SkBuff>,
    notify: Arc<Notify>,
    guest_cid: AtomicU64,
    seqpacket: bool,
    /// Cleared on removal: the work items stop touching the queues.
    run: AtomicBool,
    /// The registration with the core, taken out (unregistered) on removal.
    #[pin]
    reg: Mutex<Option<Pin<KBox<Registration<G2h>>>>>,
    /// Packets waiting for room in the tx ring.
    #[pin]
    send_q: Mutex<SkbList>,
    /// Replies in `send_q` (upstream's `queued_replies`).
    queued_replies: AtomicU32,
    /// Buffers in the rx ring, and the most there were (changed under the rx queue's lock).
    rx_bufs: AtomicU32,
    rx_max: AtomicU32,
    /// Bytes of one rx buffer, header included (`rx_buf_size`, clamped).
    rx_buf_len: u32,
    /// Rx buffers to keep posted (`proto::virtio::rx_buf_count`).
    rx_buf_target: u32,
    /// Used rx buffers dropped because they failed [`validate_rx`] (reported at removal).
    rx_dropped: AtomicU64,
    /// Descriptors of the rx ring: the reply count that stops rx.
    rx_ring: u32,
}

impl Dev {
    fn schedule<const W: u64>(&self)
    where
        Notify: HasWork<Notify, W>,
    {
        self.notify.schedule::<W>(self.notify.clone());
    }

    /// Runs job `which` (a work item of [`Notify`]).
    fn run_job(&self, which: u64) {
        match which {
            W_RX => self.rx_work(),
            W_TX_DONE => self.tx_done_work(),
            W_SEND => self.send_work(),
            W_EVENT => self.event_work(),
            _ => {}
        }
    }

    fn running(&self) -> bool {
        self.run.load(Ordering::Acquire)
    }

    /// Whether rx may go on: fewer replies wait than the rx ring holds.
    fn more_replies(&self) -> bool {
        self.queued_replies.load(Ordering::Acquire) < self.rx_ring
    }

    /// `n` replies left the send queue; restarts rx if that brought the count under the limit.
    fn replies_gone(&self, n: u32) {
        if n == 0 {
            return;
        }
        let before = self
            .queued_replies
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |v| {
                Some(v.saturating_sub(n))
            })
            .unwrap_or(0);
        if before >= self.rx_ring && before.saturating_sub(n) < self.rx_ring {
            self.schedule::<W_RX>();
        }
    }

    /// Fills the rx ring with fresh buffers, up to `rx_buf_target`, and kicks
    /// (`virtio_vsock_rx_fill`).  A buffer of `rx_buf_len` bytes that cannot be allocated (a
    /// high-order allocation) is replaced by one of upstream's size.
    fn rx_fill(&self, vq: &mut Virtqueue<'_, SkBuff>) {
        while self.rx_bufs.load(Ordering::Relaxed) < self.rx_buf_target {
            let skb = SkBuff::alloc_linear_pkt(self.rx_buf_len - HDR_LEN as u32, Gfp::KernelTry)
                .or_else(|_| SkBuff::alloc_linear_pkt(RX_BUF_MIN - HDR_LEN as u32, Gfp::Kernel));
            let Ok(mut skb) = skb else {
                break;
            };
            // The header room is zeroed, as upstream; the device writes the rest.
            if let Some(room) = skb.linear_room_mut() {
                for b in room.iter_mut().take(HDR_LEN) {
                    b.write(0);
                }
            }
            let max = self.rx_buf_len as usize;
            let added = vq.add_inbuf(skb, Gfp::Kernel, |s| {
                let room = s.linear_room_mut().unwrap_or(&mut []);
                let n = room.len().min(max);
                room.get_mut(..n).unwrap_or(&mut [])
            });
            if added.is_err() {
                // The ring is full (or broken); the buffer is dropped with the error.
                break;
            }
            let n = self.rx_bufs.fetch_add(1, Ordering::Relaxed) + 1;
            self.rx_max.fetch_max(n, Ordering::Relaxed);
        }
        vq.kick();
    }

    /// Checks a used rx buffer of `len` bytes (as the device says) with
    /// [`proto::virtio::validate_rx`]: header and payload must fit in what was lent (the
    /// buffer's linear room up to `rx_buf_len`, as `rx_fill` lent it) and in what was written.
    /// `None`: dropped.
    fn rx_check(&self, mut skb: SkBuff, len: u32) -> Option<SkBuff> {
        let lent = skb
            .linear_room_mut()
            .map_or(0, |r| r.len())
            .min(self.rx_buf_len as usize);
        let hdr = skb.hdr()?;
        let payload = validate_rx(len, lent, &hdr).ok()?;
        if payload > 0 {
            skb.put_received(payload).ok()?;
        }
        Some(skb)
    }

    /// Takes up to [`RX_BATCH`] checked packets off the rx ring and refills it.  The bool says
    /// whether to come back for more.
    fn rx_reap(&self, got: &mut SkbList) -> bool {
        let Some(mut vq) = self.vqs.lock(VQ_RX) else {
            return false;
        };
        if !self.running() {
            return false;
        }
        let mut again = false;
        'reap: loop {
            vq.disable_cb();
            loop {
                if !self.more_replies() {
                    // Stop until the replies drain (`replies_gone` restarts rx); callbacks
                    // stay off.
                    break 'reap;
                }
                if got.len() >= RX_BATCH {
                    again = true;
                    break 'reap;
                }
                let Some((skb, len)) = vq.get_buf() else {
                    break;
                };
                let _ = self
                    .rx_bufs
                    .fetch_update(Ordering::Relaxed, Ordering::Relaxed, |v| {
                        Some(v.saturating_sub(1))
                    });
                match self.rx_check(skb, len) {
                    Some(skb) => got.push_back(skb),
                    None => {
                        self.rx_dropped.fetch_add(1, Ordering::Relaxed);
                    }
                }
            }
            if vq.enable_cb() {
                break;
            }
        }
        if self.rx_bufs.load(Ordering::Relaxed) < self.rx_max.load(Ordering::Relaxed) / 2 {
            self.rx_fill(&mut vq);
        }
        again
    }

    /// The rx work: reaps the rx ring and hands the packets to the core, outside the queue
    /// lock.
    fn rx_work(&self) {
        loop {
            let mut got = SkbList::new();
            let again = self.rx_reap(&mut got);
            if !got.is_empty() {
                let reg = self.reg.lock();
                if let Some(core) = reg.as_ref().and_then(|r| r.core()) {
                    while let Some(skb) = got.pop_front() {
                        core.recv(skb);
                    }
                };
                // Left over (unregistered meanwhile): dropped with `got`.
            }
            if !again {
                break;
            }
        }
    }

    /// Adds a packet to the tx ring as upstream's `virtio_transport_send_skb`: the header, the
    /// linear payload (if any) and one segment per page fragment, by page, user pages of a
    /// zerocopy send included: nothing is copied.  The device holds the packet until it gives
    /// the buffer back, and freeing it then completes a zerocopy send (a real one, not
    /// `SO_EE_CODE_ZEROCOPY_COPIED`) and takes its bytes off the sender's unsent count
    /// (`SIOCOUTQ`).  The buffer comes back with the error (`ENOSPC`: ring full; `EINVAL`: no
    /// header room, or a payload not all in the linear part and the fragments).
    ///
    /// As upstream since 6.12.117, a packet above about 32 KiB (the core's nonlinear ones)
    /// spans several descriptors, which devices built on rust-vmm's `virtio-vsock`
    /// (vhost-device-vsock 0.3.0) reject.
    fn tx_add(
        vq: &mut Virtqueue<'_, SkBuff>,
        skb: SkBuff,
    ) -> core::result::Result<(), (Error, SkBuff)> {
        vq.add_sgs(skb, Gfp::Kernel, |s, sgs| {
            let s: &SkBuff = s;
            let Some(h) = s.hdr_bytes() else { return };
            sgs.readable(h);
            sgs.readable(s.linear_data());
            sgs.readable_skb_frags(s);
        })
    }

    /// The send work: moves queued packets to the tx ring while it has room, one kick per
    /// batch (`virtio_transport_send_pkt_work`).
    fn send_work(&self) {
        let mut gone_replies = 0u32;
        {
            let mut q = self.send_q.lock();
            let Some(mut vq) = self.vqs.lock(VQ_TX) else {
                return;
            };
            if !self.running() {
                return;
            }
            let mut added = false;
            while let Some(skb) = q.pop_front() {
                let reply = skb.hdr().is_some_and(|h| is_reply(&h));
                match Self::tx_add(&mut vq, skb) {
                    Ok(()) => added = true,
                    Err((e, skb)) if e == ENOSPC => {
                        q.push_front(skb);
                        break;
                    }
                    // Broken queue or unusable packet: dropped, as a lossy device would.
                    Err(_) => {}
                }
                if reply {
                    gone_replies += 1;
                }
            }
            if added {
                vq.kick();
            }
        }
        self.replies_gone(gone_replies);
    }

    /// The tx completion work: frees the packets the device has read
    /// (`virtio_transport_tx_work`), then lets the send work use the room.
    fn tx_done_work(&self) {
        let mut freed = false;
        {
            let Some(mut vq) = self.vqs.lock(VQ_TX) else {
                return;
            };
            if !self.running() {
                return;
            }
            loop {
                vq.disable_cb();
                while let Some((skb, _)) = vq.get_buf() {
                    skb.consume();
                    freed = true;
                }
                if vq.enable_cb() {
                    break;
                }
            }
        }
        if freed && !self.send_q.lock().is_empty() {
            self.schedule::<W_SEND>();
        }
    }

    /// Lends an event buffer to the device (4 bytes at its head, zeroed first).
    fn event_add(vq: &mut Virtqueue<'_, SkBuff>, mut skb: SkBuff) -> Result {
        if let Some(room) = skb.linear_room_mut() {
            for b in room.iter_mut().take(HDR_LEN) {
                b.write(0);
            }
        }
        vq.add_inbuf(skb, Gfp::Kernel, |s| {
            let room = s.linear_room_mut().unwrap_or(&mut []);
            room.get_mut(..EVENT_LEN).unwrap_or(&mut [])
        })
        .map_err(|(e, _)| e)
    }

    /// Fills the event queue with its buffers.
    fn event_fill(&self) -> Result {
        let mut vq = self.vqs.lock(VQ_EVENT).ok_or(EINVAL)?;
        for _ in 0..EVENT_BUFS {
            let skb = SkBuff::alloc_linear_pkt(EVENT_LEN as u32, Gfp::Kernel)?;
            Self::event_add(&mut vq, skb)?;
        }
        vq.kick();
        Ok(())
    }

    /// The event work: reads the events and gives their buffers back to the device
    /// (`virtio_transport_event_work`).
    fn event_work(&self) {
        let mut reset = false;
        {
            let Some(mut vq) = self.vqs.lock(VQ_EVENT) else {
                return;
            };
            if !self.running() {
                return;
            }
            loop {
                vq.disable_cb();
                while let Some((skb, len)) = vq.get_buf() {
                    // The buffer lent is the first `EVENT_LEN` bytes at the head of the skb (its
                    // header room, zeroed before it was lent): a `struct virtio_vsock_event`.
                    let lent = skb.hdr_bytes().and_then(|b| b.get(..EVENT_LEN));
                    if lent.and_then(|b| event_id(len, b)) == Some(EVENT_TRANSPORT_RESET) {
                        reset = true;
                    }
                    // On failure (ring broken) the buffer is dropped.
                    let _ = Self::event_add(&mut vq, skb);
                }
                if vq.enable_cb() {
                    break;
                }
            }
            vq.kick();
        }
        if reset {
            self.transport_reset();
        }
    }

    /// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` (after a migration): the CID may have changed and
    /// every connection is gone.
    fn transport_reset(&self) {
        let cid = self.vqs.device().read_config_le64(CONFIG_GUEST_CID);
        self.guest_cid.store(cid, Ordering::Release);
        let reg = self.reg.lock();
        if let Some(core) = reg.as_ref().and_then(|r| r.core()) {
            core.set_local_cid(cid as u32);
            core.reset_all();
        };
        pr_info!("transport reset, guest CID {}\n", cid);
    }

    /// Stops the device: unregisters from the core (which resets every connection), stops the
    /// work, and drops the device, which resets it, frees its buffers and deletes its queues.
    fn teardown(notify: Arc<Notify>, d: Arc<Dev>) {
        let reg = d.reg.lock().take();
        drop(reg);
        d.run.store(false, Ordering::Release);
        // Wait for the work inside a queue; afterwards none touches one.
        for i in 0..d.vqs.len() {
            drop(d.vqs.lock(i));
        }
        *notify.dev.lock() = None;
        notify.wq.flush();
        // The last reference (the work that cloned one has finished): the device is reset, its
        // buffers freed and its queues deleted, so no more notifications.
        drop(d);
        // Work queued by the last notifications finds no device; once it has run, nothing
        // else holds `notify`, and dropping it destroys the workqueue here, not in its work.
        notify.wq.flush();
        drop(notify);
    }
}

/// The transport the core calls.
struct G2h {
    dev: Arc<Dev>,
}

impl Transport for G2h {
    fn send_pkt(&self, _core: &Core<'_>, skb: SkBuff) -> Result {
        let d = &self.dev;
        let hdr = skb.hdr().ok_or(EINVAL)?;
        if hdr.dst_cid == d.guest_cid.load(Ordering::Acquire) {
            // To ourselves: that is the loopback's (upstream refuses too).
            return Err(ENODEV);
        }
        if !d.running() {
            return Err(ENODEV);
        }
        let mut q = d.send_q.lock();
        let skb = if q.is_empty() {
            // Straight into the ring from the sender's context.
            let mut vq = d.vqs.lock(VQ_TX).ok_or(ENODEV)?;
            match Dev::tx_add(&mut vq, skb) {
                Ok(()) => {
                    vq.kick();
                    return Ok(());
                }
                Err((e, skb)) if e == ENOSPC => skb,
                Err((e, _)) => return Err(e),
            }
        } else {
            skb
        };
        if is_reply(&hdr) {
            d.queued_replies.fetch_add(1, Ordering::AcqRel);
        }
        q.push_back(skb);
        drop(q);
        d.schedule::<W_SEND>();
        Ok(())
    }

    fn cancel_pkt(&self, sk: *mut c_void) {
        let d = &self.dev;
        let mut replies = 0u32;
        {
            let mut q = d.send_q.lock();
            let mut keep = SkbList::new();
            while let Some(skb) = q.pop_front() {
                if skb.owner().cast::<c_void>() == sk {
                    if skb.hdr().is_some_and(|h| is_reply(&h)) {
                        replies += 1;
                    }
                    drop(skb);
                } else {
                    keep.push_back(skb);
                }
            }
            *q = keep;
        }
        d.replies_gone(replies);
    }

    fn seqpacket_allow(&self, _remote_cid: u32) -> bool {
        self.dev.seqpacket
    }
}

/// A running device: its work items and its queues.
struct VsockDev {
    notify: Arc<Notify>,
    dev: Arc<Dev>,
}

impl VsockDev {
    /// Stops the device ([`Dev::teardown`]); returns its guest CID and dropped rx buffers.
    fn stop(self) -> (u64, u64) {
        let cid = self.dev.guest_cid.load(Ordering::Relaxed);
        let dropped = self.dev.rx_dropped.load(Ordering::Relaxed);
        Dev::teardown(self.notify, self.dev);
        (cid, dropped)
    }
}

/// What the driver keeps per bound device: the running device, or `None` while it is frozen
/// (between `freeze` and `restore`, or after a `restore` that failed).
type Bound = Pin<KBox<Mutex<Option<VsockDev>>>>;

struct VirtioVsock;

impl VirtioVsock {
    fn probe_bound(vdev: &Device) -> Result<VsockDev> {
        let wq = WorkQueue::new(c_str!("rvsock_virtio"))?;
        let notify = Arc::pin_init(
            pin_init!(Notify {
                wq,
                rx_work <- new_work!("rvsock_virtio::rx"),
                tx_done_work <- new_work!("rvsock_virtio::tx_done"),
                send_work <- new_work!("rvsock_virtio::send"),
                event_work <- new_work!("rvsock_virtio::event"),
                dev <- new_mutex!(None),
            }),
            GFP_KERNEL,
        )?;
        let vqs = vdev.find_vqs::<Notify, SkBuff>(&VQ_NAMES, notify.clone())?;
        let guest_cid = vdev.read_config_le64(CONFIG_GUEST_CID);
        let seqpacket = vdev.has_feature(virtio::VSOCK_F_SEQPACKET);
        let rx_ring = vqs.lock(VQ_RX).map_or(0, |vq| vq.vring_size());
        let asked = virtio::params::rx_buf_size();
        let (rx_buf_len, clamped) = rx_buf_size(asked, RX_BUF_MIN);
        if clamped {
            pr_warn!(
                "rx_buf_size {} is outside {} .. {}: using {}\n",
                asked,
                RX_BUF_MIN,
                RX_BUF_MAX,
                rx_buf_len
            );
        }
        let rx_buf_target = rx_buf_count(rx_ring, rx_buf_cost(rx_buf_len, SKB_SHINFO));
        let notify_ref = notify.clone();
        let d = Arc::pin_init(
            pin_init!(Dev {
                vqs,
                notify: notify_ref,
                guest_cid: AtomicU64::new(guest_cid),
                seqpacket,
                run: AtomicBool::new(true),
                reg <- new_mutex!(None),
                send_q <- new_mutex!(SkbList::new()),
                queued_replies: AtomicU32::new(0),
                rx_bufs: AtomicU32::new(0),
                rx_max: AtomicU32::new(0),
                rx_buf_len,
                rx_buf_target,
                rx_dropped: AtomicU64::new(0),
                rx_ring,
            }),
            GFP_KERNEL,
        )?;
        *notify.dev.lock() = Some(d.clone());
        vdev.ready();
        let filled = match d.vqs.lock(VQ_RX) {
            Some(mut vq) => {
                d.rx_fill(&mut vq);
                Ok(())
            }
            None => Err(EINVAL),
        }
        .and_then(|()| d.event_fill())
        .and_then(|()| {
            let mut reg = d.reg.lock();
            let info = Info {
                name: c_str!("virtio"),
                features: features::G2H,
                local_cid: guest_cid as u32,
                msgzerocopy: true,
            };
            *reg = Some(Registration::register(
                info,
                &THIS_MODULE,
                G2h { dev: d.clone() },
            )?);
            Ok(())
        });
        if let Err(e) = filled {
            Dev::teardown(notify, d);
            return Err(e);
        }
        pr_info!(
            "virtio{}: guest CID {}, seqpacket {}, rings rx {} ({} buffers of {} bytes) tx {} event {}\n",
            vdev.index(),
            guest_cid,
            seqpacket,
            rx_ring,
            d.rx_bufs.load(Ordering::Relaxed),
            rx_buf_len,
            d.vqs.lock(VQ_TX).map_or(0, |vq| vq.vring_size()),
            d.vqs.lock(VQ_EVENT).map_or(0, |vq| vq.vring_size())
        );
        Ok(VsockDev { notify, dev: d })
    }
}

#[vtable]
impl virtio::Driver for VirtioVsock {
    type Data = Bound;

    const NAME: &'static CStr = c_str!("rvsock_virtio");
    const ID_TABLE: &'static [DeviceId] = &[DeviceId {
        device: virtio::ID_VSOCK,
        vendor: virtio::DEV_ANY_ID,
    }];
    const FEATURES: &'static [u32] = &[virtio::VSOCK_F_SEQPACKET];

    fn probe(vdev: &Device) -> Result<Bound> {
        if BOUND
            .compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire)
            .is_err()
        {
            return Err(EBUSY);
        }
        // The box first: once the device runs, nothing may fail before it is kept.
        let r = KBox::pin_init(new_mutex!(None, "rvsock_virtio::bound"), GFP_KERNEL).and_then(
            |bound: Bound| {
                *bound.lock() = Some(Self::probe_bound(vdev)?);
                Ok(bound)
            },
        );
        if r.is_err() {
            BOUND.store(false, Ordering::Release);
        }
        r
    }

    fn remove(vdev: &Device, data: Bound) {
        let running = data.lock().take();
        match running.map(VsockDev::stop) {
            Some((cid, dropped)) => pr_info!(
                "virtio{}: removed (guest CID {}, {} bad rx buffers dropped)\n",
                vdev.index(),
                cid,
                dropped
            ),
            None => pr_info!("virtio{}: removed (was frozen)\n", vdev.index()),
        }
        BOUND.store(false, Ordering::Release);
    }

    /// Suspend: the connections are reset and the queues deleted; the device stays ours
    /// (`BOUND`), so no other virtio-vsock device is taken meanwhile.
    fn freeze(vdev: &Device, data: &Bound) -> Result {
        if let Some((cid, _)) = data.lock().take().map(VsockDev::stop) {
            pr_info!("virtio{}: frozen (guest CID {})\n", vdev.index(), cid);
        }
        Ok(())
    }

    /// Resume: as a probe of the same device (queues, rx buffers, CID, registration).
    fn restore(vdev: &Device, data: &Bound) -> Result {
        let mut running = data.lock();
        if running.is_none() {
            *running = Some(Self::probe_bound(vdev)?);
        }
        Ok(())
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
