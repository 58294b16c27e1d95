// SPDX-License-Identifier: GPL-2.0

//! `/dev/rvsock_inject`: userspace plays the peer of the test transports.
//!
//! A packet fuzzer (`tools/testing/kfuzz`) hands packets to the core through this device as if
//! they came from the peer of one of the registered test transports, through the transport ABI
//! (`rvsock_transport_recv`) like a device transport would, and reads back the headers of the
//! packets the core sent through them.  Four ioctls, all structures little-endian and packed:
//!
//! `RVSOCK_INJECT_INFO` = `_IOR('v', 0xa0, 48 bytes)`, out:
//!
//! | off | field | |
//! |---|---|---|
//! | 0 | `u32 slots` | `RVSOCK_TRANSPORT_F_*` of the registered test transports |
//! | 4 | `u32 cid[3]` | local CID of the H2G, G2H and LOCAL transport (`u32::MAX`: none) |
//! | 16 | `u64 injected` | packets handed to the core through this device |
//! | 24 | `u64 sent` | packets the core sent through the test transports |
//! | 32 | `u64 failed` | records not injected for want of memory |
//! | 40 | `u32 feed_len` | headers each transport keeps for `RVSOCK_INJECT_FEED` |
//! | 44 | `u32 max_payload` | largest payload a record may carry |
//!
//! `RVSOCK_INJECT_BATCH` = `_IOWR('v', 0xa1, 24 bytes)`:
//!
//! | off | field | |
//! |---|---|---|
//! | 0 | `u64 buf` | in: user address of the records |
//! | 8 | `u32 len` | in: bytes at `buf` |
//! | 12 | `u32 done` | out: records handed to the core |
//! | 16 | `u32 failed` | out: records dropped for want of memory |
//! | 20 | `u32 flags` | in: 0, or `1` (dry run: build each packet and free it, without handing it to the core; measures the device's own cost) |
//!
//! Each record: `u32 payload_len`, `u32 slot` (`RVSOCK_TRANSPORT_F_H2G`, `_G2H`, `_LOCAL`, or 0
//! for the first registered transport), the 44-byte virtio-vsock header exactly as the core
//! is to see it, then `payload_len` payload bytes.  The header's `len` may disagree with
//! `payload_len` on purpose.  A malformed record (truncated, payload over `max_payload`, an
//! unregistered slot) ends the batch with `EINVAL`, `done` telling how many went in before it.
//!
//! `RVSOCK_INJECT_FEED` = `_IOWR('v', 0xa2, 24 bytes)`:
//!
//! | off | field | |
//! |---|---|---|
//! | 0 | `u64 buf` | in: user address for `max` records of 48 bytes |
//! | 8 | `u32 max` | in |
//! | 12 | `u32 count` | out: records written |
//! | 16 | `u64 lost` | out: headers dropped since the last read because a feed was full |
//!
//! Each feed record: the 44-byte header the core sent, then `u32 slot` of the transport.  The
//! records of one transport are in the order the core sent them; transports are read in slot
//! order.
//!
//! `RVSOCK_INJECT_EVENT` = `_IOW('v', 0xa3, 12 bytes)`: a device event on a transport, as a
//! virtio transport reports a `TRANSPORT_RESET`: `u32 slot`, `u32 event` (1: reset every
//! connection, `rvsock_transport_reset_all`; 2: change the local CID,
//! `rvsock_transport_set_local_cid`), `u32 cid` (for event 2).  The CID `RVSOCK_INJECT_INFO`
//! reports does not follow it.

use crate::kx::misc::MiscDevice;
use crate::kx::socket::UserPtr;
use crate::kx::transport::features;
use crate::kx::Gfp;
use crate::proto::hdr::HDR_LEN;
use crate::test_transport::TestTransport;
use crate::Transports;
use core::sync::atomic::Ordering;
use kernel::alloc::KVVec;
use kernel::ioctl::{_IOR, _IOW, _IOWR};
use kernel::prelude::*;
use kernel::uaccess::UserSlice;

/// The ioctl type of the device.
const MAGIC: u32 = b'v' as u32;
/// Size of `struct rvsock_inject_info`.
const INFO_LEN: usize = 48;
/// Size of the batch arguments.
const BATCH_LEN: usize = 24;
/// Bytes before the header in a record: `payload_len` and `slot`.
const REC_HEAD: usize = 8;
/// Size of a feed record.
const FEED_REC: usize = HDR_LEN + 4;
/// Largest payload of a record: twice the largest packet a transport delivers.
pub(crate) const MAX_PAYLOAD: u32 = 128 * 1024;
/// Batch flag: build the packets but free them instead of handing them to the core.
const BATCH_DRY_RUN: u32 = 1;
/// Headers moved out of a feed per step (kept on the stack).
const FEED_STEP: usize = 16;

/// `RVSOCK_INJECT_INFO`.
pub(crate) const IOC_INFO: u32 = _IOR::<[u8; INFO_LEN]>(MAGIC, 0xa0);
/// `RVSOCK_INJECT_BATCH`.
pub(crate) const IOC_BATCH: u32 = _IOWR::<[u8; BATCH_LEN]>(MAGIC, 0xa1);
/// `RVSOCK_INJECT_FEED`.
pub(crate) const IOC_FEED: u32 = _IOWR::<[u8; BATCH_LEN]>(MAGIC, 0xa2);

/// `RVSOCK_INJECT_EVENT`.
pub(crate) const IOC_EVENT: u32 = _IOW::<[u8; EVENT_LEN]>(MAGIC, 0xa3);
/// Size of the event argument.
const EVENT_LEN: usize = 12;
/// Event: reset every connection of the transport.
const EVENT_RESET_ALL: u32 = 1;
/// Event: change the transport's local CID.
const EVENT_SET_CID: u32 = 2;

/// The registry slots in the order of `Transports::regs`.
pub(crate) const SLOTS: [u32; 3] = [features::H2G, features::G2H, features::LOCAL];

/// The injection device.
pub(crate) struct InjectDev;

impl MiscDevice for InjectDev {
    fn ioctl(cmd: u32, arg: UserPtr) -> Result<i32> {
        let t = crate::transports().ok_or(ENODEV)?;
        match cmd {
            IOC_INFO => info(t, arg),
            IOC_BATCH => batch(t, arg),
            IOC_FEED => feed(t, arg),
            IOC_EVENT => event(t, arg),
            _ => Err(ENOTTY),
        }
    }
}

fn le32(b: &[u8], at: usize) -> u32 {
    u32::from_le_bytes([b[at], b[at + 1], b[at + 2], b[at + 3]])
}

fn le64(b: &[u8], at: usize) -> u64 {
    u64::from(le32(b, at)) | (u64::from(le32(b, at + 4)) << 32)
}

fn put32(b: &mut [u8], at: usize, v: u32) {
    b[at..at + 4].copy_from_slice(&v.to_le_bytes());
}

fn put64(b: &mut [u8], at: usize, v: u64) {
    b[at..at + 8].copy_from_slice(&v.to_le_bytes());
}

fn info(t: &Transports, arg: UserPtr) -> Result<i32> {
    let mut out = [0u8; INFO_LEN];
    let mut slots = 0;
    let mut sent = 0;
    for (i, slot) in SLOTS.iter().enumerate() {
        let cid = match t.reg(*slot) {
            Some(r) => {
                slots |= slot;
                sent += r.data().sent();
                t.cids[i]
            }
            None => u32::MAX,
        };
        put32(&mut out, 4 + 4 * i, cid);
    }
    put32(&mut out, 0, slots);
    put64(&mut out, 16, t.injected.load(Ordering::Relaxed));
    put64(&mut out, 24, sent);
    put64(&mut out, 32, t.failed.load(Ordering::Relaxed));
    put32(&mut out, 40, t.feed_len);
    put32(&mut out, 44, MAX_PAYLOAD);
    arg.write_bytes(&out)?;
    Ok(0)
}

fn batch(t: &Transports, arg: UserPtr) -> Result<i32> {
    let mut b: [u8; BATCH_LEN] = arg.read()?;
    let flags = le32(&b, 20);
    if flags & !BATCH_DRY_RUN != 0 {
        return Err(EINVAL);
    }
    let dry = flags & BATCH_DRY_RUN != 0;
    let buf = usize::try_from(le64(&b, 0)).map_err(|_| EINVAL)?;
    let len = le32(&b, 8) as usize;
    let mut r = UserSlice::new(buf, len).reader();
    let mut payload: KVVec<u8> = KVVec::new();
    let (mut done, mut failed) = (0u32, 0u32);
    let mut res = Ok(());
    while !r.is_empty() {
        // A truncated record is the caller's mistake, not a fault.
        if r.len() < REC_HEAD + HDR_LEN {
            res = Err(EINVAL);
            break;
        }
        let head: [u8; REC_HEAD + HDR_LEN] = match r.read() {
            Ok(h) => h,
            Err(e) => {
                res = Err(e);
                break;
            }
        };
        let plen = le32(&head, 0);
        let Some(reg) = t.pick(le32(&head, 4)) else {
            res = Err(EINVAL);
            break;
        };
        if plen > MAX_PAYLOAD || plen as usize > r.len() {
            res = Err(EINVAL);
            break;
        }
        let plen = plen as usize;
        if payload.len() < plen {
            payload = match KVVec::from_elem(0u8, plen, GFP_KERNEL) {
                Ok(p) => p,
                Err(_) => {
                    res = Err(ENOMEM);
                    break;
                }
            };
        }
        if let Err(e) = r.read_slice(&mut payload[..plen]) {
            res = Err(e);
            break;
        }
        let mut hdr = [0u8; HDR_LEN];
        hdr.copy_from_slice(&head[REC_HEAD..]);
        let Some(core) = reg.core() else {
            res = Err(ENODEV);
            break;
        };
        let one = if dry {
            TestTransport::build_raw(&hdr, &payload[..plen], Gfp::Kernel).map(drop)
        } else {
            TestTransport::inject_raw(&core, &hdr, &payload[..plen], Gfp::Kernel)
        };
        match one {
            Ok(()) => {
                done += 1;
                if !dry {
                    t.injected.fetch_add(1, Ordering::Relaxed);
                }
            }
            Err(_) => {
                failed += 1;
                t.failed.fetch_add(1, Ordering::Relaxed);
            }
        }
    }
    put32(&mut b, 12, done);
    put32(&mut b, 16, failed);
    arg.write_bytes(&b)?;
    res.map(|()| 0)
}

fn feed(t: &Transports, arg: UserPtr) -> Result<i32> {
    let mut b: [u8; BATCH_LEN] = arg.read()?;
    let buf = usize::try_from(le64(&b, 0)).map_err(|_| EINVAL)?;
    let max = le32(&b, 8) as usize;
    let bytes = max.checked_mul(FEED_REC).ok_or(EINVAL)?;
    let mut w = UserSlice::new(buf, bytes).writer();
    let mut count = 0usize;
    let mut lost = 0u64;
    let mut res = Ok(());
    'slots: for slot in SLOTS {
        let Some(reg) = t.reg(slot) else { continue };
        while count < max {
            let want = (max - count).min(FEED_STEP);
            let mut hdrs = [[0u8; HDR_LEN]; FEED_STEP];
            let (n, l) = reg.data().read_feed(&mut hdrs[..want]);
            lost += l;
            for (i, h) in hdrs[..n].iter().enumerate() {
                let mut rec = [0u8; FEED_REC];
                rec[..HDR_LEN].copy_from_slice(h);
                put32(&mut rec, HDR_LEN, slot);
                if let Err(e) = w.write_slice(&rec) {
                    // The headers taken but not delivered are lost to the reader.
                    lost += (n - i) as u64;
                    res = Err(e);
                    break 'slots;
                }
                count += 1;
            }
            if n < want {
                break;
            }
        }
    }
    put32(&mut b, 12, count as u32);
    put64(&mut b, 16, lost);
    arg.write_bytes(&b)?;
    res.map(|()| 0)
}

fn event(t: &Transports, arg: UserPtr) -> Result<i32> {
    let b: [u8; EVENT_LEN] = arg.read()?;
    let reg = t.reg(le32(&b, 0)).ok_or(EINVAL)?;
    let core = reg.core().ok_or(ENODEV)?;
    match le32(&b, 4) {
        EVENT_RESET_ALL => core.reset_all(),
        EVENT_SET_CID => core.set_local_cid(le32(&b, 8)),
        _ => return Err(EINVAL),
    }
    Ok(0)
}
