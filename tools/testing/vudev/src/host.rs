// SPDX-License-Identifier: GPL-2.0

//! The host endpoint (`--host-uds PREFIX`): a guest's STREAM connection to CID 2 port `P` is
//! bridged to the host's Unix stream socket `PREFIX_P` (vhost-device-vsock's convention).
//!
//! Only the guest connects (REQUEST -> connect the Unix socket -> RESPONSE, or RST when the
//! connect fails).  Everything runs on the guest's worker thread: the Unix sockets sit in an
//! epoll of their own whose fd the worker polls (`HOST_EVENT`), and the packets for the guest go
//! to the guest's queue like relayed ones, so they are split over its RX buffers the same way.
//!
//! Credit, both ways, as a virtio-vsock peer:
//!
//! - Guest to host: the endpoint advertises `buf_alloc` ([`HOST_BUF_ALLOC`]) and `fwd_cnt` =
//!   the bytes written to the Unix socket.  RW payload the socket does not take at once waits in
//!   a per-connection buffer, which the guest's credit bounds by `buf_alloc`; a guest that sends
//!   beyond its credit is reset.  A CREDIT_UPDATE goes out when the guest's view of the free
//!   space (`buf_alloc - (received - fwd_cnt last advertised)`) fell below half of `buf_alloc`
//!   and more was written since, and in answer to CREDIT_REQUEST.
//! - Host to guest: bytes are read from the Unix socket only within the guest's credit
//!   (`buf_alloc + fwd_cnt - tx_cnt` from its latest header), at most 64 KiB per RW packet,
//!   and only while the guest's queue has room; otherwise the socket is taken out of the epoll
//!   until the credit (or the room) is back.
//!
//! Shutdown and reset: the guest's SHUTDOWN(SEND) shuts the Unix socket's write side once the
//! buffered bytes are written; SHUTDOWN with both flags (a guest close) is answered with an RST
//! once they are written, and the Unix socket is closed.  The host's EOF becomes a SHUTDOWN with
//! SEND (and RCV too when the host closed the socket: `EPOLLHUP`), after the data before it.  An
//! RST from the guest closes the Unix socket; an error on it resets the guest's connection.
//!
//! Every packet from the guest is untrusted: unknown connections get an RST (as a socket-less
//! peer answers), bad operations or types reset the connection, nothing panics.

use std::collections::HashMap;
use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::net::Shutdown;
use std::os::fd::{AsRawFd, FromRawFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use rvsock_proto::hdr::{
    Hdr, Op, HDR_LEN, MAX_PKT_PAYLOAD, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_STREAM,
};
use vmm_sys_util::epoll::{ControlOperation, Epoll, EpollEvent, EventSet};

use crate::pkt::Packet;
use crate::{log_at, Level};

/// The host's CID.
pub const HOST_CID: u64 = 2;
/// Receive buffer the endpoint advertises per connection (Linux's default).
pub const HOST_BUF_ALLOC: u32 = 256 * 1024;
/// Connections at most; REQUESTs beyond are refused with an RST.
pub const MAX_CONNS: usize = 1024;
const BOTH: u32 = SHUTDOWN_RCV | SHUTDOWN_SEND;

/// One bridged connection.
#[derive(Debug)]
struct Conn {
    sock: UnixStream,
    /// Guest to host bytes not yet written to the socket: `pending[off..]`.
    pending: Vec<u8>,
    off: usize,
    /// Payload bytes received from the guest.
    rx_cnt: u32,
    /// Bytes written to the Unix socket (our `fwd_cnt`).
    fwd_cnt: u32,
    /// The `fwd_cnt` the guest saw last.
    adv_fwd: u32,
    /// The guest's receive buffer and its consumed count, from its latest header.
    peer_buf_alloc: u32,
    peer_fwd_cnt: u32,
    /// Payload bytes sent to the guest.
    tx_cnt: u32,
    /// SHUTDOWN flags received from the guest.
    guest_shut: u32,
    /// The Unix socket reached EOF (SHUTDOWN sent to the guest).
    host_eof: bool,
    /// The Unix socket's write side was shut.
    wr_shut: bool,
    /// The guest closed: RST and close once `pending` is written.
    closing: bool,
    /// The events the socket is registered for in the epoll (empty: not registered).
    interest: EventSet,
}

impl Conn {
    fn new(sock: UnixStream, req: &Hdr) -> Conn {
        Conn {
            sock,
            pending: Vec::new(),
            off: 0,
            rx_cnt: 0,
            fwd_cnt: 0,
            adv_fwd: 0,
            peer_buf_alloc: req.buf_alloc,
            peer_fwd_cnt: req.fwd_cnt,
            tx_cnt: 0,
            guest_shut: 0,
            host_eof: false,
            wr_shut: false,
            closing: false,
            interest: EventSet::empty(),
        }
    }

    fn pending_len(&self) -> usize {
        self.pending.len() - self.off
    }

    /// What the guest lets us send: `buf_alloc - (tx_cnt - fwd_cnt)`, 0 if it claims less.
    fn credit(&self) -> u32 {
        let in_flight = self.tx_cnt.wrapping_sub(self.peer_fwd_cnt);
        self.peer_buf_alloc.saturating_sub(in_flight)
    }

    /// Writes what the socket takes of `pending`; an error means the connection is dead.
    fn flush(&mut self) -> io::Result<()> {
        while self.off < self.pending.len() {
            match self.sock.write(&self.pending[self.off..]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(n) => {
                    self.off += n;
                    self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        if self.off == self.pending.len() {
            self.pending.clear();
            self.off = 0;
        } else if self.off > self.pending.len() / 2 {
            self.pending.drain(..self.off);
            self.off = 0;
        }
        Ok(())
    }

    /// Takes RW payload from the guest: written at once as far as the socket takes it, the
    /// rest kept.
    fn take(&mut self, payload: &[u8]) -> io::Result<()> {
        self.rx_cnt = self.rx_cnt.wrapping_add(payload.len() as u32);
        let mut done = 0;
        if self.pending_len() == 0 {
            while done < payload.len() {
                match self.sock.write(&payload[done..]) {
                    Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                    Ok(n) => {
                        done += n;
                        self.fwd_cnt = self.fwd_cnt.wrapping_add(n as u32);
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
        }
        self.pending.extend_from_slice(&payload[done..]);
        Ok(())
    }
}

/// Connects a non-blocking Unix stream socket to `path` without waiting: a listener whose
/// backlog is full refuses (EAGAIN) instead of stalling the device's worker.
fn connect_nonblocking(path: &Path) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: sockaddr_un is plain old data; all zeroes is a valid value.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= addr.sun_path.len() || bytes.contains(&0) {
        return Err(io::ErrorKind::InvalidInput.into());
    }
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (d, s) in addr.sun_path.iter_mut().zip(bytes) {
        *d = *s as libc::c_char;
    }
    // SAFETY: a plain socket(2) call; the fd is checked and owned below.
    let fd = unsafe {
        libc::socket(
            libc::AF_UNIX,
            libc::SOCK_STREAM | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            0,
        )
    };
    if fd < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: fd is a fresh socket nobody else owns; the stream closes it when dropped.
    let sock = unsafe { UnixStream::from_raw_fd(fd) };
    let len = std::mem::size_of::<libc::sa_family_t>() + bytes.len() + 1;
    // SAFETY: addr is a valid sockaddr_un of at least len bytes, fd a socket.
    let r = unsafe {
        libc::connect(
            fd,
            std::ptr::addr_of!(addr).cast::<libc::sockaddr>(),
            len as libc::socklen_t,
        )
    };
    if r < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(sock)
}

/// The host endpoint of one guest.
#[derive(Debug)]
pub struct HostEnd {
    prefix: PathBuf,
    cid: u64,
    buf_alloc: u32,
    epoll: Epoll,
    /// By (guest port, host port).
    conns: HashMap<(u32, u32), Conn>,
    /// Some connection could not read for want of room in the guest's queue.
    throttled: bool,
    /// Connections opened, in all.
    pub opened: u64,
    /// REQUESTs refused (connect failed, too many connections).
    pub refused: u64,
}

fn key_of(token: u64) -> (u32, u32) {
    ((token >> 32) as u32, token as u32)
}

fn token_of(k: (u32, u32)) -> u64 {
    (u64::from(k.0) << 32) | u64::from(k.1)
}

impl HostEnd {
    /// An endpoint for the guest `cid` bridging to `PREFIX_<port>`.
    pub fn new(prefix: PathBuf, cid: u64) -> io::Result<HostEnd> {
        Ok(HostEnd {
            prefix,
            cid,
            buf_alloc: HOST_BUF_ALLOC,
            epoll: Epoll::new()?,
            conns: HashMap::new(),
            throttled: false,
            opened: 0,
            refused: 0,
        })
    }

    /// The epoll fd to poll for the Unix sockets' events.
    pub fn fd(&self) -> RawFd {
        self.epoll.as_raw_fd()
    }

    /// Open connections.
    #[cfg(test)]
    pub fn len(&self) -> usize {
        self.conns.len()
    }

    /// Whether some connection waits for room in the guest's queue.
    pub fn throttled(&self) -> bool {
        self.throttled
    }

    fn path(&self, port: u32) -> PathBuf {
        let mut p = self.prefix.as_os_str().to_owned();
        p.push(OsStr::new(&format!("_{port}")));
        PathBuf::from(p)
    }

    fn hdr(&self, k: (u32, u32), op: Op, flags: u32, fwd_cnt: u32) -> Hdr {
        Hdr {
            src_cid: HOST_CID,
            dst_cid: self.cid,
            src_port: k.1,
            dst_port: k.0,
            len: 0,
            type_: TYPE_STREAM,
            op: op as u16,
            flags,
            buf_alloc: self.buf_alloc,
            fwd_cnt,
        }
    }

    fn remove(&mut self, k: (u32, u32)) {
        if let Some(c) = self.conns.remove(&k) {
            if !c.interest.is_empty() {
                let _ = self.epoll.ctl(
                    ControlOperation::Delete,
                    c.sock.as_raw_fd(),
                    EpollEvent::default(),
                );
            }
        }
    }

    /// Resets a connection: RST to the guest, the Unix socket closed.
    fn reset(&mut self, k: (u32, u32), out: &mut Vec<Packet>) {
        log_at!(
            Level::Debug,
            "host: cid {} port {}->{}: reset",
            self.cid,
            k.0,
            k.1
        );
        out.push(Packet::new(self.hdr(k, Op::Rst, 0, 0), Vec::new()));
        self.remove(k);
    }

    /// A packet the guest sent to CID 2; the packets to send back go to `out`.
    pub fn on_guest_packet(&mut self, p: Packet, room: usize, out: &mut Vec<Packet>) {
        let h = p.hdr;
        let k = (h.src_port, h.dst_port);
        let op = h.op();
        if op == Some(Op::Rst) {
            self.remove(k);
            return;
        }
        if h.type_ != TYPE_STREAM || op.is_none() {
            // Not something the endpoint speaks: reset, as a socket-less peer would.
            self.remove(k);
            if let Some(r) = h.rst_reply() {
                out.push(Packet::new(r, Vec::new()));
            }
            return;
        }
        if op == Some(Op::Request) {
            self.request(&h, out);
            return;
        }
        let Some(c) = self.conns.get_mut(&k) else {
            if let Some(r) = h.rst_reply() {
                out.push(Packet::new(r, Vec::new()));
            }
            return;
        };
        c.peer_buf_alloc = h.buf_alloc;
        c.peer_fwd_cnt = h.fwd_cnt;
        match op {
            Some(Op::Rw) => {
                let overrun = c.pending_len() + p.payload.len() > self.buf_alloc as usize;
                if overrun || c.guest_shut & SHUTDOWN_SEND != 0 || c.closing {
                    log_at!(
                        Level::Warn,
                        "host: cid {} port {}->{}: RW of {} bytes {}; reset",
                        self.cid,
                        k.0,
                        k.1,
                        p.payload.len(),
                        if overrun {
                            "beyond the credit"
                        } else {
                            "after SHUTDOWN"
                        }
                    );
                    self.reset(k, out);
                    return;
                }
                if let Err(e) = c.take(&p.payload) {
                    log_at!(Level::Debug, "host: port {}->{}: write: {e}", k.0, k.1);
                    self.reset(k, out);
                    return;
                }
            }
            Some(Op::CreditUpdate) => {}
            Some(Op::CreditRequest) => {
                c.adv_fwd = c.fwd_cnt;
                let fwd = c.fwd_cnt;
                out.push(Packet::new(
                    self.hdr(k, Op::CreditUpdate, 0, fwd),
                    Vec::new(),
                ));
            }
            Some(Op::Shutdown) => {
                c.guest_shut |= h.flags & BOTH;
                if c.guest_shut == BOTH {
                    c.closing = true;
                }
            }
            _ => {
                // RESPONSE or INVALID on a connection the guest itself opened.
                self.reset(k, out);
                return;
            }
        }
        self.progress(k, room, out);
    }

    fn request(&mut self, h: &Hdr, out: &mut Vec<Packet>) {
        let k = (h.src_port, h.dst_port);
        // A REQUEST on a known connection: the guest forgot it (driver reloaded); start over.
        self.remove(k);
        let refuse = |me: &mut HostEnd, out: &mut Vec<Packet>, why: &str| {
            me.refused += 1;
            log_at!(
                Level::Debug,
                "host: cid {} port {}->{}: refused: {why}",
                me.cid,
                k.0,
                k.1
            );
            if let Some(r) = h.rst_reply() {
                out.push(Packet::new(r, Vec::new()));
            }
        };
        if self.conns.len() >= MAX_CONNS {
            refuse(self, out, "too many connections");
            return;
        }
        let path = self.path(h.dst_port);
        match connect_nonblocking(&path) {
            Ok(sock) => {
                self.opened += 1;
                self.conns.insert(k, Conn::new(sock, h));
                out.push(Packet::new(self.hdr(k, Op::Response, 0, 0), Vec::new()));
                log_at!(
                    Level::Debug,
                    "host: cid {} port {}->{}: connected to {}",
                    self.cid,
                    k.0,
                    k.1,
                    path.display()
                );
                self.set_interest(k, usize::MAX);
            }
            Err(e) => refuse(self, out, &format!("{}: {e}", path.display())),
        }
    }

    /// After a change: shut or close what is due, a credit update if the guest needs one, and
    /// the socket's epoll interest.
    fn progress(&mut self, k: (u32, u32), room: usize, out: &mut Vec<Packet>) {
        let half = self.buf_alloc / 2;
        let Some(c) = self.conns.get_mut(&k) else {
            return;
        };
        if c.pending_len() == 0 {
            if c.closing {
                // The guest closed and everything it sent is written: RST, close the socket.
                let fwd = c.fwd_cnt;
                out.push(Packet::new(self.hdr(k, Op::Rst, 0, fwd), Vec::new()));
                self.remove(k);
                return;
            }
            if c.guest_shut & SHUTDOWN_SEND != 0 && !c.wr_shut {
                c.wr_shut = true;
                let _ = c.sock.shutdown(Shutdown::Write);
            }
        }
        let seen_free = self
            .buf_alloc
            .saturating_sub(c.rx_cnt.wrapping_sub(c.adv_fwd));
        if c.fwd_cnt != c.adv_fwd && seen_free < half && !c.closing {
            c.adv_fwd = c.fwd_cnt;
            let fwd = c.fwd_cnt;
            out.push(Packet::new(
                self.hdr(k, Op::CreditUpdate, 0, fwd),
                Vec::new(),
            ));
        }
        self.set_interest(k, room);
    }

    /// Registers the socket for what the connection can use now (reading: credit, room and no
    /// EOF; writing: buffered bytes), or takes it out of the epoll.
    fn set_interest(&mut self, k: (u32, u32), room: usize) {
        let Some(c) = self.conns.get_mut(&k) else {
            return;
        };
        let mut want = EventSet::empty();
        let can_read = !c.host_eof && !c.closing && c.guest_shut & SHUTDOWN_RCV == 0;
        if can_read && c.credit() > 0 {
            if room >= HDR_LEN + MAX_PKT_PAYLOAD as usize {
                want |= EventSet::IN | EventSet::READ_HANG_UP;
            } else {
                self.throttled = true;
            }
        }
        if c.pending_len() > 0 {
            want |= EventSet::OUT;
        }
        if want == c.interest {
            return;
        }
        let fd = c.sock.as_raw_fd();
        let ev = EpollEvent::new(want, token_of(k));
        let r = if want.is_empty() {
            self.epoll
                .ctl(ControlOperation::Delete, fd, EpollEvent::default())
        } else if c.interest.is_empty() {
            self.epoll.ctl(ControlOperation::Add, fd, ev)
        } else {
            self.epoll.ctl(ControlOperation::Modify, fd, ev)
        };
        match r {
            Ok(()) => c.interest = want,
            Err(e) => log_at!(Level::Warn, "host: epoll_ctl: {e}"),
        }
    }

    /// Handles the Unix sockets' events; the packets for the guest go to `out`.  `room`: bytes
    /// the guest's queue can still take.
    pub fn poll(&mut self, mut room: usize, out: &mut Vec<Packet>) {
        let mut events = [EpollEvent::default(); 64];
        let n = match self.epoll.wait(0, &mut events) {
            Ok(n) => n,
            Err(e) => {
                if e.kind() != io::ErrorKind::Interrupted {
                    log_at!(Level::Warn, "host: epoll_wait: {e}");
                }
                0
            }
        };
        for ev in events.iter().take(n) {
            self.on_socket(key_of(ev.data()), ev.event_set(), &mut room, out);
        }
        if self.throttled {
            self.refresh(room);
        }
    }

    /// Re-evaluates every connection's interest (after the guest's queue drained).
    pub fn refresh(&mut self, room: usize) {
        self.throttled = false;
        let keys: Vec<_> = self.conns.keys().copied().collect();
        for k in keys {
            self.set_interest(k, room);
        }
    }

    fn on_socket(&mut self, k: (u32, u32), set: EventSet, room: &mut usize, out: &mut Vec<Packet>) {
        let Some(c) = self.conns.get_mut(&k) else {
            return;
        };
        if set.contains(EventSet::OUT) || (set.contains(EventSet::ERROR) && c.pending_len() > 0) {
            if let Err(e) = c.flush() {
                log_at!(Level::Debug, "host: port {}->{}: write: {e}", k.0, k.1);
                self.reset(k, out);
                return;
            }
        }
        let readable = EventSet::IN | EventSet::READ_HANG_UP | EventSet::HANG_UP | EventSet::ERROR;
        if set.intersects(readable) && !c.host_eof && !c.closing {
            let mut budget = *room;
            loop {
                let n =
                    (c.credit().min(MAX_PKT_PAYLOAD) as usize).min(budget.saturating_sub(HDR_LEN));
                if n == 0 || c.guest_shut & SHUTDOWN_RCV != 0 {
                    break;
                }
                let mut buf = vec![0u8; n];
                match c.sock.read(&mut buf) {
                    Ok(0) => {
                        c.host_eof = true;
                        let flags = if set.contains(EventSet::HANG_UP) {
                            BOTH
                        } else {
                            SHUTDOWN_SEND
                        };
                        c.adv_fwd = c.fwd_cnt;
                        let fwd = c.fwd_cnt;
                        out.push(Packet::new(
                            self.hdr(k, Op::Shutdown, flags, fwd),
                            Vec::new(),
                        ));
                        break;
                    }
                    Ok(got) => {
                        buf.truncate(got);
                        c.tx_cnt = c.tx_cnt.wrapping_add(got as u32);
                        c.adv_fwd = c.fwd_cnt;
                        let mut hd = Hdr {
                            src_cid: HOST_CID,
                            dst_cid: self.cid,
                            src_port: k.1,
                            dst_port: k.0,
                            len: 0,
                            type_: TYPE_STREAM,
                            op: Op::Rw as u16,
                            flags: 0,
                            buf_alloc: self.buf_alloc,
                            fwd_cnt: c.fwd_cnt,
                        };
                        hd.len = got as u32;
                        budget = budget.saturating_sub(HDR_LEN + got);
                        out.push(Packet::new(hd, buf));
                    }
                    Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        log_at!(Level::Debug, "host: port {}->{}: read: {e}", k.0, k.1);
                        self.reset(k, out);
                        return;
                    }
                }
            }
            *room = budget;
        }
        self.progress(k, *room, out);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::net::UnixListener;
    use std::time::{Duration, Instant};

    const G: u64 = 3;

    fn req(gport: u32, hport: u32, op: Op) -> Hdr {
        Hdr {
            src_cid: G,
            dst_cid: HOST_CID,
            src_port: gport,
            dst_port: hport,
            len: 0,
            type_: TYPE_STREAM,
            op: op as u16,
            flags: 0,
            buf_alloc: 256 * 1024,
            fwd_cnt: 0,
        }
    }

    fn pkt(h: Hdr, payload: &[u8]) -> Packet {
        Packet::new(h, payload.to_vec())
    }

    struct Rig {
        _dir: PathBuf,
        prefix: PathBuf,
        host: HostEnd,
    }

    fn rig(name: &str) -> Rig {
        let dir = std::env::temp_dir().join(format!("vudev-host-{}-{name}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let prefix = dir.join("h.sock");
        let host = HostEnd::new(prefix.clone(), G).unwrap();
        Rig {
            _dir: dir,
            prefix,
            host,
        }
    }

    impl Drop for Rig {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self._dir);
        }
    }

    fn ops(out: &[Packet]) -> Vec<u16> {
        out.iter().map(|p| p.hdr.op).collect()
    }

    /// Polls until `f` says the collected packets are enough (bounded).
    fn poll_until(host: &mut HostEnd, out: &mut Vec<Packet>, f: impl Fn(&[Packet]) -> bool) {
        let t = Instant::now();
        while !f(out) {
            assert!(
                t.elapsed() < Duration::from_secs(5),
                "timed out: {:?}",
                ops(out)
            );
            host.poll(usize::MAX, out);
            std::thread::sleep(Duration::from_millis(1));
        }
    }

    #[test]
    fn refused_without_listener_and_unknown_connections_reset() {
        let mut r = rig("refused");
        let mut out = Vec::new();
        r.host
            .on_guest_packet(pkt(req(1000, 77, Op::Request), &[]), usize::MAX, &mut out);
        assert_eq!(ops(&out), vec![Op::Rst as u16]);
        assert_eq!((out[0].hdr.src_port, out[0].hdr.dst_port), (77, 1000));
        assert_eq!(r.host.refused, 1);
        out.clear();
        r.host
            .on_guest_packet(pkt(req(1000, 77, Op::Rw), b"x"), usize::MAX, &mut out);
        assert_eq!(ops(&out), vec![Op::Rst as u16]);
        out.clear();
        r.host
            .on_guest_packet(pkt(req(1000, 77, Op::Rst), &[]), usize::MAX, &mut out);
        assert!(out.is_empty());
        // SEQPACKET and unknown operations are answered with RST too.
        let mut h = req(1000, 77, Op::Request);
        h.type_ = 2;
        r.host.on_guest_packet(pkt(h, &[]), usize::MAX, &mut out);
        let mut h = req(1000, 77, Op::Rw);
        h.op = 99;
        r.host.on_guest_packet(pkt(h, &[]), usize::MAX, &mut out);
        assert_eq!(ops(&out), vec![Op::Rst as u16; 2]);
        let _ = r.prefix;
    }

    #[test]
    fn stream_both_ways_with_shutdown_and_close() {
        let mut r = rig("stream");
        let l = UnixListener::bind(r.host.path(5000)).unwrap();
        let mut out = Vec::new();
        r.host
            .on_guest_packet(pkt(req(1000, 5000, Op::Request), &[]), usize::MAX, &mut out);
        assert_eq!(ops(&out), vec![Op::Response as u16]);
        assert_eq!(out[0].hdr.buf_alloc, HOST_BUF_ALLOC);
        let (mut s, _) = l.accept().unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        out.clear();
        // Guest to host: 300 KiB in 64 KiB packets, the guest honouring credit updates.
        let data: Vec<u8> = (0..300 * 1024u32).map(|i| (i % 253) as u8).collect();
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            s.read_to_end(&mut got).unwrap();
            s.write_all(b"count").unwrap();
            (s, got)
        });
        let mut sent = 0;
        while sent < data.len() {
            let n = (data.len() - sent).min(64 * 1024);
            let mut h = req(1000, 5000, Op::Rw);
            h.len = n as u32;
            r.host
                .on_guest_packet(pkt(h, &data[sent..sent + n]), usize::MAX, &mut out);
            sent += n;
            r.host.poll(usize::MAX, &mut out);
        }
        let mut h = req(1000, 5000, Op::Shutdown);
        h.flags = SHUTDOWN_SEND;
        r.host.on_guest_packet(pkt(h, &[]), usize::MAX, &mut out);
        poll_until(&mut r.host, &mut out, |o| {
            o.iter().map(|p| p.payload.len()).sum::<usize>() == 5
        });
        let (s, got) = reader.join().unwrap();
        assert_eq!(got, data);
        let payload: Vec<u8> = out
            .iter()
            .filter(|p| p.hdr.op == Op::Rw as u16)
            .flat_map(|p| p.payload.clone())
            .collect();
        assert_eq!(payload, b"count");
        assert!(out
            .iter()
            .all(|p| p.hdr.src_cid == HOST_CID && p.hdr.dst_cid == G));
        // The host's close: SHUTDOWN with both flags after the data.
        drop(s);
        out.clear();
        poll_until(&mut r.host, &mut out, |o| {
            o.iter().any(|p| p.hdr.op == Op::Shutdown as u16)
        });
        let last = out.last().unwrap().hdr;
        assert!(last.flags & SHUTDOWN_SEND != 0);
        // The guest closes: RST back, the connection is gone.
        out.clear();
        let mut h = req(1000, 5000, Op::Shutdown);
        h.flags = BOTH;
        r.host.on_guest_packet(pkt(h, &[]), usize::MAX, &mut out);
        assert_eq!(ops(&out), vec![Op::Rst as u16]);
        assert_eq!(r.host.len(), 0);
    }

    #[test]
    fn credit_bounds_both_directions() {
        let mut r = rig("credit");
        let l = UnixListener::bind(r.host.path(6000)).unwrap();
        let mut out = Vec::new();
        let mut h = req(1000, 6000, Op::Request);
        h.buf_alloc = 10000;
        r.host.on_guest_packet(pkt(h, &[]), usize::MAX, &mut out);
        let (mut s, _) = l.accept().unwrap();
        out.clear();
        // Host to guest: 50,000 bytes, but the guest gave 10,000 of credit.
        s.write_all(&[7u8; 50000]).unwrap();
        let t = Instant::now();
        while t.elapsed() < Duration::from_millis(200) {
            r.host.poll(usize::MAX, &mut out);
        }
        let got: usize = out.iter().map(|p| p.payload.len()).sum();
        assert_eq!(got, 10000);
        // The guest read 4000: a credit update lets 4000 more through.
        out.clear();
        let mut cu = req(1000, 6000, Op::CreditUpdate);
        cu.buf_alloc = 10000;
        cu.fwd_cnt = 4000;
        r.host.on_guest_packet(pkt(cu, &[]), usize::MAX, &mut out);
        poll_until(&mut r.host, &mut out, |o| {
            o.iter().map(|p| p.payload.len()).sum::<usize>() == 4000
        });
        // CREDIT_REQUEST is answered.
        out.clear();
        r.host.on_guest_packet(
            pkt(req(1000, 6000, Op::CreditRequest), &[]),
            usize::MAX,
            &mut out,
        );
        assert_eq!(ops(&out), vec![Op::CreditUpdate as u16]);
        // Guest to host with the host not reading: buffered up to buf_alloc, then a reset.
        out.clear();
        let chunk = vec![1u8; 64 * 1024];
        let mut reset = false;
        for _ in 0..64 {
            let mut h = req(1000, 6000, Op::Rw);
            h.len = chunk.len() as u32;
            r.host.on_guest_packet(pkt(h, &chunk), usize::MAX, &mut out);
            if out.iter().any(|p| p.hdr.op == Op::Rst as u16) {
                reset = true;
                break;
            }
        }
        assert!(reset, "a guest beyond its credit is reset");
        assert_eq!(r.host.len(), 0);
        drop(s);
    }

    #[test]
    fn queue_room_throttles_reading() {
        let mut r = rig("room");
        let l = UnixListener::bind(r.host.path(7000)).unwrap();
        let mut out = Vec::new();
        r.host
            .on_guest_packet(pkt(req(1, 7000, Op::Request), &[]), usize::MAX, &mut out);
        let (mut s, _) = l.accept().unwrap();
        s.write_all(&[1u8; 1000]).unwrap();
        out.clear();
        std::thread::sleep(Duration::from_millis(20));
        r.host.poll(100, &mut out);
        assert!(out.iter().map(|p| p.cost()).sum::<usize>() <= 100);
        assert!(r.host.throttled());
        r.host.refresh(usize::MAX);
        poll_until(&mut r.host, &mut out, |o| {
            o.iter().map(|p| p.payload.len()).sum::<usize>() == 1000
        });
    }
}
