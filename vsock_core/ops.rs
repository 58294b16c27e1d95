// SPDX-License-Identifier: GPL-2.0

//! The socket calls of AF_VSOCK stream and seqpacket sockets (`af_vsock.c`), the socket-level
//! half of the close handshake, timers, and socket resets when a transport goes away.

use crate::kx::msg::{Msg, OptVal};
use crate::kx::sock::{Net, WaitError};
use crate::kx::socket::{
    Creating, Family, LockedByCaller, PollTable, Socket, SocketOps, SocketState, UserPtr,
};
use crate::kx::{self, sys, Gfp};
use crate::lifecycle::{alloc_sock, apply, cancel_pkt, mirror, remove_sock, unhash_connected};
use crate::proto::addr::{VsockAddr, AF_VSOCK, SOCKADDR_VM_LEN, VMADDR_CID_ANY, VMADDR_PORT_ANY};
use crate::proto::conn::{
    Release, Reply, SkState, SockType, RCV_SHUTDOWN, SEND_SHUTDOWN, SHUTDOWN_MASK,
};
use crate::proto::errno::Errno;
use crate::proto::hdr::Op;
use crate::proto::opts::{self, connect_timeout_ticks};
use crate::proto::poll::{self, PollInput};
use crate::proto::ports::is_reserved;
use crate::registry::Transport;
use crate::tx::{self, Outbox};
use crate::vsk::{
    new_conn, Guard, State, Vsk, VskRef, CLOSE_TIMEOUT_SECS, TIMER_CLOSE, TIMER_CONNECT,
};
use crate::{core, Core};
use ::core::sync::atomic::Ordering;
use kernel::prelude::*;
use kernel::rbtree::RBTreeNodeReservation;
use kernel::sync::Arc;
use kernel::types::ARef;

fn err(e: Errno) -> Error {
    kx::error(e)
}

/// Binds the socket (`__vsock_bind`).
fn bind_sk(core: &Core, g: &mut Guard<'_>, addr: VsockAddr) -> Result {
    if g.state().local.is_bound() {
        return Err(EINVAL);
    }
    if addr.cid != VMADDR_CID_ANY && !core.registry.loaded().is_local_cid(addr.cid) {
        return Err(err(Errno::EADDRNOTAVAIL));
    }
    if addr.port != VMADDR_PORT_ANY && is_reserved(addr.port) && !kx::capable_net_bind_service() {
        return Err(EACCES);
    }
    let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
    let me: VskRef = ARef::from(g.sock());
    let key = core
        .tables
        .bind(VsockAddr::new(addr.cid, addr.port), me, node)
        .map_err(err)?;
    // Listed as bound now (a `sock_diag` dump may meet it twice meanwhile, never not at all).
    drop(core.tables.remove_unbound(g.sock()));
    let st = g.state();
    st.local = VsockAddr::new(key.1, key.0);
    st.bound = Some(key);
    mirror(g);
    Ok(())
}

/// Assigns the transport that serves the remote address (`vsock_assign_transport`).
fn assign_transport(core: &Core, g: &mut Guard<'_>) -> Result<Arc<Transport>> {
    let st = g.state();
    let new = core.registry.select(&st.remote).map_err(err)?;
    if let Some(old) = &st.transport {
        if Arc::ptr_eq(old, &new) {
            return Ok(new);
        }
    }
    if st.conn.sock_type == SockType::SeqPacket && !new.ops.seqpacket_allow(st.remote.cid) {
        return Err(err(Errno::ESOCKTNOSUPPORT));
    }
    if st.transport.is_some() {
        // Another transport served an earlier attempt: forget that connection.
        unhash_connected(core, g);
    }
    let st = g.state();
    // A transport caps the buffer at what the protocol can advertise.
    st.bufs.size = st.bufs.size.min(opts::MAX_BUF_ALLOC);
    st.conn = new_conn(st.conn.sock_type, st.bufs.buf_alloc());
    st.transport = Some(new.clone());
    // A new connection: a reset of an earlier one no longer decides what reads report.
    st.transport_gone = None;
    g.sock()
        .data()
        .transport_id
        .store(new.id, Ordering::Release);
    mirror(g);
    Ok(new)
}

/// Closes the socket's connection (`virtio_transport_release`/`virtio_transport_close`).
fn transport_release(core: &Core, g: &mut Guard<'_>) {
    match g.state().conn.release() {
        Release::Now(reply) => {
            if let Some(Reply::Sock { op, flags }) = reply {
                let _ = tx::send_ctrl(g.state(), op, flags);
            }
            remove_sock(core, g);
        }
        Release::Wait(reply) => {
            if let Some(Reply::Sock { op, flags }) = reply {
                let _ = tx::send_ctrl(g.state(), op, flags);
            }
            let sk = g.sock();
            // SO_LINGER waits while bytes are still unsent, not for the peer to read them (as
            // upstream since 6.15, "vsock: Linger on unsent data").
            if sk.flag(sys::sock_flags_SOCK_LINGER) && !kx::current_exiting() {
                let mut t = sk.lingertime();
                let _ = g.wait_until(&mut t, |g| {
                    g.sock().data().unsent.load(Ordering::Acquire) == 0 || g.state().conn.done
                });
            }
            if g.state().conn.release_wait_done() {
                remove_sock(core, g);
            } else {
                sk.arm_timer(TIMER_CLOSE, CLOSE_TIMEOUT_SECS * kx::HZ);
            }
        }
    }
}

/// Releases a socket: its connection closes, unaccepted children go too (`__vsock_release`).
fn release_sk(core: &Core, sk: &Vsk, nested: bool) {
    let mut g = if nested { sk.lock_nested() } else { sk.lock() };
    g.state().dead = true;
    sk.set_flag(sys::sock_flags_SOCK_DEAD, true);
    if g.state().transport.is_some() {
        transport_release(core, &mut g);
    } else {
        remove_sock(core, &mut g);
    }
    sk.orphan();
    g.state().conn.shutdown = SHUTDOWN_MASK;
    mirror(&mut g);
    while let Some(child) = g.state().accept_q.pop() {
        sk.acceptq_removed();
        release_sk(core, &child, true);
    }
}

/// The AF_VSOCK family.
pub(crate) struct VsockFamily;

impl Family for VsockFamily {
    fn create(net: Net<'_>, sock: Creating<'_>, protocol: i32, kern: bool) -> Result {
        if protocol != 0 && protocol != sys::PF_VSOCK as i32 {
            return Err(err(Errno::EPROTONOSUPPORT));
        }
        let core = core().ok_or(ENODEV)?;
        let ty = match sock.sock_type() {
            sys::sock_type_SOCK_STREAM => SockType::Stream,
            sys::sock_type_SOCK_SEQPACKET => SockType::SeqPacket,
            // Datagrams need a DGRAM transport (VMCI only); none of rvsock's provides one.
            sys::sock_type_SOCK_DGRAM => return Err(ENODEV),
            _ => return Err(err(Errno::ESOCKTNOSUPPORT)),
        };
        sock.set_ops(match ty {
            SockType::Stream => &core.stream_ops,
            SockType::SeqPacket => &core.seqpacket_ops,
        });
        sock.set_state(SocketState::Unconnected);
        let node = RBTreeNodeReservation::new(GFP_KERNEL)?;
        let sk = alloc_sock(core, net, Some(sock), ty, Gfp::Kernel, kern, State::new(ty))?;
        // Listed as unbound for `sock_diag` until it is bound or released.
        core.tables.insert_unbound(sk.clone(), node);
        sock.set_flag(sys::SOCK_CUSTOM_SOCKOPT);
        Vsk::attach(sk);
        Ok(())
    }
}

/// The socket calls.
pub(crate) struct Vsock;

fn sock_sk(sock: &Socket) -> Result<(&'static Core, &Vsk)> {
    let core = core().ok_or(ENODEV)?;
    let sk = core.proto.sock_of(sock).ok_or(EINVAL)?;
    Ok((core, sk))
}

fn established_or_closing(st: &State) -> bool {
    matches!(st.conn.state, SkState::Established | SkState::Closing)
}

impl SocketOps for Vsock {
    fn release(sock: &Socket) -> Result {
        let Some(core) = core() else { return Ok(()) };
        let Some(sk) = core.proto.detach(sock) else {
            return Ok(());
        };
        release_sk(core, &sk, false);
        sock.set_state(SocketState::Free);
        Ok(())
    }

    fn bind(sock: &Socket, addr: &[u8]) -> Result {
        let (core, sk) = sock_sk(sock)?;
        let addr = VsockAddr::parse(addr).map_err(|_| EINVAL)?;
        let mut g = sk.lock();
        bind_sk(core, &mut g, addr)
    }

    fn connect(sock: &Socket, addr: &[u8], flags: i32) -> Result {
        let (core, sk) = sock_sk(sock)?;
        let nonblock = flags & sys::O_NONBLOCK != 0;
        let mut g = sk.lock();
        let pending = match sock.state() {
            SocketState::Connected => return Err(err(Errno::EISCONN)),
            SocketState::Disconnecting => return Err(EINVAL),
            SocketState::Connecting => {
                if nonblock {
                    return Err(err(Errno::EALREADY));
                }
                err(Errno::EALREADY)
            }
            _ => {
                let remote = VsockAddr::parse(addr).map_err(|_| EINVAL)?;
                if g.state().listening() {
                    return Err(EINVAL);
                }
                g.state().remote = remote;
                // `getpeername` returns the address as given, reserved bytes included.
                let mut raw = [0u8; SOCKADDR_VM_LEN];
                raw.copy_from_slice(addr.get(..SOCKADDR_VM_LEN).ok_or(EINVAL)?);
                g.state().remote_raw = Some(raw);
                let t = assign_transport(core, &mut g)?;
                if t.desc.msgzerocopy {
                    sock.set_flag(sys::SOCK_SUPPORT_ZC);
                } else if sk.flag(sys::sock_flags_SOCK_ZEROCOPY) {
                    return Err(err(Errno::EOPNOTSUPP));
                }
                if !g.state().local.is_bound() {
                    bind_sk(core, &mut g, VsockAddr::ANY)?;
                }
                let fx = g.state().conn.connect();
                mirror(&mut g);
                if let Some(Reply::Sock { op, flags }) = fx.send {
                    if let Err(e) = tx::send_ctrl(g.state(), op, flags) {
                        g.state().conn.connect_abort();
                        mirror(&mut g);
                        return Err(e);
                    }
                }
                sk.clear_err();
                sock.set_state(SocketState::Connecting);
                err(Errno::EINPROGRESS)
            }
        };

        let mut timeo = g.state().connect_timeout as i64;
        let done = |g: &mut Guard<'_>| established_or_closing(g.state()) || g.sock().err() != 0;
        if !done(&mut g) {
            if nonblock {
                sk.arm_timer(TIMER_CONNECT, timeo as u64);
                return Err(pending);
            }
            if let Err(w) = g.wait_until(&mut timeo, done) {
                let e = match w {
                    WaitError::Timeout => err(Errno::ETIMEDOUT),
                    WaitError::Interrupted(_) => w.to_error(),
                };
                g.state().conn.connect_abort();
                mirror(&mut g);
                sock.set_state(SocketState::Unconnected);
                cancel_pkt(&mut g);
                return Err(e);
            }
            if established_or_closing(g.state()) {
                return Ok(());
            }
        }
        if let Err(e) = sk.take_err() {
            g.state().conn.connect_abort();
            mirror(&mut g);
            sock.set_state(SocketState::Unconnected);
            return Err(e);
        }
        Ok(())
    }

    fn accept(sock: &Socket, newsock: &Socket, flags: i32) -> Result {
        let (_, sk) = sock_sk(sock)?;
        let mut g = sk.lock();
        if !g.state().listening() {
            return Err(EINVAL);
        }
        let mut timeo = sk.rcvtimeo(flags & sys::O_NONBLOCK != 0);
        g.wait_until(&mut timeo, |g| !g.state().accept_q.is_empty())
            .map_err(WaitError::to_error)?;
        let child = g.state().accept_q.pop().ok_or(EAGAIN)?;
        sk.acceptq_removed();
        let zc = {
            let mut cg = child.lock_nested();
            let zc = cg
                .state()
                .transport
                .as_ref()
                .is_some_and(|t| t.desc.msgzerocopy);
            newsock.set_state(SocketState::Connected);
            drop(cg);
            zc
        };
        Vsk::graft(child, newsock);
        newsock.set_flag(sys::SOCK_CUSTOM_SOCKOPT);
        if zc {
            newsock.set_flag(sys::SOCK_SUPPORT_ZC);
        }
        Ok(())
    }

    fn getname(sock: &Socket, out: &mut [u8], peer: bool) -> Result<usize> {
        let (_, sk) = sock_sk(sock)?;
        let mut g = sk.lock();
        let bytes = if peer {
            if sock.state() != SocketState::Connected {
                return Err(err(Errno::ENOTCONN));
            }
            match g.state().remote_raw {
                Some(raw) => raw,
                None => g.state().remote.to_bytes(),
            }
        } else {
            g.state().local.to_bytes()
        };
        let dst = out.get_mut(..SOCKADDR_VM_LEN).ok_or(EINVAL)?;
        dst.copy_from_slice(&bytes);
        Ok(SOCKADDR_VM_LEN)
    }

    fn poll(sock: &Socket, table: &PollTable) -> u32 {
        table.wait(sock);
        let Ok((_, sk)) = sock_sk(sock) else {
            return poll::EPOLLERR;
        };
        let mut g = sk.lock();
        let lowat = sk.rcvlowat(false, i32::MAX as usize);
        let st = g.state();
        let input = PollInput {
            state: st.conn.state,
            shutdown: st.conn.shutdown,
            peer_shutdown: st.conn.peer_shutdown,
            error: sk.err() != 0 || sk.error_queue_nonempty(),
            accept_ready: !st.accept_q.is_empty(),
            has_transport: st.transport.is_some(),
            readable: st.conn.rx.rx_bytes as usize >= lowat,
            writable: st.conn.tx_space() > 0,
        };
        poll::mask(&input)
    }

    fn ioctl(sock: &Socket, cmd: u32, arg: UserPtr) -> Result<i32> {
        let (_, sk) = sock_sk(sock)?;
        let n = {
            let mut g = sk.lock();
            let st = g.state();
            let outq = cmd == sys::SIOCOUTQ;
            if !outq && cmd != sys::SIOCINQ {
                return Err(ENOIOCTLCMD);
            }
            if st.transport.is_none() {
                return Err(err(Errno::EOPNOTSUPP));
            }
            if st.listening() {
                return Err(EINVAL);
            }
            if outq {
                sk.data().unsent.load(Ordering::Acquire)
            } else {
                st.conn.rx.rx_bytes
            }
        };
        arg.write(&(n.min(i32::MAX as u32) as i32))?;
        Ok(0)
    }

    fn listen(sock: &Socket, backlog: i32) -> Result {
        let (_, sk) = sock_sk(sock)?;
        let mut g = sk.lock();
        if sock.state() != SocketState::Unconnected || !g.state().local.is_bound() {
            return Err(EINVAL);
        }
        sk.set_max_ack_backlog(backlog.max(0) as u32);
        g.state().conn.state = SkState::Listen;
        mirror(&mut g);
        Ok(())
    }

    fn shutdown(sock: &Socket, how: i32) -> Result {
        let mode = how.checked_add(1).ok_or(EINVAL)?;
        if mode <= 0 || mode & !(SHUTDOWN_MASK as i32) != 0 {
            return Err(EINVAL);
        }
        let (core, sk) = sock_sk(sock)?;
        let mut g = sk.lock();
        if sock.state() == SocketState::Unconnected {
            return Err(err(Errno::ENOTCONN));
        }
        sock.set_state(SocketState::Disconnecting);
        // An accepted child whose RESPONSE the listener has not sent yet: it goes first.
        tx::send_pending_response(g.state());
        let has_transport = g.state().transport.is_some();
        let fx = g.state().conn.shutdown(mode as u8, has_transport);
        let mut out = Outbox::new();
        apply(core, &mut g, fx, None, &mut out, Gfp::Kernel);
        out.flush(core);
        Ok(())
    }

    fn setsockopt(sock: &Socket, level: i32, optname: i32, val: OptVal) -> Result {
        let (_, sk) = sock_sk(sock)?;
        if level == sys::SOL_SOCKET as i32 {
            if optname != sys::SO_ZEROCOPY as i32 {
                return kx::socket::sock_setsockopt(sock, level, optname, &val);
            }
            let v: i32 = val.read()?;
            let mut g = sk.lock();
            if !(0..=1).contains(&v) {
                return Err(EINVAL);
            }
            if g.state()
                .transport
                .as_ref()
                .is_some_and(|t| !t.desc.msgzerocopy)
            {
                return Err(err(Errno::EOPNOTSUPP));
            }
            sk.set_flag(sys::sock_flags_SOCK_ZEROCOPY, v == 1);
            return Ok(());
        }
        if level != AF_VSOCK as i32 {
            return Err(err(Errno::ENOPROTOOPT));
        }
        let mut g = sk.lock();
        match optname {
            opts::SO_VM_SOCKETS_BUFFER_SIZE
            | opts::SO_VM_SOCKETS_BUFFER_MIN_SIZE
            | opts::SO_VM_SOCKETS_BUFFER_MAX_SIZE => {
                let v: u64 = val.read()?;
                let st = g.state();
                let has_transport = st.transport.is_some();
                if st.bufs.set(optname, v, has_transport) && has_transport {
                    st.conn.rx.buf_alloc = st.bufs.buf_alloc();
                    sk.data().set_backlog_limit(st.conn.rx.buf_alloc);
                    let _ = tx::send_ctrl(st, Op::CreditUpdate, 0);
                }
                Ok(())
            }
            opts::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD | opts::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW => {
                let old = optname == opts::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD;
                let (sec, usec) = kx::socket::copy_timeval(&val, old)?;
                let ticks = connect_timeout_ticks(sec, usec, kx::HZ).map_err(err)?;
                g.state().connect_timeout =
                    ticks.unwrap_or(crate::vsk::DEFAULT_CONNECT_TIMEOUT_SECS * kx::HZ);
                Ok(())
            }
            _ => Err(err(Errno::ENOPROTOOPT)),
        }
    }

    fn getsockopt(sock: &Socket, level: i32, optname: i32, val: UserPtr, len: UserPtr) -> Result {
        if level != AF_VSOCK as i32 {
            return Err(err(Errno::ENOPROTOOPT));
        }
        let (_, sk) = sock_sk(sock)?;
        let ulen: i32 = len.read()?;
        let mut buf = [0u8; 16];
        let lv = {
            let mut g = sk.lock();
            let st = g.state();
            match optname {
                opts::SO_VM_SOCKETS_BUFFER_SIZE => put_u64(&mut buf, st.bufs.size),
                opts::SO_VM_SOCKETS_BUFFER_MAX_SIZE => put_u64(&mut buf, st.bufs.max),
                opts::SO_VM_SOCKETS_BUFFER_MIN_SIZE => put_u64(&mut buf, st.bufs.min),
                opts::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD
                | opts::SO_VM_SOCKETS_CONNECT_TIMEOUT_NEW => {
                    let old = optname == opts::SO_VM_SOCKETS_CONNECT_TIMEOUT_OLD;
                    kx::socket::get_timeout(st.connect_timeout, &mut buf, old)
                }
                _ => return Err(err(Errno::ENOPROTOOPT)),
            }
        };
        if ulen < lv as i32 {
            return Err(EINVAL);
        }
        let n = (ulen as usize).min(lv);
        val.write_bytes(&buf[..n])?;
        len.write(&(n as i32))?;
        Ok(())
    }

    fn sendmsg(sock: &Socket, msg: &mut Msg<'_>, len: usize) -> Result<usize> {
        if msg.flags() & sys::MSG_OOB != 0 {
            return Err(err(Errno::EOPNOTSUPP));
        }
        let (_, sk) = sock_sk(sock)?;
        let mut g = sk.lock();
        let stream = g.state().conn.sock_type == SockType::Stream;
        let mut lent = None;
        let r = send(&mut g, msg, len, &mut lent);
        drop(g);
        if let Some(lent) = lent {
            tx::settle_lent(sk, lent);
        }
        match r {
            Err(e) if stream => Err(sk.stream_error(msg.flags(), e)),
            r => r,
        }
    }

    fn recvmsg(sock: &Socket, msg: &mut Msg<'_>, len: usize, flags: i32) -> Result<usize> {
        let (_, sk) = sock_sk(sock)?;
        let flags = flags as u32;
        if flags & sys::MSG_ERRQUEUE != 0 {
            return sk.recv_errqueue(msg, len, sys::SOL_VSOCK as i32, sys::VSOCK_RECVERR as i32);
        }
        let mut g = sk.lock();
        let st = g.state();
        if st.transport.is_none() || st.conn.state != SkState::Established {
            // End of file once the connection ended (`SOCK_DONE`), else not connected.  A reset
            // because the transport or its device went away leaves `SOCK_DONE` as it was, as
            // upstream's `virtio_vsock_reset_sock` does: reads give ENOTCONN, with ECONNRESET
            // pending in SO_ERROR (a reader blocked at the time gets ECONNRESET).
            let done = st.transport_gone.unwrap_or(st.conn.done);
            return if done {
                Ok(0)
            } else {
                Err(err(Errno::ENOTCONN))
            };
        }
        if flags & sys::MSG_OOB != 0 {
            return Err(err(Errno::EOPNOTSUPP));
        }
        if st.conn.shutdown & RCV_SHUTDOWN != 0 || len == 0 {
            return Ok(0);
        }
        if st.conn.sock_type == SockType::Stream {
            crate::recv::stream(&mut g, msg, len, flags)
        } else {
            crate::recv::seqpacket(&mut g, msg, len, flags)
        }
    }

    fn set_rcvlowat(sock: &Socket, locked: &LockedByCaller, val: i32) -> Result {
        let (_, sk) = sock_sk(sock)?;
        let mut g = sk.locked_by_caller(locked).ok_or(EINVAL)?;
        let st = g.state();
        if val < 0 || val as u64 > st.bufs.size {
            return Err(EINVAL);
        }
        if st.transport.is_some() && st.conn.rx.update_on_rcvlowat(val as u32) {
            tx::send_ctrl(st, Op::CreditUpdate, 0)?;
        }
        sk.set_rcvlowat(if val == 0 { 1 } else { val });
        Ok(())
    }
}

fn put_u64(buf: &mut [u8; 16], v: u64) -> usize {
    buf[..8].copy_from_slice(&v.to_ne_bytes());
    8
}

/// The send loop of `sendmsg` (`vsock_connectible_sendmsg`).  A send that lends its pages
/// leaves the notification in `lent`, to settle once the socket lock is dropped.
fn send(
    g: &mut Guard<'_>,
    msg: &mut Msg<'_>,
    len: usize,
    lent: &mut Option<crate::kx::zerocopy::Lent>,
) -> Result<usize> {
    let sk = g.sock();
    let st = g.state();
    if msg.namelen() != 0 {
        return Err(err(if st.conn.state == SkState::Established {
            Errno::EISCONN
        } else {
            Errno::EOPNOTSUPP
        }));
    }
    if st.conn.shutdown & SEND_SHUTDOWN != 0 || st.conn.peer_shutdown & RCV_SHUTDOWN != 0 {
        return Err(EPIPE);
    }
    let Some(t) = st.transport.clone() else {
        return Err(err(Errno::ENOTCONN));
    };
    if st.conn.state != SkState::Established || !st.local.is_bound() {
        return Err(err(Errno::ENOTCONN));
    }
    if !st.remote.is_bound() {
        return Err(err(Errno::EDESTADDRREQ));
    }
    if msg.flags() & sys::MSG_ZEROCOPY != 0 && !t.desc.msgzerocopy {
        return Err(err(Errno::EOPNOTSUPP));
    }
    let seqpacket = st.conn.sock_type == SockType::SeqPacket;
    let mut timeo = sk.sndtimeo(msg.flags() & sys::MSG_DONTWAIT != 0);
    if tx::may_lend(sk, st, &t, msg, len, timeo) {
        *lent = crate::kx::zerocopy::Lent::new();
    }
    let mut total = 0usize;
    let mut failure = None;
    while total < len {
        let blocked = |g: &mut Guard<'_>| {
            let err = g.sock().err() != 0;
            let c = &g.state().conn;
            c.tx_space() > 0
                || err
                || c.shutdown & SEND_SHUTDOWN != 0
                || c.peer_shutdown & RCV_SHUTDOWN != 0
        };
        if let Err(w) = g.wait_until(&mut timeo, blocked) {
            failure = Some(w.to_error());
            break;
        }
        let e = sk.err();
        let st = g.state();
        if e != 0 {
            failure = Some(Error::from_errno(-e));
            break;
        }
        if st.conn.shutdown & SEND_SHUTDOWN != 0 || st.conn.peer_shutdown & RCV_SHUTDOWN != 0 {
            failure = Some(EPIPE);
            break;
        }
        if seqpacket {
            if let Err(e) = tx::check_message_size(st, len - total) {
                failure = Some(err(e));
                break;
            }
        }
        match tx::send_data(sk, st, &t, msg, len - total, lent.as_ref()) {
            Ok(n) => total += n,
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    if total > 0 && (!seqpacket || total == len) {
        return Ok(total);
    }
    match failure {
        Some(e) => Err(e),
        None => Ok(total),
    }
}
