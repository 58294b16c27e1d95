// SPDX-License-Identifier: GPL-2.0

//! `timers`: leaves sockets whose kernel timers are still pending, then exits at once.
//!
//! Meant to be followed right away by `rmmod` of the transport and of the core module (see
//! tools/testing/guest/stress.sh): the timers must neither fire into unloaded code nor keep
//! the modules from unloading for long.  Per round, `--count` sockets of each kind:
//!
//! - `pending`: a non-blocking connect to a listener that never accepts, with a short
//!   `SO_VM_SOCKETS_CONNECT_TIMEOUT` (1 ms to `--connect-timeout-max`): the connect timer is
//!   armed when the connect returns before the answer was processed;
//! - `refused`: the same to a port nobody listens on;
//! - `closewait`: connected to the listener (which holds it unaccepted), a few bytes sent that
//!   the peer never reads, then closed: the peer does not answer the close at once, so the
//!   close timer (8 s) is armed;
//! - `linger`: the same with `SO_LINGER` on and a zero timeout;
//! - `exit`: the same, left open for the process exit to close.
//!
//! Half of the `pending` and `refused` sockets are closed explicitly, half by the exit; the
//! listener too is closed by the exit.  `--kinds` picks some of the kinds (default: all).

use std::time::Duration;

use rvsock_samples::net::Target;
use rvsock_samples::vsock::VsockAddr;
use rvsock_samples::{Context, Error, Result};

use crate::rng::Rng;
use crate::sock::{Listener, Sock};
use crate::summary::Summary;
use crate::Env;

/// The kinds of sockets, in the order they are made.
pub const KINDS: [&str; 5] = ["pending", "refused", "closewait", "linger", "exit"];

/// How connects that were only started turned out, by errno.
#[derive(Default)]
struct Outcomes {
    ok: u64,
    in_progress: u64,
    reset: u64,
    other: u64,
}

impl Outcomes {
    fn add(&mut self, r: &std::io::Result<()>) {
        match r {
            Ok(()) => self.ok += 1,
            Err(e) => match e.raw_os_error() {
                Some(libc::EINPROGRESS) => self.in_progress += 1,
                Some(libc::ECONNRESET | libc::ECONNREFUSED | libc::ETIMEDOUT) => self.reset += 1,
                _ => self.other += 1,
            },
        }
    }

    fn text(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.ok, self.in_progress, self.reset, self.other
        )
    }
}

/// Runs one round: `count` sockets of each of `kinds` (names from [`KINDS`]), connect
/// timeouts up to `timeout_max`.
pub fn run(env: &Env, count: usize, kinds: &[String], timeout_max: Duration) -> Result<Summary> {
    if let Some(k) = kinds.iter().find(|k| !KINDS.contains(&k.as_str())) {
        return Err(Error::usage(format!(
            "unknown socket kind '{k}' (kinds: {})",
            KINDS.join(", ")
        )));
    }
    let want = |k: &str| kinds.is_empty() || kinds.iter().any(|x| x == k);
    let target = env.server_at(0);
    let Target::Vsock(_, ty) = target else {
        return Err(Error::usage(
            "timers needs AF_VSOCK (SO_VM_SOCKETS_CONNECT_TIMEOUT)",
        ));
    };
    let backlog = u32::try_from(count * 4 + 16).unwrap_or(u32::MAX);
    let listener =
        Listener::bind(&target, backlog, None).context(|| format!("listen on {target}"))?;
    let to = listener
        .connect_target(env.cid)
        .context(|| "read the listener's address".into())?;
    let Target::Vsock(laddr, _) = to else {
        return Err(Error::new("the listener is not an AF_VSOCK one"));
    };
    let nobody = VsockAddr::new(laddr.cid, laddr.port.wrapping_add(1));
    let mut rng = Rng::new(env.seed);
    let mut sum = Summary::new("timers");
    let mut keep = Vec::new();
    let (mut pending, mut refused) = (Outcomes::default(), Outcomes::default());
    let mut connected = 0u64;
    for i in 0..count {
        for (kind, addr, outcomes) in [
            ("pending", laddr, &mut pending),
            ("refused", nobody, &mut refused),
        ] {
            if !want(kind) {
                continue;
            }
            let t = rng.duration(Duration::from_millis(1), timeout_max);
            let (s, r) = Sock::start_vsock_connect(addr, ty, t)
                .context(|| format!("start a connect to {addr}"))?;
            outcomes.add(&r);
            if i % 2 == 0 {
                drop(s);
            } else {
                keep.push(s);
            }
        }
        for kind in ["closewait", "linger", "exit"] {
            if !want(kind) {
                continue;
            }
            let s = match unread_bytes_sent(&to, env.timeout, &mut rng) {
                Ok(s) => s,
                Err(e) => {
                    sum.violation(format!("{kind} socket {i}: {e}"));
                    continue;
                }
            };
            connected += 1;
            match kind {
                "linger" => {
                    if let Err(e) = s.set_linger(true, 0) {
                        sum.violation(format!("SO_LINGER: {e}"));
                    }
                    drop(s);
                }
                "exit" => keep.push(s),
                _ => drop(s),
            }
        }
    }
    sum.str(
        "kinds",
        if kinds.is_empty() {
            KINDS.join(",")
        } else {
            kinds.join(",")
        },
    )
    .str("pending_ok_inprogress_reset_other", pending.text())
    .str("refused_ok_inprogress_reset_other", refused.text())
    .int("connected", connected)
    .int("left_to_exit", keep.len() as u64 + 1);
    if pending.other + refused.other > 0 {
        sum.violation(format!(
            "connects ended with unexpected errors: pending {}, refused {}",
            pending.other, refused.other
        ));
    }
    // Closed by the process exit, which is the point: not by a close(2) before it.
    std::mem::forget(keep);
    std::mem::forget(listener);
    Ok(sum)
}

/// A socket connected to `to`, with 1 to 4096 bytes sent that the peer never reads.
fn unread_bytes_sent(to: &Target, timeout: Duration, rng: &mut Rng) -> std::io::Result<Sock> {
    let s = Sock::connect(to, timeout)?;
    s.set_send_timeout(Some(timeout))?;
    let n = rng.range(1, 4096) as usize;
    s.send_all(&vec![0x7Eu8; n])?;
    Ok(s)
}
