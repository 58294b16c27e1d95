// SPDX-License-Identifier: GPL-2.0

//! The conformance checks: the userspace guest against the host kernel's AF_VSOCK sockets,
//! through the vhost-vsock device under test.  Each check returns Ok(message) or
//! Err(message); the messages carry what the host answered (errnos, ops), so two runs (C
//! `vhost_vsock`, `rvsock_vhost`) can be compared line by line.

use std::path::PathBuf;
use std::thread;
use std::time::{Duration, Instant};

use rvsock_proto::hdr::{
    Hdr, Op, MAX_PKT_PAYLOAD, SEQ_EOM, SEQ_EOR, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_SEQPACKET,
    TYPE_STREAM,
};
use sha2::{Digest, Sha256};
use vhost::VhostBackend;

use crate::dev::{vhost_errno, Device, Setup, VhostFd, F_SEQPACKET, F_VERSION_1};
use crate::guest::{Guest, Key, State, HOST_CID};
use crate::host::{ename, read_to_end, Sock};

/// Check parameters.
#[derive(Clone, Debug)]
pub struct Ctx {
    /// Device node.
    pub dev: PathBuf,
    /// Guest CID.
    pub cid: u64,
    /// Bytes per direction in the data checks.
    pub bytes: usize,
    /// First host port the checks use.
    pub port: u32,
}

/// A check's outcome.
pub type Outcome = Result<String, String>;

/// Host socket timeout.
const T: Duration = Duration::from_secs(10);
const STREAM: i32 = libc::SOCK_STREAM;
const SEQPACKET: i32 = libc::SOCK_SEQPACKET;

fn pattern(seed: u64, n: usize) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..n)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}

fn sha(b: &[u8]) -> String {
    hex(&Sha256::digest(b))
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn e(x: i32) -> String {
    ename(x)
}

fn res<T>(r: &Result<T, i32>) -> String
where
    T: std::fmt::Debug,
{
    match r {
        Ok(v) => format!("ok {v:?}"),
        Err(x) => e(*x),
    }
}

fn join<T>(h: thread::JoinHandle<T>) -> Result<T, String> {
    h.join().map_err(|_| "host thread panicked".to_string())
}

/// A host stream listener on `port` and the guest connected to it (256 KiB of buffer): the
/// guest's connection and the host's accepted socket.
fn g2h_stream(g: &mut Guest, port: u32) -> Result<(Key, Sock), String> {
    let l = Sock::listen(STREAM, port, T).map_err(e)?;
    let h = thread::spawn(move || l.accept(T).map(|(s, _)| s));
    let key = g.connect(port, TYPE_STREAM, 256 * 1024)?;
    let s = join(h)?.map_err(|x| format!("accept: {}", e(x)))?;
    Ok((key, s))
}

fn guest(c: &Ctx, seqpacket: bool) -> Result<Guest, String> {
    Device::new(
        &c.dev,
        Setup {
            cid: c.cid,
            seqpacket,
        },
    )
    .map(Guest::new)
    .map_err(|e| format!("device set-up: {e}"))
}

fn op_names(ops: &[(u16, u32)]) -> String {
    ops.iter()
        .map(|(o, f)| {
            let n = Op::from_u16(*o).map_or_else(|| format!("op{o}"), |o| format!("{o:?}"));
            if *f != 0 {
                format!("{n}({f})")
            } else {
                n
            }
        })
        .collect::<Vec<_>>()
        .join(",")
}

// ---- ioctls and CIDs ----

/// `VHOST_VSOCK_SET_GUEST_CID` refuses the reserved and out-of-range CIDs with EINVAL.
pub fn cid_invalid(c: &Ctx) -> Outcome {
    let v = VhostFd::open(&c.dev).map_err(|e| e.to_string())?;
    let mut bad = Vec::new();
    let mut got = Vec::new();
    for cid in [0u64, 1, 2, u64::from(u32::MAX), 1 << 32, u64::MAX] {
        let r = v.set_cid(cid);
        got.push(format!("{cid:#x}:{}", res(&r)));
        if r != Err(libc::EINVAL) {
            bad.push(cid);
        }
    }
    let r = v.set_cid(u64::from(u32::MAX) - 1);
    got.push(format!("{:#x}:{}", u32::MAX - 1, res(&r)));
    if bad.is_empty() && r.is_ok() {
        Ok(got.join(" "))
    } else {
        Err(format!(
            "expected EINVAL for 0,1,2,U32_MAX,>32 bit and ok for U32_MAX-1: {}",
            got.join(" ")
        ))
    }
}

/// A CID held by another open device gives EADDRINUSE; re-setting one's own CID and moving
/// to another (rehash) work, and the old CID is free again.
pub fn cid_in_use(c: &Ctx) -> Outcome {
    let a = VhostFd::open(&c.dev).map_err(|e| e.to_string())?;
    let b = VhostFd::open(&c.dev).map_err(|e| e.to_string())?;
    let (x, y) = (c.cid + 100, c.cid + 101);
    let steps = [
        ("A=x", a.set_cid(x), Ok(())),
        ("B=x", b.set_cid(x), Err(libc::EADDRINUSE)),
        ("A=x again", a.set_cid(x), Ok(())),
        ("A=y", a.set_cid(y), Ok(())),
        ("B=x", b.set_cid(x), Ok(())),
        ("A=x", a.set_cid(x), Err(libc::EADDRINUSE)),
    ];
    let msg: Vec<String> = steps
        .iter()
        .map(|(n, r, _)| format!("{n}:{}", res(r)))
        .collect();
    drop(b);
    let after = a.set_cid(x);
    let msg = format!("{} closeB,A=x:{}", msg.join(" "), res(&after));
    if steps.iter().all(|(_, r, want)| r == want) && after.is_ok() {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// One ioctl step: its name, the answer, the expected answer (None: recorded only).
type Step = (&'static str, Result<(), i32>, Option<Result<(), i32>>);

/// Owner rules and the other ioctl errors, as upstream answers them.
pub fn ioctl_errors(c: &Ctx) -> Outcome {
    let v = VhostFd::open(&c.dev).map_err(|e| e.to_string())?;
    let verr = |r: Result<(), vhost::Error>| match r {
        Ok(()) => Ok(()),
        Err(e) => Err(vhost_errno(&e).unwrap_or(-1)),
    };
    let mut steps: Vec<Step> = vec![
        (
            "RUNNING=1 before owner",
            v.set_running(1),
            Some(Err(libc::EPERM)),
        ),
        (
            "RUNNING=0 before owner",
            v.set_running(0),
            Some(Err(libc::EPERM)),
        ),
        (
            "MEM_TABLE before owner",
            verr(v.set_mem_table()),
            Some(Err(libc::EPERM)),
        ),
        (
            "VRING_NUM before owner",
            verr(v.set_vring_num(0, 128)),
            Some(Err(libc::EPERM)),
        ),
        ("SET_OWNER", verr(v.set_owner()), Some(Ok(()))),
        (
            "SET_OWNER again",
            verr(v.set_owner()),
            Some(Err(libc::EBUSY)),
        ),
        (
            "VRING_NUM index 2",
            verr(v.set_vring_num(2, 128)),
            Some(Err(libc::ENOBUFS)),
        ),
        (
            "SET_FEATURES bit 40",
            verr(v.set_features(1 << 40)),
            Some(Err(libc::EOPNOTSUPP)),
        ),
        ("RUNNING=1 without rings", v.set_running(1), None),
        ("RUNNING=0", v.set_running(0), Some(Ok(()))),
    ];
    let feat = v.get_features().map_err(|e| format!("GET_FEATURES: {e}"))?;
    let want = F_VERSION_1 | F_SEQPACKET;
    steps.push((
        "GET_FEATURES has VERSION_1|SEQPACKET",
        if feat & want == want { Ok(()) } else { Err(0) },
        Some(Ok(())),
    ));
    let msg: Vec<String> = steps
        .iter()
        .map(|(n, r, _)| format!("{n}:{}", res(r)))
        .collect();
    let msg = format!("{} features={feat:#x}", msg.join(" "));
    if steps
        .iter()
        .all(|(_, r, w)| w.as_ref().is_none_or(|w| w == r))
    {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// The full set-up a VMM does succeeds; features offered and acked.
pub fn setup(c: &Ctx) -> Outcome {
    let g = guest(c, true)?;
    Ok(format!(
        "offered={:#x} acked={:#x} seqpacket={}",
        g.dev.offered,
        g.dev.acked,
        g.dev.seqpacket()
    ))
}

// ---- connections and data ----

/// Guest connects to a host listener on CID 2: RESPONSE with the host's credit, accept()
/// returns the guest's address.
pub fn g2h_connect(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let l = Sock::listen(STREAM, c.port, T).map_err(e)?;
    let h = thread::spawn(move || l.accept(T).map(|(_, a)| (a.cid, a.port)));
    let key = g.connect(c.port, TYPE_STREAM, 256 * 1024)?;
    let a = join(h)?.map_err(|x| format!("accept: {}", e(x)))?;
    let conn = g.conns.get(&key).ok_or("lost connection")?;
    let msg = format!(
        "accept peer=({},{}) peer_buf_alloc={}",
        a.0, a.1, conn.peer_buf_alloc
    );
    if u64::from(a.0) != c.cid || a.1 != key.0 || conn.peer_buf_alloc != 256 * 1024 {
        return Err(msg);
    }
    Ok(msg)
}

/// Host connects to the guest's CID; the guest's listener answers RESPONSE.
pub fn h2g_connect(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let port = 5000;
    g.listeners.insert(port, (TYPE_STREAM, 256 * 1024));
    let cid = c.cid as u32;
    let h = thread::spawn(move || Sock::connect(STREAM, cid, port, T).map(|_| ()));
    g.pump_until(Duration::from_secs(5), |g| !g.accepted.is_empty())?;
    let r = join(h)?;
    let key = g.accepted.pop_front().ok_or(format!(
        "no REQUEST reached the guest; connect: {}",
        res(&r)
    ))?;
    let conn = g.conns.get(&key).ok_or("lost connection")?;
    let msg = format!(
        "connect:{} request from port {} peer_buf_alloc={}",
        res(&r),
        key.1,
        conn.peer_buf_alloc
    );
    r.map_err(|_| msg.clone())?;
    Ok(msg)
}

/// Guest-to-host data on a guest-initiated stream, SHA-256 both ends; the guest never
/// exceeds the host's credit (its sender only sends within it, and the host would reset an
/// overrun with ENOBUFS).
pub fn g2h_data(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let l = Sock::listen(STREAM, c.port + 1, T).map_err(e)?;
    let n = c.bytes;
    let h = thread::spawn(move || {
        let (s, _) = l.accept(T)?;
        let mut d = Sha256::new();
        let (got, end) = read_to_end(&s, n, |b| d.update(b));
        Ok::<_, i32>((got, end, hex(&d.finalize())))
    });
    let key = g.connect(c.port + 1, TYPE_STREAM, 256 * 1024)?;
    let data = pattern(1, n);
    let want = sha(&data);
    let t0 = Instant::now();
    g.write_all(key, &data)?;
    // Keep answering until the host has read everything.
    let until = Instant::now() + Duration::from_secs(30);
    while !h.is_finished() && Instant::now() < until {
        g.pump(Duration::from_millis(50))?;
    }
    let (got, end, hash) = join(h)?.map_err(|x| format!("accept: {}", e(x)))?;
    let secs = t0.elapsed().as_secs_f64();
    let msg = format!(
        "{got} bytes, end {}, sha256 {} ({:.1} MiB/s)",
        res(&end),
        &hash[..16],
        got as f64 / secs / 1048576.0
    );
    if got != n || hash != want {
        return Err(format!("{msg}; want {n} bytes sha256 {}", &want[..16]));
    }
    Ok(msg)
}

/// Host-to-guest data on a host-initiated stream, SHA-256 both ends; the guest advertises a
/// 64 KiB buffer and checks the host never has more than that in flight.
pub fn h2g_data(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let port = 5001;
    g.listeners.insert(port, (TYPE_STREAM, 64 * 1024));
    let cid = c.cid as u32;
    let n = c.bytes;
    let data = pattern(2, n);
    let want = sha(&data);
    let h = thread::spawn(move || {
        let s = Sock::connect(STREAM, cid, port, T).map_err(|x| (0, x))?;
        s.send_all(&data)?;
        Ok::<_, (usize, i32)>(s)
    });
    g.pump_until(Duration::from_secs(5), |g| !g.accepted.is_empty())?;
    let key = g
        .accepted
        .pop_front()
        .ok_or("no REQUEST reached the guest")?;
    if let Some(conn) = g.conns.get_mut(&key) {
        conn.auto_read = true;
    }
    let t0 = Instant::now();
    let mut d = Sha256::new();
    let mut got = 0usize;
    let until = Instant::now() + Duration::from_secs(60);
    while got < n && Instant::now() < until {
        g.pump_until(Duration::from_millis(100), |g| {
            g.conns
                .get(&key)
                .is_none_or(|c| !c.rx.is_empty() || c.state == State::Reset)
        })?;
        let Some(conn) = g.conns.get_mut(&key) else {
            break;
        };
        let b: Vec<u8> = conn.rx.drain(..).collect();
        got += b.len();
        d.update(&b);
        if conn.state == State::Reset {
            break;
        }
    }
    let hs = join(h)?;
    let hash = hex(&d.finalize());
    let conn = g.conns.get(&key).ok_or("lost connection")?;
    let secs = t0.elapsed().as_secs_f64();
    let msg = format!(
        "{got} bytes, host send {}, sha256 {}, overrun {:?} ({:.1} MiB/s)",
        match &hs {
            Ok(_) => "ok".to_string(),
            Err((n, x)) => format!("{} after {n}", e(*x)),
        },
        &hash[..16],
        conn.overrun,
        got as f64 / secs / 1048576.0
    );
    if got != n || hash != want || conn.overrun.is_some() || hs.is_err() {
        return Err(format!("{msg}; want {n} bytes sha256 {}", &want[..16]));
    }
    Ok(msg)
}

/// The host fills exactly the window the guest advertised (32 KiB) and stops; after the guest
/// consumes and sends CREDIT_UPDATE, the rest flows.
pub fn credit_host_respects(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let port = 5002;
    let win = 32 * 1024;
    g.listeners.insert(port, (TYPE_STREAM, win));
    let cid = c.cid as u32;
    let n = 256 * 1024;
    let data = pattern(3, n);
    let want = sha(&data);
    let h = thread::spawn(move || {
        let s = Sock::connect(STREAM, cid, port, T).map_err(|x| (0, x))?;
        s.send_all(&data)?;
        Ok::<_, (usize, i32)>(s)
    });
    g.pump_until(Duration::from_secs(5), |g| !g.accepted.is_empty())?;
    let key = g
        .accepted
        .pop_front()
        .ok_or("no REQUEST reached the guest")?;
    g.pump(Duration::from_millis(1500))?;
    let first = g.conns.get(&key).map(|c| c.rx_total).unwrap_or(0);
    let mut d = Sha256::new();
    let mut got = 0usize;
    let until = Instant::now() + Duration::from_secs(30);
    while got < n && Instant::now() < until {
        let b = g.consume(key, usize::MAX);
        got += b.len();
        d.update(&b);
        if !b.is_empty() {
            g.send_on(key, Op::CreditUpdate, 0, &[])?;
        }
        g.pump_until(Duration::from_millis(200), |g| {
            g.conns.get(&key).is_none_or(|c| !c.rx.is_empty())
        })?;
    }
    let hs = join(h)?;
    let conn = g.conns.get(&key).ok_or("lost connection")?;
    let hash = hex(&d.finalize());
    let msg = format!(
        "stalled at {first} of window {win}; then {got} bytes, sha256 {}, overrun {:?}, host send {}",
        &hash[..16],
        conn.overrun,
        if hs.is_ok() { "ok" } else { "failed" }
    );
    if first != win || got != n || hash != want || conn.overrun.is_some() || hs.is_err() {
        return Err(msg);
    }
    Ok(msg)
}

/// The guest honours a small host buffer (64 KiB): it stops at exactly the window, CREDIT_REQUEST
/// is answered with CREDIT_UPDATE, and the host's reads send credit that lets the rest through.
pub fn credit_guest_respects(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let win: u32 = 64 * 1024;
    let l = Sock::listen(STREAM, c.port + 2, T).map_err(e)?;
    l.set_buffer_size(u64::from(win)).map_err(e)?;
    let (tx, rx) = std::sync::mpsc::channel::<()>();
    let n = 4 * win as usize;
    let h = thread::spawn(move || {
        let (s, _) = l.accept(T)?;
        // Read only once the guest has filled the window.
        let _ = rx.recv_timeout(T);
        let mut d = Sha256::new();
        let (got, end) = read_to_end(&s, n, |b| d.update(b));
        Ok::<_, i32>((got, end, hex(&d.finalize())))
    });
    let key = g.connect(c.port + 2, TYPE_STREAM, 256 * 1024)?;
    let data = pattern(4, n);
    let want = sha(&data);
    let peer_buf = g.conns.get(&key).map(|c| c.peer_buf_alloc).unwrap_or(0);
    // Fill the window: the sender stops at zero credit.
    let mut sent = 0usize;
    while let Some(cr) = g.conns.get(&key).map(|c| c.credit()) {
        if cr == 0 || sent >= n {
            break;
        }
        let k = (cr as usize).min(MAX_PKT_PAYLOAD as usize).min(n - sent);
        g.send_on(key, Op::Rw, 0, &data[sent..sent + k])?;
        sent += k;
    }
    let filled = sent;
    g.send_on(key, Op::CreditRequest, 0, &[])?;
    let before = g.conns.get(&key).map(|c| c.credit_updates).unwrap_or(0);
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.credit_updates > before)
    })?;
    let (cu, peer_fwd, st) = g
        .conns
        .get(&key)
        .map(|c| (c.credit_updates > before, c.peer_fwd_cnt, c.state))
        .ok_or("lost connection")?;
    let _ = tx.send(());
    g.write_all(key, &data[sent..])?;
    let until = Instant::now() + Duration::from_secs(20);
    while !h.is_finished() && Instant::now() < until {
        g.pump(Duration::from_millis(50))?;
    }
    let (got, end, hash) = join(h)?.map_err(|x| format!("accept: {}", e(x)))?;
    let msg = format!(
        "peer_buf_alloc {peer_buf}, filled {filled}, CREDIT_REQUEST answered {cu} (fwd_cnt {peer_fwd}), state {st:?}; host read {got} end {} sha256 {}",
        res(&end),
        &hash[..16]
    );
    if peer_buf != win
        || filled != win as usize
        || !cu
        || st != State::Established
        || got != n
        || hash != want
    {
        return Err(msg);
    }
    Ok(msg)
}

// ---- shutdown and reset ----

/// Guest SHUTDOWN(SEND): the host reads EOF and can still send; guest SHUTDOWN(RCV): the
/// host's send fails with EPIPE.
pub fn shutdown_g2h(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let (key, s) = g2h_stream(&mut g, c.port + 3)?;
    g.send_on(key, Op::Rw, 0, b"last")?;
    g.send_on(key, Op::Shutdown, SHUTDOWN_SEND, &[])?;
    let mut b = [0u8; 16];
    let r1 = s.recv(&mut b, 0);
    let r2 = s.recv(&mut b, 0);
    let sent = s.send(b"pong", 0);
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.rx.len() >= 4)
    })?;
    let pong = g.consume(key, 4);
    g.send_on(key, Op::Shutdown, SHUTDOWN_RCV | SHUTDOWN_SEND, &[])?;
    // The host answers a full shutdown with RST when it has nothing unread.
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.state == State::Reset)
    })?;
    let after = s.send(b"x", 0);
    let ops = g
        .conns
        .get(&key)
        .map(|c| op_names(&c.ops))
        .unwrap_or_default();
    let msg = format!(
        "host recv {} then {}; host send {}, guest got {:?}; after full shutdown host send {}; ops {ops}",
        res(&r1),
        res(&r2),
        res(&sent),
        String::from_utf8_lossy(&pong),
        res(&after)
    );
    if r1 != Ok(4) || r2 != Ok(0) || sent != Ok(4) || pong != b"pong" || after != Err(libc::EPIPE) {
        return Err(msg);
    }
    Ok(msg)
}

/// Host shutdown(SHUT_WR) reaches the guest as SHUTDOWN(SEND), SHUT_RD as SHUTDOWN(RCV); the
/// guest can still send after the host's SHUT_WR; close() then sends nothing new and the
/// guest's RST completes it.
pub fn shutdown_h2g(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let port = 5003;
    g.listeners.insert(port, (TYPE_STREAM, 256 * 1024));
    let cid = c.cid as u32;
    let h = thread::spawn(move || Sock::connect(STREAM, cid, port, T));
    g.pump_until(Duration::from_secs(5), |g| !g.accepted.is_empty())?;
    let key = g
        .accepted
        .pop_front()
        .ok_or("no REQUEST reached the guest")?;
    let s = join(h)?.map_err(|x| format!("connect: {}", e(x)))?;
    let wr = s.shutdown(libc::SHUT_WR);
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.peer_shutdown != 0)
    })?;
    let f1 = g.conns.get(&key).map(|c| c.peer_shutdown).unwrap_or(0);
    g.send_on(key, Op::Rw, 0, b"hello")?;
    let mut b = [0u8; 16];
    let r = s.recv(&mut b, 0);
    let rd = s.shutdown(libc::SHUT_RD);
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.peer_shutdown == 3)
    })?;
    let f2 = g.conns.get(&key).map(|c| c.peer_shutdown).unwrap_or(0);
    drop(s);
    g.pump(Duration::from_millis(500))?;
    let ops = g
        .conns
        .get(&key)
        .map(|c| op_names(&c.ops))
        .unwrap_or_default();
    g.send_on(key, Op::Rst, 0, &[])?;
    let msg = format!(
        "SHUT_WR {} -> peer_shutdown {f1}; host recv {}; SHUT_RD {} -> {f2}; ops {ops}",
        res(&wr),
        res(&r),
        res(&rd)
    );
    if f1 != SHUTDOWN_SEND || r != Ok(5) || f2 != 3 {
        return Err(msg);
    }
    Ok(msg)
}

/// A REQUEST to a host port with no listener is answered with RST (addresses swapped, type
/// kept, no credit); the same for SEQPACKET when negotiated.
pub fn rst_no_listener_g2h(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let mut msgs = Vec::new();
    let mut ok = true;
    let types: &[u16] = if g.dev.seqpacket() {
        &[TYPE_STREAM, TYPE_SEQPACKET]
    } else {
        &[TYPE_STREAM]
    };
    for &t in types {
        let r = g.connect(c.port + 50, t, 4096);
        let key = g
            .conns
            .keys()
            .copied()
            .find(|k| k.1 == c.port + 50 && g.conns[k].type_ == t);
        let rst = key
            .and_then(|k| g.conns.get(&k))
            .map(|c| op_names(&c.ops))
            .unwrap_or_default();
        msgs.push(format!(
            "type {t}: connect {:?}, ops {rst}",
            r.as_ref().err()
        ));
        ok &= r.as_ref().err().map(String::as_str) == Some("Reset") && rst == "Rst";
        if let Some(k) = key {
            g.conns.remove(&k);
        }
    }
    if ok {
        Ok(msgs.join("; "))
    } else {
        Err(msgs.join("; "))
    }
}

/// The host connecting to a guest port with no listener gets the guest's RST: ECONNRESET.
pub fn rst_no_listener_h2g(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let cid = c.cid as u32;
    let h = thread::spawn(move || Sock::connect(STREAM, cid, 5999, T).map(|_| ()));
    let until = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() && Instant::now() < until {
        g.pump(Duration::from_millis(50))?;
    }
    let r = join(h)?;
    let msg = format!("connect {}", res(&r));
    if r != Err(libc::ECONNRESET) {
        return Err(msg);
    }
    Ok(msg)
}

/// The guest resets an established connection: the host socket reads EOF, send gives EPIPE.
pub fn rst_g2h_established(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let (key, s) = g2h_stream(&mut g, c.port + 4)?;
    g.send_on(key, Op::Rst, 0, &[])?;
    let ev = s.poll(libc::POLLIN | libc::POLLRDHUP, Duration::from_secs(3));
    let soerr = s.so_error();
    let mut b = [0u8; 8];
    let r = s.recv(&mut b, 0);
    let w = s.send(b"x", 0);
    g.pump(Duration::from_millis(200))?;
    let stray = g.stray.len();
    let msg = format!(
        "poll {ev:#x}, SO_ERROR {soerr}, recv {}, send {}, packets after RST {stray}",
        res(&r),
        res(&w)
    );
    if ev == 0 || r != Ok(0) || w != Err(libc::EPIPE) {
        return Err(msg);
    }
    Ok(msg)
}

/// The host closes an accepted connection: SHUTDOWN(RCV|SEND) reaches the guest; the guest's
/// RST then completes the close (no further packet).
pub fn close_host(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let (key, s) = g2h_stream(&mut g, c.port + 5)?;
    drop(s);
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.peer_shutdown == 3)
    })?;
    g.send_on(key, Op::Rst, 0, &[])?;
    g.pump(Duration::from_millis(300))?;
    let ops = g
        .conns
        .get(&key)
        .map(|c| op_names(&c.ops))
        .unwrap_or_default();
    let msg = format!("ops {ops}, stray after RST {}", g.stray.len());
    if ops != "Response,Shutdown(3)" || !g.stray.is_empty() {
        return Err(msg);
    }
    Ok(msg)
}

// ---- SEQPACKET ----

const SEQ_SIZES: [usize; 7] = [1, 100, 4096, 4097, 10000, 65536, 200_000];

/// Guest-to-host SEQPACKET: message boundaries and MSG_EOR survive, messages larger than a
/// packet are split by the guest with SEQ_EOM on the last piece only.
pub fn seqpacket_g2h(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    if !g.dev.seqpacket() {
        return Ok("skipped: SEQPACKET not offered".into());
    }
    let l = Sock::listen(SEQPACKET, c.port + 6, T).map_err(e)?;
    let h = thread::spawn(move || {
        let (s, _) = l.accept(T)?;
        let mut out = Vec::new();
        let mut b = vec![0u8; 256 * 1024];
        for _ in SEQ_SIZES {
            let (n, f) = s.recv_msg(&mut b)?;
            out.push((n, f & libc::MSG_EOR != 0, sha(&b[..n])));
        }
        Ok::<_, i32>(out)
    });
    let key = g.connect(c.port + 6, TYPE_SEQPACKET, 256 * 1024)?;
    let mut want = Vec::new();
    for (i, &n) in SEQ_SIZES.iter().enumerate() {
        let m = pattern(10 + i as u64, n);
        let eor = i % 2 == 0;
        want.push((n, eor, sha(&m)));
        let mut off = 0;
        while off < n {
            let k = (n - off).min(MAX_PKT_PAYLOAD as usize);
            let cr = g.conns.get(&key).map(|c| c.credit() as usize).unwrap_or(0);
            if cr < k {
                g.pump_until(Duration::from_millis(200), |g| {
                    g.conns.get(&key).is_none_or(|c| c.credit() as usize >= k)
                })?;
                if g.conns.get(&key).map(|c| c.state) != Some(State::Established) {
                    return Err("connection lost".into());
                }
                continue;
            }
            let last = off + k == n;
            let flags = if last {
                SEQ_EOM | if eor { SEQ_EOR } else { 0 }
            } else {
                0
            };
            g.send_on(key, Op::Rw, flags, &m[off..off + k])?;
            off += k;
        }
    }
    let until = Instant::now() + Duration::from_secs(20);
    while !h.is_finished() && Instant::now() < until {
        g.pump(Duration::from_millis(50))?;
    }
    let got = join(h)?.map_err(|x| format!("host recvmsg: {}", e(x)))?;
    let desc: Vec<String> = got
        .iter()
        .map(|(n, eor, _)| format!("{n}{}", if *eor { "+EOR" } else { "" }))
        .collect();
    let msg = format!("host got {}", desc.join(","));
    if got != want {
        return Err(msg);
    }
    Ok(msg)
}

/// Host-to-guest SEQPACKET: the device splits messages over the guest's 4 KiB buffers and keeps
/// SEQ_EOM/SEQ_EOR on the last piece only.
pub fn seqpacket_h2g(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    if !g.dev.seqpacket() {
        return Ok("skipped: SEQPACKET not offered".into());
    }
    let port = 5004;
    g.listeners.insert(port, (TYPE_SEQPACKET, 256 * 1024));
    let cid = c.cid as u32;
    let mut want = Vec::new();
    let mut msgs = Vec::new();
    for (i, &n) in SEQ_SIZES.iter().enumerate() {
        let m = pattern(20 + i as u64, n);
        want.push((n, i % 2 == 1, sha(&m)));
        msgs.push((m, i % 2 == 1));
    }
    let h = thread::spawn(move || {
        let s = Sock::connect(SEQPACKET, cid, port, T)?;
        for (m, eor) in &msgs {
            s.send_msg(m, *eor)?;
        }
        Ok::<_, i32>(s)
    });
    g.pump_until(Duration::from_secs(5), |g| !g.accepted.is_empty())?;
    let key = g
        .accepted
        .pop_front()
        .ok_or("no REQUEST reached the guest")?;
    if let Some(conn) = g.conns.get_mut(&key) {
        conn.auto_read = true;
    }
    g.pump_until(Duration::from_secs(20), |g| {
        g.conns
            .get(&key)
            .is_none_or(|c| c.msgs.len() >= SEQ_SIZES.len())
    })?;
    let hs = join(h)?;
    let conn = g.conns.get(&key).ok_or("lost connection")?;
    let got: Vec<(usize, bool, String)> = conn
        .msgs
        .iter()
        .map(|(m, eor)| (m.len(), *eor, sha(m)))
        .collect();
    let pieces = conn.ops.iter().filter(|(o, _)| *o == Op::Rw as u16).count();
    let desc: Vec<String> = got
        .iter()
        .map(|(n, eor, _)| format!("{n}{}", if *eor { "+EOR" } else { "" }))
        .collect();
    let msg = format!(
        "guest got {} in {pieces} RW packets, host send {}, overrun {:?}",
        desc.join(","),
        res(&hs.as_ref().map(|_| ()).map_err(|x| *x)),
        conn.overrun
    );
    if got != want || hs.is_err() || conn.overrun.is_some() {
        return Err(msg);
    }
    Ok(msg)
}

/// Without VIRTIO_VSOCK_F_SEQPACKET acked, a host SEQPACKET connect to the guest fails and a
/// guest SEQPACKET REQUEST is refused.
pub fn seqpacket_not_negotiated(c: &Ctx) -> Outcome {
    let mut g = guest(c, false)?;
    let cid = c.cid as u32;
    g.listeners.insert(5005, (TYPE_SEQPACKET, 65536));
    let h = thread::spawn(move || Sock::connect(SEQPACKET, cid, 5005, T).map(|_| ()));
    let until = Instant::now() + Duration::from_secs(5);
    while !h.is_finished() && Instant::now() < until {
        g.pump(Duration::from_millis(50))?;
    }
    let r = join(h)?;
    let l = Sock::listen(SEQPACKET, c.port + 7, T).map_err(e)?;
    let gr = g.connect(c.port + 7, TYPE_SEQPACKET, 65536);
    let acc = l.accept(Duration::from_millis(500)).map(|_| ());
    let msg = format!(
        "host connect {}; guest REQUEST {:?}; host accept {}",
        res(&r),
        gr,
        res(&acc)
    );
    if r != Err(libc::ESOCKTNOSUPPORT) || gr.is_ok() {
        return Err(msg);
    }
    Ok(msg)
}

// ---- addressing ----

/// A host connect to a CID no guest has fails (upstream: ENODEV).
pub fn connect_no_guest(c: &Ctx) -> Outcome {
    let _g = guest(c, true)?;
    let r = Sock::connect(STREAM, (c.cid + 1000) as u32, 1234, T).map(|_| ());
    let msg = format!("connect to CID {}: {}", c.cid + 1000, res(&r));
    if r != Err(libc::ENODEV) {
        return Err(msg);
    }
    Ok(msg)
}

/// Packets with a wrong source CID or a destination other than the host are dropped: no
/// connection, no RST.
pub fn wrong_cids(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let l = Sock::listen(STREAM, c.port + 8, T).map_err(e)?;
    let mut msgs = Vec::new();
    for (what, src, dst) in [
        ("src_cid+1", c.cid + 1, HOST_CID),
        ("dst_cid 1", c.cid, 1),
        ("dst_cid 5", c.cid, 5),
    ] {
        let h = Hdr {
            src_cid: src,
            dst_cid: dst,
            src_port: 777,
            dst_port: c.port + 8,
            type_: TYPE_STREAM,
            op: Op::Request as u16,
            buf_alloc: 4096,
            ..Hdr::default()
        };
        g.send_hdr(&h, &[])?;
        g.pump(Duration::from_millis(300))?;
        msgs.push(format!(
            "{what}: accept {} stray {}",
            res(&l.accept(Duration::from_millis(200)).map(|_| ())),
            g.stray.len()
        ));
    }
    // The device still works after them.
    let ok = g.connect(c.port + 8, TYPE_STREAM, 4096).is_ok();
    let acc = l.accept(Duration::from_secs(2)).is_ok();
    let msg = format!("{}; then connect {ok} accept {acc}", msgs.join("; "));
    if !g.stray.is_empty() || !ok || !acc || msgs.iter().any(|m| !m.contains("accept ETIMEDOUT")) {
        return Err(msg);
    }
    Ok(msg)
}

// ---- release ----

/// Closing the device with connections open: what each host socket sees (upstream resets
/// them: SOCK_DONE, peer shutdown, ECONNRESET); the CID is free again afterwards.
pub fn release_with_connections(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    // g2h connection, with 100 bytes the host has not read.
    let (k1, a) = g2h_stream(&mut g, c.port + 9)?;
    g.send_on(k1, Op::Rw, 0, &[7u8; 100])?;
    // h2g connection, idle.
    g.listeners.insert(5006, (TYPE_STREAM, 256 * 1024));
    let cid = c.cid as u32;
    let h = thread::spawn(move || Sock::connect(STREAM, cid, 5006, T));
    g.pump_until(Duration::from_secs(5), |g| !g.accepted.is_empty())?;
    let b = join(h)?.map_err(|x| format!("connect: {}", e(x)))?;
    // A host sender blocked on credit (guest buffer 4 KiB, nothing consumed).
    g.listeners.insert(5007, (TYPE_STREAM, 4096));
    let h3 = thread::spawn(move || {
        let s = Sock::connect(STREAM, cid, 5007, T).map_err(|x| (0, x))?;
        s.send_all(&[1u8; 65536])
    });
    g.pump(Duration::from_millis(800))?;
    a.poll(libc::POLLIN, Duration::from_secs(2));
    drop(g);
    let t0 = Instant::now();
    let mut out = Vec::new();
    let mut ok = true;
    for (name, s, unread) in [("g2h", &a, true), ("h2g", &b, false)] {
        let ev = s.poll(libc::POLLIN | libc::POLLRDHUP, Duration::from_secs(3));
        let soerr = s.so_error();
        let mut buf = [0u8; 256];
        let r1 = s.recv(&mut buf, libc::MSG_DONTWAIT);
        let r2 = s.recv(&mut buf, libc::MSG_DONTWAIT);
        let w = s.send(b"x", libc::MSG_DONTWAIT);
        out.push(format!(
            "{name}: poll {ev:#x} SO_ERROR {} recv {} then {} send {}",
            if soerr == 0 { "0".into() } else { e(soerr) },
            res(&r1),
            res(&r2),
            res(&w)
        ));
        ok &= ev != 0 && w.is_err() && (!unread || r1 == Ok(100));
    }
    let blocked = join(h3)?;
    out.push(format!(
        "blocked sender: {}",
        match blocked {
            Ok(()) => "ok".to_string(),
            Err((n, x)) => format!("{} after {n}", e(x)),
        }
    ));
    let reconnect = Sock::connect(STREAM, cid, 5006, T).map(|_| ());
    out.push(format!("connect after release {}", res(&reconnect)));
    let again = VhostFd::open(&c.dev)
        .map_err(|e| e.to_string())?
        .set_cid(c.cid);
    out.push(format!(
        "CID reuse {} ({:.1}s)",
        res(&again),
        t0.elapsed().as_secs_f64()
    ));
    ok &= reconnect == Err(libc::ENODEV) && again.is_ok();
    let msg = out.join("; ");
    if ok {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// A check.
pub type Check = fn(&Ctx) -> Outcome;

/// A host socket closed while its guest goes away: upstream's release does not reset sockets
/// whose close timer is pending, so the socket keeps (cid, port) until the timer (8 s) sends its
/// RST; a new guest with the same CID connecting from the same port to the same host port is
/// not answered until then.  Records each attempt and when the address works again.
pub fn release_closing_lingers(c: &Ctx) -> Outcome {
    let mut g = guest(c, true)?;
    let hport = c.port + 10;
    let l = std::sync::Arc::new(Sock::listen(STREAM, hport, T).map_err(e)?);
    let l2 = l.clone();
    let h = thread::spawn(move || l2.accept(T).map(|(s, _)| s));
    let key = g.connect(hport, TYPE_STREAM, 256 * 1024)?;
    let s = join(h)?.map_err(|x| format!("accept: {}", e(x)))?;
    drop(s);
    g.pump_until(Duration::from_secs(3), |g| {
        g.conns.get(&key).is_some_and(|c| c.peer_shutdown == 3)
    })?;
    // No RST from the guest: the host socket waits in its close timer.  Now the guest goes.
    drop(g);
    let t0 = Instant::now();
    let mut g = guest(c, true)?;
    let mut tries = Vec::new();
    let mut ok = false;
    while t0.elapsed() < Duration::from_secs(15) {
        let l2 = l.clone();
        let h = thread::spawn(move || l2.accept(Duration::from_secs(6)).map(|_| ()));
        let started = t0.elapsed().as_secs_f64();
        let r = g.connect_from(key.0, hport, TYPE_STREAM, 256 * 1024);
        let ended = t0.elapsed().as_secs_f64();
        let a = join(h)?;
        tries.push(format!(
            "{started:.1}-{ended:.1}s: {}",
            match &r {
                Ok(_) => "established".to_string(),
                Err(x) => x.clone(),
            }
        ));
        if r.is_ok() && a.is_ok() {
            ok = true;
            break;
        }
        g.conns.remove(&key);
    }
    let msg = format!("same (cid, port) after release: {}", tries.join("; "));
    if ok {
        Ok(msg)
    } else {
        Err(msg)
    }
}

/// All checks, in order.
pub const CHECKS: &[(&str, Check)] = &[
    ("cid-invalid", cid_invalid),
    ("cid-in-use", cid_in_use),
    ("ioctl-errors", ioctl_errors),
    ("setup", setup),
    ("g2h-connect", g2h_connect),
    ("h2g-connect", h2g_connect),
    ("g2h-data-sha256", g2h_data),
    ("h2g-data-sha256", h2g_data),
    ("credit-host-respects-guest", credit_host_respects),
    ("credit-guest-respects-host", credit_guest_respects),
    ("shutdown-g2h", shutdown_g2h),
    ("shutdown-h2g", shutdown_h2g),
    ("close-host", close_host),
    ("rst-no-listener-g2h", rst_no_listener_g2h),
    ("rst-no-listener-h2g", rst_no_listener_h2g),
    ("rst-g2h-established", rst_g2h_established),
    ("seqpacket-g2h", seqpacket_g2h),
    ("seqpacket-h2g", seqpacket_h2g),
    ("seqpacket-not-negotiated", seqpacket_not_negotiated),
    ("connect-no-guest", connect_no_guest),
    ("wrong-cids", wrong_cids),
    ("release-with-connections", release_with_connections),
    ("release-closing-lingers", release_closing_lingers),
];
