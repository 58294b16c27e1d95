// SPDX-License-Identifier: GPL-2.0

//! `hold`: N connections open at once.
//!
//! One listener; the main thread connects N clients while a second thread accepts them.  Once
//! all N pairs exist, every client sends 8 bytes naming itself, every server socket checks them
//! against the client it belongs to (by port) and answers, every client checks the answer;
//! only then are they closed.  `/proc/meminfo` Slab is read before and while they are held.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rvsock_samples::vsock;
use rvsock_samples::{Context, Error, Result};

use crate::sock::{slab_bytes, Listener, Sock};
use crate::summary::Summary;
use crate::Env;

/// Descriptors beyond the pairs' own.
const SPARE_FDS: u64 = 64;
/// Tags the 8-byte greeting so that stray bytes are not taken for one.
const MAGIC: u64 = 0x484F_4C44_0000_0000; // "HOLD"

/// Runs the scenario with `count` connections.
pub fn run(env: &Env, count: usize) -> Result<Summary> {
    if count == 0 {
        return Err(Error::usage("--count must be at least 1"));
    }
    let needed = count as u64 * 2 + SPARE_FDS;
    vsock::raise_nofile_limit(needed).context(|| format!("raise RLIMIT_NOFILE to {needed}"))?;
    let mut sum = Summary::new("hold");
    let slab_before = slab_bytes();

    let target = env.server_at(0);
    let backlog = u32::try_from(count).unwrap_or(u32::MAX).max(16);
    let listener =
        Listener::bind(&target, backlog, None).context(|| format!("listen on {target}"))?;
    let connect_to = listener
        .connect_target(env.cid)
        .context(|| "read the listener's address".into())?;

    let t0 = Instant::now();
    let abort = AtomicBool::new(false);
    let (clients, servers) = std::thread::scope(|sc| {
        let acceptor = sc.spawn(|| accept_all(&listener, count, env.timeout, &abort));
        let clients = connect_all(&connect_to, count, env.timeout);
        if clients.is_err() {
            abort.store(true, Ordering::Release);
        }
        let servers = acceptor
            .join()
            .unwrap_or_else(|_| Err(Error::new("the accepting thread panicked")));
        (clients, servers)
    });
    let clients = clients?;
    let servers = servers?;
    let connected = t0.elapsed();
    if env.verbose {
        eprintln!(
            "hold: {count} connections in {:.2} s",
            connected.as_secs_f64()
        );
    }

    let t1 = Instant::now();
    exchange(&clients, &servers, env.timeout, &mut sum)?;
    let exchanged = t1.elapsed();
    let slab_held = slab_bytes();

    let t2 = Instant::now();
    drop(clients);
    drop(servers);
    let closed = t2.elapsed();

    sum.int("connections", count as u64)
        .num("connect_s", connected.as_secs_f64())
        .num("exchange_s", exchanged.as_secs_f64())
        .num("close_s", closed.as_secs_f64())
        .int("bytes_verified", count as u64 * 16);
    if let (Some(before), Some(held)) = (slab_before, slab_held) {
        sum.int("slab_before_kib", before / 1024)
            .int("slab_held_kib", held / 1024)
            .int(
                "slab_per_conn_b",
                held.saturating_sub(before) / count as u64,
            );
    }
    Ok(sum)
}

fn connect_all(
    target: &rvsock_samples::net::Target,
    count: usize,
    timeout: Duration,
) -> Result<Vec<Sock>> {
    let mut v = Vec::with_capacity(count);
    for i in 0..count {
        let s = Sock::connect(target, timeout)
            .context(|| format!("connection {}: connect to {target}", i + 1))?;
        v.push(s);
    }
    Ok(v)
}

fn accept_all(
    l: &Listener,
    count: usize,
    timeout: Duration,
    abort: &AtomicBool,
) -> Result<Vec<Sock>> {
    let mut v = Vec::with_capacity(count);
    let mut last = Instant::now();
    while v.len() < count {
        if abort.load(Ordering::Acquire) {
            return Err(Error::new(format!(
                "accepted {} of {count}, then the connecting side failed",
                v.len()
            )));
        }
        match l.accept(Some(Duration::from_millis(200))) {
            Ok(s) => {
                v.push(s);
                last = Instant::now();
            }
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                if last.elapsed() > timeout {
                    return Err(Error::new(format!(
                        "accepted {} of {count}, then nothing for {} s",
                        v.len(),
                        timeout.as_secs_f64()
                    )));
                }
            }
            Err(e) => {
                return Err(Error::new(format!(
                    "accept (after {} of {count}): {e}",
                    v.len()
                )))
            }
        }
    }
    Ok(v)
}

/// Every client greets, every server socket checks and answers, every client checks.
fn exchange(
    clients: &[Sock],
    servers: &[Sock],
    timeout: Duration,
    sum: &mut Summary,
) -> Result<()> {
    let mut by_peer: HashMap<u32, usize> = HashMap::with_capacity(servers.len());
    for (i, s) in servers.iter().enumerate() {
        s.set_timeouts(Some(timeout))
            .context(|| "set the server socket timeouts".into())?;
        let port = s
            .peer_port()
            .context(|| "getpeername of an accepted socket".into())?;
        if by_peer.insert(port, i).is_some() {
            sum.violation(format!(
                "two accepted sockets have the same peer port {port}"
            ));
        }
    }
    let mut ports = Vec::with_capacity(clients.len());
    for (i, c) in clients.iter().enumerate() {
        c.set_timeouts(Some(timeout))
            .context(|| "set the client socket timeouts".into())?;
        ports.push(
            c.local_port()
                .context(|| "getsockname of a client".into())?,
        );
        c.send_all(&(MAGIC | i as u64).to_le_bytes())
            .context(|| format!("connection {}: send the greeting", i + 1))?;
    }
    for (i, port) in ports.iter().enumerate() {
        let Some(&si) = by_peer.get(port) else {
            sum.violation(format!(
                "connection {}: no accepted socket has peer port {port}",
                i + 1
            ));
            continue;
        };
        let s = &servers[si];
        let mut buf = [0u8; 8];
        s.recv_exact(&mut buf)
            .context(|| format!("connection {}: server reads the greeting", i + 1))?;
        let got = u64::from_le_bytes(buf);
        if got != MAGIC | i as u64 {
            sum.violation(format!(
                "connection {}: the server got {got:#x}, expected {:#x}",
                i + 1,
                MAGIC | i as u64
            ));
        }
        s.send_all(&(!got).to_le_bytes())
            .context(|| format!("connection {}: server answers", i + 1))?;
    }
    for (i, c) in clients.iter().enumerate() {
        let mut buf = [0u8; 8];
        c.recv_exact(&mut buf)
            .context(|| format!("connection {}: client reads the answer", i + 1))?;
        let want = !(MAGIC | i as u64);
        if u64::from_le_bytes(buf) != want {
            sum.violation(format!(
                "connection {}: the client got {:#x}, expected {want:#x}",
                i + 1,
                u64::from_le_bytes(buf)
            ));
        }
    }
    Ok(())
}
