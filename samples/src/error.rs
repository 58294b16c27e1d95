// SPDX-License-Identifier: GPL-2.0

//! Errors with context, hints for the errno values one meets with AF_VSOCK, and the wrapper
//! every tool's `main` goes through.

use std::fmt;
use std::io;
use std::process::ExitCode;
use std::time::Duration;

/// An error message ready to print; `usage` errors exit with status 2 and point at `--help`.
#[derive(Debug)]
pub struct Error {
    msg: String,
    usage: bool,
}

/// The result type of the tools.
pub type Result<T> = std::result::Result<T, Error>;

impl Error {
    /// A runtime error.
    pub fn new(msg: impl Into<String>) -> Error {
        Error {
            msg: msg.into(),
            usage: false,
        }
    }

    /// A command-line error.
    pub fn usage(msg: impl Into<String>) -> Error {
        Error {
            msg: msg.into(),
            usage: true,
        }
    }

    /// Whether this is a command-line error.
    pub fn is_usage(&self) -> bool {
        self.usage
    }

    /// The message.
    pub fn message(&self) -> &str {
        &self.msg
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.msg)
    }
}

impl std::error::Error for Error {}

/// A hint for the errno values whose `strerror` alone does not say what to do.
pub fn hint(e: &io::Error) -> Option<&'static str> {
    if e.kind() == io::ErrorKind::WouldBlock {
        // What a read or write bounded by SO_RCVTIMEO/SO_SNDTIMEO returns on timeout.
        return Some("no progress within the timeout (see --timeout)");
    }
    Some(match e.raw_os_error()? {
        libc::EAFNOSUPPORT => {
            "AF_VSOCK (40) is not registered: load rvsock.ko (or the C stack's vsock.ko)"
        }
        libc::ENODEV => {
            "no transport serves that CID (loopback CID 1 needs e.g. rvsock_loopback.ko)"
        }
        libc::ESOCKTNOSUPPORT | libc::EPROTONOSUPPORT | libc::EOPNOTSUPP => {
            "the socket type or operation is not supported by the loaded AF_VSOCK implementation"
        }
        libc::ECONNREFUSED => "nothing listens there (is the server running?)",
        libc::ECONNRESET => {
            "reset by the peer (AF_VSOCK also answers a connect to a port nobody listens on so)"
        }
        libc::ETIMEDOUT => "no answer within the timeout (see --timeout)",
        libc::EADDRINUSE => "the address is in use (another server on that port?)",
        libc::EMFILE | libc::ENFILE => "out of file descriptors (RLIMIT_NOFILE)",
        _ => return None,
    })
}

/// Formats `what: strerror (os error N) (hint)`.
pub fn describe(what: &str, e: &io::Error) -> String {
    match hint(e) {
        Some(h) => format!("{what}: {e} ({h})"),
        None => format!("{what}: {e}"),
    }
}

/// Adds what was being done to an I/O error.
pub trait Context<T> {
    /// Turns the error into `what: error (hint)`.
    fn context(self, what: impl FnOnce() -> String) -> Result<T>;
}

impl<T> Context<T> for io::Result<T> {
    fn context(self, what: impl FnOnce() -> String) -> Result<T> {
        self.map_err(|e| Error::new(describe(&what(), &e)))
    }
}

/// Returns early with a runtime [`Error`] built by `format!`.
#[macro_export]
macro_rules! bail {
    ($($arg:tt)*) => {
        return Err($crate::Error::new(format!($($arg)*)))
    };
}

/// Runs a tool's body: prints `prog: error: ...` and returns 1 on error (2 for usage errors).
pub fn run_main(prog: &str, body: impl FnOnce() -> Result<()>) -> ExitCode {
    match body() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) if e.is_usage() => {
            eprintln!("{prog}: error: {e}");
            eprintln!("Try '{prog} --help'.");
            ExitCode::from(2)
        }
        Err(e) => {
            eprintln!("{prog}: error: {e}");
            ExitCode::FAILURE
        }
    }
}

/// Exit status of a tool stopped by its `--deadline`, as timeout(1) uses.
pub const DEADLINE_EXIT: i32 = 124;

/// Starts a watchdog thread that ends the process with status 124 after `d`, whatever the
/// other threads are blocked in (the bound of last resort against a hung kernel module).
pub fn start_watchdog(prog: &'static str, d: Duration) {
    let spawned = std::thread::Builder::new()
        .name("deadline".into())
        .spawn(move || {
            std::thread::sleep(d);
            eprintln!(
                "{prog}: error: --deadline of {} s reached, exiting",
                d.as_secs_f64()
            );
            std::process::exit(DEADLINE_EXIT);
        });
    if let Err(e) = spawned {
        eprintln!("{prog}: warning: cannot start the --deadline watchdog: {e}");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn context_adds_hint() {
        let r: io::Result<()> = Err(io::Error::from_raw_os_error(libc::ENODEV));
        let e = r.context(|| "connect to vsock 1:1234".into()).unwrap_err();
        assert!(e.message().starts_with("connect to vsock 1:1234: "));
        assert!(e.message().contains("no transport serves that CID"));
        assert!(!e.is_usage());
    }

    #[test]
    fn timeout_hint() {
        let e = io::Error::from_raw_os_error(libc::EAGAIN);
        assert!(describe("read", &e).contains("--timeout"));
        let e = io::Error::from_raw_os_error(libc::EIO);
        assert_eq!(hint(&e), None);
    }
}
