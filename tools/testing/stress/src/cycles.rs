// SPDX-License-Identifier: GPL-2.0

//! `cycles`: N times connect, send 4 bytes, close.
//!
//! Client threads share the N cycles; each cycle's 4 bytes are its number.  One server thread
//! accepts, reads each connection to its end and records the number.  Failed connects or sends
//! are counted (more than `--max-failures` fails the run); every cycle whose send succeeded
//! must have reached the server exactly once, with exactly its 4 bytes.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rvsock_samples::net::Target;
use rvsock_samples::{Context, Error, Result};

use crate::sock::{Listener, Sock};
use crate::summary::Summary;
use crate::Env;

/// Cycles a client may run ahead of the server (keeps the accept queue from overflowing).
const MAX_AHEAD: u64 = 256;
/// Failures whose error text is kept.
const KEEP_ERRORS: usize = 10;

/// What the server saw.
#[derive(Debug, Default)]
struct Served {
    /// How many times each cycle number arrived.
    seen: Vec<u8>,
    connections: u64,
    violations: Vec<String>,
}

/// Runs `count` cycles over `clients` client threads; more than `max_failures` failed cycles
/// is a violation.
pub fn run(env: &Env, count: u64, clients: usize, max_failures: u64) -> Result<Summary> {
    if count == 0 || clients == 0 {
        return Err(Error::usage("--count and --clients must be at least 1"));
    }
    let count32 = u32::try_from(count).map_err(|_| Error::usage("--count must fit in 32 bits"))?;
    let target = env.server_at(0);
    let listener = Listener::bind(&target, 1024, None).context(|| format!("listen on {target}"))?;
    let connect_to = listener
        .connect_target(env.cid)
        .context(|| "read the listener's address".into())?;

    let next = AtomicU64::new(0);
    let served_n = AtomicU64::new(0);
    let failed = AtomicU64::new(0);
    let clients_done = AtomicBool::new(false);
    let ok_cycles = Mutex::new(Vec::<u32>::with_capacity(count as usize));
    let errors = Mutex::new(Vec::<String>::new());
    let t0 = Instant::now();

    let served = std::thread::scope(|sc| {
        let server = sc.spawn(|| serve(&listener, count32, env.timeout, &served_n, &clients_done));
        let workers: Vec<_> = (0..clients)
            .map(|_| {
                sc.spawn(|| {
                    client(
                        &connect_to,
                        count,
                        env.timeout,
                        (&next, &served_n, &failed),
                        &ok_cycles,
                        &errors,
                    )
                })
            })
            .collect();
        for w in workers {
            let _ = w.join();
        }
        clients_done.store(true, Ordering::Release);
        server.join()
    });
    let served = served.map_err(|_| Error::new("the server thread panicked"))?;
    let elapsed = t0.elapsed();

    let mut sum = Summary::new("cycles");
    let failures = failed.load(Ordering::Acquire);
    let ok_cycles = ok_cycles.into_inner().unwrap_or_else(|p| p.into_inner());
    let errors = errors.into_inner().unwrap_or_else(|p| p.into_inner());
    for e in &errors {
        eprintln!("cycles: failed cycle: {e}");
    }
    if failures > max_failures {
        sum.violation(format!(
            "{failures} of {count} cycles failed (at most {max_failures} allowed); first: {}",
            errors.first().map(String::as_str).unwrap_or("?")
        ));
    }
    let mut lost = 0u64;
    for &c in &ok_cycles {
        if served.seen.get(c as usize).copied().unwrap_or(0) == 0 {
            lost += 1;
            if lost <= 5 {
                sum.violation(format!(
                    "cycle {c}: sent, but the server never got its 4 bytes"
                ));
            }
        }
    }
    if lost > 5 {
        sum.violation(format!(
            "{lost} sent cycles never reached the server in all"
        ));
    }
    sum.violations(served.violations);
    sum.int("cycles", count)
        .int("ok", ok_cycles.len() as u64)
        .int("failures", failures)
        .int("accepted", served.connections)
        .int("lost", lost)
        .num("seconds", elapsed.as_secs_f64())
        .num(
            "cycles_per_s",
            ok_cycles.len() as f64 / elapsed.as_secs_f64().max(1e-9),
        );
    Ok(sum)
}

/// One client thread: takes cycle numbers until none is left.
fn client(
    target: &Target,
    count: u64,
    timeout: Duration,
    (next, served, failed): (&AtomicU64, &AtomicU64, &AtomicU64),
    ok: &Mutex<Vec<u32>>,
    errors: &Mutex<Vec<String>>,
) {
    loop {
        let n = next.fetch_add(1, Ordering::AcqRel);
        if n >= count {
            return;
        }
        // Do not run more than MAX_AHEAD cycles ahead of the server (bounded wait).
        let wait_from = Instant::now();
        while n.saturating_sub(served.load(Ordering::Acquire) + failed.load(Ordering::Acquire))
            > MAX_AHEAD
            && wait_from.elapsed() < timeout
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        let r = Sock::connect(target, timeout).and_then(|s| {
            s.set_send_timeout(Some(timeout))?;
            s.send_all(&(n as u32).to_le_bytes())
        });
        match r {
            Ok(()) => ok.lock().unwrap_or_else(|p| p.into_inner()).push(n as u32),
            Err(e) => {
                failed.fetch_add(1, Ordering::AcqRel);
                let mut errs = errors.lock().unwrap_or_else(|p| p.into_inner());
                if errs.len() < KEEP_ERRORS {
                    errs.push(format!("cycle {n}: {e}"));
                }
            }
        }
    }
}

/// The server thread: accepts and reads connections until all cycles arrived, or the clients
/// are done and nothing came for a while.
fn serve(
    l: &Listener,
    count: u32,
    timeout: Duration,
    served: &AtomicU64,
    clients_done: &AtomicBool,
) -> Served {
    let mut out = Served {
        seen: vec![0; count as usize],
        ..Default::default()
    };
    let mut idle_since = Instant::now();
    let mut buf = [0u8; 16];
    loop {
        if served.load(Ordering::Acquire) >= u64::from(count) {
            return out;
        }
        let s = match l.accept(Some(Duration::from_millis(100))) {
            Ok(s) => s,
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                // Bounded: once the clients are done, wait a little for stragglers only.
                let limit = if clients_done.load(Ordering::Acquire) {
                    Duration::from_secs(2)
                } else {
                    timeout * 3
                };
                if idle_since.elapsed() > limit {
                    return out;
                }
                continue;
            }
            Err(e) => {
                out.violations.push(format!("accept: {e}"));
                return out;
            }
        };
        idle_since = Instant::now();
        out.connections += 1;
        let mut got = 0;
        let r = s.set_recv_timeout(Some(timeout)).and_then(|()| loop {
            match s.recv(&mut buf[got..], 0) {
                Ok(0) => return Ok(()),
                Ok(n) => {
                    got += n;
                    if got == buf.len() {
                        return Ok(());
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        });
        served.fetch_add(1, Ordering::AcqRel);
        if let Err(e) = r {
            out.violations
                .push(format!("connection {}: read: {e}", out.connections));
            continue;
        }
        if got != 4 {
            out.violations.push(format!(
                "connection {}: got {got} bytes, expected 4",
                out.connections
            ));
            continue;
        }
        let n = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
        match out.seen.get_mut(n as usize) {
            Some(c) if *c == 0 => *c = 1,
            Some(_) => out.violations.push(format!("cycle {n} arrived twice")),
            None => out.violations.push(format!(
                "connection {}: cycle number {n} out of range",
                out.connections
            )),
        }
    }
}
