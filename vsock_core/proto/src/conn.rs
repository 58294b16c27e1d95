// SPDX-License-Identifier: GPL-2.0

//! The connection state machine of a stream or seqpacket socket (virtio-vsock protocol).
//!
//! [`Conn`] holds a socket's protocol state; each event (a received packet, a local call, a
//! timer) updates it and returns [`Effects`]: what the kernel glue must do (send a control
//! packet, queue the payload, wake someone, report an error, update the tables).  The glue never
//! decides protocol questions itself, so the whole machine is testable here against a mock peer.
//!
//! The behaviour is that of Linux 6.12's `virtio_transport_common.c` (receive dispatch, close
//! handshake, credit) and the state parts of `af_vsock.c`.

use super::credit::{Overrun, RxCredit, TxCredit};
use super::errno::Errno;
use super::hdr::{Hdr, Op, SEQ_EOM, SHUTDOWN_RCV, SHUTDOWN_SEND, TYPE_SEQPACKET, TYPE_STREAM};

/// Local shutdown bit: no more receiving (`RCV_SHUTDOWN`).
pub const RCV_SHUTDOWN: u8 = 1;
/// Local shutdown bit: no more sending (`SEND_SHUTDOWN`).
pub const SEND_SHUTDOWN: u8 = 2;
/// Both shutdown bits.
pub const SHUTDOWN_MASK: u8 = 3;

/// Connection state, with the TCP numbers Linux uses in `sk_state` (and `vsock_diag` reports).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
#[repr(u8)]
pub enum SkState {
    /// Connected.
    Established = 1,
    /// Connecting: REQUEST sent.
    SynSent = 2,
    /// Unconnected or closed.
    #[default]
    Close = 7,
    /// Listening.
    Listen = 10,
    /// The peer closed or reset and nothing is left to read.
    Closing = 11,
}

/// Socket type of a connection.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum SockType {
    /// `SOCK_STREAM`.
    #[default]
    Stream,
    /// `SOCK_SEQPACKET`.
    SeqPacket,
}

impl SockType {
    /// The wire type number.
    pub const fn wire(self) -> u16 {
        match self {
            SockType::Stream => TYPE_STREAM,
            SockType::SeqPacket => TYPE_SEQPACKET,
        }
    }
}

/// A control packet the glue must send.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Reply {
    /// From this socket to its peer, with fresh credit fields.
    Sock {
        /// Operation.
        op: Op,
        /// Flags (SHUTDOWN bits).
        flags: u32,
    },
    /// A RST answering the received packet as if no socket existed ([`Hdr::rst_reply`]).
    RstNoSock,
}

impl Reply {
    const RST: Reply = Reply::Sock {
        op: Op::Rst,
        flags: 0,
    };
}

/// What the glue must do after an event, in this order: queue the payload, send the reply, set
/// the error, update the tables, then wake.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[must_use]
pub struct Effects {
    /// A control packet to send.
    pub send: Option<Reply>,
    /// The payload of the received RW packet was admitted: queue it.
    pub enqueue: bool,
    /// Readers may have something to read (data queued or the connection ended).
    pub data_ready: bool,
    /// Writers may have credit.
    pub write_space: bool,
    /// The connection state or shutdown bits changed (`sk_state_change`).
    pub state_change: bool,
    /// Set `sk_err` to this and report it (`sk_error_report`).
    pub error: Option<Errno>,
    /// The connection is established: mark the socket connected and insert it into the
    /// connected table.
    pub connected: bool,
    /// Remove the socket from the connected table (the peer is gone; a new connection from the
    /// same address must reach the listener).
    pub unhash: bool,
    /// Cancel the close timer; if it was still pending, the close is complete: purge and remove
    /// the socket and drop the timer's reference.
    pub cancel_close_timer: bool,
    /// Purge the receive queue and remove the socket from the tables (close complete).
    pub remove: bool,
}

/// How the glue would queue the payload of a received RW packet.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RxPlan {
    /// The payload would be appended to the last queued packet (no new packet is queued).
    pub merge: bool,
}

/// What closing the socket requires.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Release {
    /// Done: remove the socket now (after sending the reply, if any).
    Now(Option<Reply>),
    /// Send the reply (SHUTDOWN) and wait for the peer's RST: linger if asked, then call
    /// [`Conn::release_wait_done`].
    Wait(Option<Reply>),
}

/// The protocol state of one socket.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Conn {
    /// Connection state.
    pub state: SkState,
    /// Socket type.
    pub sock_type: SockType,
    /// Local shutdown bits (`sk_shutdown`).
    pub shutdown: u8,
    /// Peer shutdown bits.
    pub peer_shutdown: u8,
    /// The connection is over: orderly close or reset seen (`SOCK_DONE`).
    pub done: bool,
    /// The close timer is armed, holding a reference on the socket.
    pub close_timer: bool,
    /// Sender-side credit.
    pub tx: TxCredit,
    /// Receiver-side credit and queue accounting.
    pub rx: RxCredit,
}

impl Conn {
    /// A new, unconnected socket with receive buffer `buf_alloc`.
    pub fn new(sock_type: SockType, buf_alloc: u32) -> Self {
        let mut rx = RxCredit::new(buf_alloc);
        rx.shaped = sock_type == SockType::SeqPacket;
        Conn {
            sock_type,
            rx,
            ..Conn::default()
        }
    }

    /// A socket born on a listener from a REQUEST: established at once, with the requester's
    /// credit (`virtio_transport_recv_listen`).  The glue sends [`Conn::response`].
    pub fn child(sock_type: SockType, buf_alloc: u32, req: &Hdr) -> Self {
        let mut c = Conn::new(sock_type, buf_alloc);
        c.state = SkState::Established;
        c.tx.update(req.buf_alloc, req.fwd_cnt);
        c
    }

    /// The RESPONSE a new child sends.
    pub const fn response() -> Reply {
        Reply::Sock {
            op: Op::Response,
            flags: 0,
        }
    }

    /// Whether a listener accepts a REQUEST-carrying packet: only a REQUEST, only with room in
    /// the accept queue, and not while the listener is being released.  The refusal is a RST
    /// without socket, with the errno upstream reports internally.
    pub fn listen_accepts(hdr: &Hdr, backlog_full: bool, shutdown: u8) -> Result<(), Errno> {
        if hdr.op() != Some(Op::Request) {
            return Err(Errno::EINVAL);
        }
        if backlog_full {
            return Err(Errno::ENOMEM);
        }
        if shutdown == SHUTDOWN_MASK {
            return Err(Errno::ESHUTDOWN);
        }
        Ok(())
    }

    /// Credit the sender may use now.
    pub fn tx_space(&self) -> u32 {
        self.tx.space(self.rx.buf_alloc)
    }

    /// Reserves up to `want` bytes of credit for sending and returns how many were granted.
    pub fn reserve(&mut self, want: u32) -> u32 {
        self.tx.reserve(want, self.rx.buf_alloc)
    }

    /// The largest SEQPACKET message that can ever be sent (`EMSGSIZE` above it).
    pub fn max_message(&self) -> u32 {
        self.tx.window(self.rx.buf_alloc)
    }

    /// Handles a packet for this (non-listening) socket; the glue has already matched it to the
    /// socket, checked its type and that it arrived from the connected peer on the socket's
    /// transport (`virtio_transport_recv_pkt`).
    pub fn recv(&mut self, hdr: &Hdr, plan: RxPlan) -> Effects {
        let mut fx = Effects::default();
        if self.done {
            fx.send = Some(Reply::RstNoSock);
            return fx;
        }
        self.tx.update(hdr.buf_alloc, hdr.fwd_cnt);
        fx.write_space = self.tx_space() > 0;

        let op = hdr.op();
        match self.state {
            SkState::SynSent => match op {
                Some(Op::Response) => {
                    self.state = SkState::Established;
                    fx.connected = true;
                    fx.state_change = true;
                }
                Some(Op::Invalid) => {}
                Some(Op::Rst) => {
                    self.state = SkState::Close;
                    fx.error = Some(Errno::ECONNRESET);
                }
                _ => {
                    self.state = SkState::Close;
                    fx.send = Some(Reply::RST);
                    fx.error = Some(Errno::EPROTO);
                }
            },
            SkState::Established => match op {
                Some(Op::Rw) => self.recv_data(hdr, plan, &mut fx),
                Some(Op::CreditRequest) => {
                    fx.send = Some(Reply::Sock {
                        op: Op::CreditUpdate,
                        flags: 0,
                    })
                }
                Some(Op::CreditUpdate) => fx.write_space = true,
                Some(Op::Shutdown) => {
                    if hdr.flags & SHUTDOWN_RCV != 0 {
                        self.peer_shutdown |= RCV_SHUTDOWN;
                    }
                    if hdr.flags & SHUTDOWN_SEND != 0 {
                        self.peer_shutdown |= SEND_SHUTDOWN;
                    }
                    if self.peer_shutdown == SHUTDOWN_MASK {
                        if self.rx.rx_bytes == 0 && !self.done {
                            fx.send = Some(Reply::RST);
                            self.do_close(&mut fx);
                        }
                        fx.unhash = true;
                    }
                    if hdr.flags != 0 {
                        fx.state_change = true;
                        fx.data_ready = true;
                    }
                }
                Some(Op::Rst) => self.do_close(&mut fx),
                _ => {}
            },
            SkState::Closing => {
                if op == Some(Op::Rst) {
                    self.do_close(&mut fx);
                }
            }
            SkState::Close | SkState::Listen => fx.send = Some(Reply::RstNoSock),
        }
        fx
    }

    fn recv_data(&mut self, hdr: &Hdr, plan: RxPlan, fx: &mut Effects) {
        let eom = self.sock_type == SockType::SeqPacket && hdr.flags & SEQ_EOM != 0;
        match self.rx.admit(hdr.len, eom, plan.merge) {
            Ok(()) => {
                fx.enqueue = true;
                fx.data_ready = true;
                if self.rx.shaping_overdue() {
                    // Many small messages queue: tell the sender to wait for the reader.
                    fx.send = Some(Reply::Sock {
                        op: Op::CreditUpdate,
                        flags: 0,
                    });
                }
            }
            Err(Overrun::Payload) | Err(Overrun::Packets) => self.overrun(fx),
        }
    }

    /// The peer overran our buffer: drop the connection rather than lose data.
    fn overrun(&mut self, fx: &mut Effects) {
        fx.send = Some(Reply::RST);
        self.do_close(fx);
        fx.error = Some(Errno::ENOBUFS);
        fx.unhash = true;
    }

    /// The packets of an established connection that arrived while the socket was owned
    /// exceeded what may wait for it (the peer flooded us): the connection is reset as on an
    /// overrun.  Nothing if it is over already.
    pub fn backlog_overflow(&mut self) -> Effects {
        let mut fx = Effects::default();
        if !self.done && matches!(self.state, SkState::Established | SkState::Closing) {
            self.overrun(&mut fx);
        }
        fx
    }

    /// The connection is over (`virtio_transport_do_close`): mark it done, the peer fully shut
    /// down, and closing once nothing is left to read; a pending close timer is cancelled.
    fn do_close(&mut self, fx: &mut Effects) {
        self.done = true;
        self.peer_shutdown = SHUTDOWN_MASK;
        if self.rx.rx_bytes == 0 {
            self.state = SkState::Closing;
        }
        fx.state_change = true;
        fx.data_ready = true;
        if self.close_timer {
            fx.cancel_close_timer = true;
        }
    }

    /// The close timer was cancelled before it fired: the close is complete.
    pub fn close_timer_cancelled(&mut self) -> Effects {
        self.close_timer = false;
        Effects {
            remove: true,
            ..Effects::default()
        }
    }

    /// `connect()`: the socket sends a REQUEST and waits for the RESPONSE.
    pub fn connect(&mut self) -> Effects {
        self.state = SkState::SynSent;
        Effects {
            send: Some(Reply::Sock {
                op: Op::Request,
                flags: 0,
            }),
            ..Effects::default()
        }
    }

    /// A connect that gave up (blocking timeout or signal): back to unconnected; the glue
    /// drops the queued REQUEST if it can.
    pub fn connect_abort(&mut self) {
        self.state = SkState::Close;
    }

    /// The non-blocking connect timer fired (`vsock_connect_timeout`).
    pub fn connect_timeout(&mut self) -> Effects {
        let mut fx = Effects::default();
        if self.state == SkState::SynSent && self.shutdown != SHUTDOWN_MASK {
            self.state = SkState::Close;
            fx.error = Some(Errno::ETIMEDOUT);
        }
        fx
    }

    /// `shutdown()` with local shutdown bits `mode` (`vsock_shutdown`), on a socket that is not
    /// unconnected.  The peer is told if a transport is assigned.
    pub fn shutdown(&mut self, mode: u8, has_transport: bool) -> Effects {
        let mut fx = Effects::default();
        let mode = mode & SHUTDOWN_MASK;
        if mode == 0 {
            return fx;
        }
        self.shutdown |= mode;
        fx.state_change = true;
        fx.data_ready = true;
        self.done = false;
        if has_transport {
            fx.send = Some(shutdown_reply(mode));
        }
        fx
    }

    /// `close()` (`virtio_transport_close`): an established socket tells the peer it is going
    /// and waits for its RST; a peer that already left gets a RST; anything else goes at once.
    pub fn release(&mut self) -> Release {
        self.shutdown = SHUTDOWN_MASK;
        if !matches!(self.state, SkState::Established | SkState::Closing) {
            self.done = true;
            return Release::Now(None);
        }
        if self.peer_shutdown == SHUTDOWN_MASK {
            self.done = true;
            return Release::Now(Some(Reply::RST));
        }
        Release::Wait(Some(shutdown_reply(SHUTDOWN_MASK)))
    }

    /// After the linger wait of a [`Release::Wait`]: `true` if the peer's RST already came and
    /// the socket goes now; otherwise the glue arms the close timer (`VSOCK_CLOSE_TIMEOUT`),
    /// which keeps the socket and its port until the RST or the timeout.
    pub fn release_wait_done(&mut self) -> bool {
        if self.done {
            return true;
        }
        self.close_timer = true;
        false
    }

    /// The close timer fired: reset the connection if the peer never answered, and remove it.
    pub fn close_timeout(&mut self) -> Effects {
        let mut fx = Effects::default();
        if !self.done {
            fx.send = Some(Reply::RST);
            self.do_close(&mut fx);
            fx.cancel_close_timer = false;
        }
        self.close_timer = false;
        fx.remove = true;
        fx
    }

    /// The transport went away (unloaded or its device reset): the connection is reset.
    pub fn transport_reset(&mut self) -> Effects {
        let mut fx = Effects::default();
        if matches!(self.state, SkState::Listen | SkState::Close) && !self.close_timer {
            return fx;
        }
        let mut dummy = Effects::default();
        self.do_close(&mut dummy);
        self.state = SkState::Close;
        fx.error = Some(Errno::ECONNRESET);
        fx.state_change = true;
        fx.data_ready = true;
        fx.write_space = true;
        fx.unhash = true;
        if self.close_timer {
            fx.cancel_close_timer = true;
        }
        fx
    }

    /// Whether a stream read should be followed by a CREDIT_UPDATE (see
    /// [`RxCredit::update_after_read`]); a seqpacket read always is.
    pub fn update_after_read(&self, rcvlowat: u32) -> bool {
        match self.sock_type {
            SockType::Stream => self.rx.update_after_read(rcvlowat),
            SockType::SeqPacket => true,
        }
    }
}

fn shutdown_reply(mode: u8) -> Reply {
    let mut flags = 0;
    if mode & RCV_SHUTDOWN != 0 {
        flags |= SHUTDOWN_RCV;
    }
    if mode & SEND_SHUTDOWN != 0 {
        flags |= SHUTDOWN_SEND;
    }
    Reply::Sock {
        op: Op::Shutdown,
        flags,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::hdr::{MAX_PKT_PAYLOAD, SEQ_EOR};
    use proptest::prelude::*;
    use std::collections::VecDeque;
    use std::vec::Vec;

    /// One endpoint as the glue would run it: a [`Conn`], its receive queue and its fate.
    #[derive(Debug)]
    struct End {
        conn: Conn,
        port: u32,
        queue: VecDeque<u32>,
        eoms: VecDeque<bool>,
        removed: bool,
        unhashed: bool,
        err: Option<Errno>,
        timer: bool,
    }

    impl End {
        fn new(conn: Conn, port: u32) -> Self {
            End {
                conn,
                port,
                queue: VecDeque::new(),
                eoms: VecDeque::new(),
                removed: false,
                unhashed: false,
                err: None,
                timer: false,
            }
        }
    }

    /// Two endpoints and the packets in flight between them (index 0 = client).
    struct Pair {
        ends: [End; 2],
        wire: [VecDeque<Hdr>; 2],
    }

    impl Pair {
        fn connected(buf: [u32; 2]) -> Pair {
            Pair::connected_as(SockType::Stream, buf)
        }

        fn connected_as(ty: SockType, buf: [u32; 2]) -> Pair {
            let mut client = End::new(Conn::new(ty, buf[0]), 5000);
            let fx = client.conn.connect();
            let req = hdr_for(&mut client, 1234, fx.send.unwrap());
            let server = End::new(Conn::child(ty, buf[1], &req), 1234);
            let mut p = Pair {
                ends: [client, server],
                wire: [VecDeque::new(), VecDeque::new()],
            };
            p.emit(1, Some(Conn::response()), None);
            p.deliver_all();
            assert_eq!(p.ends[0].conn.state, SkState::Established);
            p
        }

        fn emit(&mut self, from: usize, reply: Option<Reply>, answering: Option<&Hdr>) {
            let to_port = self.ends[1 - from].port;
            match reply {
                None => {}
                Some(Reply::RstNoSock) => {
                    if let Some(r) = answering.and_then(Hdr::rst_reply) {
                        self.wire[1 - from].push_back(r);
                    }
                }
                Some(r) => {
                    let h = hdr_for(&mut self.ends[from], to_port, r);
                    self.wire[1 - from].push_back(h);
                }
            }
        }

        fn apply(&mut self, at: usize, fx: Effects, answering: Option<&Hdr>, payload: u32) {
            if fx.enqueue {
                self.ends[at].queue.push_back(payload);
                let eom = answering.is_some_and(|h| h.flags & SEQ_EOM != 0);
                self.ends[at].eoms.push_back(eom);
            }
            self.emit(at, fx.send, answering);
            if let Some(e) = fx.error {
                self.ends[at].err = Some(e);
            }
            if fx.unhash {
                self.ends[at].unhashed = true;
            }
            if fx.cancel_close_timer && self.ends[at].timer {
                self.ends[at].timer = false;
                let fx2 = self.ends[at].conn.close_timer_cancelled();
                assert!(fx2.remove);
                self.ends[at].removed = true;
            }
            if fx.remove {
                self.ends[at].removed = true;
            }
        }

        /// Delivers one packet to endpoint `to`, if any is in flight.
        fn deliver(&mut self, to: usize) -> bool {
            let Some(h) = self.wire[to].pop_front() else {
                return false;
            };
            if self.ends[to].removed {
                // No socket: answered like the glue does without a match.
                if let Some(r) = h.rst_reply() {
                    self.wire[1 - to].push_back(r);
                }
                return true;
            }
            let fx = self.ends[to].conn.recv(&h, RxPlan::default());
            self.apply(to, fx, Some(&h), h.len);
            true
        }

        fn deliver_all(&mut self) {
            let mut budget = 10_000;
            while (self.deliver(0) | self.deliver(1)) && budget > 0 {
                budget -= 1;
            }
            assert!(budget > 0, "packets ping-pong forever");
        }

        /// Puts an RW packet of `len` bytes with `flags` from `from` on the wire.
        fn push_rw(&mut self, from: usize, len: u32, flags: u32) {
            let to_port = self.ends[1 - from].port;
            let rw = Reply::Sock {
                op: Op::Rw,
                flags: 0,
            };
            let mut h = hdr_for(&mut self.ends[from], to_port, rw);
            h.len = len;
            h.flags = flags;
            self.wire[1 - from].push_back(h);
        }

        /// Sends up to `n` bytes from `from` as far as credit allows, in maximal packets.
        fn send(&mut self, from: usize, n: u32) -> u32 {
            let mut sent = 0;
            while sent < n {
                let e = &mut self.ends[from];
                if e.conn.state != SkState::Established || e.conn.shutdown & SEND_SHUTDOWN != 0 {
                    break;
                }
                let got = e.conn.reserve((n - sent).min(MAX_PKT_PAYLOAD));
                if got == 0 {
                    break;
                }
                self.push_rw(from, got, 0);
                sent += got;
            }
            sent
        }

        /// Sends a SEQPACKET message of `len` bytes from `from` as far as credit allows, in
        /// fragments, EOM on the last; returns the bytes sent.
        fn send_msg(&mut self, from: usize, len: u32) -> u32 {
            let mut sent = 0;
            loop {
                let e = &mut self.ends[from];
                if e.conn.state != SkState::Established || e.conn.tx_space() == 0 {
                    return sent;
                }
                let got = e.conn.reserve((len - sent).min(MAX_PKT_PAYLOAD));
                sent += got;
                self.push_rw(from, got, if sent == len { SEQ_EOM } else { 0 });
                if sent == len {
                    return sent;
                }
            }
        }

        /// Reads one SEQPACKET message at `at` (its packets), then sends the credit update a
        /// SEQPACKET read always sends.
        fn read_msg(&mut self, at: usize) -> bool {
            if self.ends[at].conn.rx.msg_count == 0 {
                return false;
            }
            while let Some(len) = self.ends[at].queue.pop_front() {
                let eom = self.ends[at].eoms.pop_front().unwrap_or(false);
                self.ends[at].conn.rx.consume(len, len, eom);
                if eom {
                    break;
                }
            }
            self.emit(
                at,
                Some(Reply::Sock {
                    op: Op::CreditUpdate,
                    flags: 0,
                }),
                None,
            );
            true
        }

        /// Reads up to `n` bytes at `at`, whole packets at a time, then sends a credit update
        /// if the rules ask for one.
        fn read(&mut self, at: usize, n: u32, rcvlowat: u32) -> u32 {
            let mut got = 0;
            while let Some(&len) = self.ends[at].queue.front() {
                if got + len > n && got > 0 {
                    break;
                }
                self.ends[at].queue.pop_front();
                self.ends[at].eoms.pop_front();
                self.ends[at].conn.rx.consume(len, len, false);
                got += len;
            }
            if self.ends[at].conn.update_after_read(rcvlowat) && !self.ends[at].removed {
                self.emit(
                    at,
                    Some(Reply::Sock {
                        op: Op::CreditUpdate,
                        flags: 0,
                    }),
                    None,
                );
            }
            got
        }

        fn close(&mut self, at: usize) {
            match self.ends[at].conn.release() {
                Release::Now(r) => {
                    self.emit(at, r, None);
                    self.ends[at].removed = true;
                }
                Release::Wait(r) => {
                    self.emit(at, r, None);
                    if self.ends[at].conn.release_wait_done() {
                        self.ends[at].removed = true;
                    } else {
                        self.ends[at].timer = true;
                    }
                }
            }
        }

        fn fire_timer(&mut self, at: usize) {
            if self.ends[at].timer {
                self.ends[at].timer = false;
                let fx = self.ends[at].conn.close_timeout();
                self.apply(at, fx, None, 0);
            }
        }
    }

    fn hdr_for(e: &mut End, to_port: u32, r: Reply) -> Hdr {
        let Reply::Sock { op, flags } = r else {
            unreachable!()
        };
        let (buf_alloc, fwd_cnt) = e.conn.rx.stamp();
        Hdr {
            src_cid: 1,
            dst_cid: 1,
            src_port: e.port,
            dst_port: to_port,
            len: 0,
            type_: e.conn.sock_type.wire(),
            op: op as u16,
            flags,
            buf_alloc,
            fwd_cnt,
        }
    }

    #[test]
    fn connect_exchange_and_orderly_close() {
        let mut p = Pair::connected([256 * 1024; 2]);
        assert_eq!(p.send(0, 1), 1);
        p.deliver_all();
        assert_eq!(p.ends[1].queue.len(), 1);
        // Client closes: SHUTDOWN; the server still has unread data, so no RST yet.
        p.close(0);
        p.deliver_all();
        assert!(p.ends[0].timer && !p.ends[0].removed);
        assert_eq!(p.ends[1].conn.peer_shutdown, SHUTDOWN_MASK);
        assert!(p.ends[1].unhashed);
        // The data is still readable, then the server closes: RST, the client is removed.
        assert_eq!(p.read(1, 10, 1), 1);
        p.close(1);
        p.deliver_all();
        assert!(p.ends[0].removed && p.ends[1].removed);
        assert!(!p.ends[0].timer);
    }

    #[test]
    fn close_with_nothing_unread_is_answered_by_rst_at_once() {
        let mut p = Pair::connected([256 * 1024; 2]);
        p.close(0);
        p.deliver_all();
        assert!(p.ends[0].removed, "the peer's RST completes the close");
        assert_eq!(p.ends[1].conn.state, SkState::Closing);
        assert!(p.ends[1].conn.done);
    }

    #[test]
    fn unanswered_close_times_out_with_rst() {
        let mut p = Pair::connected([256 * 1024; 2]);
        p.close(0);
        p.wire[1].clear(); // the SHUTDOWN is lost
        p.fire_timer(0);
        assert!(p.ends[0].removed);
        assert_eq!(p.wire[1].front().and_then(Hdr::op), Some(Op::Rst));
    }

    #[test]
    fn connect_refused_and_protocol_error() {
        let mut c = Conn::new(SockType::Stream, 4096);
        let _ = c.connect();
        let fx = c.recv(
            &Hdr {
                op: Op::Rst as u16,
                ..Hdr::default()
            },
            RxPlan::default(),
        );
        assert_eq!(
            (c.state, fx.error, fx.send),
            (SkState::Close, Some(Errno::ECONNRESET), None)
        );
        let mut c = Conn::new(SockType::Stream, 4096);
        let _ = c.connect();
        let fx = c.recv(
            &Hdr {
                op: Op::Rw as u16,
                len: 3,
                ..Hdr::default()
            },
            RxPlan::default(),
        );
        assert_eq!((c.state, fx.error), (SkState::Close, Some(Errno::EPROTO)));
        assert_eq!(fx.send, Some(Reply::RST));
    }

    #[test]
    fn overrun_resets_with_enobufs() {
        let mut p = Pair::connected([4096, 4096]);
        // A hostile sender ignores the credit.
        let mut h = hdr_for(
            &mut p.ends[0],
            1234,
            Reply::Sock {
                op: Op::Rw,
                flags: 0,
            },
        );
        h.len = 4097;
        let fx = p.ends[1].conn.recv(&h, RxPlan::default());
        assert_eq!(fx.error, Some(Errno::ENOBUFS));
        assert_eq!(fx.send, Some(Reply::RST));
        assert!(fx.unhash && !fx.enqueue);
    }

    #[test]
    fn credit_request_is_answered() {
        let mut p = Pair::connected([4096, 4096]);
        let h = hdr_for(
            &mut p.ends[0],
            1234,
            Reply::Sock {
                op: Op::CreditRequest,
                flags: 0,
            },
        );
        let fx = p.ends[1].conn.recv(&h, RxPlan::default());
        assert_eq!(
            fx.send,
            Some(Reply::Sock {
                op: Op::CreditUpdate,
                flags: 0
            })
        );
    }

    #[test]
    fn seqpacket_eom_counts_messages() {
        let mut c = Conn::child(
            SockType::SeqPacket,
            4096,
            &Hdr {
                buf_alloc: 4096,
                ..Hdr::default()
            },
        );
        let fx = c.recv(
            &Hdr {
                op: Op::Rw as u16,
                len: 10,
                flags: 0,
                ..Hdr::default()
            },
            RxPlan::default(),
        );
        assert!(fx.enqueue);
        assert_eq!(c.rx.msg_count, 0);
        let _ = c.recv(
            &Hdr {
                op: Op::Rw as u16,
                len: 10,
                flags: SEQ_EOM | SEQ_EOR,
                ..Hdr::default()
            },
            RxPlan::default(),
        );
        assert_eq!(c.rx.msg_count, 1);
    }

    #[test]
    fn done_sockets_answer_with_rst_no_sock() {
        let mut c = Conn::child(SockType::Stream, 4096, &Hdr::default());
        let _ = c.recv(
            &Hdr {
                op: Op::Rst as u16,
                ..Hdr::default()
            },
            RxPlan::default(),
        );
        assert!(c.done);
        let fx = c.recv(
            &Hdr {
                op: Op::Rw as u16,
                len: 1,
                ..Hdr::default()
            },
            RxPlan::default(),
        );
        assert_eq!(fx.send, Some(Reply::RstNoSock));
        assert!(!fx.enqueue);
    }

    #[test]
    fn listener_admission() {
        let req = Hdr {
            op: Op::Request as u16,
            ..Hdr::default()
        };
        assert_eq!(Conn::listen_accepts(&req, false, 0), Ok(()));
        assert_eq!(Conn::listen_accepts(&req, true, 0), Err(Errno::ENOMEM));
        assert_eq!(
            Conn::listen_accepts(&req, false, SHUTDOWN_MASK),
            Err(Errno::ESHUTDOWN)
        );
        let rw = Hdr {
            op: Op::Rw as u16,
            ..Hdr::default()
        };
        assert_eq!(Conn::listen_accepts(&rw, false, 0), Err(Errno::EINVAL));
    }

    #[derive(Debug, Clone)]
    enum Ev {
        Send(usize, u32),
        Read(usize, u32),
        Deliver(usize),
        Shutdown(usize, u8),
        Close(usize),
        Timer(usize),
        Drop(usize),
    }

    fn ev() -> impl Strategy<Value = Ev> {
        let side = 0usize..2;
        prop_oneof![
            4 => (side.clone(), 0u32..300_000).prop_map(|(s, n)| Ev::Send(s, n)),
            4 => (side.clone(), 0u32..300_000).prop_map(|(s, n)| Ev::Read(s, n)),
            8 => side.clone().prop_map(Ev::Deliver),
            1 => (side.clone(), 1u8..4).prop_map(|(s, m)| Ev::Shutdown(s, m)),
            1 => side.clone().prop_map(Ev::Close),
            1 => side.clone().prop_map(Ev::Timer),
            1 => side.prop_map(Ev::Drop),
        ]
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(512))]

        /// Two honest endpoints under any interleaving of sends, reads, shutdowns, closes,
        /// timer expiries and lost packets: the receiver is never overrun, counters stay in
        /// bounds, and once both sides closed and the timers ran, both are gone (no socket is
        /// stuck forever).
        #[test]
        fn honest_peers_under_any_schedule(buf0 in 4096u32..(1 << 20), buf1 in 4096u32..(1 << 20), evs in proptest::collection::vec(ev(), 1..150)) {
            let mut p = Pair::connected([buf0, buf1]);
            let mut closed = [false; 2];
            let mut lost = false;
            for e in evs {
                match e {
                    Ev::Send(s, n) => { p.send(s, n); }
                    Ev::Read(s, n) => { p.read(s, n, 1); }
                    Ev::Deliver(s) => { p.deliver(s); }
                    Ev::Shutdown(s, m) => {
                        if !closed[s] {
                            let has = true;
                            let fx = p.ends[s].conn.shutdown(m, has);
                            p.apply(s, fx, None, 0);
                        }
                    }
                    Ev::Close(s) => if !closed[s] { closed[s] = true; p.close(s); },
                    Ev::Timer(s) => p.fire_timer(s),
                    Ev::Drop(s) => { lost |= p.wire[s].pop_front().is_some(); }
                }
                for end in &p.ends {
                    prop_assert!(end.conn.rx.buf_used <= end.conn.rx.buf_alloc);
                    prop_assert!(end.conn.rx.rx_bytes <= end.conn.rx.buf_used);
                    if !lost {
                        prop_assert_ne!(end.err, Some(Errno::ENOBUFS), "an honest peer was reset");
                    }
                }
            }
            // Finish: both close, everything is delivered, timers fire.
            for (s, was_closed) in closed.into_iter().enumerate() {
                if !was_closed { p.close(s); }
            }
            p.deliver_all();
            p.fire_timer(0);
            p.fire_timer(1);
            p.deliver_all();
            prop_assert!(p.ends[0].removed && p.ends[1].removed, "stuck: {:?}", p.ends);
        }

        /// Any packet, in any state, never panics and leaves a defined state; a RST is never
        /// answered with a RST.
        #[test]
        fn hostile_packets_are_handled(state in 0usize..5, done: bool, hdrs in proptest::collection::vec(proptest::array::uniform32(any::<u8>()), 1..40), flags: u32, lens in proptest::collection::vec(0u32..200_000, 40)) {
            let states = [SkState::Established, SkState::SynSent, SkState::Close, SkState::Listen, SkState::Closing];
            let mut c = Conn::new(SockType::SeqPacket, 65536);
            c.state = states[state];
            c.done = done;
            for (i, raw) in hdrs.iter().enumerate() {
                let mut b = [0u8; 44];
                b[..32].copy_from_slice(raw);
                let mut h = Hdr::decode(&b);
                h.op %= 9;
                h.flags = flags;
                h.len = lens[i];
                let fx = c.recv(&h, RxPlan { merge: i % 2 == 0 });
                prop_assert!(states.contains(&c.state));
                if h.op == Op::Rst as u16 {
                    prop_assert!(fx.send.is_none() || fx.send == Some(Reply::RstNoSock));
                }
                prop_assert!(c.rx.buf_used <= c.rx.buf_alloc);
            }
        }
    }

    #[test]
    fn small_messages_make_an_honest_sender_wait_instead_of_a_reset() {
        // Upstream resets a SEQPACKET connection with ENOBUFS once ~456 one-byte messages wait
        // unread.  Here the sender learns to wait, and nothing queued is lost.
        let mut p = Pair::connected_as(SockType::SeqPacket, [256 * 1024, 256 * 1024]);
        p.ends[1].conn.rx.pkt_cost = 576;
        let mut sent = 0;
        while p.send_msg(0, 1) == 1 {
            sent += 1;
            p.deliver_all();
            assert!(sent < 100_000, "the sender was never held back");
        }
        assert_eq!(p.ends[1].err, None);
        let max = p.ends[1].conn.rx.max_pkts();
        let cap = p.ends[1].conn.rx.shaped_cap();
        assert!(
            sent > max as usize / 2 && sent <= cap as usize,
            "{sent} of {max}"
        );
        assert_eq!(p.ends[1].conn.rx.msg_count as usize, sent);
        // The reader catches up and the sender goes on.
        while p.read_msg(1) {}
        p.deliver_all();
        assert_eq!(p.send_msg(0, 1), 1);
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(256))]

        /// A SEQPACKET sender that learns our credit updates within `lag` packets (on loopback
        /// at once) is never reset however small its messages and however slow the reader, and
        /// the queue never holds more packets than its bound.
        #[test]
        fn seqpacket_backpressure_holds(buf in 4096u32..(1 << 20), lag in 0usize..24, evs in proptest::collection::vec((0u8..4, 1u32..3000), 1..400)) {
            let mut p = Pair::connected_as(SockType::SeqPacket, [buf, buf]);
            p.ends[1].conn.rx.pkt_cost = 576;
            for (what, n) in evs {
                match what {
                    0 | 1 => {
                        let size = if what == 0 { 1 + n % 8 } else { n };
                        p.send_msg(0, size.min(p.ends[0].conn.max_message().max(1)));
                        // The receiver processes all but the last `lag` packets; its replies
                        // reach the sender at once.
                        while p.wire[1].len() > lag {
                            p.deliver(1);
                        }
                        while p.deliver(0) {}
                    }
                    2 => { p.read_msg(1); while p.deliver(0) {} }
                    _ => { p.deliver_all(); }
                }
                prop_assert_eq!(p.ends[1].err, None);
                prop_assert!(p.ends[1].conn.rx.pkts <= p.ends[1].conn.rx.max_pkts());
            }
        }
    }

    #[test]
    fn vsock_test_22_credit_update_after_rcvlowat_unblocks_sender() {
        // Receiver buffer 128 KiB; the sender wants to send 128 KiB + 1.
        let mut p = Pair::connected([256 * 1024, 128 * 1024]);
        p.deliver_all();
        assert_eq!(p.send(0, 128 * 1024 + 1), 128 * 1024);
        p.deliver_all();
        // The reader takes one 64 KiB packet with the default low-water mark: no update yet
        // (64 KiB is still free as far as the sender knows).
        p.read(1, 64 * 1024, 1);
        assert!(p.wire[0].is_empty());
        // Raising SO_RCVLOWAT above what is queued sends the update.
        assert!(p.ends[1].conn.rx.update_on_rcvlowat(64 * 1024 + 1));
        p.emit(
            1,
            Some(Reply::Sock {
                op: Op::CreditUpdate,
                flags: 0,
            }),
            None,
        );
        p.deliver_all();
        assert_eq!(p.send(0, 1), 1);
        let _: Vec<u8> = Vec::new();
    }
}
