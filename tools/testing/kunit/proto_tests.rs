// SPDX-License-Identifier: GPL-2.0

//! KUnit suites over the protocol logic as compiled into the kernel: transport selection (with
//! the seed's scenarios), ports, the wire header, credit and the connection state machine
//! against a mock peer.

use crate::kunit::{kcheck, kcheck_eq, kunit_suite, TestResult};
use crate::proto::addr::{VsockAddr, VMADDR_CID_ANY, VMADDR_FLAG_TO_HOST, VMADDR_PORT_ANY};
use crate::proto::conn::{Conn, Release, Reply, RxPlan, SkState, SockType, SHUTDOWN_MASK};
use crate::proto::credit::{Overrun, RxCredit, TxCredit};
use crate::proto::errno::Errno;
use crate::proto::hdr::{Hdr, Op, SEQ_EOM, SEQ_EOR, SHUTDOWN_RCV, SHUTDOWN_SEND};
use crate::proto::poll::{self, PollInput};
use crate::proto::ports::{bound_matches, is_reserved, Ephemeral, MAX_PORT_RETRIES};
use crate::proto::route::scenarios::{L0_HOST, L1_NESTED, L2_GUEST, LOOPBACK_ONLY};
use crate::proto::route::{child_remote, slots_of, Loaded, Slot, F_G2H, F_H2G, F_LOCAL};

fn to(cid: u32) -> VsockAddr {
    VsockAddr::new(cid, 1234)
}

fn to_host(cid: u32) -> VsockAddr {
    VsockAddr {
        flags: VMADDR_FLAG_TO_HOST,
        ..to(cid)
    }
}

fn route_loopback_only() -> TestResult {
    kcheck_eq!(LOOPBACK_ONLY.select(&to(1)), Ok(Slot::Local));
    kcheck_eq!(LOOPBACK_ONLY.select(&to(2)), Ok(Slot::Local));
    kcheck_eq!(LOOPBACK_ONLY.select(&to(5)), Err(Errno::ENODEV));
    kcheck_eq!(LOOPBACK_ONLY.select(&to_host(5)), Err(Errno::ENODEV));
    Ok(())
}

fn route_l0_host_with_h2g() -> TestResult {
    kcheck_eq!(L0_HOST.select(&to(1)), Ok(Slot::Local));
    kcheck_eq!(L0_HOST.select(&to(2)), Ok(Slot::Local));
    kcheck_eq!(L0_HOST.select(&to(3)), Ok(Slot::H2g));
    kcheck_eq!(L0_HOST.select(&to(0xfffffffe)), Ok(Slot::H2g));
    Ok(())
}

fn route_l0_to_host_flag_needs_g2h() -> TestResult {
    kcheck_eq!(L0_HOST.select(&to_host(7)), Err(Errno::ENODEV));
    Ok(())
}

fn route_l2_guest_with_g2h() -> TestResult {
    kcheck_eq!(L2_GUEST.select(&to(1)), Ok(Slot::Local));
    kcheck_eq!(L2_GUEST.select(&to(2)), Ok(Slot::G2h));
    kcheck_eq!(L2_GUEST.select(&to(0)), Ok(Slot::G2h));
    Ok(())
}

fn route_l2_own_cid_is_local() -> TestResult {
    kcheck_eq!(L2_GUEST.select(&to(4)), Ok(Slot::Local));
    Ok(())
}

fn route_l2_sibling_goes_to_host() -> TestResult {
    kcheck_eq!(L2_GUEST.select(&to(7)), Ok(Slot::G2h));
    kcheck_eq!(L2_GUEST.select(&to_host(7)), Ok(Slot::G2h));
    Ok(())
}

fn route_l1_nested_cid1() -> TestResult {
    kcheck_eq!(L1_NESTED.select(&to(1)), Ok(Slot::Local));
    Ok(())
}

fn route_l1_nested_own_cid() -> TestResult {
    kcheck_eq!(L1_NESTED.select(&to(3)), Ok(Slot::Local));
    Ok(())
}

fn route_l1_nested_host() -> TestResult {
    kcheck_eq!(L1_NESTED.select(&to(2)), Ok(Slot::G2h));
    kcheck_eq!(L1_NESTED.select(&to(0)), Ok(Slot::G2h));
    Ok(())
}

fn route_l1_nested_l2_guest() -> TestResult {
    kcheck_eq!(L1_NESTED.select(&to(4)), Ok(Slot::H2g));
    kcheck_eq!(L1_NESTED.select(&to(100)), Ok(Slot::H2g));
    Ok(())
}

fn route_l1_nested_to_host_flag() -> TestResult {
    kcheck_eq!(L1_NESTED.select(&to_host(4)), Ok(Slot::G2h));
    Ok(())
}

fn route_without_local_transport() -> TestResult {
    let virtio_only = Loaded {
        g2h: Some(3),
        ..Loaded::default()
    };
    kcheck_eq!(virtio_only.select(&to(1)), Ok(Slot::G2h));
    kcheck_eq!(virtio_only.select(&to(3)), Ok(Slot::G2h));
    kcheck_eq!(Loaded::default().select(&to(1)), Err(Errno::ENODEV));
    kcheck_eq!(Loaded::default().select_dgram(), Err(Errno::ENODEV));
    Ok(())
}

fn route_bind_locality() -> TestResult {
    kcheck!(LOOPBACK_ONLY.is_local_cid(1));
    kcheck!(!LOOPBACK_ONLY.is_local_cid(2));
    kcheck!(L0_HOST.is_local_cid(2));
    kcheck!(L1_NESTED.is_local_cid(3));
    kcheck!(!L1_NESTED.is_local_cid(4));
    Ok(())
}

fn route_dev_vsock_cid() -> TestResult {
    kcheck_eq!(Loaded::default().dev_local_cid(), VMADDR_CID_ANY);
    kcheck_eq!(LOOPBACK_ONLY.dev_local_cid(), 1);
    kcheck_eq!(L0_HOST.dev_local_cid(), 2);
    kcheck_eq!(L2_GUEST.dev_local_cid(), 4);
    kcheck_eq!(L1_NESTED.dev_local_cid(), 3);
    Ok(())
}

fn route_sibling_child_replies_via_host() -> TestResult {
    kcheck_eq!(child_remote(&to(3), to(5)).flags, VMADDR_FLAG_TO_HOST);
    kcheck_eq!(child_remote(&to(1), to(5)).flags, 0);
    kcheck_eq!(child_remote(&to(3), to(2)).flags, 0);
    Ok(())
}

fn route_feature_flags() -> TestResult {
    kcheck!(slots_of(0).is_err());
    kcheck!(slots_of(0x10).is_err());
    let mut n = 0;
    if let Ok(it) = slots_of(F_H2G | F_G2H | F_LOCAL) {
        for _ in it {
            n += 1;
        }
    }
    kcheck_eq!(n, 3);
    Ok(())
}

kunit_suite!(rvsock_route = "rvsock_route" [
    route_loopback_only,
    route_l0_host_with_h2g,
    route_l0_to_host_flag_needs_g2h,
    route_l2_guest_with_g2h,
    route_l2_own_cid_is_local,
    route_l2_sibling_goes_to_host,
    route_l1_nested_cid1,
    route_l1_nested_own_cid,
    route_l1_nested_host,
    route_l1_nested_l2_guest,
    route_l1_nested_to_host_flag,
    route_without_local_transport,
    route_bind_locality,
    route_dev_vsock_cid,
    route_sibling_child_replies_via_host,
    route_feature_flags,
]);

fn ports_ephemeral_start_above_reserved() -> TestResult {
    let mut e = Ephemeral::new(0);
    kcheck_eq!(e.allocate(|_| false), Ok(1024));
    kcheck_eq!(e.allocate(|_| false), Ok(1025));
    Ok(())
}

fn ports_ephemeral_wraps_and_skips_any() -> TestResult {
    let mut e = Ephemeral::new(VMADDR_PORT_ANY - 1);
    kcheck_eq!(e.allocate(|_| false), Ok(VMADDR_PORT_ANY - 1));
    kcheck_eq!(e.allocate(|_| false), Ok(1024));
    Ok(())
}

fn ports_ephemeral_skips_ports_in_use() -> TestResult {
    let mut e = Ephemeral::new(5000);
    kcheck_eq!(e.allocate(|p| p < 5003), Ok(5003));
    Ok(())
}

fn ports_ephemeral_gives_up() -> TestResult {
    let mut e = Ephemeral::new(5000);
    let mut tries = 0;
    kcheck_eq!(
        e.allocate(|_| {
            tries += 1;
            true
        }),
        Err(Errno::EADDRNOTAVAIL)
    );
    kcheck_eq!(tries, MAX_PORT_RETRIES);
    Ok(())
}

fn ports_bind_conflicts() -> TestResult {
    let any = |p| VsockAddr::new(VMADDR_CID_ANY, p);
    kcheck!(bound_matches(&VsockAddr::new(1, 5), &VsockAddr::new(1, 5)));
    kcheck!(!bound_matches(&VsockAddr::new(1, 5), &VsockAddr::new(2, 5)));
    kcheck!(bound_matches(&any(5), &VsockAddr::new(2, 5)));
    kcheck!(bound_matches(&VsockAddr::new(2, 5), &any(5)));
    kcheck!(!bound_matches(&any(5), &any(6)));
    Ok(())
}

fn ports_reserved_range() -> TestResult {
    kcheck!(is_reserved(0));
    kcheck!(is_reserved(1023));
    kcheck!(!is_reserved(1024));
    Ok(())
}

fn addr_parse_errors() -> TestResult {
    let good = VsockAddr::new(1, 1234).to_bytes();
    kcheck_eq!(VsockAddr::parse(&good), Ok(VsockAddr::new(1, 1234)));
    kcheck_eq!(VsockAddr::parse(&good[..15]), Err(Errno::EFAULT));
    let mut bad = good;
    bad[0] = 2;
    kcheck_eq!(VsockAddr::parse(&bad), Err(Errno::EAFNOSUPPORT));
    let mut bad = good;
    bad[12] = 2;
    kcheck_eq!(VsockAddr::parse(&bad), Err(Errno::EINVAL));
    Ok(())
}

kunit_suite!(rvsock_ports = "rvsock_ports" [
    ports_ephemeral_start_above_reserved,
    ports_ephemeral_wraps_and_skips_any,
    ports_ephemeral_skips_ports_in_use,
    ports_ephemeral_gives_up,
    ports_bind_conflicts,
    ports_reserved_range,
    addr_parse_errors,
]);

fn hdr_is_little_endian_and_packed() -> TestResult {
    let h = Hdr {
        src_cid: 0x0102030405060708,
        dst_cid: 2,
        src_port: 0x11223344,
        dst_port: 1234,
        len: 5,
        type_: 2,
        op: Op::Rw as u16,
        flags: SEQ_EOM | SEQ_EOR,
        buf_alloc: 262144,
        fwd_cnt: 7,
    };
    let b = h.encode();
    kcheck_eq!(b[0], 8);
    kcheck_eq!(b[7], 1);
    kcheck_eq!(b[16], 0x44);
    kcheck_eq!(b[30], 5);
    kcheck_eq!(Hdr::decode(&b), h);
    Ok(())
}

fn hdr_rst_is_never_answered() -> TestResult {
    let rst = Hdr {
        op: Op::Rst as u16,
        ..Hdr::default()
    };
    kcheck!(rst.rst_reply().is_none());
    let req = Hdr {
        src_cid: 3,
        dst_cid: 2,
        src_port: 9,
        dst_port: 10,
        op: Op::Request as u16,
        type_: 1,
        buf_alloc: 5,
        ..Hdr::default()
    };
    let r = req.rst_reply();
    kcheck!(r.is_some());
    if let Some(r) = r {
        kcheck_eq!(
            (r.src_cid, r.dst_cid, r.src_port, r.dst_port),
            (2, 3, 10, 9)
        );
        kcheck_eq!((r.op, r.buf_alloc, r.type_), (Op::Rst as u16, 0, 1));
    }
    Ok(())
}

fn credit_window_capped_by_own_buffer() -> TestResult {
    let mut tx = TxCredit::default();
    tx.update(1 << 20, 0);
    kcheck_eq!(tx.space(256 * 1024), 256 * 1024);
    kcheck_eq!(tx.reserve(300 * 1024, 256 * 1024), 256 * 1024);
    kcheck_eq!(tx.space(256 * 1024), 0);
    tx.update(1 << 20, 64 * 1024);
    kcheck_eq!(tx.space(256 * 1024), 64 * 1024);
    Ok(())
}

fn credit_peer_shrinking_buffer_gives_zero() -> TestResult {
    let mut tx = TxCredit::default();
    tx.update(128 * 1024, 0);
    tx.reserve(128 * 1024, u32::MAX);
    tx.update(4096, 0);
    kcheck_eq!(tx.space(u32::MAX), 0);
    Ok(())
}

fn credit_update_rules_for_rcvlowat() -> TestResult {
    let mut rx = RxCredit::new(128 * 1024);
    kcheck!(rx.admit(64 * 1024, false, false).is_ok());
    kcheck!(rx.admit(64 * 1024, false, false).is_ok());
    rx.consume(64 * 1024, 64 * 1024, false);
    kcheck!(rx.update_after_read(64 * 1024 + 1));
    kcheck!(!rx.update_after_read(1));
    kcheck!(rx.update_on_rcvlowat(64 * 1024 + 1));
    rx.stamp();
    kcheck!(!rx.update_on_rcvlowat(64 * 1024 + 1));
    Ok(())
}

fn credit_overrun_is_refused() -> TestResult {
    let mut rx = RxCredit::new(4096);
    kcheck_eq!(rx.admit(4097, false, false), Err(Overrun::Payload));
    kcheck!(rx.admit(4096, false, false).is_ok());
    kcheck_eq!(rx.admit(1, false, true), Err(Overrun::Payload));
    let mut rx = RxCredit::new(4096);
    for _ in 0..crate::proto::credit::MIN_PKTS {
        kcheck!(rx.admit(0, true, false).is_ok());
    }
    kcheck_eq!(rx.admit(0, true, false), Err(Overrun::Packets));
    Ok(())
}

fn req() -> Hdr {
    Hdr {
        src_cid: 3,
        dst_cid: 2,
        src_port: 5000,
        dst_port: 1234,
        op: Op::Request as u16,
        type_: 1,
        buf_alloc: 65536,
        ..Hdr::default()
    }
}

fn pkt(op: Op, flags: u32, len: u32) -> Hdr {
    Hdr {
        op: op as u16,
        flags,
        len,
        buf_alloc: 65536,
        ..req()
    }
}

fn conn_connect_completes_on_response() -> TestResult {
    let mut c = Conn::new(SockType::Stream, 65536);
    let fx = c.connect();
    kcheck_eq!(
        fx.send,
        Some(Reply::Sock {
            op: Op::Request,
            flags: 0
        })
    );
    kcheck_eq!(c.state, SkState::SynSent);
    let fx = c.recv(&pkt(Op::Response, 0, 0), RxPlan::default());
    kcheck!(fx.connected && fx.state_change);
    kcheck_eq!(c.state, SkState::Established);
    kcheck_eq!(c.tx_space(), 65536);
    Ok(())
}

fn conn_refused_by_rst() -> TestResult {
    let mut c = Conn::new(SockType::Stream, 65536);
    let _ = c.connect();
    let fx = c.recv(&pkt(Op::Rst, 0, 0), RxPlan::default());
    kcheck_eq!(fx.error, Some(Errno::ECONNRESET));
    kcheck_eq!(fx.send, None);
    kcheck_eq!(c.state, SkState::Close);
    Ok(())
}

fn conn_protocol_error_while_connecting() -> TestResult {
    let mut c = Conn::new(SockType::Stream, 65536);
    let _ = c.connect();
    let fx = c.recv(&pkt(Op::Rw, 0, 3), RxPlan::default());
    kcheck_eq!(fx.error, Some(Errno::EPROTO));
    kcheck_eq!(
        fx.send,
        Some(Reply::Sock {
            op: Op::Rst,
            flags: 0
        })
    );
    Ok(())
}

fn conn_child_is_established_with_peer_credit() -> TestResult {
    let c = Conn::child(SockType::Stream, 4096, &req());
    kcheck_eq!(c.state, SkState::Established);
    kcheck_eq!(c.tx_space(), 4096);
    kcheck_eq!(Conn::listen_accepts(&req(), false, 0), Ok(()));
    kcheck_eq!(Conn::listen_accepts(&req(), true, 0), Err(Errno::ENOMEM));
    kcheck_eq!(
        Conn::listen_accepts(&pkt(Op::Rw, 0, 1), false, 0),
        Err(Errno::EINVAL)
    );
    kcheck_eq!(
        Conn::listen_accepts(&req(), false, SHUTDOWN_MASK),
        Err(Errno::ESHUTDOWN)
    );
    Ok(())
}

fn conn_orderly_close_with_mock_peer() -> TestResult {
    // Client closes first: SHUTDOWN(RCV|SEND), the server (nothing unread) answers with RST.
    let mut client = Conn::child(SockType::Stream, 65536, &req());
    let mut server = Conn::child(SockType::Stream, 65536, &req());
    let Release::Wait(Some(Reply::Sock { op, flags })) = client.release() else {
        kfail_release()?;
        return Ok(());
    };
    kcheck_eq!(op, Op::Shutdown);
    kcheck_eq!(flags, SHUTDOWN_RCV | SHUTDOWN_SEND);
    kcheck!(!client.release_wait_done());
    kcheck!(client.close_timer);
    let fx = server.recv(&pkt(op, flags, 0), RxPlan::default());
    kcheck_eq!(
        fx.send,
        Some(Reply::Sock {
            op: Op::Rst,
            flags: 0
        })
    );
    kcheck!(fx.unhash);
    kcheck!(server.done);
    let fx = client.recv(&pkt(Op::Rst, 0, 0), RxPlan::default());
    kcheck!(fx.cancel_close_timer);
    kcheck!(client.done);
    let fx = client.close_timer_cancelled();
    kcheck!(fx.remove);
    Ok(())
}

fn kfail_release() -> TestResult {
    crate::kunit::kfail!("close of an established socket must wait for the peer")
}

fn conn_close_timeout_resets() -> TestResult {
    let mut c = Conn::child(SockType::Stream, 65536, &req());
    let _ = c.release();
    kcheck!(!c.release_wait_done());
    let fx = c.close_timeout();
    kcheck_eq!(
        fx.send,
        Some(Reply::Sock {
            op: Op::Rst,
            flags: 0
        })
    );
    kcheck!(fx.remove);
    kcheck!(!c.close_timer);
    Ok(())
}

fn conn_half_close_keeps_data_readable() -> TestResult {
    let mut c = Conn::child(SockType::Stream, 65536, &req());
    let fx = c.recv(&pkt(Op::Rw, 0, 10), RxPlan::default());
    kcheck!(fx.enqueue);
    let fx = c.recv(&pkt(Op::Shutdown, SHUTDOWN_SEND, 0), RxPlan::default());
    kcheck!(!fx.unhash);
    kcheck_eq!(c.state, SkState::Established);
    kcheck_eq!(c.rx.rx_bytes, 10);
    // The full shutdown with data unread: no RST yet, but out of the connected table.
    let fx = c.recv(&pkt(Op::Shutdown, SHUTDOWN_RCV, 0), RxPlan::default());
    kcheck!(fx.unhash);
    kcheck_eq!(fx.send, None);
    Ok(())
}

fn conn_overrun_resets_with_enobufs() -> TestResult {
    let mut c = Conn::child(SockType::Stream, 4096, &req());
    let fx = c.recv(&pkt(Op::Rw, 0, 4097), RxPlan::default());
    kcheck_eq!(fx.error, Some(Errno::ENOBUFS));
    kcheck_eq!(
        fx.send,
        Some(Reply::Sock {
            op: Op::Rst,
            flags: 0
        })
    );
    kcheck!(!fx.enqueue);
    Ok(())
}

fn conn_credit_request_answered() -> TestResult {
    let mut c = Conn::child(SockType::Stream, 4096, &req());
    let fx = c.recv(&pkt(Op::CreditRequest, 0, 0), RxPlan::default());
    kcheck_eq!(
        fx.send,
        Some(Reply::Sock {
            op: Op::CreditUpdate,
            flags: 0
        })
    );
    Ok(())
}

fn conn_seqpacket_counts_messages() -> TestResult {
    let mut c = Conn::child(SockType::SeqPacket, 65536, &req());
    let _ = c.recv(&pkt(Op::Rw, 0, 100), RxPlan::default());
    kcheck_eq!(c.rx.msg_count, 0);
    let _ = c.recv(&pkt(Op::Rw, SEQ_EOM | SEQ_EOR, 100), RxPlan::default());
    kcheck_eq!(c.rx.msg_count, 1);
    kcheck!(c.update_after_read(1));
    kcheck_eq!(c.max_message(), 65536);
    Ok(())
}

fn conn_done_socket_answers_rst_no_sock() -> TestResult {
    let mut c = Conn::child(SockType::Stream, 4096, &req());
    let _ = c.recv(&pkt(Op::Rst, 0, 0), RxPlan::default());
    kcheck!(c.done);
    let fx = c.recv(&pkt(Op::Rw, 0, 1), RxPlan::default());
    kcheck_eq!(fx.send, Some(Reply::RstNoSock));
    Ok(())
}

fn conn_transport_reset_gives_econnreset() -> TestResult {
    let mut c = Conn::child(SockType::Stream, 4096, &req());
    let fx = c.transport_reset();
    kcheck_eq!(fx.error, Some(Errno::ECONNRESET));
    kcheck!(fx.unhash && c.done);
    kcheck_eq!(c.state, SkState::Close);
    let mut l = Conn::new(SockType::Stream, 4096);
    l.state = SkState::Listen;
    kcheck_eq!(l.transport_reset().error, None);
    Ok(())
}

fn poll_rcvlowat_and_rdhup() -> TestResult {
    let p = PollInput {
        state: SkState::Established,
        has_transport: true,
        writable: true,
        ..PollInput::default()
    };
    kcheck_eq!(poll::mask(&p), poll::EPOLLOUT | poll::EPOLLWRNORM);
    let r = PollInput {
        readable: true,
        ..p
    };
    kcheck_eq!(
        poll::mask(&r) & (poll::EPOLLIN | poll::EPOLLRDNORM),
        poll::EPOLLIN | poll::EPOLLRDNORM
    );
    let h = PollInput {
        peer_shutdown: SHUTDOWN_MASK,
        ..p
    };
    kcheck!(poll::mask(&h) & poll::EPOLLRDHUP != 0);
    kcheck_eq!(poll::mask(&h) & poll::EPOLLHUP, 0);
    Ok(())
}

kunit_suite!(rvsock_proto = "rvsock_proto" [
    hdr_is_little_endian_and_packed,
    hdr_rst_is_never_answered,
    credit_window_capped_by_own_buffer,
    credit_peer_shrinking_buffer_gives_zero,
    credit_update_rules_for_rcvlowat,
    credit_overrun_is_refused,
    conn_connect_completes_on_response,
    conn_refused_by_rst,
    conn_protocol_error_while_connecting,
    conn_child_is_established_with_peer_credit,
    conn_orderly_close_with_mock_peer,
    conn_close_timeout_resets,
    conn_half_close_keeps_data_readable,
    conn_overrun_resets_with_enobufs,
    conn_credit_request_answered,
    conn_seqpacket_counts_messages,
    conn_done_socket_answers_rst_no_sock,
    conn_transport_reset_gives_econnreset,
    poll_rcvlowat_and_rdhup,
]);
