// SPDX-License-Identifier: GPL-2.0

//! One connection type and one listener type over AF_VSOCK, TCP and AF_UNIX, so that the
//! tools run the same code whichever transport they measure.

use std::fmt;
use std::fs;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::os::fd::{AsFd, BorrowedFd};
use std::os::unix::fs::FileTypeExt;
use std::os::unix::net::{UnixListener, UnixStream};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use crate::vsock::{self, SockType, VsockAddr, VsockListener, VsockStream};

/// Where to listen or connect.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Target {
    /// AF_VSOCK address and socket type.
    Vsock(VsockAddr, SockType),
    /// TCP address.
    Tcp(SocketAddr),
    /// AF_UNIX stream socket path.
    Unix(PathBuf),
}

impl Target {
    /// `"vsock"`, `"tcp"` or `"unix"`.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Vsock(..) => "vsock",
            Target::Tcp(_) => "tcp",
            Target::Unix(_) => "unix",
        }
    }

    /// The address alone: `1:1234`, `127.0.0.1:5000`, `/tmp/x.sock`.
    pub fn address(&self) -> String {
        match self {
            Target::Vsock(a, _) => a.to_string(),
            Target::Tcp(a) => a.to_string(),
            Target::Unix(p) => p.display().to_string(),
        }
    }

    /// `"stream"` or `"seqpacket"`.
    pub fn sock_type(&self) -> SockType {
        match self {
            Target::Vsock(_, ty) => *ty,
            _ => SockType::Stream,
        }
    }
}

impl fmt::Display for Target {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Target::Vsock(a, SockType::Stream) => write!(f, "vsock {a}"),
            Target::Vsock(a, SockType::SeqPacket) => write!(f, "vsock {a} (seqpacket)"),
            Target::Tcp(a) => write!(f, "tcp {a}"),
            Target::Unix(p) => write!(f, "unix {}", p.display()),
        }
    }
}

/// How a client connects.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectMode {
    /// Non-blocking `connect` + `poll`, bounded by the timeout whatever the kernel does.
    Poll,
    /// Blocking `connect` for AF_VSOCK, bounded by the kernel's `SO_VM_SOCKETS_CONNECT_TIMEOUT`
    /// (set to the timeout); TCP and AF_UNIX connect as with `Poll`.
    Blocking,
}

/// A connected socket of any of the three transports.
#[derive(Debug)]
pub enum Conn {
    /// AF_VSOCK.
    Vsock(VsockStream),
    /// TCP (with `TCP_NODELAY`).
    Tcp(TcpStream),
    /// AF_UNIX stream.
    Unix(UnixStream),
}

impl Conn {
    /// Connects to `target` within `timeout`, and sets `timeout` as the read and write
    /// timeout of the new socket.
    pub fn connect(target: &Target, timeout: Duration) -> io::Result<Conn> {
        Conn::connect_with(target, timeout, ConnectMode::Poll)
    }

    /// [`Conn::connect`] with a choice of [`ConnectMode`].
    pub fn connect_with(target: &Target, timeout: Duration, mode: ConnectMode) -> io::Result<Conn> {
        let conn = Conn::open(target, timeout, mode)?;
        conn.set_timeouts(Some(timeout))?;
        Ok(conn)
    }

    /// Only connects, within `timeout`: the new socket has no read/write timeouts yet (what
    /// the connection-rate tool wants: no syscalls beyond the connect itself).
    pub fn open(target: &Target, timeout: Duration, mode: ConnectMode) -> io::Result<Conn> {
        Ok(match target {
            Target::Vsock(addr, ty) => Conn::Vsock(match mode {
                ConnectMode::Poll => VsockStream::connect_timeout(*addr, *ty, timeout)?,
                ConnectMode::Blocking => VsockStream::connect_blocking(*addr, *ty, Some(timeout))?,
            }),
            Target::Tcp(addr) => {
                let s = match TcpStream::connect_timeout(addr, timeout) {
                    // std reports its own poll timeout without an errno: use ETIMEDOUT.
                    Err(e) if e.kind() == io::ErrorKind::TimedOut && e.raw_os_error().is_none() => {
                        return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT))
                    }
                    r => r?,
                };
                s.set_nodelay(true)?;
                Conn::Tcp(s)
            }
            Target::Unix(path) => Conn::Unix(vsock::unix_connect_timeout(path, timeout)?),
        })
    }

    /// Sets the read and the write timeout (`SO_RCVTIMEO`, `SO_SNDTIMEO`); `None`: forever.
    pub fn set_timeouts(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Vsock(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Tcp(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
            Conn::Unix(s) => {
                s.set_read_timeout(t)?;
                s.set_write_timeout(t)
            }
        }
    }

    /// Sets the read timeout only.
    pub fn set_read_timeout(&self, t: Option<Duration>) -> io::Result<()> {
        match self {
            Conn::Vsock(s) => s.set_read_timeout(t),
            Conn::Tcp(s) => s.set_read_timeout(t),
            Conn::Unix(s) => s.set_read_timeout(t),
        }
    }

    /// `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        match self {
            Conn::Vsock(s) => s.shutdown(how),
            Conn::Tcp(s) => s.shutdown(how),
            Conn::Unix(s) => s.shutdown(how),
        }
    }

    /// The AF_VSOCK socket, if this is one.
    pub fn as_vsock(&self) -> Option<&VsockStream> {
        match self {
            Conn::Vsock(s) => Some(s),
            _ => None,
        }
    }

    /// The local address, for messages.
    pub fn local_name(&self) -> String {
        let r = match self {
            Conn::Vsock(s) => s.local_addr().map(|a| format!("vsock {a}")),
            Conn::Tcp(s) => s.local_addr().map(|a| format!("tcp {a}")),
            Conn::Unix(s) => s.local_addr().map(|a| unix_name(&a)),
        };
        r.unwrap_or_else(|e| format!("? ({e})"))
    }

    /// Reads until `buf` is full.  Unlike `read_exact`, tells how much was read when the
    /// peer closes early: `Ok(n)` with `n < buf.len()` means end of stream after `n` bytes.
    pub fn read_full(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        let mut got = 0;
        while got < buf.len() {
            match self.read(&mut buf[got..]) {
                Ok(0) => break,
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(got)
    }
}

fn unix_name(a: &std::os::unix::net::SocketAddr) -> String {
    match a.as_pathname() {
        Some(p) => format!("unix {}", p.display()),
        None => "unix (unnamed)".to_string(),
    }
}

impl Read for Conn {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Conn::Vsock(s) => s.read(buf),
            Conn::Tcp(s) => s.read(buf),
            Conn::Unix(s) => s.read(buf),
        }
    }
}

impl Write for Conn {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Conn::Vsock(s) => s.write(buf),
            Conn::Tcp(s) => s.write(buf),
            Conn::Unix(s) => s.write(buf),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for Conn {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match self {
            Conn::Vsock(s) => s.as_fd(),
            Conn::Tcp(s) => s.as_fd(),
            Conn::Unix(s) => s.as_fd(),
        }
    }
}

/// Listener options.
#[derive(Clone, Copy, Debug)]
pub struct ListenOpts {
    /// `listen(2)` backlog (AF_VSOCK only: std picks the TCP/AF_UNIX one).
    pub backlog: u32,
    /// `SO_VM_SOCKETS_BUFFER_SIZE` for AF_VSOCK listeners (inherited by accepted sockets).
    pub vsock_buffer_size: Option<u64>,
}

impl Default for ListenOpts {
    fn default() -> Self {
        ListenOpts {
            backlog: 128,
            vsock_buffer_size: None,
        }
    }
}

/// A listening socket of any of the three transports.  An AF_UNIX listener removes its
/// socket file when dropped.
#[derive(Debug)]
pub enum Listener {
    /// AF_VSOCK.
    Vsock(VsockListener),
    /// TCP.
    Tcp(TcpListener),
    /// AF_UNIX stream, and the path it is bound to.
    Unix(UnixListener, PathBuf),
}

impl Listener {
    /// Binds and listens on `target`.  For AF_UNIX, a stale socket file at the path is
    /// removed first (any other kind of file is left alone and the bind fails).
    pub fn bind(target: &Target, opts: ListenOpts) -> io::Result<Listener> {
        match target {
            Target::Vsock(addr, ty) => {
                let l = VsockListener::bind_with(*addr, *ty, opts.backlog, |fd| {
                    match opts.vsock_buffer_size {
                        Some(n) => vsock::set_buffer_size_clamped(fd, n),
                        None => Ok(()),
                    }
                })?;
                Ok(Listener::Vsock(l))
            }
            Target::Tcp(addr) => {
                let l = TcpListener::bind(addr)?;
                l.set_nonblocking(true)?;
                Ok(Listener::Tcp(l))
            }
            Target::Unix(path) => {
                remove_stale_socket(path)?;
                let l = UnixListener::bind(path)?;
                l.set_nonblocking(true)?;
                Ok(Listener::Unix(l, path.clone()))
            }
        }
    }

    /// The bound address, for messages (`vsock any:1234`, `tcp 127.0.0.1:5000`).
    pub fn local_name(&self) -> String {
        match self {
            Listener::Vsock(l) => match l.local_addr() {
                Ok(a) => format!("vsock {a}"),
                Err(e) => format!("vsock ? ({e})"),
            },
            Listener::Tcp(l) => match l.local_addr() {
                Ok(a) => format!("tcp {a}"),
                Err(e) => format!("tcp ? ({e})"),
            },
            Listener::Unix(_, p) => format!("unix {}", p.display()),
        }
    }

    /// Accepts one connection, waiting at most `timeout` (`None`: forever; a timeout is an
    /// error with errno `ETIMEDOUT`).  Returns the connection (blocking, no timeouts set) and
    /// the peer's address for messages.
    pub fn accept(&self, timeout: Option<Duration>) -> io::Result<(Conn, String)> {
        match self {
            Listener::Vsock(l) => {
                let (s, peer) = l.accept_timeout(timeout)?;
                Ok((Conn::Vsock(s), format!("vsock {peer}")))
            }
            Listener::Tcp(l) => {
                let (s, peer) = accept_loop(l.as_fd(), timeout, || l.accept())?;
                s.set_nonblocking(false)?;
                s.set_nodelay(true)?;
                Ok((Conn::Tcp(s), format!("tcp {peer}")))
            }
            Listener::Unix(l, _) => {
                let (s, peer) = accept_loop(l.as_fd(), timeout, || l.accept())?;
                s.set_nonblocking(false)?;
                Ok((Conn::Unix(s), unix_name(&peer)))
            }
        }
    }
}

/// Calls the non-blocking `accept` until it gives a connection, polling in between.
fn accept_loop<T>(
    fd: BorrowedFd<'_>,
    timeout: Option<Duration>,
    mut accept: impl FnMut() -> io::Result<T>,
) -> io::Result<T> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        match accept() {
            Ok(r) => return Ok(r),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                vsock::poll_fd(fd, libc::POLLIN, left)?;
            }
            Err(e)
                if e.kind() == io::ErrorKind::Interrupted
                    || e.kind() == io::ErrorKind::ConnectionAborted => {}
            Err(e) => return Err(e),
        }
    }
}

fn remove_stale_socket(path: &Path) -> io::Result<()> {
    match fs::symlink_metadata(path) {
        Ok(m) if m.file_type().is_socket() => fs::remove_file(path),
        _ => Ok(()),
    }
}

impl Drop for Listener {
    fn drop(&mut self) {
        if let Listener::Unix(_, path) = self {
            let _ = fs::remove_file(path);
        }
    }
}

/// Whether an error means the connection attempt was turned away or failed on the way
/// (refused, reset, timed out) rather than that the tool cannot work at all.
pub fn is_connect_failure(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNREFUSED
                | libc::ECONNRESET
                | libc::ETIMEDOUT
                | libc::ECONNABORTED
                | libc::EPIPE
                | libc::EAGAIN
                | libc::EADDRNOTAVAIL
                | libc::EINTR
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::{AtomicU32, Ordering};

    fn temp_sock() -> PathBuf {
        static N: AtomicU32 = AtomicU32::new(0);
        std::env::temp_dir().join(format!(
            "rvsock-samples-test-{}-{}.sock",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ))
    }

    fn roundtrip(target: Target) {
        let l = Listener::bind(&target, ListenOpts::default()).unwrap();
        // The actual port, for TCP port 0.
        let target = match (&target, &l) {
            (Target::Tcp(_), Listener::Tcp(t)) => Target::Tcp(t.local_addr().unwrap()),
            _ => target,
        };
        let t = Duration::from_secs(5);
        let mut c = Conn::connect(&target, t).unwrap();
        let (mut s, _peer) = l.accept(Some(t)).unwrap();
        s.set_timeouts(Some(t)).unwrap();
        c.write_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.read_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        c.shutdown(Shutdown::Write).unwrap();
        let mut rest = [0u8; 8];
        assert_eq!(s.read_full(&mut rest).unwrap(), 0);
    }

    #[test]
    fn tcp_roundtrip() {
        roundtrip(Target::Tcp("127.0.0.1:0".parse().unwrap()));
    }

    #[test]
    fn unix_roundtrip() {
        let p = temp_sock();
        roundtrip(Target::Unix(p.clone()));
        assert!(!p.exists(), "the listener removes its socket file");
    }

    #[test]
    fn accept_times_out() {
        let p = temp_sock();
        let l = Listener::bind(&Target::Unix(p), ListenOpts::default()).unwrap();
        let e = l.accept(Some(Duration::from_millis(30))).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ETIMEDOUT));
    }

    #[test]
    fn connect_refused() {
        let p = temp_sock();
        let e = Conn::connect(&Target::Unix(p), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
        // A TCP port nobody listens on: bind one, note it, drop it.
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap();
        let e = Conn::connect(&Target::Tcp(port), Duration::from_secs(1)).unwrap_err();
        assert!(is_connect_failure(&e), "{e}");
    }

    #[test]
    fn display() {
        let t = Target::Vsock(VsockAddr::new(1, 1234), SockType::SeqPacket);
        assert_eq!(t.to_string(), "vsock 1:1234 (seqpacket)");
        assert_eq!(t.transport(), "vsock");
        assert_eq!(t.address(), "1:1234");
    }
}
