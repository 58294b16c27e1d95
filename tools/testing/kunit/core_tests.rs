// SPDX-License-Identifier: GPL-2.0

//! KUnit suites against the loaded `rvsock.ko`: the transport registry through its exported
//! ABI, and kernel sockets whose packets go through a recording test transport, including the
//! unloading of a transport under open sockets.
//!
//! They expect `rvsock.ko` and `rvsock_loopback.ko` to be loaded and no other transport.

use crate::kunit::{kcheck, kcheck_eq, kunit_suite, TestResult};
use crate::kx::ksock::KernelSocket;
use crate::kx::sys;
use crate::kx::transport::{features, Info, Registration};
use crate::proto::addr::{
    VsockAddr, AF_VSOCK, VMADDR_CID_ANY, VMADDR_CID_HOST, VMADDR_FLAG_TO_HOST,
};
use crate::proto::hdr::Op;
use crate::test_transport::{Answer, TestTransport};
use kernel::prelude::*;

type Reg = Pin<KBox<Registration<TestTransport>>>;

const EBUSY_: i32 = -16;
const EINVAL_: i32 = -22;

fn register(features: u32, cid: u32, answer: Answer) -> Result<Reg> {
    let name = kernel::c_str!("kunit-test");
    let info = Info {
        name,
        features,
        local_cid: cid,
        msgzerocopy: true,
    };
    Registration::register(
        info,
        &crate::THIS_MODULE,
        TestTransport::new(name, answer, false),
    )
}

fn errno<T>(r: &Result<T>) -> i32 {
    match r {
        Ok(_) => 0,
        Err(e) => e.to_errno(),
    }
}

fn stream() -> Result<KernelSocket> {
    KernelSocket::new(AF_VSOCK as i32, sys::sock_type_SOCK_STREAM)
}

fn addr(cid: u32, port: u32) -> [u8; 16] {
    VsockAddr::new(cid, port).to_bytes()
}

fn registry_local_slot_is_taken_by_loopback() -> TestResult {
    // The loopback transport holds the LOCAL slot: a second local transport is refused.
    kcheck_eq!(
        errno(&register(features::LOCAL, 1, Answer::Nothing)),
        EBUSY_
    );
    Ok(())
}

fn registry_rejects_bad_features() -> TestResult {
    kcheck_eq!(errno(&register(0, 2, Answer::Nothing)), EINVAL_);
    kcheck_eq!(errno(&register(0x10, 2, Answer::Nothing)), EINVAL_);
    Ok(())
}

fn registry_second_h2g_is_refused() -> TestResult {
    let first = register(features::H2G, VMADDR_CID_HOST, Answer::Nothing);
    kcheck!(first.is_ok());
    kcheck_eq!(
        errno(&register(features::H2G, VMADDR_CID_HOST, Answer::Nothing)),
        EBUSY_
    );
    drop(first);
    // Freed by the unregistration: it can be taken again.
    kcheck!(register(features::H2G, VMADDR_CID_HOST, Answer::Nothing).is_ok());
    Ok(())
}

fn registry_is_all_or_nothing() -> TestResult {
    // H2G is free but LOCAL is not: the whole registration fails and H2G stays free.
    kcheck_eq!(
        errno(&register(
            features::H2G | features::LOCAL,
            2,
            Answer::Nothing
        )),
        EBUSY_
    );
    kcheck!(register(features::H2G, VMADDR_CID_HOST, Answer::Nothing).is_ok());
    Ok(())
}

fn registry_h2g_and_g2h_coexist() -> TestResult {
    let h2g = register(features::H2G, VMADDR_CID_HOST, Answer::Nothing);
    let g2h = register(features::G2H, 3, Answer::Nothing);
    kcheck!(h2g.is_ok() && g2h.is_ok());
    Ok(())
}

kunit_suite!(rvsock_registry = "rvsock_registry" [
    registry_local_slot_is_taken_by_loopback,
    registry_rejects_bad_features,
    registry_second_h2g_is_refused,
    registry_is_all_or_nothing,
    registry_h2g_and_g2h_coexist,
]);

/// Connects a kernel socket to `cid` (non-blocking) and returns the socket and the result.
fn try_connect(cid: u32, port: u32, flags: u8) -> Result<(KernelSocket, i32)> {
    let s = stream()?;
    let mut a = addr(cid, port);
    a[12] = flags;
    let r = s.connect(&a, true);
    Ok((s, errno(&r)))
}

fn sockets_route_guest_cids_to_h2g() -> TestResult {
    let Ok(h2g) = register(features::H2G, VMADDR_CID_HOST, Answer::Nothing) else {
        crate::kunit::kfail!("cannot register H2G");
    };
    let t = h2g.data();
    let Ok((_s, _)) = try_connect(5, 7001, 0) else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(t.count_op(Op::Request), 1);
    let last = t.last();
    kcheck_eq!(
        last.map(|h| (h.dst_cid, h.dst_port, h.src_cid)),
        Some((5, 7001, 2))
    );
    // CID 2 without a G2H transport is this host: loopback, not H2G.
    let Ok((_s2, _)) = try_connect(2, 7002, 0) else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(t.count_op(Op::Request), 1);
    // FLAG_TO_HOST needs a G2H transport.
    let Ok((_s3, e)) = try_connect(5, 7003, VMADDR_FLAG_TO_HOST) else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(e, -19);
    Ok(())
}

fn sockets_route_nested_l1() -> TestResult {
    let h2g = register(features::H2G, VMADDR_CID_HOST, Answer::Nothing);
    let g2h = register(features::G2H, 3, Answer::Nothing);
    let (Ok(h2g), Ok(g2h)) = (h2g, g2h) else {
        crate::kunit::kfail!("cannot register")
    };
    let (h, g) = (h2g.data(), g2h.data());
    let cases: [(u32, u8, usize, usize); 5] = [
        // (cid, flags, REQUESTs seen by H2G, by G2H) after the connect
        (1, 0, 0, 0),
        (3, 0, 0, 0),
        (2, 0, 0, 1),
        (4, 0, 1, 1),
        (4, VMADDR_FLAG_TO_HOST, 1, 2),
    ];
    let mut keep = KVec::new();
    for (i, (cid, flags, nh, ng)) in cases.into_iter().enumerate() {
        let Ok((s, _)) = try_connect(cid, 7100 + i as u32, flags) else {
            crate::kunit::kfail!("socket")
        };
        kcheck_eq!(
            (cid, h.count_op(Op::Request), g.count_op(Op::Request)),
            (cid, nh, ng)
        );
        let _ = keep.push(s, GFP_KERNEL);
    }
    kcheck_eq!(g.last().map(|p| p.src_cid), Some(3));
    Ok(())
}

fn sockets_connect_send_and_credit() -> TestResult {
    let Ok(h2g) = register(features::H2G, VMADDR_CID_HOST, Answer::Accept) else {
        crate::kunit::kfail!("cannot register");
    };
    let t = h2g.data();
    let Ok((s, e)) = try_connect(6, 7200, 0) else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(e, -115);
    // The peer's RESPONSE was processed when connect released the socket.
    kcheck_eq!(s.sk_state(), 1);
    let sent = s.send(b"hello", sys::MSG_DONTWAIT);
    kcheck_eq!(sent.ok(), Some(5));
    let last = t.last();
    kcheck_eq!(last.map(|h| (h.op, h.len)), Some((Op::Rw as u16, 5)));
    Ok(())
}

fn sockets_transport_unload_resets_connections() -> TestResult {
    let Ok(h2g) = register(features::H2G, VMADDR_CID_HOST, Answer::Accept) else {
        crate::kunit::kfail!("cannot register");
    };
    let Ok((s, _)) = try_connect(6, 7300, 0) else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(s.sk_state(), 1);
    // A listener has no transport and survives.
    let Ok(l) = stream() else {
        crate::kunit::kfail!("socket")
    };
    kcheck!(l.bind(&addr(VMADDR_CID_ANY, 7301)).is_ok());
    kcheck!(l.listen(4).is_ok());
    drop(h2g);
    kcheck_eq!(s.sk_err(), 104);
    kcheck_eq!(
        errno(&s.send(b"x", sys::MSG_DONTWAIT | sys::MSG_NOSIGNAL)),
        -104
    );
    kcheck_eq!(l.sk_state(), 10);
    // Loaded again, the transport serves new connections.
    let Ok(_again) = register(features::H2G, VMADDR_CID_HOST, Answer::Accept) else {
        crate::kunit::kfail!("cannot register again");
    };
    let Ok((s2, _)) = try_connect(6, 7302, 0) else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(s2.sk_state(), 1);
    Ok(())
}

fn sockets_loopback_pair_exchanges_data() -> TestResult {
    let (Ok(l), Ok(c)) = (stream(), stream()) else {
        crate::kunit::kfail!("socket")
    };
    kcheck!(l.bind(&addr(VMADDR_CID_ANY, 7400)).is_ok());
    kcheck!(l.listen(1).is_ok());
    kcheck!(c.connect(&addr(1, 7400), false).is_ok());
    let Ok(a) = l.accept(true) else {
        crate::kunit::kfail!("accept")
    };
    kcheck_eq!(c.send(b"ping", 0).ok(), Some(4));
    let mut buf = [0u8; 8];
    kcheck_eq!(a.recv(&mut buf, sys::MSG_DONTWAIT).ok(), Some(4));
    kcheck_eq!(&buf[..4], b"ping");
    kcheck_eq!(errno(&a.recv(&mut buf, sys::MSG_DONTWAIT)), -11);
    Ok(())
}

fn sockets_port_reuse_after_listener_close() -> TestResult {
    let Ok(l) = stream() else {
        crate::kunit::kfail!("socket")
    };
    kcheck!(l.bind(&addr(VMADDR_CID_ANY, 7500)).is_ok());
    let Ok(l2) = stream() else {
        crate::kunit::kfail!("socket")
    };
    kcheck_eq!(errno(&l2.bind(&addr(1, 7500))), -98);
    drop(l);
    kcheck!(l2.bind(&addr(1, 7500)).is_ok());
    Ok(())
}

kunit_suite!(rvsock_sockets = "rvsock_sockets" [
    sockets_route_guest_cids_to_h2g,
    sockets_route_nested_l1,
    sockets_connect_send_and_credit,
    sockets_transport_unload_resets_connections,
    sockets_loopback_pair_exchanges_data,
    sockets_port_reuse_after_listener_close,
]);
