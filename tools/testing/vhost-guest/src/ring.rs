// SPDX-License-Identifier: GPL-2.0

//! The driver side of a split virtqueue in guest memory: what a guest's virtio driver does with
//! the descriptor table, the available ring and the used ring.
//!
//! Nothing the device writes (used ids, lengths, the used index) is trusted: a bad value is
//! reported as a [`RingError`], never a panic.

use std::sync::atomic::{fence, Ordering};

use virtio_bindings::bindings::virtio_ring::{VRING_DESC_F_NEXT, VRING_DESC_F_WRITE};
use virtio_queue::desc::split::Descriptor;
use vm_memory::{Address, Bytes, GuestAddress, GuestMemory};

/// One buffer of a chain: guest address, length, whether the device writes it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Buf {
    /// Guest physical address.
    pub addr: u64,
    /// Length in bytes.
    pub len: u32,
    /// Device-writable (`VRING_DESC_F_WRITE`).
    pub write: bool,
}

/// A chain the device returned.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Used<T> {
    /// The caller's token for the chain.
    pub token: T,
    /// The buffers of the chain, as posted.
    pub bufs: Vec<Buf>,
    /// The length the device wrote (its `used.len`).
    pub len: u32,
}

/// What the device did wrong, or what the driver could not do.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RingError {
    /// Not enough free descriptors for the chain.
    Full,
    /// An empty chain was asked for.
    Empty,
    /// Guest memory access failed (addresses outside the memory).
    Mem(String),
    /// The device returned an id that is not the head of a chain in flight.
    BadUsedId(u32),
    /// The device moved the used index by more than the ring size.
    UsedIdxJump(u16, u16),
}

impl std::fmt::Display for RingError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RingError::Full => write!(f, "ring full"),
            RingError::Empty => write!(f, "empty chain"),
            RingError::Mem(e) => write!(f, "guest memory: {e}"),
            RingError::BadUsedId(id) => write!(f, "device returned used id {id} not in flight"),
            RingError::UsedIdxJump(from, to) => {
                write!(
                    f,
                    "device moved used.idx from {from} to {to}, more than the ring size"
                )
            }
        }
    }
}

/// Sizes of the three parts of a split ring of `n` entries (virtio 1.x, 2.6).
pub fn ring_bytes(n: u16) -> (u64, u64, u64) {
    let n = u64::from(n);
    (16 * n, 6 + 2 * n, 6 + 8 * n)
}

/// A chain in flight: its descriptor indices, buffers and token.
type Chain<T> = (Vec<u16>, Vec<Buf>, T);

/// A split ring driven from the driver side.
pub struct DriverRing<T> {
    size: u16,
    desc: GuestAddress,
    avail: GuestAddress,
    used: GuestAddress,
    free: Vec<u16>,
    /// Per head: the chain's descriptor indices, buffers and token.
    inflight: Vec<Option<Chain<T>>>,
    avail_idx: u16,
    last_used: u16,
}

impl<T> DriverRing<T> {
    /// A ring of `size` entries (a power of two) at the given addresses; zeroes its indices.
    pub fn new<M: GuestMemory>(
        mem: &M,
        size: u16,
        desc: GuestAddress,
        avail: GuestAddress,
        used: GuestAddress,
    ) -> Result<Self, RingError> {
        let (d, a, u) = ring_bytes(size);
        for (addr, len) in [(desc, d), (avail, a), (used, u)] {
            let zero = vec![0u8; len as usize];
            mem.write_slice(&zero, addr)
                .map_err(|e| RingError::Mem(e.to_string()))?;
        }
        Ok(DriverRing {
            size,
            desc,
            avail,
            used,
            free: (0..size).rev().collect(),
            inflight: (0..size).map(|_| None).collect(),
            avail_idx: 0,
            last_used: 0,
        })
    }

    /// Descriptor table, available and used ring addresses.
    pub fn addrs(&self) -> (GuestAddress, GuestAddress, GuestAddress) {
        (self.desc, self.avail, self.used)
    }

    /// Free descriptors.
    pub fn free_descs(&self) -> usize {
        self.free.len()
    }

    /// Chains the device holds.
    pub fn in_flight(&self) -> usize {
        self.inflight.iter().filter(|c| c.is_some()).count()
    }

    /// Writes a raw descriptor (the hostile mode uses this for chains no driver would build).
    pub fn write_desc<M: GuestMemory>(
        &self,
        mem: &M,
        idx: u16,
        d: Descriptor,
    ) -> Result<(), RingError> {
        mem.write_obj(d, self.desc.unchecked_add(16 * u64::from(idx % self.size)))
            .map_err(|e| RingError::Mem(e.to_string()))
    }

    /// Posts a chain of buffers and makes it available; returns its head.
    pub fn add<M: GuestMemory>(
        &mut self,
        mem: &M,
        bufs: &[Buf],
        token: T,
    ) -> Result<u16, RingError> {
        if bufs.is_empty() {
            return Err(RingError::Empty);
        }
        if bufs.len() > self.free.len() {
            return Err(RingError::Full);
        }
        let idx: Vec<u16> = (0..bufs.len()).filter_map(|_| self.free.pop()).collect();
        for (i, b) in bufs.iter().enumerate() {
            let mut flags = if b.write {
                VRING_DESC_F_WRITE as u16
            } else {
                0
            };
            let next = if i + 1 < bufs.len() {
                flags |= VRING_DESC_F_NEXT as u16;
                idx[i + 1]
            } else {
                0
            };
            self.write_desc(mem, idx[i], Descriptor::new(b.addr, b.len, flags, next))?;
        }
        let head = idx[0];
        self.inflight[usize::from(head)] = Some((idx, bufs.to_vec(), token));
        self.publish(mem, head)?;
        Ok(head)
    }

    /// Puts `head` into the available ring and moves `avail.idx` (release order, so the device
    /// sees the descriptors first).
    pub fn publish<M: GuestMemory>(&mut self, mem: &M, head: u16) -> Result<(), RingError> {
        let slot = self
            .avail
            .unchecked_add(4 + 2 * u64::from(self.avail_idx % self.size));
        mem.write_obj(head, slot)
            .map_err(|e| RingError::Mem(e.to_string()))?;
        self.avail_idx = self.avail_idx.wrapping_add(1);
        fence(Ordering::Release);
        mem.store(
            self.avail_idx,
            self.avail.unchecked_add(2),
            Ordering::Release,
        )
        .map_err(|e| RingError::Mem(e.to_string()))
    }

    /// Takes one used chain, if the device returned one.
    pub fn pop_used<M: GuestMemory>(&mut self, mem: &M) -> Result<Option<Used<T>>, RingError> {
        let idx: u16 = mem
            .load(self.used.unchecked_add(2), Ordering::Acquire)
            .map_err(|e| RingError::Mem(e.to_string()))?;
        if idx == self.last_used {
            return Ok(None);
        }
        if idx.wrapping_sub(self.last_used) > self.size {
            return Err(RingError::UsedIdxJump(self.last_used, idx));
        }
        fence(Ordering::Acquire);
        let elem = self
            .used
            .unchecked_add(4 + 8 * u64::from(self.last_used % self.size));
        let id: u32 = mem
            .read_obj(elem)
            .map_err(|e| RingError::Mem(e.to_string()))?;
        let len: u32 = mem
            .read_obj(elem.unchecked_add(4))
            .map_err(|e| RingError::Mem(e.to_string()))?;
        self.last_used = self.last_used.wrapping_add(1);
        let chain = usize::try_from(id)
            .ok()
            .and_then(|i| self.inflight.get_mut(i))
            .and_then(Option::take);
        let Some((descs, bufs, token)) = chain else {
            return Err(RingError::BadUsedId(id));
        };
        self.free.extend(descs);
        Ok(Some(Used { token, bufs, len }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use virtio_queue::{Queue, QueueOwnedT, QueueT};
    use vm_memory::GuestMemoryMmap;

    fn setup(n: u16) -> (GuestMemoryMmap, DriverRing<u32>, Queue) {
        let mem = GuestMemoryMmap::<()>::from_ranges(&[(GuestAddress(0), 0x10_0000)]).unwrap();
        let ring = DriverRing::new(
            &mem,
            n,
            GuestAddress(0x1000),
            GuestAddress(0x3000),
            GuestAddress(0x4000),
        )
        .unwrap();
        let mut q = Queue::new(n).unwrap();
        q.try_set_desc_table_address(GuestAddress(0x1000)).unwrap();
        q.try_set_avail_ring_address(GuestAddress(0x3000)).unwrap();
        q.try_set_used_ring_address(GuestAddress(0x4000)).unwrap();
        q.set_ready(true);
        (mem, ring, q)
    }

    /// virtio-queue's device side sees the chains the driver posts, in order, with their
    /// directions; what it marks used comes back with its length and the driver's token.
    #[test]
    fn chains_round_trip_through_virtio_queue_device_side() {
        let (mem, mut ring, mut q) = setup(8);
        let a = [
            Buf {
                addr: 0x10000,
                len: 44,
                write: false,
            },
            Buf {
                addr: 0x20000,
                len: 100,
                write: false,
            },
        ];
        let b = [Buf {
            addr: 0x30000,
            len: 4140,
            write: true,
        }];
        ring.add(&mem, &a, 7).unwrap();
        ring.add(&mem, &b, 9).unwrap();
        assert_eq!(ring.free_descs(), 5);

        let chains: Vec<_> = q.iter(&mem).unwrap().collect();
        assert_eq!(chains.len(), 2);
        let d: Vec<_> = chains[0].clone().collect();
        assert_eq!(d.len(), 2);
        assert_eq!(
            (d[0].addr().0, d[0].len(), d[0].is_write_only()),
            (0x10000, 44, false)
        );
        assert_eq!(
            (d[1].addr().0, d[1].len(), d[1].is_write_only()),
            (0x20000, 100, false)
        );
        let d: Vec<_> = chains[1].clone().collect();
        assert_eq!(
            (d[0].addr().0, d[0].len(), d[0].is_write_only()),
            (0x30000, 4140, true)
        );

        q.add_used(&mem, chains[1].head_index(), 60).unwrap();
        q.add_used(&mem, chains[0].head_index(), 0).unwrap();
        let u = ring.pop_used(&mem).unwrap().unwrap();
        assert_eq!((u.token, u.len, u.bufs.len()), (9, 60, 1));
        let u = ring.pop_used(&mem).unwrap().unwrap();
        assert_eq!((u.token, u.len), (7, 0));
        assert_eq!(ring.pop_used(&mem).unwrap(), None);
        assert_eq!(ring.free_descs(), 8);
    }

    /// The ring wraps: many more chains than entries, descriptors recycled.
    #[test]
    fn wraps_many_times() {
        let (mem, mut ring, mut q) = setup(4);
        for i in 0..1000u32 {
            let b = [Buf {
                addr: 0x10000,
                len: 1 + i,
                write: true,
            }];
            ring.add(&mem, &b, i).unwrap();
            let c = q.pop_descriptor_chain(&mem).unwrap();
            let d: Vec<_> = c.clone().collect();
            assert_eq!(d[0].len(), 1 + i);
            q.add_used(&mem, c.head_index(), i).unwrap();
            let u = ring.pop_used(&mem).unwrap().unwrap();
            assert_eq!((u.token, u.len), (i, i));
        }
    }

    #[test]
    fn full_and_empty_are_errors() {
        let (mem, mut ring, _q) = setup(2);
        let b = [Buf {
            addr: 0x10000,
            len: 1,
            write: true,
        }; 3];
        assert_eq!(ring.add(&mem, &b, 0), Err(RingError::Full));
        assert_eq!(ring.add(&mem, &[], 0), Err(RingError::Empty));
    }

    /// A device that returns an id not in flight, or jumps the used index, is reported.
    #[test]
    fn bad_device_answers_are_errors() {
        let (mem, mut ring, _q) = setup(4);
        ring.add(
            &mem,
            &[Buf {
                addr: 0x10000,
                len: 1,
                write: true,
            }],
            1,
        )
        .unwrap();
        // used[0] = {id 3, len 0}, used.idx = 1
        mem.write_obj(3u32, GuestAddress(0x4004)).unwrap();
        mem.write_obj(1u16, GuestAddress(0x4002)).unwrap();
        assert_eq!(ring.pop_used(&mem), Err(RingError::BadUsedId(3)));
        mem.write_obj(100u16, GuestAddress(0x4002)).unwrap();
        assert!(matches!(
            ring.pop_used(&mem),
            Err(RingError::UsedIdxJump(..))
        ));
    }
}
