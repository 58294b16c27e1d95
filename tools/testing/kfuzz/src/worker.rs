// SPDX-License-Identifier: GPL-2.0

//! Socket calls from other threads while packets arrive.
//!
//! The fuzzer's main thread injects and does its socket calls in turn, so a packet never finds
//! its socket owned by a caller.  Worker threads keep calling into the fuzzer's sockets (reads,
//! writes, accepts, options) meanwhile: then the receive path meets sockets whose owner holds
//! the lock and queues packets on their backlog, which the owner's `release_sock` processes.
//! Each worker's choices follow from the seed; what they meet depends on timing.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::{self, JoinHandle};
use std::time::Duration;

use crate::fuzz::errno_name;
use crate::rng::Rng;
use crate::sys::Sock;

/// What the main thread shares with the workers: the sockets to call into, and the stop flag.
#[derive(Default)]
pub struct Shared {
    socks: Mutex<Vec<Arc<Sock>>>,
    stop: AtomicBool,
}

impl Shared {
    /// Replaces the sockets the workers call into.
    pub fn set(&self, socks: Vec<Arc<Sock>>) {
        *self.socks.lock().unwrap_or_else(PoisonError::into_inner) = socks;
    }

    fn pick(&self, rng: &mut Rng) -> Option<Arc<Sock>> {
        let v = self.socks.lock().unwrap_or_else(PoisonError::into_inner);
        (!v.is_empty()).then(|| v[rng.below(v.len() as u64) as usize].clone())
    }

    /// Tells the workers to stop.
    pub fn stop(&self) {
        self.stop.store(true, Ordering::Release);
        self.set(Vec::new());
    }
}

/// What a worker did.
#[derive(Clone, Debug, Default)]
pub struct WorkerStats {
    /// Socket calls made.
    pub calls: u64,
    /// Successful reads.
    pub reads: u64,
    /// Bytes read.
    pub read_bytes: u64,
    /// Successful writes.
    pub writes: u64,
    /// Bytes written.
    pub write_bytes: u64,
    /// Children accepted (and closed at once).
    pub accepts: u64,
    /// Errors: "call errno" -> count.
    pub errors: BTreeMap<String, u64>,
}

impl WorkerStats {
    /// Adds `o` to these counts.
    pub fn add(&mut self, o: &WorkerStats) {
        self.calls += o.calls;
        self.reads += o.reads;
        self.read_bytes += o.read_bytes;
        self.writes += o.writes;
        self.write_bytes += o.write_bytes;
        self.accepts += o.accepts;
        for (k, v) in &o.errors {
            *self.errors.entry(k.clone()).or_default() += v;
        }
    }
}

/// Starts worker `n` with seed `seed`.
pub fn spawn(shared: Arc<Shared>, seed: u64, n: u64) -> JoinHandle<WorkerStats> {
    thread::spawn(move || run(&shared, seed ^ (0x5EED_0000_0000 + n)))
}

fn run(shared: &Shared, seed: u64) -> WorkerStats {
    let mut rng = Rng::new(seed);
    let mut st = WorkerStats::default();
    let mut rbuf = vec![0u8; 65536];
    let wbuf = vec![0xa5u8; 65536];
    let err = |st: &mut WorkerStats, call: &str, e: &std::io::Error| {
        *st.errors
            .entry(format!("{call} {}", errno_name(e)))
            .or_default() += 1;
    };
    while !shared.stop.load(Ordering::Acquire) {
        let Some(s) = shared.pick(&mut rng) else {
            thread::sleep(Duration::from_millis(1));
            continue;
        };
        st.calls += 1;
        let len = rng.pick(&[0usize, 1, 64, 4096, 65536]);
        match rng.weighted(&[40, 25, 10, 10, 10, 5]) {
            0 => match s.recv(&mut rbuf[..len], 0) {
                Ok(n) => {
                    st.reads += 1;
                    st.read_bytes += n as u64;
                }
                Err(e) => err(&mut st, "recv", &e),
            },
            1 => match s.send(&wbuf[..len], 0) {
                Ok(n) => {
                    st.writes += 1;
                    st.write_bytes += n as u64;
                }
                Err(e) => err(&mut st, "send", &e),
            },
            2 => match s.accept() {
                Ok(_) => st.accepts += 1,
                Err(e) => err(&mut st, "accept", &e),
            },
            3 => {
                if let Err(e) = s.inq() {
                    err(&mut st, "SIOCINQ", &e);
                }
            }
            4 => {
                if let Err(e) = s.so_error() {
                    err(&mut st, "getsockopt", &e);
                }
            }
            _ => {
                let size = rng.pick(&[4096u64, 65536, 256 * 1024]);
                if let Err(e) = s.set_buffer_size(size) {
                    err(&mut st, "setsockopt", &e);
                }
            }
        }
        drop(s);
        thread::sleep(Duration::from_micros(100));
    }
    st
}
