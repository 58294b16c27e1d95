// SPDX-License-Identifier: GPL-2.0

//! `sock_diag` dumps of AF_VSOCK sockets (`net/vmw_vsock/diag.c`): `ss --vsock` lists the
//! bound, unbound and connected sockets of the requester's network namespace, filtered by
//! state.
//!
//! Like upstream, the walk takes no socket lock: it reads the addresses and states that each
//! socket mirrors for lockless readers, so a socket whose owner is stalled does not stall it.

use crate::kx::diag::{DiagDump, DiagRow, Dump};
use crate::vsk::VskRef;
use kernel::prelude::*;

/// Sockets looked at per netlink buffer: a buffer holds a few hundred rows.
const BATCH: usize = 256;

/// The AF_VSOCK walk.
pub(crate) struct VsockDiag;

impl DiagDump for VsockDiag {
    fn dump(d: &mut Dump<'_>) {
        let Some(core) = crate::core() else { return };
        let mut cursor = d.cursor();
        loop {
            let mut batch = KVec::<VskRef>::new();
            if batch.reserve(BATCH, GFP_KERNEL).is_err() {
                return;
            }
            core.tables.collect_from(cursor, &mut batch);
            if batch.is_empty() {
                return;
            }
            for sk in batch.iter() {
                if d.same_net(sk) {
                    let (local, remote) = sk.data().addrs();
                    let row = DiagRow {
                        src: (local.cid, local.port),
                        dst: (remote.cid, remote.port),
                    };
                    if d.wants(sk) && d.fill(sk, &row).is_err() {
                        // The buffer is full: this socket starts the next one.
                        d.set_cursor(cursor);
                        return;
                    }
                }
                cursor += 1;
            }
            d.set_cursor(cursor);
        }
    }
}
