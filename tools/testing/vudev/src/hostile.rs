// SPDX-License-Identifier: GPL-2.0

//! Hostile mode: malformed or unwanted packets and events the device injects into one guest's
//! queues, mixed with the relayed traffic, to test a guest driver against a malicious device.
//!
//! Everything is derived from a seeded xorshift generator, so a run is reproducible from its
//! `--hostile` spec and the guest's traffic.

use std::fmt;

use rvsock_proto::hdr::{Hdr, Op, HDR_LEN, TYPE_SEQPACKET, TYPE_STREAM};

/// What kind of hostility.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// Used length shorter than the 44-byte header.
    Truncate,
    /// Header `len` larger than the payload bytes written (and the used length).
    Overlong,
    /// `dst_cid` other than the guest's, random `src_cid`.
    WrongCid,
    /// Operation or type out of range.
    BadOp,
    /// RSTs to random ports, as fast as RX buffers allow.
    FloodRst,
    /// REQUESTs to random (high) ports, as fast as RX buffers allow.
    FloodRequest,
    /// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET` on the event queue.
    ResetEvent,
    /// A seeded mix of the packet modes above (not `ResetEvent`, which resets every connection).
    Random,
}

impl Mode {
    /// The mode named `s` on the command line.
    pub fn parse(s: &str) -> Option<Mode> {
        Some(match s {
            "truncate" => Mode::Truncate,
            "overlong" => Mode::Overlong,
            "wrongcid" => Mode::WrongCid,
            "badop" => Mode::BadOp,
            "flood-rst" => Mode::FloodRst,
            "flood-request" => Mode::FloodRequest,
            "reset-event" => Mode::ResetEvent,
            "random" => Mode::Random,
            _ => return None,
        })
    }

    fn is_flood(self) -> bool {
        matches!(self, Mode::FloodRst | Mode::FloodRequest)
    }
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Truncate => "truncate",
            Mode::Overlong => "overlong",
            Mode::WrongCid => "wrongcid",
            Mode::BadOp => "badop",
            Mode::FloodRst => "flood-rst",
            Mode::FloodRequest => "flood-request",
            Mode::ResetEvent => "reset-event",
            Mode::Random => "random",
        })
    }
}

/// A parsed `--hostile MODE[,count=N][,seed=S][,every=K]`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Spec {
    /// The mode.
    pub mode: Mode,
    /// How many hostile packets (or events) in all.
    pub count: u64,
    /// PRNG seed.
    pub seed: u64,
    /// One injection after every `every` relayed deliveries (flood modes: 1, and also whenever
    /// nothing is queued).
    pub every: u32,
}

impl Spec {
    /// Parses the `--hostile` argument.
    pub fn parse(s: &str) -> Result<Spec, String> {
        let mut it = s.split(',');
        let m = it.next().unwrap_or("");
        let mode = Mode::parse(m).ok_or_else(|| format!("unknown hostile mode '{m}'"))?;
        let mut spec = Spec {
            mode,
            count: if mode.is_flood() { 1000 } else { 32 },
            seed: 1,
            every: if mode.is_flood() { 1 } else { 8 },
        };
        for kv in it {
            let (k, v) = kv
                .split_once('=')
                .ok_or_else(|| format!("'{kv}' is not KEY=VALUE"))?;
            let n: u64 = v.parse().map_err(|_| format!("bad number in '{kv}'"))?;
            match k {
                "count" => spec.count = n,
                "seed" => spec.seed = n,
                "every" => spec.every = u32::try_from(n.max(1)).unwrap_or(u32::MAX),
                _ => return Err(format!("unknown hostile option '{k}'")),
            }
        }
        Ok(spec)
    }
}

/// xorshift64* (std only, deterministic).
#[derive(Clone, Debug)]
pub struct Rng(u64);

impl Rng {
    /// A generator; seed 0 is replaced (xorshift would stay at 0).
    pub fn new(seed: u64) -> Rng {
        Rng(if seed == 0 {
            0x9e37_79b9_7f4a_7c15
        } else {
            seed
        })
    }

    /// Next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    /// A number in `0..n` (`n` > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n.max(1)
    }

    /// Random 32 bits.
    pub fn u32(&mut self) -> u32 {
        (self.next_u64() >> 32) as u32
    }
}

/// One hostile injection.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    /// Write `bytes` into an RX buffer and report `used` as the used length.
    Rx {
        /// Bytes written at the start of the buffer.
        bytes: Vec<u8>,
        /// Used length reported to the guest.
        used: u32,
        /// Log text.
        what: String,
    },
    /// Post a TRANSPORT_RESET event on the event queue.
    ResetEvent,
}

/// The injection state of one target guest.
#[derive(Debug)]
pub struct Hostile {
    /// The spec.
    pub spec: Spec,
    rng: Rng,
    left: u64,
    since: u32,
    armed: bool,
    target: u64,
    peers: Vec<u64>,
}

impl Hostile {
    /// Hostility against guest `target`; `peers` are the other served CIDs (plausible sources).
    pub fn new(spec: Spec, target: u64, peers: Vec<u64>) -> Hostile {
        Hostile {
            spec,
            rng: Rng::new(spec.seed),
            left: spec.count,
            since: 0,
            armed: false,
            target,
            peers,
        }
    }

    /// Injections left.
    pub fn left(&self) -> u64 {
        self.left
    }

    /// Counts a relayed delivery; the first one arms the injections (so they start once the
    /// guest's traffic does, not during driver probe).
    pub fn on_relayed(&mut self) {
        self.armed = true;
        self.since = self.since.saturating_add(1);
    }

    /// Whether an injection is due now; `idle` says that no relayed packet is waiting.
    pub fn due(&self, idle: bool) -> bool {
        if !self.armed || self.left == 0 {
            return false;
        }
        if self.spec.mode.is_flood() {
            idle || self.since >= self.spec.every
        } else {
            self.since >= self.spec.every
        }
    }

    fn peer(&mut self) -> u64 {
        if self.peers.is_empty() {
            return 2;
        }
        let i = self.rng.below(self.peers.len() as u64) as usize;
        self.peers.get(i).copied().unwrap_or(2)
    }

    fn base(&mut self, op: Op) -> Hdr {
        Hdr {
            src_cid: self.peer(),
            dst_cid: self.target,
            src_port: 100_000 + self.rng.u32() % 0x7fff_0000,
            dst_port: 100_000 + self.rng.u32() % 0x7fff_0000,
            len: 0,
            type_: if self.rng.below(2) == 0 {
                TYPE_STREAM
            } else {
                TYPE_SEQPACKET
            },
            op: op as u16,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        }
    }

    /// The next injection for an RX buffer of `cap` bytes (the event queue for `ResetEvent`);
    /// counts it.  `None` when none is left.
    pub fn make(&mut self, cap: usize) -> Option<Action> {
        if self.left == 0 {
            return None;
        }
        self.left -= 1;
        self.since = 0;
        let mode = match self.spec.mode {
            Mode::Random => match self.rng.below(6) {
                0 => Mode::Truncate,
                1 => Mode::Overlong,
                2 => Mode::WrongCid,
                3 => Mode::BadOp,
                4 => Mode::FloodRst,
                _ => Mode::FloodRequest,
            },
            m => m,
        };
        let (mut bytes, what) = match mode {
            Mode::ResetEvent | Mode::Random => return Some(Action::ResetEvent),
            Mode::Truncate => {
                let h = self.base(Op::Rw);
                let n = self.rng.below(HDR_LEN as u64) as usize;
                (h.encode()[..n].to_vec(), format!("header cut to {n} bytes"))
            }
            Mode::Overlong => {
                let mut h = self.base(Op::Rw);
                let m = self.rng.below(32) as usize;
                h.len = (m as u32) + 1 + self.rng.u32() % 65536;
                let mut v = h.encode().to_vec();
                v.extend((0..m).map(|i| i as u8));
                (v, format!("hdr.len {} with {m} payload bytes", h.len))
            }
            Mode::WrongCid => {
                let mut h = self.base(Op::Request);
                h.op = 1 + (self.rng.below(7) as u16);
                h.src_cid = self.rng.next_u64();
                h.dst_cid = self.rng.next_u64();
                if h.dst_cid == self.target {
                    h.dst_cid ^= 1;
                }
                let what = format!(
                    "op {} src_cid {:#x} dst_cid {:#x} port {}",
                    h.op, h.src_cid, h.dst_cid, h.dst_port
                );
                (h.encode().to_vec(), what)
            }
            Mode::BadOp => {
                let mut h = self.base(Op::Rw);
                if self.rng.below(2) == 0 {
                    h.op = 8 + (self.rng.below(u64::from(u16::MAX) - 7) as u16);
                } else {
                    h.type_ = 3 + (self.rng.below(u64::from(u16::MAX) - 2) as u16);
                }
                let what = format!("op {} type {} port {}", h.op, h.type_, h.dst_port);
                (h.encode().to_vec(), what)
            }
            Mode::FloodRst => {
                let h = self.base(Op::Rst);
                let what = format!("RST {}:{} -> port {}", h.src_cid, h.src_port, h.dst_port);
                (h.encode().to_vec(), what)
            }
            Mode::FloodRequest => {
                let mut h = self.base(Op::Request);
                h.src_cid = 2;
                let what = format!(
                    "REQUEST {}:{} -> port {}",
                    h.src_cid, h.src_port, h.dst_port
                );
                (h.encode().to_vec(), what)
            }
        };
        bytes.truncate(cap);
        let used = bytes.len() as u32;
        Some(Action::Rx {
            bytes,
            used,
            what: format!("{mode}: {what}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spec_parsing() {
        let s = Spec::parse("flood-rst,count=5,seed=9").unwrap();
        assert_eq!(s.mode, Mode::FloodRst);
        assert_eq!((s.count, s.seed, s.every), (5, 9, 1));
        let s = Spec::parse("truncate,every=3").unwrap();
        assert_eq!((s.count, s.every), (32, 3));
        assert!(Spec::parse("nope").is_err());
        assert!(Spec::parse("badop,count").is_err());
        assert!(Spec::parse("badop,x=1").is_err());
        assert!(Spec::parse("badop,count=-1").is_err());
    }

    #[test]
    fn deterministic_and_counted() {
        let spec = Spec::parse("random,count=50,seed=42,every=1").unwrap();
        let run = || {
            let mut h = Hostile::new(spec, 3, vec![4]);
            let mut out = Vec::new();
            assert!(!h.due(true));
            h.on_relayed();
            while h.due(false) {
                out.push(h.make(4096).unwrap());
                h.on_relayed();
            }
            out
        };
        let a = run();
        assert_eq!(a.len(), 50);
        assert_eq!(a, run());
    }

    #[test]
    fn packets_are_what_they_claim() {
        let mk = |m: &str| {
            let mut h = Hostile::new(Spec::parse(m).unwrap(), 3, vec![4]);
            h.on_relayed();
            (0..200).map(move |_| h.make(4096).unwrap())
        };
        for a in mk("truncate,count=200") {
            let Action::Rx { bytes, used, .. } = a else {
                panic!()
            };
            assert!(bytes.len() < HDR_LEN && used as usize == bytes.len());
        }
        for a in mk("overlong,count=200") {
            let Action::Rx { bytes, used, .. } = a else {
                panic!()
            };
            let h = Hdr::parse(&bytes).unwrap();
            assert!(h.len as usize > bytes.len() - HDR_LEN);
            assert_eq!(used as usize, bytes.len());
        }
        for a in mk("wrongcid,count=200") {
            let Action::Rx { bytes, .. } = a else {
                panic!()
            };
            assert_ne!(Hdr::parse(&bytes).unwrap().dst_cid, 3);
        }
        for a in mk("badop,count=200") {
            let Action::Rx { bytes, .. } = a else {
                panic!()
            };
            let h = Hdr::parse(&bytes).unwrap();
            assert!(h.op().is_none() || !h.valid_type());
        }
        for a in mk("flood-request,count=200") {
            let Action::Rx { bytes, .. } = a else {
                panic!()
            };
            let h = Hdr::parse(&bytes).unwrap();
            assert_eq!((h.op, h.dst_cid, h.src_cid), (Op::Request as u16, 3, 2));
            assert!(h.dst_port >= 100_000);
        }
        assert_eq!(mk("reset-event,count=200").next(), Some(Action::ResetEvent));
        // Small buffers get a cut injection, never an overrun.
        let mut h = Hostile::new(Spec::parse("overlong").unwrap(), 3, vec![]);
        h.on_relayed();
        let Some(Action::Rx { bytes, .. }) = h.make(10) else {
            panic!()
        };
        assert!(bytes.len() <= 10);
    }

    #[test]
    fn pacing() {
        let mut h = Hostile::new(Spec::parse("badop,count=2,every=3").unwrap(), 3, vec![]);
        h.on_relayed();
        assert!(!h.due(true));
        h.on_relayed();
        h.on_relayed();
        assert!(h.due(false));
        h.make(4096);
        assert!(!h.due(true));
        let mut f = Hostile::new(Spec::parse("flood-rst,count=3").unwrap(), 3, vec![4]);
        f.on_relayed();
        for _ in 0..3 {
            assert!(f.due(true));
            f.make(4096);
        }
        assert!(!f.due(true));
        assert_eq!(f.left(), 0);
    }
}
