// SPDX-License-Identifier: GPL-2.0

//! The vhost-vsock device as a guest driver sees it: the character device (any path, so that
//! `rvsock_vhost`'s node can be opened too), the guest's memory, the rx/tx/event rings and their
//! eventfds, and packets in and out.
//!
//! Memory layout (guest physical addresses, one anonymous region at 0):
//! rings at 0..RING_AREA, then rx buffers, then tx buffers.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rvsock_proto::hdr::{Hdr, HDR_LEN, MAX_PKT_PAYLOAD};
use vhost::vhost_kern::vhost_binding::{VHOST_VSOCK_SET_GUEST_CID, VHOST_VSOCK_SET_RUNNING};
use vhost::vhost_kern::VhostKernBackend;
use vhost::{VhostBackend, VhostUserMemoryRegionInfo, VringConfigData};
use vm_memory::{Bytes, GuestAddress, GuestMemory, GuestMemoryMmap, GuestMemoryRegion};
use vmm_sys_util::eventfd::{EventFd, EFD_NONBLOCK};
use vmm_sys_util::ioctl::ioctl_with_ref;

use crate::ring::{ring_bytes, Buf, DriverRing, RingError};

/// `VIRTIO_VSOCK_F_SEQPACKET`.
pub const F_SEQPACKET: u64 = 1 << 1;
/// `VIRTIO_F_VERSION_1`.
pub const F_VERSION_1: u64 = 1 << 32;

/// Queue indices (`VSOCK_VQ_RX`, `VSOCK_VQ_TX`, `VSOCK_VQ_EVENT`).
pub const RX: usize = 0;
/// TX queue.
pub const TX: usize = 1;
/// Event queue (kept by the VMM; the kernel device has only rx and tx).
pub const EVT: usize = 2;

/// Ring entries per queue.
pub const QSIZE: u16 = 128;
/// rx buffers posted: half the ring, since odd buffers take two descriptors (64 x 4 KiB is
/// also the default 256 KiB socket buffer).
pub const RX_BUFS: u16 = QSIZE / 2;
/// Payload room of an rx buffer (the Linux guest's `VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE`).
pub const RX_BUF_PAYLOAD: u32 = 4096;
const RX_BUF: u64 = HDR_LEN as u64 + RX_BUF_PAYLOAD as u64;
const TX_SLOT: u64 = HDR_LEN as u64 + MAX_PKT_PAYLOAD as u64;
/// tx slots: each packet is a header descriptor plus a payload descriptor.
const TX_SLOTS: u16 = QSIZE / 2;
const RING_AREA: u64 = 0x10_0000;
const RX_BASE: u64 = RING_AREA;
const TX_BASE: u64 = RX_BASE + RX_BUFS as u64 * RX_BUF;
/// Bytes of guest memory the device gets.
pub const MEM_SIZE: u64 = (TX_BASE + TX_SLOTS as u64 * TX_SLOT + 0xfff) & !0xfff;

/// Errors of device set-up and I/O.
#[derive(Debug)]
pub enum DevError {
    /// Opening the device node.
    Open(io::Error),
    /// An ioctl, named, with the kernel's errno.
    Ioctl(&'static str, io::Error),
    /// A vhost crate error (its ioctls wrap the errno).
    Vhost(&'static str, vhost::Error),
    /// Guest memory.
    Mem(String),
    /// The rings.
    Ring(RingError),
    /// The device returned something no device may.
    Device(String),
    /// A bounded wait ran out.
    Timeout(&'static str),
}

impl std::fmt::Display for DevError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            DevError::Open(e) => write!(f, "open: {e}"),
            DevError::Ioctl(n, e) => write!(f, "{n}: {e}"),
            DevError::Vhost(n, e) => write!(f, "{n}: {e}"),
            DevError::Mem(e) => write!(f, "memory: {e}"),
            DevError::Ring(e) => write!(f, "ring: {e}"),
            DevError::Device(e) => write!(f, "device: {e}"),
            DevError::Timeout(w) => write!(f, "timed out waiting for {w}"),
        }
    }
}

impl From<RingError> for DevError {
    fn from(e: RingError) -> Self {
        DevError::Ring(e)
    }
}

/// The errno of a failed vhost crate call, if it carries one.
pub fn vhost_errno(e: &vhost::Error) -> Option<i32> {
    match e {
        vhost::Error::IoctlError(e) | vhost::Error::IOError(e) => e.raw_os_error(),
        _ => None,
    }
}

/// An open vhost-vsock device node, before or after set-up.
pub struct VhostFd {
    fd: File,
    mem: Arc<GuestMemoryMmap>,
}

impl VhostKernBackend for VhostFd {
    type AS = Arc<GuestMemoryMmap>;

    fn mem(&self) -> &Self::AS {
        &self.mem
    }
}

impl AsRawFd for VhostFd {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Result of a raw ioctl: Ok or the errno.
pub type Errno = Result<(), i32>;

fn errno_of(ret: i32) -> Errno {
    if ret < 0 {
        Err(io::Error::last_os_error().raw_os_error().unwrap_or(0))
    } else {
        Ok(())
    }
}

impl VhostFd {
    /// Opens the device node and maps fresh anonymous guest memory for it.
    pub fn open(path: &Path) -> Result<VhostFd, DevError> {
        let fd = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC | libc::O_NONBLOCK)
            .open(path)
            .map_err(DevError::Open)?;
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), MEM_SIZE as usize)])
            .map_err(|e| DevError::Mem(e.to_string()))?;
        Ok(VhostFd {
            fd,
            mem: Arc::new(mem),
        })
    }

    /// `VHOST_VSOCK_SET_GUEST_CID`, raw errno.
    pub fn set_cid(&self, cid: u64) -> Errno {
        // SAFETY: the ioctl reads one u64 from a valid reference; the result is checked.
        errno_of(unsafe { ioctl_with_ref(&self.fd, VHOST_VSOCK_SET_GUEST_CID(), &cid) })
    }

    /// `VHOST_VSOCK_SET_RUNNING`, raw errno.
    pub fn set_running(&self, on: i32) -> Errno {
        // SAFETY: the ioctl reads one int from a valid reference; the result is checked.
        errno_of(unsafe { ioctl_with_ref(&self.fd, VHOST_VSOCK_SET_RUNNING(), &on) })
    }

    /// The guest memory.
    pub fn memory(&self) -> &GuestMemoryMmap {
        &self.mem
    }

    /// `VHOST_SET_MEM_TABLE` with the one region.
    pub fn set_mem_table(&self) -> Result<(), vhost::Error> {
        let mut regions = Vec::new();
        for r in self.mem.iter() {
            let host = self
                .mem
                .get_host_address(r.start_addr())
                .map_err(|_| vhost::Error::InvalidGuestMemory)?;
            regions.push(VhostUserMemoryRegionInfo {
                guest_phys_addr: r.start_addr().0,
                memory_size: r.len(),
                userspace_addr: host as u64,
                mmap_offset: 0,
                mmap_handle: -1,
            });
        }
        self.set_mem_table_raw(&regions)
    }

    fn set_mem_table_raw(&self, regions: &[VhostUserMemoryRegionInfo]) -> Result<(), vhost::Error> {
        VhostBackend::set_mem_table(self, regions)
    }
}

/// A set-up device: rings in its memory, eventfds, buffers posted.
pub struct Device {
    /// The device node and memory.
    pub vfd: VhostFd,
    rings: Vec<DriverRing<u64>>,
    calls: Vec<EventFd>,
    kicks: Vec<EventFd>,
    errs: Vec<EventFd>,
    tx_free: Vec<u16>,
    /// Features the device offered.
    pub offered: u64,
    /// Features the driver acked.
    pub acked: u64,
    /// The guest CID.
    pub cid: u64,
    /// Packets taken from used rx buffers, not yet handed out.
    pending: std::collections::VecDeque<(Hdr, Vec<u8>)>,
    /// Device misbehaviour seen (bad used lengths etc.).
    pub anomalies: Vec<String>,
    /// vq error eventfd signals seen (the device's `vq_err`).
    pub vq_errors: u64,
}

/// How to set the device up.
#[derive(Clone, Copy, Debug)]
pub struct Setup {
    /// Guest CID.
    pub cid: u64,
    /// Ack `VIRTIO_VSOCK_F_SEQPACKET` if offered.
    pub seqpacket: bool,
}

impl Device {
    /// Opens `path` and sets the device up as QEMU does: owner, features, memory table, the
    /// rings (rx, tx; the event ring stays with the driver, as QEMU keeps it), the guest CID,
    /// running; then posts every rx buffer and the event buffers.
    pub fn new(path: &Path, s: Setup) -> Result<Device, DevError> {
        let vfd = VhostFd::open(path)?;
        vfd.set_owner()
            .map_err(|e| DevError::Vhost("SET_OWNER", e))?;
        let offered = vfd
            .get_features()
            .map_err(|e| DevError::Vhost("GET_FEATURES", e))?;
        let mut acked = offered & F_VERSION_1;
        if s.seqpacket {
            acked |= offered & F_SEQPACKET;
        }
        vfd.set_features(acked)
            .map_err(|e| DevError::Vhost("SET_FEATURES", e))?;
        vfd.set_mem_table()
            .map_err(|e| DevError::Vhost("SET_MEM_TABLE", e))?;

        let mut rings = Vec::new();
        let (d, a, u) = ring_bytes(QSIZE);
        let per_ring = (d + a + u + 0xfff) & !0xfff;
        for q in 0..3usize {
            let base = q as u64 * per_ring;
            let desc = GuestAddress(base);
            let avail = GuestAddress(base + d);
            let used = GuestAddress((base + d + a + 3) & !3);
            rings.push(DriverRing::new(vfd.memory(), QSIZE, desc, avail, used)?);
        }
        let mk = || EventFd::new(EFD_NONBLOCK).map_err(|e| DevError::Ioctl("eventfd", e));
        let (mut calls, mut kicks, mut errs) = (Vec::new(), Vec::new(), Vec::new());
        for q in 0..3 {
            calls.push(mk()?);
            kicks.push(mk()?);
            errs.push(mk()?);
            if q == EVT {
                continue;
            }
            let (desc, avail, used) = rings[q].addrs();
            let cfg = VringConfigData {
                queue_max_size: QSIZE,
                queue_size: QSIZE,
                flags: 0,
                desc_table_addr: desc.0,
                used_ring_addr: used.0,
                avail_ring_addr: avail.0,
                log_addr: None,
            };
            vfd.set_vring_num(q, QSIZE)
                .map_err(|e| DevError::Vhost("SET_VRING_NUM", e))?;
            vfd.set_vring_base(q, 0)
                .map_err(|e| DevError::Vhost("SET_VRING_BASE", e))?;
            vfd.set_vring_addr(q, &cfg)
                .map_err(|e| DevError::Vhost("SET_VRING_ADDR", e))?;
            vfd.set_vring_kick(q, &kicks[q])
                .map_err(|e| DevError::Vhost("SET_VRING_KICK", e))?;
            vfd.set_vring_call(q, &calls[q])
                .map_err(|e| DevError::Vhost("SET_VRING_CALL", e))?;
            vfd.set_vring_err(q, &errs[q])
                .map_err(|e| DevError::Vhost("SET_VRING_ERR", e))?;
        }
        vfd.set_cid(s.cid)
            .map_err(|e| DevError::Ioctl("SET_GUEST_CID", io::Error::from_raw_os_error(e)))?;
        let mut dev = Device {
            vfd,
            rings,
            calls,
            kicks,
            errs,
            tx_free: (0..TX_SLOTS).collect(),
            offered,
            acked,
            cid: s.cid,
            pending: Default::default(),
            anomalies: Vec::new(),
            vq_errors: 0,
        };
        for i in 0..RX_BUFS {
            dev.post_rx(u64::from(i))?;
        }
        // Event buffers (struct virtio_vsock_event, 4 bytes each) in the rx area's spare room
        // would collide; the event ring gets its own 8 small buffers after the rings.
        for i in 0..8u64 {
            let addr = 3 * per_ring + 8 * i;
            let b = [Buf {
                addr,
                len: 4,
                write: true,
            }];
            dev.rings[EVT].add(dev.vfd.memory(), &b, i)?;
        }
        dev.vfd
            .set_running(1)
            .map_err(|e| DevError::Ioctl("SET_RUNNING", io::Error::from_raw_os_error(e)))?;
        dev.kick(RX);
        Ok(dev)
    }

    /// Whether SEQPACKET was negotiated.
    pub fn seqpacket(&self) -> bool {
        self.acked & F_SEQPACKET != 0
    }

    fn kick(&self, q: usize) {
        // A full eventfd counter only means a kick is already pending.
        let _ = self.kicks[q].write(1);
    }

    /// Posts rx buffer `i`: even buffers as one descriptor, odd ones as header + payload, the
    /// two layouts Linux guests have used.
    fn post_rx(&mut self, i: u64) -> Result<(), DevError> {
        let addr = RX_BASE + i * RX_BUF;
        let bufs: Vec<Buf> = if i & 1 == 0 {
            vec![Buf {
                addr,
                len: RX_BUF as u32,
                write: true,
            }]
        } else {
            vec![
                Buf {
                    addr,
                    len: HDR_LEN as u32,
                    write: true,
                },
                Buf {
                    addr: addr + HDR_LEN as u64,
                    len: RX_BUF_PAYLOAD,
                    write: true,
                },
            ]
        };
        self.rings[RX].add(self.vfd.memory(), &bufs, i)?;
        Ok(())
    }

    /// Reclaims used tx chains and takes used rx buffers (reposting them).
    fn reap(&mut self) -> Result<(), DevError> {
        while let Some(u) = self.rings[TX].pop_used(self.vfd.memory())? {
            self.tx_free.push(u.token as u16);
        }
        let mut reposted = false;
        while let Some(u) = self.rings[RX].pop_used(self.vfd.memory())? {
            let total: u64 = u.bufs.iter().map(|b| u64::from(b.len)).sum();
            let used = u64::from(u.len);
            if used < HDR_LEN as u64 || used > total {
                self.anomalies
                    .push(format!("rx used len {used} (buffer {total})"));
            } else {
                let mut data = vec![0u8; used as usize];
                let base = RX_BASE + u.token * RX_BUF;
                self.vfd
                    .memory()
                    .read_slice(&mut data, GuestAddress(base))
                    .map_err(|e| DevError::Mem(e.to_string()))?;
                if let Some(h) = Hdr::parse(&data) {
                    let payload = data.split_off(HDR_LEN);
                    if h.len as usize != payload.len() {
                        self.anomalies.push(format!(
                            "rx hdr.len {} but used len {} - 44 = {}",
                            h.len,
                            used,
                            payload.len()
                        ));
                    }
                    self.pending.push_back((h, payload));
                }
            }
            self.post_rx(u.token)?;
            reposted = true;
        }
        if reposted {
            self.kick(RX);
        }
        Ok(())
    }

    /// Waits until a call or error eventfd fires or `until` passes.
    fn wait(&mut self, until: Instant) {
        let left = until.saturating_duration_since(Instant::now());
        let mut fds: Vec<libc::pollfd> = self
            .calls
            .iter()
            .chain(self.errs.iter())
            .map(|e| libc::pollfd {
                fd: e.as_raw_fd(),
                events: libc::POLLIN,
                revents: 0,
            })
            .collect();
        let ms = left.as_millis().min(100) as i32;
        // SAFETY: fds is a valid array of pollfd for the duration of the call.
        unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) };
        for c in &self.calls {
            let _ = c.read();
        }
        for e in &self.errs {
            if let Ok(n) = e.read() {
                self.vq_errors += n;
            }
        }
    }

    /// The next packet from the device, waiting at most `timeout`.
    pub fn recv(&mut self, timeout: Duration) -> Result<Option<(Hdr, Vec<u8>)>, DevError> {
        let until = Instant::now() + timeout;
        loop {
            self.reap()?;
            if let Some(p) = self.pending.pop_front() {
                return Ok(Some(p));
            }
            if Instant::now() >= until {
                return Ok(None);
            }
            self.wait(until);
        }
    }

    /// Sends a packet (header, then the payload in its own descriptor), waiting at most
    /// `timeout` for a free tx slot.  Packets received meanwhile stay queued for `recv`.
    pub fn send(&mut self, h: &Hdr, payload: &[u8], timeout: Duration) -> Result<(), DevError> {
        if payload.len() > MAX_PKT_PAYLOAD as usize {
            return Err(DevError::Device(format!(
                "payload {} too large",
                payload.len()
            )));
        }
        let slot = self.tx_slot(timeout)?;
        let addr = TX_BASE + u64::from(slot) * TX_SLOT;
        let m = self.vfd.memory();
        m.write_slice(&h.encode(), GuestAddress(addr))
            .and_then(|_| m.write_slice(payload, GuestAddress(addr + HDR_LEN as u64)))
            .map_err(|e| DevError::Mem(e.to_string()))?;
        let mut bufs = vec![Buf {
            addr,
            len: HDR_LEN as u32,
            write: false,
        }];
        if !payload.is_empty() {
            bufs.push(Buf {
                addr: addr + HDR_LEN as u64,
                len: payload.len() as u32,
                write: false,
            });
        }
        self.rings[TX].add(self.vfd.memory(), &bufs, u64::from(slot))?;
        self.kick(TX);
        Ok(())
    }

    /// A free tx slot, reaping used buffers and waiting at most `timeout` for one.
    fn tx_slot(&mut self, timeout: Duration) -> Result<u16, DevError> {
        let until = Instant::now() + timeout;
        loop {
            self.reap()?;
            if let Some(s) = self.tx_free.pop() {
                return Ok(s);
            }
            if Instant::now() >= until {
                return Err(DevError::Timeout("a free tx slot"));
            }
            self.wait(until);
        }
    }

    /// Sends raw chains (hostile mode): `bufs` as given, the bytes written first.
    pub fn send_raw(
        &mut self,
        parts: &[(Vec<u8>, bool)],
        timeout: Duration,
    ) -> Result<(), DevError> {
        let slot = self.tx_slot(timeout)?;
        let mut addr = TX_BASE + u64::from(slot) * TX_SLOT;
        let mut bufs = Vec::new();
        for (bytes, write) in parts {
            // A chain may run past its slot (the too-big case): the device only reads it.
            if addr + bytes.len() as u64 > MEM_SIZE {
                break;
            }
            self.vfd
                .memory()
                .write_slice(bytes, GuestAddress(addr))
                .map_err(|e| DevError::Mem(e.to_string()))?;
            bufs.push(Buf {
                addr,
                len: bytes.len() as u32,
                write: *write,
            });
            addr += bytes.len() as u64;
        }
        if bufs.len() > self.rings[TX].free_descs() {
            self.tx_free.push(slot);
            return Err(DevError::Ring(RingError::Full));
        }
        self.rings[TX].add(self.vfd.memory(), &bufs, u64::from(slot))?;
        self.kick(TX);
        Ok(())
    }

    /// Free tx slots and free tx descriptors.
    pub fn tx_room(&self) -> (usize, usize) {
        (self.tx_free.len(), self.rings[TX].free_descs())
    }

    /// tx chains the device has not returned yet.
    pub fn tx_in_flight(&self) -> usize {
        self.rings[TX].in_flight()
    }
}
