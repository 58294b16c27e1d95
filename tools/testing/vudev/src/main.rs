// SPDX-License-Identifier: GPL-2.0

//! `vudev`: a vhost-user virtio-vsock device for tests, relaying packets between sibling guests
//! and, with `--host-uds`, bridging guests' connections to the host's Unix sockets.
//!
//! One process serves several guests.  Each `--vm cid=CID,socket=PATH` gets a vhost-user
//! listener socket at PATH (created at start; wait for it to appear before starting QEMU) and
//! a virtio-vsock device with guest CID `CID` (config space `guest_cid`, le64).  The device
//! offers `VIRTIO_F_VERSION_1`, `VIRTIO_VSOCK_F_SEQPACKET`, `VIRTIO_RING_F_EVENT_IDX` and
//! `VIRTIO_F_NOTIFY_ON_EMPTY`, with the `CONFIG` and `MQ` vhost-user protocol features.
//!
//! ```text
//! vudev --vm cid=3,socket=/tmp/a.sock --vm cid=4,socket=/tmp/b.sock \
//!       [--hostile MODE[,count=N][,seed=S][,every=K] --hostile-target CID] \
//!       [--log-level error|warn|info|debug] [--stats-interval SECONDS] \
//!       [--queue-limit BYTES] [--queue-size N] [--host-uds PREFIX]
//!
//! qemu-system-x86_64 ... \
//!   -object memory-backend-memfd,id=mem,size=1G,share=on -numa node,memdev=mem \
//!   -chardev socket,id=c0,path=/tmp/a.sock -device vhost-user-vsock-pci,chardev=c0
//! ```
//!
//! With the repository's VM runner: `tools/testing/vm/run.sh --vhost-user-socket /tmp/a.sock`.
//!
//! Relay rules:
//!
//! - A TX packet is a 44-byte header and `hdr.len` payload bytes spread over any number of
//!   descriptors (the header may be split too).  Chains longer than 64 KiB of payload, shorter
//!   than the header or than `hdr.len`, or with write-only descriptors are dropped and logged.
//! - `src_cid` must be the sender's CID, else the packet is dropped and logged.
//! - A packet for a served CID is queued for that guest (per destination, in order, bounded by
//!   `--queue-limit`, default 8 MiB; beyond it packets are dropped and logged).  For any other
//!   CID (the host, 2, included) the sender gets an RST (source and destination swapped, same
//!   type), unless the packet is itself an RST.
//! - Queued packets fill the destination's RX buffers as the guest posts them; a packet larger
//!   than a buffer is split into several packets, each with its own header copy and `len`, and
//!   for SEQPACKET `SEQ_EOM`/`SEQ_EOR` only on the last piece (as Linux's vhost-vsock does).
//!
//! Host endpoint (`--host-uds PREFIX`, for every served guest; `host.rs`): a guest's STREAM
//! connection to CID 2 port `P` is bridged to the host's Unix stream socket `PREFIX_P`
//! (vhost-device-vsock's convention): REQUEST -> connect (RST if that fails) -> RESPONSE; RW
//! payload is written to the socket, bytes read from it come back as RW packets within the
//! guest's credit; the endpoint advertises 256 KiB of `buf_alloc` with `fwd_cnt` = bytes written
//! to the socket, sends CREDIT_UPDATE when the guest's view of that space falls below half and
//! in answer to CREDIT_REQUEST, and buffers at most `buf_alloc` per connection (a guest beyond
//! its credit is reset).  SHUTDOWN(SEND) from the guest shuts the socket's write side, a guest
//! close (SHUTDOWN with both flags) is answered with an RST and closes the socket; the host's
//! EOF becomes a SHUTDOWN to the guest (both flags once the host closed), an RST from the guest
//! closes the socket.  Host-initiated connections and SEQPACKET are not bridged (RST).  Without
//! `--host-uds`, CID 2 is answered with RST as above.  `tools/testing/bench/bench.py
//! --transport virtio` uses it (`make bench` section of the README).
//!
//! Hostile mode (`--hostile`, against the guest `--hostile-target`; injections start with the
//! first relayed packet delivered to it and then come once every `every` relayed deliveries,
//! default 8; `count` in all, default 32, floods 1000; `seed` default 1):
//!
//! - `truncate`: used length shorter than the header;
//! - `overlong`: header `len` larger than the payload written;
//! - `wrongcid`: `dst_cid` not the guest's, random `src_cid`;
//! - `badop`: operation or type out of range;
//! - `flood-rst`, `flood-request`: RSTs / REQUESTs (from CID 2) to random high ports, one per
//!   relayed packet and as fast as RX buffers allow while nothing is relayed;
//! - `reset-event`: a `TRANSPORT_RESET` event on the event queue.  QEMU's `vhost-user-vsock`
//!   keeps the event queue to itself (`hw/virtio/vhost-vsock-common.c`: only RX and TX go to
//!   the backend), so with QEMU this mode can only log `hostile: ... event queue not set up`;
//!   it needs a frontend that hands all three queues over;
//! - `random`: a seeded mix of the packet modes (not `reset-event`).
//!
//! Every injection is logged on stderr as `hostile: ...` (log level info).
//!
//! `demo.sh` (next to this crate) boots two guests with Linux's virtio-vsock driver on one vudev
//! and checks STREAM (4 MiB each way, sha256) and SEQPACKET (1 B to 64 KiB messages); it takes
//! `-- VUDEV-OPTIONS`, e.g. `-- --hostile random,count=400 --hostile-target 4`.  The virtio
//! suite (`tools/testing/virtio/suite.py`, parts `siblings` and `hostile`) runs upstream
//! `vsock_test` between rvsock and the C stack on it.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::Duration;

use vhost_user_backend::VhostUserDaemon;
use vm_memory::{GuestMemoryAtomic, GuestMemoryMmap};

mod device;
mod host;
mod hostile;
mod pkt;

use device::{Router, Slot, VuDev};
use hostile::{Hostile, Spec};

/// Log levels, most severe first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Errors.
    Error = 0,
    /// Dropped packets and guest misbehaviour.
    Warn = 1,
    /// Connections, hostile injections, statistics.
    Info = 2,
    /// Per-packet detail.
    Debug = 3,
}

static LOG_LEVEL: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Whether messages at `l` are printed.
pub fn enabled(l: Level) -> bool {
    l as u8 <= LOG_LEVEL.load(Ordering::Relaxed)
}

/// Logs to stderr if the level is enabled.
#[macro_export]
macro_rules! log_at {
    ($l:expr, $($a:tt)*) => {
        if $crate::enabled($l) {
            eprintln!("vudev: {}", format_args!($($a)*));
        }
    };
}

/// One `--vm` argument.
#[derive(Clone, Debug, PartialEq, Eq)]
struct VmArg {
    cid: u64,
    socket: PathBuf,
}

fn parse_vm(s: &str) -> Result<VmArg, String> {
    let (mut cid, mut socket) = (None, None);
    for kv in s.split(',') {
        match kv.split_once('=') {
            Some(("cid", v)) => cid = Some(v.parse::<u64>().map_err(|_| format!("bad cid '{v}'"))?),
            Some(("socket", v)) if !v.is_empty() => socket = Some(PathBuf::from(v)),
            _ => return Err(format!("bad --vm item '{kv}' (want cid=CID,socket=PATH)")),
        }
    }
    match (cid, socket) {
        (Some(cid), Some(socket)) if cid > 2 && cid < u64::from(u32::MAX) => {
            Ok(VmArg { cid, socket })
        }
        (Some(c), Some(_)) => Err(format!("cid {c} is reserved")),
        _ => Err(format!("--vm {s}: cid= and socket= are both needed")),
    }
}

#[derive(Debug)]
struct Args {
    vms: Vec<VmArg>,
    hostile: Option<Spec>,
    target: Option<u64>,
    stats: Option<u64>,
    queue_limit: usize,
    queue_size: usize,
    host_uds: Option<PathBuf>,
}

const USAGE: &str = "usage: vudev --vm cid=CID,socket=PATH [--vm ...] \
[--hostile MODE[,count=N][,seed=S][,every=K] --hostile-target CID] \
[--log-level error|warn|info|debug] [--stats-interval SECONDS] [--queue-limit BYTES] \
[--queue-size N] [--host-uds PREFIX]
modes: truncate overlong wrongcid badop flood-rst flood-request reset-event random";

fn parse_args(argv: &[String]) -> Result<Args, String> {
    let mut a = Args {
        vms: Vec::new(),
        hostile: None,
        target: None,
        stats: None,
        queue_limit: 8 << 20,
        queue_size: 256,
        host_uds: None,
    };
    let mut it = argv.iter();
    while let Some(o) = it.next() {
        let (name, inline) = match o.split_once('=') {
            Some((n, v)) if n.starts_with("--") => (n, Some(v.to_string())),
            _ => (o.as_str(), None),
        };
        if name == "-h" || name == "--help" {
            return Err(String::new());
        }
        let mut val = || {
            inline
                .clone()
                .or_else(|| it.next().cloned())
                .ok_or_else(|| format!("{name} needs a value"))
        };
        let num = |v: String| {
            v.parse::<u64>()
                .map_err(|_| format!("{name}: bad number '{v}'"))
        };
        match name {
            "--vm" => a.vms.push(parse_vm(&val()?)?),
            "--hostile" => a.hostile = Some(Spec::parse(&val()?)?),
            "--hostile-target" => a.target = Some(num(val()?)?),
            "--stats-interval" => a.stats = Some(num(val()?)?),
            "--queue-limit" => a.queue_limit = num(val()?)? as usize,
            "--queue-size" => a.queue_size = num(val()?)?.clamp(1, 32768) as usize,
            "--host-uds" => {
                let v = val()?;
                if v.is_empty() {
                    return Err("--host-uds needs a path prefix".into());
                }
                a.host_uds = Some(PathBuf::from(v));
            }
            "--log-level" => {
                let l = match val()?.as_str() {
                    "error" => Level::Error,
                    "warn" => Level::Warn,
                    "info" => Level::Info,
                    "debug" => Level::Debug,
                    v => return Err(format!("bad log level '{v}'")),
                };
                LOG_LEVEL.store(l as u8, Ordering::Relaxed);
            }
            _ => return Err(format!("unknown option '{o}'")),
        }
    }
    if a.vms.is_empty() {
        return Err("at least one --vm is needed".into());
    }
    let mut seen = HashMap::new();
    for v in &a.vms {
        if seen.insert(v.cid, ()).is_some() {
            return Err(format!("cid {} given twice", v.cid));
        }
    }
    match (a.hostile, a.target) {
        (Some(_), None) => return Err("--hostile needs --hostile-target".into()),
        (None, Some(_)) => return Err("--hostile-target needs --hostile".into()),
        (Some(_), Some(t)) if !seen.contains_key(&t) => {
            return Err(format!("--hostile-target {t} is not a served cid"))
        }
        _ => {}
    }
    Ok(a)
}

/// Serves one guest's socket, again after each disconnect.
fn serve(slot: Arc<Slot>, router: Arc<Router>, socket: PathBuf, queue_size: usize) {
    loop {
        let dev = match VuDev::new(slot.clone(), router.clone(), queue_size) {
            Ok(d) => Arc::new(d),
            Err(e) => {
                log_at!(Level::Error, "cid {}: device: {e}", slot.cid);
                return;
            }
        };
        let mut daemon = match VhostUserDaemon::new(
            format!("vudev-cid-{}", slot.cid),
            dev.clone(),
            GuestMemoryAtomic::new(GuestMemoryMmap::new()),
        ) {
            Ok(d) => d,
            Err(e) => {
                log_at!(Level::Error, "cid {}: daemon: {e}", slot.cid);
                return;
            }
        };
        for h in daemon.get_epoll_handlers() {
            if let Err(e) = dev.register(&h) {
                log_at!(Level::Error, "cid {}: epoll: {e}", slot.cid);
                return;
            }
        }
        log_at!(
            Level::Info,
            "cid {}: listening on {}",
            slot.cid,
            socket.display()
        );
        match daemon.serve(&socket) {
            Ok(()) => log_at!(Level::Info, "cid {}: frontend disconnected", slot.cid),
            Err(e) => log_at!(Level::Warn, "cid {}: session ended: {e}", slot.cid),
        }
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn print_stats(router: &Router) {
    let mut cids: Vec<_> = router.slots.keys().copied().collect();
    cids.sort_unstable();
    for c in cids {
        let Some(s) = router.slots.get(&c) else {
            continue;
        };
        let g = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        let (qn, qb) = {
            let q = s
                .queue
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner);
            (q.len(), q.bytes())
        };
        log_at!(
            Level::Info,
            "stats: cid {c}: tx {} pkts {} B, rx {} pkts {} B, dropped {}, rsts {}, hostile {}, queued {qn} pkts {qb} B",
            g(&s.stats.tx_pkts),
            g(&s.stats.tx_bytes),
            g(&s.stats.rx_pkts),
            g(&s.stats.rx_bytes),
            g(&s.stats.dropped),
            g(&s.stats.rsts),
            g(&s.stats.hostile)
        );
    }
}

fn main() -> ExitCode {
    let argv: Vec<String> = std::env::args().skip(1).collect();
    let args = match parse_args(&argv) {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("vudev: {e}");
            }
            eprintln!("{USAGE}");
            return ExitCode::from(2);
        }
    };
    let cids: Vec<u64> = args.vms.iter().map(|v| v.cid).collect();
    let mut router = Router::default();
    for v in &args.vms {
        let hostile = match (args.hostile, args.target) {
            (Some(spec), Some(t)) if t == v.cid => {
                let peers = cids.iter().copied().filter(|&c| c != t).collect();
                log_at!(Level::Info, "hostile: {} against cid {t}", spec.mode);
                Some(Hostile::new(spec, t, peers))
            }
            _ => None,
        };
        match Slot::new(v.cid, args.queue_limit, hostile) {
            Ok(s) => {
                let s = match &args.host_uds {
                    Some(p) => s.with_host(p.clone()),
                    None => s,
                };
                router.slots.insert(v.cid, Arc::new(s));
            }
            Err(e) => {
                eprintln!("vudev: eventfd: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    let router = Arc::new(router);
    let mut handles = Vec::new();
    for v in args.vms {
        let Some(slot) = router.slots.get(&v.cid).cloned() else {
            continue;
        };
        let r = router.clone();
        let qs = args.queue_size;
        let h = std::thread::Builder::new()
            .name(format!("vudev-{}", v.cid))
            .spawn(move || serve(slot, r, v.socket, qs));
        match h {
            Ok(h) => handles.push(h),
            Err(e) => {
                eprintln!("vudev: thread: {e}");
                return ExitCode::FAILURE;
            }
        }
    }
    if let Some(secs) = args.stats.filter(|&s| s > 0) {
        let r = router.clone();
        let _ = std::thread::Builder::new()
            .name("vudev-stats".into())
            .spawn(move || loop {
                std::thread::sleep(Duration::from_secs(secs));
                print_stats(&r);
            });
    }
    for h in handles {
        let _ = h.join();
    }
    print_stats(&router);
    ExitCode::FAILURE
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(s: &str) -> Result<Args, String> {
        let v: Vec<String> = s.split_whitespace().map(String::from).collect();
        parse_args(&v)
    }

    #[test]
    fn command_line() {
        let a = args(
            "--vm cid=3,socket=/a --vm=cid=4,socket=/b --hostile badop,count=3 --hostile-target 4",
        )
        .unwrap();
        assert_eq!(
            a.vms[1],
            VmArg {
                cid: 4,
                socket: "/b".into()
            }
        );
        assert_eq!(a.hostile.unwrap().count, 3);
        assert!(args("--vm cid=3,socket=/a --vm cid=3,socket=/b").is_err());
        assert!(args("--vm cid=2,socket=/a").is_err());
        assert!(args("--vm cid=3").is_err());
        assert!(args("--vm cid=3,socket=/a --hostile badop").is_err());
        assert!(args("--vm cid=3,socket=/a --hostile badop --hostile-target 5").is_err());
        assert!(args("").is_err());
        let a = args("--vm cid=3,socket=/a --host-uds /tmp/h.sock").unwrap();
        assert_eq!(a.host_uds, Some(PathBuf::from("/tmp/h.sock")));
        assert!(args("--vm cid=3,socket=/a --host-uds").is_err());
    }
}
