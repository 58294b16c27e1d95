// SPDX-License-Identifier: GPL-2.0

//! `kill`: senders blocked in `send` die at once on SIGKILL, and `SO_SNDTIMEO` holds.
//!
//! Child processes (this program's hidden `kill-child` subcommand) connect to a listener here
//! and send blocks of 64 KiB to 1 MiB with blocking sends to a receiver that does not read
//! (`--mode noread`) or whose socket owner is stalled inside the kernel
//! (`--mode stall`, see [`crate::uffd`]).  Once they are blocked in `sendto`, each gets
//! SIGKILL and must be reaped within `--reap-limit` (1 s); the stalls are released only after
//! that.  A child not reaped in time is reported with its kernel stack.
//!
//! Then, in the same mode, a socket with no credit left sends 64 KiB with `SO_SNDTIMEO` of
//! `--sndtimeo` (500 ms): the send must return `EAGAIN` (or a partial count) after about that
//! long (between 0.9 and 4 times it).

use std::io::{Read, Write};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use rvsock_samples::net::Target;
use rvsock_samples::{Context, Error, Result};

use crate::rng::Rng;
use crate::sock::{is_again, Listener, Sock};
use crate::summary::Summary;
use crate::uffd::{Hold, Staller};
use crate::Env;

/// Whom the senders send to.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Mode {
    /// A receiver that never reads.
    NoRead,
    /// A receiver whose socket owner is stalled in the kernel.
    Stall,
}

impl Mode {
    /// `noread` or `stall`.
    pub fn name(self) -> &'static str {
        match self {
            Mode::NoRead => "noread",
            Mode::Stall => "stall",
        }
    }
}

/// The scenario's parameters.
#[derive(Clone, Debug)]
pub struct KillOpts {
    /// See [`Mode`].
    pub mode: Mode,
    /// Sender processes.
    pub children: usize,
    /// Smallest send.
    pub min_size: usize,
    /// Largest send.
    pub max_size: usize,
    /// Longest time from SIGKILL to reaping.
    pub reap_limit: Duration,
    /// The `SO_SNDTIMEO` checked.
    pub sndtimeo: Duration,
}

/// Longest a stall lasts when nothing releases it.
const MAX_HOLD: Duration = Duration::from_secs(20);
/// Longest wait for a child to be reaped (after the limit, to measure how late it is).
const REAP_WAIT: Duration = Duration::from_secs(10);
/// Longest wait for the children to block in `sendto`.
const BLOCK_WAIT: Duration = Duration::from_secs(5);
/// `sendto` on x86-64 (what `send(2)` is).
const SYS_SENDTO: &str = "44";

/// A sender child and what happened to it.
struct Sender {
    child: Child,
    blocked: bool,
    killed_at: Option<Instant>,
    reaped_after: Option<Duration>,
}

/// Runs the scenario.
pub fn run(env: &Env, opts: &KillOpts) -> Result<Summary> {
    if opts.children == 0 || opts.min_size == 0 || opts.min_size > opts.max_size {
        return Err(Error::usage(
            "need --children >= 1 and 0 < --min-size <= --max-size",
        ));
    }
    let mut sum = Summary::new("kill");
    sum.str("mode", opts.mode.name());
    let staller = match opts.mode {
        Mode::Stall => Some(Staller::new().context(|| {
            "userfaultfd for the stalls (needs root and CONFIG_USERFAULTFD; or use --mode noread)".into()
        })?),
        Mode::NoRead => None,
    };
    let target = env.server_at(0);
    let listener = Listener::bind(&target, opts.children as u32 + 8, None)
        .context(|| format!("listen on {target}"))?;
    let connect_to = listener
        .connect_target(env.cid)
        .context(|| "read the listener's address".into())?;

    let mut senders = spawn_children(env, opts, &connect_to)?;
    let receivers = accept_children(&listener, &mut senders, env.timeout);
    let receivers = match receivers {
        Ok(r) => r,
        Err(e) => {
            kill_all(&mut senders);
            return Err(e);
        }
    };

    std::thread::scope(|sc| -> Result<()> {
        let mut stall_threads = Vec::new();
        if let Some(st) = &staller {
            for r in &receivers {
                stall_threads.push(sc.spawn(move || {
                    st.stalled_send(r, b"stall", 0, false, Hold::UntilReleased(MAX_HOLD), 0)
                }));
            }
            if !st.wait_faults(receivers.len() as u64, Duration::from_secs(5)) {
                sum.violation(format!(
                    "only {} of {} receiving sockets' owners stalled (their send did not fault within 5 s)",
                    st.faults(),
                    receivers.len()
                ));
            }
        }
        // Go: the children start sending.
        for s in senders.iter_mut() {
            if let Some(stdin) = s.child.stdin.as_mut() {
                let _ = stdin.write_all(b"g").and_then(|()| stdin.flush());
            }
        }
        wait_blocked(&mut senders);
        let blocked = senders.iter().filter(|s| s.blocked).count();
        kill_all(&mut senders);
        reap(&mut senders, REAP_WAIT);
        let late: Vec<String> = senders
            .iter()
            .filter(|s| s.reaped_after.map_or(true, |d| d > opts.reap_limit))
            .map(|s| describe_late(s, opts.reap_limit))
            .collect();
        if let Some(st) = &staller {
            st.release_all();
        }
        // Those not reaped yet may go once the stall is over.
        reap(&mut senders, REAP_WAIT);
        for msg in late {
            sum.violation(msg);
        }
        for s in &senders {
            if s.reaped_after.is_none() {
                sum.violation(format!(
                    "child {} still not reaped {} s after SIGKILL, even with the stall released: left behind",
                    s.child.id(),
                    (REAP_WAIT * 2).as_secs()
                ));
            }
        }
        for t in stall_threads {
            match t.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => sum.violation(format!("set up a stalled send: {e}")),
                Err(_) => sum.violation("a stalling thread panicked".to_string()),
            }
        }
        let times: Vec<u64> = senders
            .iter()
            .map(|s| s.reaped_after.map_or(u64::MAX, |d| d.as_millis() as u64))
            .collect();
        sum.int("children", senders.len() as u64)
            .int("blocked", blocked as u64)
            .int(
                "reaped",
                senders.iter().filter(|s| s.reaped_after.is_some()).count() as u64,
            )
            .int("reap_ms_max", times.iter().copied().max().unwrap_or(0))
            .str(
                "reap_ms",
                times
                    .iter()
                    .map(|t| {
                        if *t == u64::MAX {
                            "never".to_string()
                        } else {
                            t.to_string()
                        }
                    })
                    .collect::<Vec<_>>()
                    .join(","),
            );
        Ok(())
    })?;
    drop(receivers);
    sndtimeo_check(
        env,
        opts,
        &listener,
        &connect_to,
        staller.as_ref(),
        &mut sum,
    )?;
    if let Some(st) = &staller {
        for e in st.errors() {
            sum.violation(format!("userfaultfd handler: {e}"));
        }
    }
    Ok(sum)
}

/// The command-line arguments that make a child connect to `t`.
fn target_args(t: &Target) -> Result<Vec<String>> {
    Ok(match t {
        Target::Vsock(a, _) => vec![
            "--cid".into(),
            a.cid.to_string(),
            "--port".into(),
            a.port.to_string(),
        ],
        Target::Tcp(a) => vec!["--tcp".into(), a.to_string()],
        Target::Unix(_) => return Err(Error::usage("kill does not run over AF_UNIX")),
    })
}

fn spawn_children(env: &Env, opts: &KillOpts, t: &Target) -> Result<Vec<Sender>> {
    let exe = std::env::current_exe().context(|| "find this program's path".into())?;
    let mut v = Vec::with_capacity(opts.children);
    for id in 0..opts.children {
        let spawned = Command::new(&exe)
            .arg("kill-child")
            .args(target_args(t)?)
            .args(["--id", &id.to_string()])
            .args(["--min-size", &opts.min_size.to_string()])
            .args(["--max-size", &opts.max_size.to_string()])
            .args(["--timeout", &format!("{}", env.timeout.as_secs_f64())])
            .args(["--seed", &env.seed.to_string()])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn();
        match spawned {
            Ok(child) => v.push(Sender {
                child,
                blocked: false,
                killed_at: None,
                reaped_after: None,
            }),
            Err(e) => {
                kill_all(&mut v);
                return Err(Error::new(format!(
                    "start child {id} ({}): {e}",
                    exe.display()
                )));
            }
        }
    }
    Ok(v)
}

/// Accepts every child's connection and orders them by the id each child sends first.
fn accept_children(l: &Listener, senders: &mut [Sender], timeout: Duration) -> Result<Vec<Sock>> {
    let mut slots: Vec<Option<Sock>> = (0..senders.len()).map(|_| None).collect();
    for _ in 0..senders.len() {
        let s = l
            .accept(Some(timeout))
            .context(|| "accept a sender child".into())?;
        s.set_recv_timeout(Some(timeout))
            .context(|| "set SO_RCVTIMEO".into())?;
        let mut id = [0u8; 4];
        s.recv_exact(&mut id)
            .context(|| "read a child's id".into())?;
        s.set_recv_timeout(None)
            .context(|| "clear SO_RCVTIMEO".into())?;
        let id = u32::from_le_bytes(id) as usize;
        match slots.get_mut(id) {
            Some(slot @ None) => *slot = Some(s),
            _ => return Err(Error::new(format!("unexpected child id {id}"))),
        }
    }
    Ok(slots.into_iter().flatten().collect())
}

/// Waits until every child is asleep in `sendto` (or [`BLOCK_WAIT`] passed), at least 300 ms.
fn wait_blocked(senders: &mut [Sender]) {
    let t0 = Instant::now();
    loop {
        for s in senders.iter_mut() {
            s.blocked = in_sendto(s.child.id());
        }
        let all = senders.iter().all(|s| s.blocked);
        if (all && t0.elapsed() >= Duration::from_millis(300)) || t0.elapsed() >= BLOCK_WAIT {
            return;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether process `pid` sleeps in the `sendto` system call (`/proc/PID/syscall`, `stat`).
fn in_sendto(pid: u32) -> bool {
    let sys = std::fs::read_to_string(format!("/proc/{pid}/syscall")).unwrap_or_default();
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // The state follows the command name in parentheses.
    let state = stat
        .rsplit_once(") ")
        .and_then(|(_, rest)| rest.chars().next());
    sys.split_whitespace().next() == Some(SYS_SENDTO) && matches!(state, Some('S' | 'D'))
}

fn kill_all(senders: &mut [Sender]) {
    for s in senders.iter_mut() {
        if s.killed_at.is_none() {
            s.killed_at = Some(Instant::now());
            // Kill errors mean it is gone already; reaping tells.
            let _ = s.child.kill();
        }
    }
}

/// Reaps the killed children, polling every millisecond for at most `wait`.
fn reap(senders: &mut [Sender], wait: Duration) {
    let t0 = Instant::now();
    while senders.iter().any(|s| s.reaped_after.is_none()) && t0.elapsed() < wait {
        for s in senders.iter_mut().filter(|s| s.reaped_after.is_none()) {
            if let Ok(Some(_)) = s.child.try_wait() {
                s.reaped_after = s.killed_at.map(|k| k.elapsed());
            }
        }
        std::thread::sleep(Duration::from_millis(1));
    }
}

/// A violation for a child reaped late or not at all, with where it sleeps in the kernel.
fn describe_late(s: &Sender, limit: Duration) -> String {
    let pid = s.child.id();
    let when = match s.reaped_after {
        Some(d) => format!("reaped {} ms after SIGKILL", d.as_millis()),
        None => format!("not reaped {} s after SIGKILL", REAP_WAIT.as_secs()),
    };
    let wchan = std::fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default();
    let stack = std::fs::read_to_string(format!("/proc/{pid}/stack")).unwrap_or_default();
    let stack: Vec<&str> = stack.lines().take(12).map(str::trim).collect();
    if !stack.is_empty() {
        eprintln!(
            "kill: child {pid} kernel stack while not reaped:\n  {}",
            stack.join("\n  ")
        );
    }
    format!(
        "child {pid}: {when} (limit {} ms){}{}",
        limit.as_millis(),
        if wchan.is_empty() {
            String::new()
        } else {
            format!("; wchan {wchan}")
        },
        if stack.is_empty() {
            String::new()
        } else {
            format!("; stack {}", stack.join(" < "))
        }
    )
}

/// A send with no credit and `SO_SNDTIMEO` returns after about that long.
fn sndtimeo_check(
    env: &Env,
    opts: &KillOpts,
    listener: &Listener,
    t: &Target,
    staller: Option<&Staller>,
    sum: &mut Summary,
) -> Result<()> {
    let c =
        Sock::connect(t, env.timeout).context(|| format!("SO_SNDTIMEO check: connect to {t}"))?;
    let srv = listener
        .accept(Some(env.timeout))
        .context(|| "SO_SNDTIMEO check: accept".into())?;
    let before = staller.map_or(0, Staller::faults);
    std::thread::scope(|sc| -> Result<()> {
        let stall = staller.map(|st| {
            let srv = &srv;
            sc.spawn(move || {
                st.stalled_send(srv, b"stall", 0, false, Hold::UntilReleased(MAX_HOLD), 0)
            })
        });
        if let Some(st) = staller {
            if !st.wait_faults(before + 1, Duration::from_secs(5)) {
                sum.violation("SO_SNDTIMEO check: the receiver's owner did not stall");
            }
        }
        let r = fill_then_send(&c, opts.sndtimeo);
        if let Some(st) = staller {
            st.release_all();
        }
        if let Some(h) = stall {
            match h.join() {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    sum.violation(format!("SO_SNDTIMEO check: set up a stalled send: {e}"))
                }
                Err(_) => {
                    sum.violation("SO_SNDTIMEO check: the stalling thread panicked".to_string())
                }
            }
        }
        let (filled, result, took) = r?;
        let lo = opts.sndtimeo.mul_f64(0.9);
        let hi = opts.sndtimeo * 4;
        let outcome = match &result {
            Err(e) if is_again(e) => "eagain".to_string(),
            Ok(n) if *n < 64 * 1024 => format!("partial:{n}"),
            Ok(n) => format!("sent:{n}"),
            Err(e) => format!("error:{}", e.raw_os_error().unwrap_or(0)),
        };
        match &result {
            Err(e) if is_again(e) => {}
            Ok(n) if *n < 64 * 1024 => {}
            Ok(n) => sum.violation(format!(
                "SO_SNDTIMEO check: a 64 KiB send with no credit returned {n}"
            )),
            Err(e) => sum.violation(format!("SO_SNDTIMEO check: the send failed: {e}")),
        }
        if took < lo || took > hi {
            sum.violation(format!(
                "SO_SNDTIMEO check: the send returned after {} ms, SO_SNDTIMEO is {} ms (allowed {}..{} ms)",
                took.as_millis(),
                opts.sndtimeo.as_millis(),
                lo.as_millis(),
                hi.as_millis()
            ));
        }
        sum.int("filled_bytes", filled)
            .int("sndtimeo_ms", opts.sndtimeo.as_millis() as u64)
            .int("sndtimeo_took_ms", took.as_millis() as u64)
            .str("sndtimeo_result", outcome);
        Ok(())
    })
}

/// Fills the peer's buffer with non-blocking sends, then makes one blocking 64 KiB send
/// bounded by `sndtimeo`: the bytes filled, what the send returned, how long it took.
fn fill_then_send(c: &Sock, sndtimeo: Duration) -> Result<(u64, std::io::Result<usize>, Duration)> {
    let buf = vec![0x5Au8; 64 * 1024];
    c.set_nonblocking(true)
        .context(|| "set O_NONBLOCK".into())?;
    let t0 = Instant::now();
    let mut filled = 0u64;
    loop {
        match c.send(&buf, 0) {
            Ok(n) => filled += n as u64,
            Err(e) if is_again(&e) => break,
            Err(e) => {
                return Err(Error::new(format!(
                    "SO_SNDTIMEO check: fill the peer's buffer: {e}"
                )))
            }
        }
        if t0.elapsed() > Duration::from_secs(10) || filled > 1 << 30 {
            return Err(Error::new(format!(
                "SO_SNDTIMEO check: {filled} bytes sent to a receiver that does not read, and still no EAGAIN"
            )));
        }
    }
    c.set_nonblocking(false)
        .context(|| "clear O_NONBLOCK".into())?;
    c.set_send_timeout(Some(sndtimeo))
        .context(|| "set SO_SNDTIMEO".into())?;
    let t1 = Instant::now();
    let r = c.send(&buf, 0);
    Ok((filled, r, t1.elapsed()))
}

/// The child: connects, sends its id, waits for the go on stdin, then sends forever.
pub fn child(env: &Env, target: &Target, id: u32, min: usize, max: usize) -> Result<()> {
    let s = Sock::connect(target, env.timeout)
        .context(|| format!("child {id}: connect to {target}"))?;
    s.set_send_timeout(Some(env.timeout))
        .context(|| "set SO_SNDTIMEO".into())?;
    s.send_all(&id.to_le_bytes())
        .context(|| format!("child {id}: send the id"))?;
    s.set_send_timeout(None)
        .context(|| "clear SO_SNDTIMEO".into())?;
    let mut go = [0u8; 1];
    if std::io::stdin()
        .read(&mut go)
        .context(|| "read stdin".into())?
        == 0
    {
        return Ok(());
    }
    let mut rng = Rng::new(env.seed ^ u64::from(id));
    let buf = vec![0xC3u8; max.max(1)];
    loop {
        let n = rng.range(min as u64, max as u64) as usize;
        match s.send(&buf[..n.min(buf.len())], 0) {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(Error::new(format!("child {id}: send: {e}"))),
        }
    }
}
