// SPDX-License-Identifier: GPL-2.0

//! The vhost-user backend of one guest: its virtqueues, and the router it shares with the
//! backends of the sibling guests.
//!
//! Each guest's worker thread (run by `vhost-user-backend`) gathers the guest's TX packets and
//! routes them into the destination's [`DestQueue`], then writes the destination's wake eventfd;
//! the destination's worker fills its guest's RX buffers from its queue.  Only a guest's own
//! worker takes packets off its queue, so a packet put back after a partial delivery keeps its
//! place.

use std::collections::HashMap;
use std::io;
use std::os::fd::AsRawFd;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use rvsock_proto::hdr::{Hdr, HDR_LEN};
use vhost::vhost_user::message::{VhostUserProtocolFeatures, VhostUserVirtioFeatures};
use vhost_user_backend::{VhostUserBackend, VringEpollHandler, VringRwLock, VringT};
use virtio_bindings::bindings::virtio_config::{VIRTIO_F_NOTIFY_ON_EMPTY, VIRTIO_F_VERSION_1};
use virtio_bindings::bindings::virtio_ring::VIRTIO_RING_F_EVENT_IDX;
use virtio_queue::QueueOwnedT;
use vm_memory::{
    Bytes, GuestAddress, GuestAddressSpace, GuestMemoryAtomic, GuestMemoryLoadGuard,
    GuestMemoryMmap,
};
use vmm_sys_util::epoll::EventSet;
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};

use crate::host::HostEnd;
use crate::hostile::{Action, Hostile};
use crate::pkt::{DestQueue, Gather, GatherError, Packet, MAX_PKT};
use crate::{log_at, Level};

/// `VIRTIO_VSOCK_F_SEQPACKET`.
pub const VIRTIO_VSOCK_F_SEQPACKET: u32 = 1;
/// The host's CID, which nothing serves in relay mode (see `--host-uds` for the host endpoint).
pub const HOST_CID: u64 = crate::host::HOST_CID;

const NUM_QUEUES: usize = 3;
const RX_Q: u16 = 0;
const TX_Q: u16 = 1;
const EVT_Q: u16 = 2;
/// Epoll data of the wake eventfd (0..=NUM_QUEUES are the queues and the exit event).
const WAKE_EVENT: u16 = NUM_QUEUES as u16 + 1;
/// Epoll data of the host endpoint's epoll fd (`--host-uds`).
const HOST_EVENT: u16 = WAKE_EVENT + 1;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`.
const EVENT_TRANSPORT_RESET: u32 = 0;

type Mem = GuestMemoryAtomic<GuestMemoryMmap>;
type MemGuard = GuestMemoryLoadGuard<GuestMemoryMmap>;

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Per-guest counters.
#[derive(Debug, Default)]
pub struct Stats {
    /// Packets taken from the guest's TX queue.
    pub tx_pkts: AtomicU64,
    /// Payload bytes taken from TX.
    pub tx_bytes: AtomicU64,
    /// Packets (whole, not pieces) delivered into the guest's RX buffers.
    pub rx_pkts: AtomicU64,
    /// Payload bytes delivered.
    pub rx_bytes: AtomicU64,
    /// TX chains rejected or packets dropped (spoofed source, full destination, ...).
    pub dropped: AtomicU64,
    /// RSTs the device answered for unknown destinations.
    pub rsts: AtomicU64,
    /// Hostile injections.
    pub hostile: AtomicU64,
}

fn inc(c: &AtomicU64, n: u64) {
    c.fetch_add(n, Ordering::Relaxed);
}

/// One served guest: its CID, the packets waiting for its RX buffers and how to wake its worker.
#[derive(Debug)]
pub struct Slot {
    /// The guest's CID.
    pub cid: u64,
    /// Packets for this guest.
    pub queue: Mutex<DestQueue>,
    /// Written after queueing a packet; the guest's worker polls it.
    pub wake: EventFd,
    /// Hostile injections into this guest, if it is the target.
    pub hostile: Mutex<Option<Hostile>>,
    /// Counters.
    pub stats: Stats,
    /// `--host-uds PREFIX`: connections to CID 2 port P go to the Unix socket `PREFIX_P`.
    pub host_uds: Option<std::path::PathBuf>,
}

impl Slot {
    /// A guest with an empty queue bounded to `limit` bytes.
    pub fn new(cid: u64, limit: usize, hostile: Option<Hostile>) -> io::Result<Slot> {
        Ok(Slot {
            cid,
            queue: Mutex::new(DestQueue::new(limit)),
            wake: EventFd::new(EFD_NONBLOCK)?,
            hostile: Mutex::new(hostile),
            stats: Stats::default(),
            host_uds: None,
        })
    }

    /// The same guest with the host endpoint bridging to `PREFIX_<port>`.
    pub fn with_host(mut self, prefix: std::path::PathBuf) -> Slot {
        self.host_uds = Some(prefix);
        self
    }

    /// Bytes the queue can still take.
    fn room(&self) -> usize {
        let q = lock(&self.queue);
        q.limit().saturating_sub(q.bytes())
    }

    /// Queues a packet for this guest and wakes its worker; false if the queue was full.
    fn enqueue(&self, p: Packet) -> bool {
        let ok = lock(&self.queue).push(p);
        if ok {
            // A full eventfd counter only means the worker is already due to run.
            let _ = self.wake.write(1);
        }
        ok
    }
}

/// All served guests, by CID.
#[derive(Debug, Default)]
pub struct Router {
    /// The guests.
    pub slots: HashMap<u64, Arc<Slot>>,
}

/// What to do with a packet a guest sent.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// Queue it for the guest with this CID.
    Deliver(u64),
    /// Answer the sender with this RST.
    Reply(Hdr),
    /// Drop it silently (an RST to nobody).
    Swallow,
    /// Drop it and log why.
    Drop(&'static str),
}

/// Routing rule: the source must be the sender's CID; a served destination gets the packet; any
/// other (the host included) is answered with an RST unless the packet is one.
pub fn decide(h: &Hdr, own_cid: u64, served: impl Fn(u64) -> bool) -> Verdict {
    if h.src_cid != own_cid {
        return Verdict::Drop("src_cid is not the sender's CID");
    }
    if served(h.dst_cid) {
        return Verdict::Deliver(h.dst_cid);
    }
    match h.rst_reply() {
        Some(r) => Verdict::Reply(r),
        None => Verdict::Swallow,
    }
}

/// The vhost-user backend of one guest.
pub struct VuDev {
    slot: Arc<Slot>,
    router: Arc<Router>,
    queue_size: usize,
    config: [u8; 8],
    mem: Mutex<Option<Mem>>,
    exit: EventFd,
    /// The host endpoint, with `--host-uds` (one per frontend session: its connections end
    /// with it).
    host: Option<Mutex<HostEnd>>,
}

impl VuDev {
    /// The backend of the guest `slot`, routing through `router`.
    pub fn new(slot: Arc<Slot>, router: Arc<Router>, queue_size: usize) -> io::Result<VuDev> {
        let host = match &slot.host_uds {
            Some(p) => Some(Mutex::new(HostEnd::new(p.clone(), slot.cid)?)),
            None => None,
        };
        Ok(VuDev {
            config: slot.cid.to_le_bytes(),
            host,
            slot,
            router,
            queue_size,
            mem: Mutex::new(None),
            exit: EventFd::new(EFD_NONBLOCK)?,
        })
    }

    /// Registers the wake eventfd (and the host endpoint's epoll) with the worker's epoll.
    pub fn register(&self, h: &VringEpollHandler<Arc<VuDev>>) -> io::Result<()> {
        h.register_listener(
            self.slot.wake.as_raw_fd(),
            EventSet::IN,
            u64::from(WAKE_EVENT),
        )?;
        if let Some(host) = &self.host {
            h.register_listener(lock(host).fd(), EventSet::IN, u64::from(HOST_EVENT))?;
        }
        Ok(())
    }

    /// Queues the host endpoint's packets for the guest.
    fn to_guest(&self, out: Vec<Packet>) {
        for p in out {
            let h = p.hdr;
            log_at!(
                Level::Debug,
                "host: to guest: op {} flags {} {}->{} len {} fwd_cnt {}",
                h.op,
                h.flags,
                h.src_port,
                h.dst_port,
                h.len,
                h.fwd_cnt
            );
            if !self.slot.enqueue(p) {
                inc(&self.slot.stats.dropped, 1);
                log_at!(
                    Level::Warn,
                    "cid {}: queue full, dropped host packet op {} {}->{}",
                    self.slot.cid,
                    h.op,
                    h.src_port,
                    h.dst_port
                );
            }
        }
    }

    fn memory(&self) -> Option<MemGuard> {
        lock(&self.mem).as_ref().map(|m| m.memory())
    }

    /// Gathers one TX chain.
    fn gather_chain(
        mem: &MemGuard,
        chain: virtio_queue::DescriptorChain<MemGuard>,
    ) -> Result<Packet, GatherError> {
        let mut g = Gather::new();
        let mut scratch = Vec::new();
        for d in chain {
            if g.complete() {
                break;
            }
            if d.is_write_only() {
                return Err(GatherError::BadDescriptor);
            }
            let n = (d.len() as usize).min(g.wanted());
            scratch.resize(n, 0);
            mem.read_slice(&mut scratch, d.addr())
                .map_err(|_| GatherError::BadDescriptor)?;
            g.push(&scratch)?;
        }
        g.finish()
    }

    fn route(&self, p: Packet) {
        let me = &self.slot;
        if let Some(host) = &self.host {
            if p.hdr.src_cid == me.cid && p.hdr.dst_cid == HOST_CID {
                log_at!(
                    Level::Debug,
                    "host: from guest: op {} flags {} {}->{} len {} buf_alloc {} fwd_cnt {}",
                    p.hdr.op,
                    p.hdr.flags,
                    p.hdr.src_port,
                    p.hdr.dst_port,
                    p.hdr.len,
                    p.hdr.buf_alloc,
                    p.hdr.fwd_cnt
                );
                let mut out = Vec::new();
                lock(host).on_guest_packet(p, me.room(), &mut out);
                self.to_guest(out);
                return;
            }
        }
        match decide(&p.hdr, me.cid, |c| self.router.slots.contains_key(&c)) {
            Verdict::Deliver(cid) => {
                let Some(dst) = self.router.slots.get(&cid) else {
                    return;
                };
                let h = p.hdr;
                if !dst.enqueue(p) {
                    inc(&me.stats.dropped, 1);
                    log_at!(
                        Level::Warn,
                        "cid {}: queue of cid {cid} full, dropped op {} {}->{} len {}",
                        me.cid,
                        h.op,
                        h.src_port,
                        h.dst_port,
                        h.len
                    );
                }
            }
            Verdict::Reply(r) => {
                inc(&me.stats.rsts, 1);
                log_at!(
                    Level::Debug,
                    "cid {}: no cid {}{}, RST for port {}",
                    me.cid,
                    p.hdr.dst_cid,
                    if p.hdr.dst_cid == HOST_CID {
                        " (host)"
                    } else {
                        ""
                    },
                    p.hdr.dst_port
                );
                me.enqueue(Packet::new(r, Vec::new()));
            }
            Verdict::Swallow => {}
            Verdict::Drop(why) => {
                inc(&me.stats.dropped, 1);
                log_at!(
                    Level::Warn,
                    "cid {}: dropped TX packet ({why}): src {}:{} dst {}:{} op {}",
                    me.cid,
                    p.hdr.src_cid,
                    p.hdr.src_port,
                    p.hdr.dst_cid,
                    p.hdr.dst_port,
                    p.hdr.op
                );
            }
        }
    }

    /// Drains the guest's TX queue.
    fn process_tx(&self, vring: &VringRwLock, mem: &MemGuard) {
        let mut used = false;
        loop {
            let _ = vring.disable_notification();
            loop {
                let chain = match vring.get_mut().get_queue_mut().iter(mem.clone()) {
                    Ok(mut it) => it.next(),
                    Err(e) => {
                        log_at!(Level::Debug, "cid {}: tx queue: {e}", self.slot.cid);
                        None
                    }
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let r = Self::gather_chain(mem, chain);
                if let Err(e) = vring.add_used(head, 0) {
                    log_at!(Level::Warn, "cid {}: tx add_used: {e}", self.slot.cid);
                }
                used = true;
                match r {
                    Ok(p) => {
                        inc(&self.slot.stats.tx_pkts, 1);
                        inc(&self.slot.stats.tx_bytes, p.payload.len() as u64);
                        self.route(p);
                    }
                    Err(e) => {
                        inc(&self.slot.stats.dropped, 1);
                        log_at!(Level::Warn, "cid {}: bad TX chain: {e}", self.slot.cid);
                    }
                }
            }
            if !vring.enable_notification().unwrap_or(false) {
                break;
            }
        }
        if used && vring.needs_notification().unwrap_or(true) {
            let _ = vring.signal_used_queue();
        }
    }

    /// Writes `bytes` over the writable descriptors `descs`; the bytes written.
    fn scatter(mem: &MemGuard, descs: &[(GuestAddress, usize)], bytes: &[u8]) -> usize {
        let mut done = 0;
        for &(addr, len) in descs {
            if done == bytes.len() {
                break;
            }
            let n = len.min(bytes.len() - done);
            if mem.write_slice(&bytes[done..done + n], addr).is_err() {
                break;
            }
            done += n;
        }
        done
    }

    /// Posts a TRANSPORT_RESET event if the guest gave an event buffer.
    fn reset_event(&self, vring: &VringRwLock, mem: &MemGuard) -> bool {
        let chain = match vring.get_mut().get_queue_mut().iter(mem.clone()) {
            Ok(mut it) => it.next(),
            Err(e) => {
                // QEMU never hands the event queue over: it belongs to QEMU itself.
                log_at!(
                    Level::Info,
                    "hostile: reset-event: cid {}: event queue not set up by the frontend ({e})",
                    self.slot.cid
                );
                return false;
            }
        };
        let Some(chain) = chain else {
            log_at!(
                Level::Info,
                "hostile: reset-event: cid {}: no event buffer",
                self.slot.cid
            );
            return false;
        };
        let head = chain.head_index();
        let descs: Vec<_> = chain
            .filter(|d| d.is_write_only())
            .map(|d| (d.addr(), d.len() as usize))
            .collect();
        let n = Self::scatter(mem, &descs, &EVENT_TRANSPORT_RESET.to_le_bytes());
        let _ = vring.add_used(head, n as u32);
        if vring.needs_notification().unwrap_or(true) {
            let _ = vring.signal_used_queue();
        }
        log_at!(
            Level::Info,
            "hostile: reset-event: TRANSPORT_RESET to cid {} ({n} bytes)",
            self.slot.cid
        );
        true
    }

    /// Fills the guest's RX buffers from its queue (and hostile injections).
    fn process_rx(&self, rx: &VringRwLock, evt: &VringRwLock, mem: &MemGuard) {
        let me = &self.slot;
        let mut hostile = lock(&me.hostile);
        let mut used = false;
        loop {
            let _ = rx.disable_notification();
            loop {
                let idle = lock(&me.queue).is_empty();
                let inject = hostile.as_ref().is_some_and(|h| h.due(idle));
                if inject {
                    if let Some(h) = hostile.as_mut() {
                        if h.spec.mode == crate::hostile::Mode::ResetEvent {
                            let _ = h.make(0);
                            inc(&me.stats.hostile, 1);
                            self.reset_event(evt, mem);
                            continue;
                        }
                    }
                } else if idle {
                    break;
                }
                let chain = match rx.get_mut().get_queue_mut().iter(mem.clone()) {
                    Ok(mut it) => it.next(),
                    Err(_) => None,
                };
                let Some(chain) = chain else { break };
                let head = chain.head_index();
                let mut readable = false;
                let mut descs = Vec::new();
                let mut cap = 0usize;
                for d in chain {
                    if d.is_write_only() {
                        let l = (d.len() as usize).min(MAX_PKT - cap);
                        descs.push((d.addr(), l));
                        cap += l;
                    } else {
                        readable = true;
                    }
                }
                let mut n = 0;
                if readable {
                    log_at!(
                        Level::Warn,
                        "cid {}: RX chain with a readable descriptor",
                        me.cid
                    );
                } else if inject {
                    if let Some(Action::Rx { bytes, used, what }) =
                        hostile.as_mut().and_then(|h| h.make(cap))
                    {
                        Self::scatter(mem, &descs, &bytes);
                        n = used;
                        inc(&me.stats.hostile, 1);
                        log_at!(
                            Level::Info,
                            "hostile: cid {}: {what} (used {used}, {} left)",
                            me.cid,
                            hostile.as_ref().map_or(0, |h| h.left())
                        );
                    }
                } else {
                    n = self.deliver_one(mem, &descs, cap, hostile.as_mut());
                }
                if let Err(e) = rx.add_used(head, n) {
                    log_at!(Level::Warn, "cid {}: rx add_used: {e}", me.cid);
                }
                used = true;
            }
            let more = rx.enable_notification().unwrap_or(false);
            let pending =
                !lock(&me.queue).is_empty() || hostile.as_ref().is_some_and(|h| h.due(true));
            if !(more && pending) {
                break;
            }
        }
        if used && rx.needs_notification().unwrap_or(true) {
            let _ = rx.signal_used_queue();
        }
    }

    /// Delivers the next piece of the head packet into one buffer; the used length.
    fn deliver_one(
        &self,
        mem: &MemGuard,
        descs: &[(GuestAddress, usize)],
        cap: usize,
        hostile: Option<&mut Hostile>,
    ) -> u32 {
        let me = &self.slot;
        let Some(mut p) = lock(&me.queue).pop() else {
            return 0;
        };
        let Some((h, r)) = p.next_piece(cap) else {
            inc(&me.stats.dropped, 1);
            log_at!(
                Level::Warn,
                "cid {}: RX buffer of {cap} bytes, packet dropped",
                me.cid
            );
            return 0;
        };
        let n = r.len();
        let mut bytes = Vec::with_capacity(HDR_LEN + n);
        bytes.extend_from_slice(&h.encode());
        bytes.extend_from_slice(&p.payload[r]);
        let written = Self::scatter(mem, descs, &bytes);
        if p.advance(n) {
            inc(&me.stats.rx_pkts, 1);
            inc(&me.stats.rx_bytes, p.payload.len() as u64);
            if let Some(h) = hostile {
                h.on_relayed();
            }
        } else {
            lock(&me.queue).unpop(p);
        }
        written as u32
    }
}

impl VhostUserBackend for VuDev {
    type Bitmap = ();
    type Vring = VringRwLock;

    fn num_queues(&self) -> usize {
        NUM_QUEUES
    }

    fn max_queue_size(&self) -> usize {
        self.queue_size
    }

    fn features(&self) -> u64 {
        (1 << VIRTIO_F_VERSION_1)
            | (1 << VIRTIO_F_NOTIFY_ON_EMPTY)
            | (1 << VIRTIO_RING_F_EVENT_IDX)
            | (1 << VIRTIO_VSOCK_F_SEQPACKET)
            | VhostUserVirtioFeatures::PROTOCOL_FEATURES.bits()
    }

    fn protocol_features(&self) -> VhostUserProtocolFeatures {
        VhostUserProtocolFeatures::MQ | VhostUserProtocolFeatures::CONFIG
    }

    fn set_event_idx(&self, _enabled: bool) {
        // The vrings track it; needs_notification() and enable_notification() honour it.
    }

    fn update_memory(&self, mem: Mem) -> io::Result<()> {
        *lock(&self.mem) = Some(mem);
        Ok(())
    }

    fn get_config(&self, offset: u32, size: u32) -> Vec<u8> {
        let (o, s) = (offset as usize, size as usize);
        match o.checked_add(s) {
            Some(end) if end <= self.config.len() => self.config[o..end].to_vec(),
            _ => Vec::new(),
        }
    }

    fn queues_per_thread(&self) -> Vec<u64> {
        vec![(1 << NUM_QUEUES) - 1]
    }

    fn exit_event(&self, _thread_index: usize) -> Option<EventFd> {
        self.exit.try_clone().ok()
    }

    fn handle_event(
        &self,
        device_event: u16,
        _evset: EventSet,
        vrings: &[VringRwLock],
        _thread_id: usize,
    ) -> io::Result<()> {
        // Never return an error: it would stop the worker, and with it the device.
        match device_event {
            RX_Q | EVT_Q => {}
            TX_Q => {}
            WAKE_EVENT => {
                let _ = self.slot.wake.read();
            }
            HOST_EVENT if self.host.is_some() => {}
            e => {
                log_at!(Level::Warn, "cid {}: unknown event {e}", self.slot.cid);
                return Ok(());
            }
        }
        let (Some(rx), Some(tx), Some(evt)) = (vrings.first(), vrings.get(1), vrings.get(2)) else {
            return Ok(());
        };
        let Some(mem) = self.memory() else {
            return Ok(());
        };
        if device_event == TX_Q {
            self.process_tx(tx, &mem);
        }
        if let Some(host) = &self.host {
            if device_event == HOST_EVENT {
                let mut out = Vec::new();
                lock(host).poll(self.slot.room(), &mut out);
                self.to_guest(out);
            }
        }
        self.process_rx(rx, evt, &mem);
        if let Some(host) = &self.host {
            let mut h = lock(host);
            if h.throttled() {
                h.refresh(self.slot.room());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rvsock_proto::hdr::{Op, TYPE_SEQPACKET};
    use vm_memory::Bytes;

    fn h(src: u64, dst: u64, op: Op) -> Hdr {
        Hdr {
            src_cid: src,
            dst_cid: dst,
            src_port: 5,
            dst_port: 1234,
            type_: TYPE_SEQPACKET,
            op: op as u16,
            ..Hdr::default()
        }
    }

    #[test]
    fn routing() {
        let served = |c| c == 3 || c == 4;
        assert_eq!(decide(&h(3, 4, Op::Rw), 3, served), Verdict::Deliver(4));
        assert!(matches!(
            decide(&h(4, 4, Op::Rw), 3, served),
            Verdict::Drop(_)
        ));
        assert_eq!(decide(&h(3, 9, Op::Rst), 3, served), Verdict::Swallow);
        let Verdict::Reply(r) = decide(&h(3, HOST_CID, Op::Request), 3, served) else {
            panic!()
        };
        assert_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (2, 3, 1234, 5)
        );
        assert_eq!((r.op, r.type_), (Op::Rst as u16, TYPE_SEQPACKET));
    }

    /// A guest: memory and three split virtqueues laid out by hand, as a driver would.
    struct Guest {
        mem: Mem,
        vrings: Vec<VringRwLock>,
        next_desc: [u16; 3],
        data: u64,
    }

    const QSIZE: u16 = 16;

    impl Guest {
        fn new() -> Guest {
            let m = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 1 << 20)]).unwrap();
            let mem = GuestMemoryAtomic::new(m);
            let mut vrings = Vec::new();
            for q in 0..3u64 {
                let v = VringRwLock::new(mem.clone(), QSIZE).unwrap();
                let base = q * 0x1000;
                v.set_queue_info(base, base + 0x200, base + 0x400).unwrap();
                v.set_queue_size(QSIZE);
                // The event queue stays unset, as QEMU leaves it.
                v.set_queue_ready(q != 2);
                vrings.push(v);
            }
            Guest {
                mem,
                vrings,
                next_desc: [0; 3],
                data: 0x10000,
            }
        }

        fn m(&self) -> MemGuard {
            self.mem.memory()
        }

        /// Posts a chain of buffers (len, device-writable) holding `fill` bytes in order.
        fn post(&mut self, q: usize, bufs: &[(usize, bool)], fill: &[u8]) -> Vec<u64> {
            let m = self.m();
            let base = q as u64 * 0x1000;
            let head = self.next_desc[q];
            let mut addrs = Vec::new();
            let mut off = 0;
            for (i, &(len, write)) in bufs.iter().enumerate() {
                let idx = self.next_desc[q];
                self.next_desc[q] += 1;
                let addr = self.data;
                self.data += len as u64 + 64;
                let n = len.min(fill.len().saturating_sub(off));
                m.write_slice(&fill[off..off + n], GuestAddress(addr))
                    .unwrap();
                off += n;
                let last = i + 1 == bufs.len();
                let flags = u16::from(!last) | if write { 2 } else { 0 };
                let d = base + u64::from(idx) * 16;
                m.write_obj(addr, GuestAddress(d)).unwrap();
                m.write_obj(len as u32, GuestAddress(d + 8)).unwrap();
                m.write_obj(flags, GuestAddress(d + 12)).unwrap();
                m.write_obj(idx + 1, GuestAddress(d + 14)).unwrap();
                addrs.push(addr);
            }
            let avail = base + 0x200;
            let ai: u16 = m.read_obj(GuestAddress(avail + 2)).unwrap();
            let slot = avail + 4 + u64::from(ai % QSIZE) * 2;
            m.write_obj(head, GuestAddress(slot)).unwrap();
            m.write_obj(ai + 1, GuestAddress(avail + 2)).unwrap();
            addrs
        }

        /// The used ring of queue `q`: (head, len) pairs.
        fn used(&self, q: usize) -> Vec<(u32, u32)> {
            let m = self.m();
            let used = q as u64 * 0x1000 + 0x400;
            let n: u16 = m.read_obj(GuestAddress(used + 2)).unwrap();
            (0..u64::from(n))
                .map(|i| {
                    let e = used + 4 + i * 8;
                    (
                        m.read_obj(GuestAddress(e)).unwrap(),
                        m.read_obj(GuestAddress(e + 4)).unwrap(),
                    )
                })
                .collect()
        }

        fn read(&self, addr: u64, len: usize) -> Vec<u8> {
            let mut v = vec![0u8; len];
            self.m().read_slice(&mut v, GuestAddress(addr)).unwrap();
            v
        }
    }

    fn pair(hostile: Option<Hostile>) -> (Arc<Router>, VuDev, VuDev) {
        let mut r = Router::default();
        r.slots
            .insert(3, Arc::new(Slot::new(3, 1 << 20, None).unwrap()));
        r.slots
            .insert(4, Arc::new(Slot::new(4, 1 << 20, hostile).unwrap()));
        let r = Arc::new(r);
        let a = VuDev::new(r.slots[&3].clone(), r.clone(), 256).unwrap();
        let b = VuDev::new(r.slots[&4].clone(), r.clone(), 256).unwrap();
        (r, a, b)
    }

    #[test]
    fn relay_through_the_virtqueues() {
        use rvsock_proto::hdr::{SEQ_EOM, SEQ_EOR};
        let (_r, a, b) = pair(None);
        let (mut ga, mut gb) = (Guest::new(), Guest::new());
        a.update_memory(ga.mem.clone()).unwrap();
        b.update_memory(gb.mem.clone()).unwrap();
        // B posts three 4 KiB RX buffers.
        let rx: Vec<u64> = (0..3)
            .flat_map(|_| gb.post(0, &[(4096, true)], &[]))
            .collect();
        // A sends a 10000-byte SEQPACKET message: header split 10 + 34, payload in 3 pieces.
        let payload: Vec<u8> = (0..10000u32).map(|i| (i % 251) as u8).collect();
        let mut hd = h(3, 4, Op::Rw);
        hd.len = 10000;
        hd.flags = SEQ_EOM | SEQ_EOR;
        let mut w = hd.encode().to_vec();
        w.extend_from_slice(&payload);
        ga.post(
            1,
            &[
                (10, false),
                (34, false),
                (3000, false),
                (5000, false),
                (2000, false),
            ],
            &w,
        );
        // An RST-worthy packet to nobody, and a spoofed one.
        ga.post(1, &[(HDR_LEN, false)], &h(3, 9, Op::Request).encode());
        ga.post(1, &[(HDR_LEN, false)], &h(5, 4, Op::Request).encode());
        // A's RX buffer for the RST.
        let arx = ga.post(0, &[(4096, true)], &[]);

        a.handle_event(TX_Q, EventSet::IN, &ga.vrings, 0).unwrap();
        assert_eq!(ga.used(1).len(), 3);
        assert_eq!(a.slot.stats.dropped.load(Ordering::Relaxed), 1);
        let used = ga.used(0);
        assert_eq!(used, vec![(0, HDR_LEN as u32)]);
        let rst = Hdr::parse(&ga.read(arx[0], HDR_LEN)).unwrap();
        assert_eq!((rst.op, rst.src_cid, rst.dst_cid), (Op::Rst as u16, 9, 3));

        // B's worker wakes up and fills its buffers: 4052 + 4052 + 1896.
        assert_eq!(b.slot.wake.read().unwrap(), 1);
        b.handle_event(WAKE_EVENT, EventSet::IN, &gb.vrings, 0)
            .unwrap();
        let used = gb.used(0);
        assert_eq!(used.len(), 3);
        let mut got = Vec::new();
        for (i, &(id, len)) in used.iter().enumerate() {
            assert_eq!(id, i as u32);
            let buf = gb.read(rx[i], len as usize);
            let ph = Hdr::parse(&buf).unwrap();
            assert_eq!(ph.len as usize, len as usize - HDR_LEN);
            assert_eq!(ph.flags != 0, i == 2, "EOM/EOR only on the last piece");
            got.extend_from_slice(&buf[HDR_LEN..]);
        }
        assert_eq!(got, payload);
        assert!(lock(&b.slot.queue).is_empty());
    }

    #[test]
    fn queued_until_buffers_come_and_hostile_mixed_in() {
        let spec = crate::hostile::Spec::parse("truncate,count=2,every=1").unwrap();
        let (_r, a, b) = pair(Some(Hostile::new(spec, 4, vec![3])));
        let (mut ga, mut gb) = (Guest::new(), Guest::new());
        a.update_memory(ga.mem.clone()).unwrap();
        b.update_memory(gb.mem.clone()).unwrap();
        for port in 0..3 {
            let mut hd = h(3, 4, Op::Rw);
            hd.src_port = port;
            hd.len = 1;
            let mut w = hd.encode().to_vec();
            w.push(port as u8);
            ga.post(1, &[(w.len(), false)], &w);
        }
        a.handle_event(TX_Q, EventSet::IN, &ga.vrings, 0).unwrap();
        // No RX buffers yet: nothing delivered, all queued.
        b.handle_event(WAKE_EVENT, EventSet::IN, &gb.vrings, 0)
            .unwrap();
        assert!(gb.used(0).is_empty());
        assert_eq!(lock(&b.slot.queue).len(), 3);
        // The guest posts buffers and kicks: relayed, hostile, relayed, hostile, relayed.
        let rx: Vec<u64> = (0..6)
            .flat_map(|_| gb.post(0, &[(4096, true)], &[]))
            .collect();
        b.handle_event(RX_Q, EventSet::IN, &gb.vrings, 0).unwrap();
        let used = gb.used(0);
        assert_eq!(used.len(), 5);
        let lens: Vec<bool> = used.iter().map(|u| u.1 as usize == HDR_LEN + 1).collect();
        assert_eq!(lens, vec![true, false, true, false, true]);
        let ports: Vec<u32> = [0, 2, 4]
            .iter()
            .map(|&i| Hdr::parse(&gb.read(rx[i], HDR_LEN)).unwrap().src_port)
            .collect();
        assert_eq!(ports, vec![0, 1, 2]);
        assert_eq!(b.slot.stats.hostile.load(Ordering::Relaxed), 2);
    }

    #[test]
    fn malformed_tx_chains_are_consumed_without_panic() {
        let (_r, a, b) = pair(None);
        let mut ga = Guest::new();
        a.update_memory(ga.mem.clone()).unwrap();
        let good = {
            let mut hd = h(3, 4, Op::Rw);
            hd.len = 8;
            let mut w = hd.encode().to_vec();
            w.extend_from_slice(&[7u8; 8]);
            w
        };
        let m = ga.m();
        // 0: address outside guest memory.
        ga.post(1, &[(HDR_LEN, false), (8, false)], &good);
        m.write_obj(0xffff_0000_0000u64, GuestAddress(0x1000 + 16))
            .unwrap();
        // 1: a descriptor loop (desc 3 chains to itself) under a header wanting 60000 bytes.
        let mut long = h(3, 4, Op::Rw);
        long.len = 60000;
        ga.post(1, &[(HDR_LEN, false), (4, false)], &long.encode());
        m.write_obj(1u16, GuestAddress(0x1000 + 3 * 16 + 12))
            .unwrap();
        m.write_obj(3u16, GuestAddress(0x1000 + 3 * 16 + 14))
            .unwrap();
        // 2: a write-only descriptor in a TX chain.
        ga.post(1, &[(HDR_LEN, false), (8, true)], &good);
        // 3: hdr.len far beyond 64 KiB.
        let mut big = h(3, 4, Op::Rw);
        big.len = u32::MAX;
        ga.post(1, &[(HDR_LEN, false)], &big.encode());
        // 4: length 0 descriptors only.
        ga.post(1, &[(0, false), (0, false)], &[]);
        // 5: a good one, still relayed after all that.
        ga.post(1, &[(20, false), (32, false)], &good);
        a.handle_event(TX_Q, EventSet::IN, &ga.vrings, 0).unwrap();
        assert_eq!(ga.used(1).len(), 6);
        assert_eq!(a.slot.stats.dropped.load(Ordering::Relaxed), 5);
        let q = lock(&b.slot.queue);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn host_endpoint_through_the_virtqueues() {
        use std::io::{Read, Write};
        let dir = std::env::temp_dir().join(format!("vudev-dev-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("h.sock");
        let l = std::os::unix::net::UnixListener::bind(dir.join("h.sock_1234")).unwrap();
        let mut r = Router::default();
        let slot = Slot::new(3, 1 << 20, None).unwrap().with_host(prefix);
        r.slots.insert(3, Arc::new(slot));
        let r = Arc::new(r);
        let a = VuDev::new(r.slots[&3].clone(), r.clone(), 256).unwrap();
        let mut ga = Guest::new();
        a.update_memory(ga.mem.clone()).unwrap();
        let rx: Vec<u64> = (0..4)
            .flat_map(|_| ga.post(0, &[(4096, true)], &[]))
            .collect();
        let mut req = h(3, HOST_CID, Op::Request);
        req.type_ = rvsock_proto::hdr::TYPE_STREAM;
        req.buf_alloc = 1 << 18;
        ga.post(1, &[(HDR_LEN, false)], &req.encode());
        let mut rw = req;
        rw.op = Op::Rw as u16;
        rw.len = 5;
        let mut w = rw.encode().to_vec();
        w.extend_from_slice(b"hello");
        ga.post(1, &[(20, false), (29, false)], &w);
        a.handle_event(TX_Q, EventSet::IN, &ga.vrings, 0).unwrap();
        let resp = Hdr::parse(&ga.read(rx[0], HDR_LEN)).unwrap();
        assert_eq!(resp.op, Op::Response as u16);
        assert_eq!((resp.src_cid, resp.dst_cid, resp.src_port), (2, 3, 1234));
        let (mut s, _) = l.accept().unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"hello");
        s.write_all(b"world!").unwrap();
        // The host endpoint's epoll fires: the reply lands in the next RX buffer.
        let t = std::time::Instant::now();
        while ga.used(0).len() < 2 {
            assert!(t.elapsed() < std::time::Duration::from_secs(5));
            a.handle_event(HOST_EVENT, EventSet::IN, &ga.vrings, 0)
                .unwrap();
        }
        let buf = ga.read(rx[1], HDR_LEN + 6);
        let d = Hdr::parse(&buf).unwrap();
        assert_eq!((d.op, d.len), (Op::Rw as u16, 6));
        assert_eq!(&buf[HDR_LEN..], b"world!");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn config_space() {
        let slot = Arc::new(Slot::new(0x1_0000_0003, 1 << 20, None).unwrap());
        let d = VuDev::new(slot, Arc::new(Router::default()), 256).unwrap();
        assert_eq!(d.get_config(0, 8), 0x1_0000_0003u64.to_le_bytes().to_vec());
        assert_eq!(d.get_config(4, 4), vec![1, 0, 0, 0]);
        assert!(d.get_config(4, 8).is_empty());
        assert!(d.get_config(u32::MAX, 2).is_empty());
        assert_ne!(d.features() & (1 << VIRTIO_VSOCK_F_SEQPACKET), 0);
    }
}
