// SPDX-License-Identifier: GPL-2.0

//! The accept loop the servers share: a thread per connection, or the first connection only
//! (`--once`), with an idle bound on waiting for connections.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use crate::error::{describe, Error, Result};
use crate::net::{Conn, Listener};

/// The default of `--accept-timeout`: how long a server waits for its next connection.
pub const DEFAULT_ACCEPT_TIMEOUT: Duration = Duration::from_secs(60);

/// How [`serve`] runs.
#[derive(Clone, Copy, Debug)]
pub struct ServeOpts {
    /// Serve the first connection in the calling thread, then return its result.
    pub once: bool,
    /// Bound on waiting for a connection (`None`: forever).  When it passes, [`serve`]
    /// returns an error if no connection came at all (or with `once`), `Ok` otherwise.
    pub accept_timeout: Option<Duration>,
}

impl Default for ServeOpts {
    fn default() -> Self {
        ServeOpts {
            once: false,
            accept_timeout: Some(DEFAULT_ACCEPT_TIMEOUT),
        }
    }
}

fn secs(d: Option<Duration>) -> f64 {
    d.map_or(f64::INFINITY, |d| d.as_secs_f64())
}

/// Accepts connections on `listener` and runs `handler(conn, peer)` on each, in a thread of
/// its own unless `opts.once`.  Prints `accepted connection from PEER` on stdout for each.
/// Errors of the handlers go to stderr (prefixed with `prog` and the peer) and make the
/// final result an error.
pub fn serve<H>(prog: &'static str, listener: &Listener, opts: ServeOpts, handler: H) -> Result<()>
where
    H: Fn(Conn, &str) -> Result<()> + Send + Sync + 'static,
{
    let handler = Arc::new(handler);
    let failures = Arc::new(AtomicU64::new(0));
    let mut served = 0u64;
    let mut threads = Vec::new();
    loop {
        let (conn, peer) = match listener.accept(opts.accept_timeout) {
            Ok(c) => c,
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => {
                if served == 0 {
                    return Err(Error::new(format!(
                        "no connection within {} s (see --accept-timeout)",
                        secs(opts.accept_timeout)
                    )));
                }
                eprintln!(
                    "{prog}: no new connection for {} s, exiting",
                    secs(opts.accept_timeout)
                );
                break;
            }
            Err(e) => {
                return Err(Error::new(describe(
                    &format!("accept on {}", listener.local_name()),
                    &e,
                )))
            }
        };
        served += 1;
        println!("accepted connection from {peer}");
        if opts.once {
            return handler(conn, &peer)
                .map_err(|e| Error::new(format!("connection from {peer}: {e}")));
        }
        let handler = Arc::clone(&handler);
        let thread_failures = Arc::clone(&failures);
        let spawned = std::thread::Builder::new()
            .name(format!("conn-{served}"))
            .spawn(move || {
                if let Err(e) = handler(conn, &peer) {
                    eprintln!("{prog}: connection from {peer}: {e}");
                    thread_failures.fetch_add(1, Ordering::Relaxed);
                }
            });
        match spawned {
            Ok(t) => threads.push(t),
            Err(e) => {
                eprintln!("{prog}: cannot start a thread for connection {served}: {e}");
                failures.fetch_add(1, Ordering::Relaxed);
            }
        }
        threads.retain(|t| !t.is_finished());
    }
    for t in threads {
        if t.join().is_err() {
            failures.fetch_add(1, Ordering::Relaxed);
        }
    }
    match failures.load(Ordering::Relaxed) {
        0 => Ok(()),
        n => Err(Error::new(format!("{n} of {served} connections failed"))),
    }
}
