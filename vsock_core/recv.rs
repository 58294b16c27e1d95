// SPDX-License-Identifier: GPL-2.0

//! Receiving: `recvmsg` for streams and seqpacket sockets (`__vsock_stream_recvmsg`,
//! `__vsock_seqpacket_recvmsg` and the virtio dequeue functions).

use crate::kx::msg::Msg;
use crate::kx::sys;
use crate::proto::conn::{RCV_SHUTDOWN, SEND_SHUTDOWN};
use crate::proto::hdr::{Op, SEQ_EOM, SEQ_EOR};
use crate::tx;
use crate::vsk::{Guard, State, Vsk};
use kernel::prelude::*;

/// Waits until the socket has something to read (`has` says what counts), an error, or a
/// shutdown (`vsock_connectible_wait_data`).
fn wait_data(g: &mut Guard<'_>, timeo: &mut i64, has: fn(&State) -> bool) -> Result {
    let cond = |g: &mut Guard<'_>| {
        let err = g.sock().err() != 0;
        let st = g.state();
        has(st)
            || err
            || st.conn.shutdown & RCV_SHUTDOWN != 0
            || st.conn.peer_shutdown & SEND_SHUTDOWN != 0
    };
    g.wait_until(timeo, cond).map_err(|w| w.to_error())
}

fn stream_has_data(st: &State) -> bool {
    st.conn.rx.rx_bytes != 0
}

fn seqpacket_has_data(st: &State) -> bool {
    st.conn.rx.msg_count != 0
}

/// The error or end-of-file a read reports once the loop ended.
fn tail_result(g: &mut Guard<'_>, r: Result<usize>) -> Result<usize> {
    let e = g.sock().err();
    if e != 0 {
        return Err(Error::from_errno(-e));
    }
    if g.state().conn.shutdown & RCV_SHUTDOWN != 0 {
        return Ok(0);
    }
    r
}

/// `recvmsg` on a stream.
pub(crate) fn stream(
    g: &mut Guard<'_>,
    msg: &mut Msg<'_>,
    len: usize,
    flags: u32,
) -> Result<usize> {
    let sk = g.sock();
    let mut target = sk.rcvlowat(flags & sys::MSG_WAITALL != 0, len);
    if target as u64 >= g.state().bufs.size {
        return Err(ENOMEM);
    }
    let peek = flags & sys::MSG_PEEK != 0;
    let mut timeo = sk.rcvtimeo(flags & sys::MSG_DONTWAIT != 0);
    let mut copied = 0usize;
    let mut res: Result<usize> = Ok(0);
    loop {
        if let Err(e) = wait_data(g, &mut timeo, stream_has_data) {
            res = Err(e);
            break;
        }
        if !stream_has_data(g.state()) {
            break;
        }
        let read = if peek {
            peek_stream(g.state(), msg, len - copied)
        } else {
            dequeue_stream(g, msg, len - copied)
        };
        match read {
            Ok(n) => copied += n,
            Err(e) => {
                res = Err(e);
                break;
            }
        }
        let n = read.unwrap_or(0);
        if n >= target || peek {
            break;
        }
        target -= n;
    }
    let res = tail_result(g, res);
    if copied > 0 {
        Ok(copied)
    } else {
        res
    }
}

/// Copies up to `len` queued bytes without consuming them.
fn peek_stream(st: &mut State, msg: &mut Msg<'_>, len: usize) -> Result<usize> {
    let mut total = 0usize;
    for skb in st.rx.iter() {
        if total == len {
            break;
        }
        let off = skb.cb().offset;
        let bytes = (len - total).min((skb.len() - off) as usize);
        if let Err(e) = skb.copy_to_msg(off, msg, bytes) {
            return if total > 0 { Ok(total) } else { Err(e) };
        }
        total += bytes;
    }
    Ok(total)
}

/// Consumes up to `len` queued bytes; a fault with nothing copied consumes nothing.  Sends a
/// credit update when the peer could otherwise stall.
fn dequeue_stream(g: &mut Guard<'_>, msg: &mut Msg<'_>, len: usize) -> Result<usize> {
    let sk = g.sock();
    let lowat = sk.rcvlowat(false, i32::MAX as usize) as u32;
    let st = g.state();
    let mut total = 0usize;
    let mut fault = None;
    while total < len {
        let Some(skb) = st.rx.front_mut() else { break };
        let mut cb = skb.cb();
        let bytes = (len - total).min((skb.len() - cb.offset) as usize);
        if let Err(e) = skb.copy_to_msg(cb.offset, msg, bytes) {
            fault = Some(e);
            break;
        }
        total += bytes;
        cb.offset += bytes as u32;
        if cb.offset == skb.len() {
            let pkt_len = skb.hdr().map_or(skb.len(), |h| h.len);
            st.conn.rx.consume(pkt_len, bytes as u32, false);
            if let Some(done) = st.rx.pop_front(sk) {
                done.consume();
            }
        } else {
            skb.set_cb(cb);
            st.conn.rx.read(bytes as u32);
        }
    }
    if st.conn.update_after_read(lowat) {
        let _ = tx::send_ctrl(st, Op::CreditUpdate, 0);
    }
    match fault {
        Some(e) if total == 0 => Err(e),
        _ => Ok(total),
    }
}

/// `recvmsg` on a seqpacket socket: one whole message per call.
pub(crate) fn seqpacket(
    g: &mut Guard<'_>,
    msg: &mut Msg<'_>,
    len: usize,
    flags: u32,
) -> Result<usize> {
    let mut timeo = g.sock().rcvtimeo(flags & sys::MSG_DONTWAIT != 0);
    wait_data(g, &mut timeo, seqpacket_has_data)?;
    if !seqpacket_has_data(g.state()) {
        return tail_result(g, Ok(0));
    }
    let msg_len = if flags & sys::MSG_PEEK != 0 {
        peek_message(g.state(), msg)?
    } else {
        let sk = g.sock();
        dequeue_message(sk, g.state(), msg)?
    };
    let e = g.sock().err();
    if e != 0 {
        return Err(Error::from_errno(-e));
    }
    if g.state().conn.shutdown & RCV_SHUTDOWN != 0 {
        return Ok(0);
    }
    let ret = if flags & sys::MSG_TRUNC != 0 {
        msg_len
    } else {
        len - msg.data_left()
    };
    if msg_len > len {
        msg.add_flags(sys::MSG_TRUNC);
    }
    Ok(ret)
}

/// Copies the first message without consuming it; returns its full length.
fn peek_message(st: &mut State, msg: &mut Msg<'_>) -> Result<usize> {
    let len = msg.data_left();
    let mut total = 0usize;
    for skb in st.rx.iter() {
        if total < len {
            let bytes = (len - total).min(skb.len() as usize);
            skb.copy_to_msg(0, msg, bytes)?;
        }
        total += skb.len() as usize;
        if let Some(h) = skb.hdr() {
            if h.flags & SEQ_EOM != 0 {
                if h.flags & SEQ_EOR != 0 {
                    msg.add_flags(sys::MSG_EOR);
                }
                break;
            }
        }
    }
    Ok(total)
}

/// Consumes the first message, copying what fits; a fault drops the whole message.  Always
/// sends a credit update.
fn dequeue_message(sk: &Vsk, st: &mut State, msg: &mut Msg<'_>) -> Result<usize> {
    let mut left = msg.data_left();
    let mut res: Result<usize> = Ok(0);
    while let Some(skb) = st.rx.pop_front(sk) {
        let (pkt_len, pflags) = skb.hdr().map_or((skb.len(), 0), |h| (h.len, h.flags));
        if let Ok(n) = res {
            let bytes = left.min(pkt_len as usize);
            if bytes > 0 {
                match skb.copy_to_msg(0, msg, bytes) {
                    Ok(()) => left -= bytes,
                    Err(e) => res = Err(e),
                }
            }
            if res.is_ok() {
                res = Ok(n + pkt_len as usize);
            }
        }
        let eom = pflags & SEQ_EOM != 0;
        st.conn.rx.consume(pkt_len, pkt_len, eom);
        skb.consume();
        if eom {
            if pflags & SEQ_EOR != 0 {
                msg.add_flags(sys::MSG_EOR);
            }
            break;
        }
    }
    let _ = tx::send_ctrl(st, Op::CreditUpdate, 0);
    res
}
