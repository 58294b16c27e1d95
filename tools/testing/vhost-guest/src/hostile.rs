// SPDX-License-Identifier: GPL-2.0

//! Hostile mode: malformed tx chains and wrongly addressed packets, then checks that the host
//! still works.
//!
//! Upstream `vhost_vsock` never returns a tx chain it could not parse (no `vhost_add_used` on
//! that path), so each malformed chain costs the guest a tx slot for the life of the device.
//! The packets are therefore sent in rounds of [`PER_ROUND`] on a fresh device; after each
//! round a normal connection on the same device shows whether it still serves the guest.

use std::time::{Duration, Instant};

use rvsock_proto::hdr::{Hdr, Op, HDR_LEN, MAX_PKT_PAYLOAD, TYPE_STREAM};
use sha2::{Digest, Sha256};

use crate::checks::Ctx;
use crate::dev::{Device, Setup};
use crate::guest::{Guest, HOST_CID};
use crate::host::{read_to_end, Sock};

/// Hostile packets per device.
pub const PER_ROUND: u64 = 40;

struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

const KINDS: [&str; 9] = [
    "split-header",
    "wrong-direction",
    "zero-length",
    "short",
    "len-lie",
    "too-big",
    "wrong-cid",
    "random-op",
    "many-descs",
];

fn base(cid: u64, r: &mut Rng) -> Hdr {
    Hdr {
        src_cid: cid,
        dst_cid: HOST_CID,
        src_port: 30000 + r.below(1000) as u32,
        dst_port: 31000 + r.below(1000) as u32,
        len: 0,
        type_: TYPE_STREAM,
        op: Op::Request as u16,
        flags: 0,
        buf_alloc: 4096,
        fwd_cnt: 0,
    }
}

/// One hostile chain of kind `k`: (descriptor contents, device-writable).
fn chain(k: usize, cid: u64, r: &mut Rng) -> Vec<(Vec<u8>, bool)> {
    let mut h = base(cid, r);
    match KINDS[k] {
        "split-header" => {
            let b = h.encode();
            let at = 1 + r.below(HDR_LEN as u64 - 1) as usize;
            vec![
                (b[..at].to_vec(), false),
                (Vec::new(), false),
                (b[at..].to_vec(), false),
            ]
        }
        "wrong-direction" => vec![(h.encode().to_vec(), false), (vec![0; 64], true)],
        "zero-length" => vec![(Vec::new(), false)],
        "short" => {
            let n = r.below(HDR_LEN as u64) as usize;
            vec![(h.encode()[..n].to_vec(), false)]
        }
        "len-lie" => {
            let pay = r.below(200) as usize;
            h.op = Op::Rw as u16;
            h.len = if r.below(2) == 0 {
                pay as u32 + 1 + r.below(100) as u32
            } else {
                u32::MAX - r.below(10) as u32
            };
            vec![(h.encode().to_vec(), false), (vec![0x55; pay], false)]
        }
        "too-big" => {
            h.op = Op::Rw as u16;
            h.len = MAX_PKT_PAYLOAD + 1;
            vec![
                (h.encode().to_vec(), false),
                (vec![0; MAX_PKT_PAYLOAD as usize + 1], false),
            ]
        }
        "wrong-cid" => {
            h.src_cid = if r.below(2) == 0 { r.next() } else { cid };
            h.dst_cid = if h.src_cid == cid {
                3 + r.below(1 << 33)
            } else {
                HOST_CID
            };
            vec![(h.encode().to_vec(), false)]
        }
        "random-op" => {
            h.op = r.below(10) as u16;
            h.type_ = r.below(4) as u16;
            h.flags = r.next() as u32;
            h.buf_alloc = r.next() as u32;
            h.fwd_cnt = r.next() as u32;
            let pay = if h.op == Op::Rw as u16 {
                r.below(300) as usize
            } else {
                0
            };
            h.len = pay as u32;
            vec![(h.encode().to_vec(), false), (vec![0xaa; pay], false)]
        }
        _ => {
            // A header split into single bytes, then 1-byte payload pieces.
            let pay = r.below(40) as usize;
            h.len = pay as u32;
            h.op = Op::Rw as u16;
            let mut v: Vec<(Vec<u8>, bool)> =
                h.encode().iter().map(|b| (vec![*b], false)).collect();
            v.extend((0..pay).map(|_| (vec![0x33], false)));
            v
        }
    }
}

/// A normal connection with 64 KiB each way through `g`, checked with SHA-256.
fn sanity(g: &mut Guest, port: u32) -> Result<(), String> {
    let l = Sock::listen(libc::SOCK_STREAM, port, Duration::from_secs(10))
        .map_err(|e| format!("listen {e}"))?;
    let h = std::thread::spawn(move || {
        let (s, _) = l.accept(Duration::from_secs(10))?;
        let mut d = Sha256::new();
        let (n, _) = read_to_end(&s, 65536, |b| d.update(b));
        Ok::<_, i32>((n, d.finalize().to_vec()))
    });
    let key = g.connect(port, TYPE_STREAM, 256 * 1024)?;
    let data: Vec<u8> = (0..65536u32).map(|i| (i * 7 + 3) as u8).collect();
    g.write_all(key, &data)?;
    let until = Instant::now() + Duration::from_secs(10);
    while !h.is_finished() && Instant::now() < until {
        g.pump(Duration::from_millis(50))?;
    }
    let (n, hash) = h
        .join()
        .map_err(|_| "host thread panicked".to_string())?
        .map_err(|e| format!("accept errno {e}"))?;
    if n != data.len() || hash != Sha256::digest(&data).to_vec() {
        return Err(format!("host read {n} bytes, checksum mismatch"));
    }
    Ok(())
}

/// Runs `packets` hostile packets in rounds, then a clean connection on a fresh device.
pub fn run(c: &Ctx, packets: u64, seed: u64) -> Result<String, String> {
    let mut r = Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1);
    let mut counts = [0u64; KINDS.len()];
    let (mut sent, mut rounds, mut dead_rounds, mut vq_errors, mut unreturned) =
        (0u64, 0u64, 0u64, 0u64, 0usize);
    let mut first_dead = None;
    while sent < packets {
        let dev = Device::new(
            &c.dev,
            Setup {
                cid: c.cid,
                seqpacket: true,
            },
        )
        .map_err(|e| format!("set-up: {e}"))?;
        let mut g = Guest::new(dev);
        let n = PER_ROUND.min(packets - sent);
        for _ in 0..n {
            let k = r.below(KINDS.len() as u64) as usize;
            let parts = chain(k, c.cid, &mut r);
            // The device keeps the chains it cannot parse: leave room for the clean connection.
            let (slots, descs) = g.dev.tx_room();
            if slots < 8 || descs < parts.len() + 16 {
                break;
            }
            match g.dev.send_raw(&parts, Duration::from_millis(500)) {
                Ok(()) => counts[k] += 1,
                Err(e) => return Err(format!("round {rounds}: sending {}: {e}", KINDS[k])),
            }
            sent += 1;
            // Answer what the host sends (RSTs to the requests) so rx never fills up.
            g.pump(Duration::ZERO).map_err(|e| e.to_string())?;
        }
        g.pump(Duration::from_millis(100))
            .map_err(|e| e.to_string())?;
        vq_errors += g.dev.vq_errors;
        unreturned += g.dev.tx_in_flight();
        if let Err(e) = sanity(&mut g, c.port + 500) {
            dead_rounds += 1;
            first_dead.get_or_insert(format!("round {rounds}: {e}"));
        }
        rounds += 1;
    }
    let dev = Device::new(
        &c.dev,
        Setup {
            cid: c.cid,
            seqpacket: true,
        },
    )
    .map_err(|e| format!("final set-up: {e}"))?;
    let mut g = Guest::new(dev);
    let fin = sanity(&mut g, c.port + 501);
    let kinds: Vec<String> = KINDS
        .iter()
        .zip(counts)
        .map(|(k, n)| format!("{k}={n}"))
        .collect();
    let msg = format!(
        "{sent} packets in {rounds} rounds ({}); vq_err signals {vq_errors}; tx chains never returned {unreturned}; rounds whose device then failed a clean connection {dead_rounds}{}; fresh device after: {}",
        kinds.join(" "),
        first_dead.map(|d| format!(" (first: {d})")).unwrap_or_default(),
        match &fin {
            Ok(()) => "ok".to_string(),
            Err(e) => e.clone(),
        }
    );
    if fin.is_err() || dead_rounds > 0 {
        return Err(msg);
    }
    Ok(msg)
}
