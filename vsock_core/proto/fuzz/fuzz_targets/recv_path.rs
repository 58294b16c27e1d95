// SPDX-License-Identifier: GPL-2.0

//! Fuzzes what a peer controls: packet headers fed to the connection state machine in any
//! state, listener admission, and socket addresses.  Any panic, and any broken invariant, is a
//! finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rvsock_proto::addr::VsockAddr;
use rvsock_proto::conn::{Conn, Reply, RxPlan, SkState, SockType, SHUTDOWN_MASK};
use rvsock_proto::hdr::{Hdr, Op, HDR_LEN};

const STATES: [SkState; 5] = [
    SkState::Established,
    SkState::SynSent,
    SkState::Close,
    SkState::Listen,
    SkState::Closing,
];

fuzz_target!(|data: &[u8]| {
    let Some((&ctl, rest)) = data.split_first() else {
        return;
    };
    let _ = VsockAddr::parse(rest);
    let ty = if ctl & 1 == 0 {
        SockType::Stream
    } else {
        SockType::SeqPacket
    };
    let buf_alloc = u32::from(ctl >> 1) * 4096 + 1;
    let mut c = Conn::new(ty, buf_alloc);
    c.state = STATES[(ctl as usize >> 5) % STATES.len()];
    for (i, raw) in rest.chunks(HDR_LEN + 2).enumerate() {
        let Some(hdr) = Hdr::parse(raw) else { break };
        let knobs = raw.get(HDR_LEN).copied().unwrap_or(0);
        let _ = Conn::listen_accepts(&hdr, knobs & 1 != 0, knobs & 2);
        if knobs & 4 != 0 && c.state == SkState::Listen {
            c = Conn::child(ty, buf_alloc, &hdr);
            continue;
        }
        c.rx.pkt_cost = u32::from(raw.get(HDR_LEN + 1).copied().unwrap_or(0)) * 8;
        let plan = RxPlan {
            merge: knobs & 8 != 0,
        };
        let before = c;
        let fx = c.recv(&hdr, plan);
        if hdr.op == Op::Rst as u16 {
            assert!(
                fx.send.is_none() || fx.send == Some(Reply::RstNoSock),
                "RST answered: {before:?}"
            );
        }
        assert!(c.rx.buf_used <= c.rx.buf_alloc, "overrun admitted");
        assert!(c.rx.pkts <= c.rx.max_pkts(), "too many packets admitted");
        assert!(c.rx.rx_bytes <= c.rx.buf_used);
        assert!(c.peer_shutdown <= SHUTDOWN_MASK && c.shutdown <= SHUTDOWN_MASK);
        if fx.enqueue {
            // The reader consumes some packets, as a user would.
            if i % 3 == 0 {
                c.rx.consume(hdr.len, hdr.len, false);
            }
        }
        // Local events interleave with packets.
        match knobs >> 4 {
            1 => {
                let _ = c.shutdown(knobs & 3, true);
            }
            2 => {
                let _ = c.release();
            }
            3 => {
                let _ = c.close_timeout();
            }
            4 => {
                let _ = c.transport_reset();
            }
            5 => {
                let _ = c.connect_timeout();
            }
            _ => {}
        }
        let _ = c.reserve(hdr.len);
        assert!(c.tx.in_flight() as u64 <= u32::MAX as u64);
    }
});
