// SPDX-License-Identifier: GPL-2.0

//! Sockets as the stress tests use them: a connected socket of any family as one descriptor
//! ([`Sock`]) with the calls std does not offer (`send`/`recv` flags, `recvmsg` of a record,
//! socket options), listeners ([`Listener`]), and `poll(2)` over many descriptors.
//!
//! Connecting and listening go through the rvsock-samples library (AF_VSOCK, or TCP for runs on
//! a machine without AF_VSOCK); everything after that works on the descriptor.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::time::{Duration, Instant};

use libc::{c_int, c_void, socklen_t};
use rvsock_samples::net::{Conn, ConnectMode, ListenOpts, Listener as NetListener, Target};
use rvsock_samples::vsock::{
    self, setsockopt, BufferOpt, SockType, VsockAddr, VsockListener, AF_VSOCK,
    SO_VM_SOCKETS_CONNECT_TIMEOUT,
};

/// Turns a `-1` return into the thread's `errno`.
fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`cvt`] for `ssize_t` returns.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// A `timeval` for `d`; a zero one means "no timeout" to the socket options, so tiny
/// durations are rounded up to a microsecond.
pub fn timeval(d: Duration) -> libc::timeval {
    let mut tv = libc::timeval {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    if tv.tv_sec == 0 && tv.tv_usec == 0 && !d.is_zero() {
        tv.tv_usec = 1;
    }
    tv
}

/// Whether an error means the connection is gone (reset, closed, or its transport removed),
/// as opposed to a failure of the tool itself.
pub fn is_reset(e: &io::Error) -> bool {
    matches!(
        e.raw_os_error(),
        Some(
            libc::ECONNRESET
                | libc::EPIPE
                | libc::ENOTCONN
                | libc::ESHUTDOWN
                | libc::ECONNABORTED
                | libc::ENODEV
                | libc::ECONNREFUSED
        )
    )
}

/// Whether an error is "try again" (`EAGAIN`, `EINTR`).
pub fn is_again(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::WouldBlock || e.kind() == io::ErrorKind::Interrupted
}

/// A connected socket (AF_VSOCK stream or seqpacket, or TCP).
#[derive(Debug)]
pub struct Sock {
    fd: OwnedFd,
}

impl Sock {
    /// Connects to `target` within `timeout` (non-blocking connect and `poll`); the socket is
    /// left blocking, without timeouts.
    pub fn connect(target: &Target, timeout: Duration) -> io::Result<Sock> {
        Ok(Sock::from_conn(Conn::open(
            target,
            timeout,
            ConnectMode::Poll,
        )?))
    }

    fn from_conn(c: Conn) -> Sock {
        let fd = match c {
            Conn::Vsock(s) => s.into(),
            Conn::Tcp(s) => s.into(),
            Conn::Unix(s) => s.into(),
        };
        Sock { fd }
    }

    /// An AF_VSOCK socket whose non-blocking `connect(2)` to `addr` was only started: it
    /// returns at once, whatever the outcome (`EINPROGRESS`, refused...), which is returned
    /// too.  `connect_timeout` is set first (`SO_VM_SOCKETS_CONNECT_TIMEOUT`).
    pub fn start_vsock_connect(
        addr: VsockAddr,
        ty: SockType,
        connect_timeout: Duration,
    ) -> io::Result<(Sock, io::Result<()>)> {
        let raw_ty = match ty {
            SockType::Stream => libc::SOCK_STREAM,
            SockType::SeqPacket => libc::SOCK_SEQPACKET,
        };
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let fd = cvt(unsafe {
            libc::socket(
                AF_VSOCK,
                raw_ty | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2), is open and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        setsockopt(
            fd.as_fd(),
            AF_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            &timeval(connect_timeout),
        )?;
        // SAFETY: all-zero bytes are a valid sockaddr_vm (integers and a byte array).
        let mut sa: libc::sockaddr_vm = unsafe { mem::zeroed() };
        sa.svm_family = AF_VSOCK as libc::sa_family_t;
        sa.svm_cid = addr.cid;
        sa.svm_port = addr.port;
        // SAFETY: `sa` is a live sockaddr_vm and the length passed is its size.
        let ret = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_vm).cast(),
                mem::size_of::<libc::sockaddr_vm>() as socklen_t,
            )
        };
        let outcome = cvt(ret).map(|_| ());
        Ok((Sock { fd }, outcome))
    }

    /// `send(2)` with `MSG_NOSIGNAL | flags`.
    pub fn send(&self, buf: &[u8], flags: c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of its length for the duration of the call.
        cvt_size(unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast::<c_void>(),
                buf.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        })
    }

    /// Sends all of `buf` (a stream), retrying partial sends and `EINTR`; a send that times
    /// out (`SO_SNDTIMEO`) fails with `EAGAIN`.
    pub fn send_all(&self, mut buf: &[u8]) -> io::Result<()> {
        while !buf.is_empty() {
            match self.send(buf, 0) {
                Ok(0) => return Err(io::Error::from_raw_os_error(libc::EPIPE)),
                Ok(n) => buf = &buf[n..],
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// `recv(2)` with `flags`.
    pub fn recv(&self, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of its length for the duration of the call.
        cvt_size(unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
                flags,
            )
        })
    }

    /// Reads exactly `buf.len()` bytes (blocking, bounded by `SO_RCVTIMEO` if set);
    /// `UnexpectedEof` if the peer closes first.
    pub fn recv_exact(&self, buf: &mut [u8]) -> io::Result<()> {
        let mut got = 0;
        while got < buf.len() {
            match self.recv(&mut buf[got..], 0) {
                Ok(0) => return Err(io::ErrorKind::UnexpectedEof.into()),
                Ok(n) => got += n,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Receives one record with `recvmsg(2)` and `flags`: its length and whether it was
    /// truncated (`MSG_TRUNC`) because `buf` was too small.
    pub fn recv_record(&self, buf: &mut [u8], flags: c_int) -> io::Result<(usize, bool)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast::<c_void>(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: `msg` points to one live iovec describing `buf`, valid for writes of its
        // length; no name or control buffer is passed.
        let n = cvt_size(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, flags) })?;
        Ok((n, msg.msg_flags & libc::MSG_TRUNC != 0))
    }

    /// Sets or clears `O_NONBLOCK`.
    pub fn set_nonblocking(&self, on: bool) -> io::Result<()> {
        vsock::set_nonblocking(self.fd.as_fd(), on)
    }

    /// Sets `SO_SNDTIMEO` (`None`: block forever).
    pub fn set_send_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        let tv = timeval(d.unwrap_or(Duration::ZERO));
        setsockopt(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_SNDTIMEO, &tv)
    }

    /// Sets `SO_RCVTIMEO` (`None`: block forever).
    pub fn set_recv_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        let tv = timeval(d.unwrap_or(Duration::ZERO));
        setsockopt(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_RCVTIMEO, &tv)
    }

    /// Sets both timeouts.
    pub fn set_timeouts(&self, d: Option<Duration>) -> io::Result<()> {
        self.set_send_timeout(d)?;
        self.set_recv_timeout(d)
    }

    /// Sets `SO_VM_SOCKETS_BUFFER_SIZE` (AF_VSOCK only; the kernel clamps it to the socket's
    /// min and max).
    pub fn set_buffer_size(&self, bytes: u64) -> io::Result<()> {
        vsock::set_buffer_opt(self.fd.as_fd(), BufferOpt::Size, bytes)
    }

    /// Reads `SO_VM_SOCKETS_BUFFER_SIZE`.
    pub fn buffer_size(&self) -> io::Result<u64> {
        vsock::buffer_opt(self.fd.as_fd(), BufferOpt::Size)
    }

    /// Sets `SO_LINGER`.
    pub fn set_linger(&self, on: bool, secs: i32) -> io::Result<()> {
        let l = libc::linger {
            l_onoff: c_int::from(on),
            l_linger: secs,
        };
        setsockopt(self.fd.as_fd(), libc::SOL_SOCKET, libc::SO_LINGER, &l)
    }

    /// `shutdown(SHUT_WR)`.
    pub fn shutdown_write(&self) -> io::Result<()> {
        // SAFETY: shutdown(2) takes no pointers.
        cvt(unsafe { libc::shutdown(self.fd.as_raw_fd(), libc::SHUT_WR) })?;
        Ok(())
    }

    /// The local port (AF_VSOCK or TCP), to tell connections apart.
    pub fn local_port(&self) -> io::Result<u32> {
        let mut ss: libc::sockaddr_storage =
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        // SAFETY: `ss` and `len` are live locals; `len` holds the size of `ss`, which the
        // kernel does not write past.
        cvt(unsafe {
            libc::getsockname(
                self.fd.as_raw_fd(),
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        })?;
        port_of(&ss)
    }

    /// The peer's port (AF_VSOCK or TCP).
    pub fn peer_port(&self) -> io::Result<u32> {
        let mut ss: libc::sockaddr_storage =
            // SAFETY: all-zero bytes are a valid sockaddr_storage.
            unsafe { mem::zeroed() };
        let mut len = mem::size_of::<libc::sockaddr_storage>() as socklen_t;
        // SAFETY: as in `local_port`.
        cvt(unsafe {
            libc::getpeername(
                self.fd.as_raw_fd(),
                (&mut ss as *mut libc::sockaddr_storage).cast(),
                &mut len,
            )
        })?;
        port_of(&ss)
    }
}

/// The port of an AF_VSOCK, IPv4 or IPv6 address.
fn port_of(ss: &libc::sockaddr_storage) -> io::Result<u32> {
    let ptr: *const libc::sockaddr_storage = ss;
    match c_int::from(ss.ss_family) {
        // SAFETY: the family says which struct the storage holds; sockaddr_storage is large and
        // aligned enough for each of them.
        AF_VSOCK => Ok(unsafe { &*ptr.cast::<libc::sockaddr_vm>() }.svm_port),
        // SAFETY: as above.
        libc::AF_INET => Ok(u32::from(u16::from_be(
            unsafe { &*ptr.cast::<libc::sockaddr_in>() }.sin_port,
        ))),
        // SAFETY: as above.
        libc::AF_INET6 => Ok(u32::from(u16::from_be(
            unsafe { &*ptr.cast::<libc::sockaddr_in6>() }.sin6_port,
        ))),
        f => Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!("unexpected address family {f}"),
        )),
    }
}

impl AsFd for Sock {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for Sock {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// The AF_VSOCK buffer sizes a listener gives the sockets it accepts.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BufferRange {
    /// `SO_VM_SOCKETS_BUFFER_MIN_SIZE`.
    pub min: u64,
    /// `SO_VM_SOCKETS_BUFFER_SIZE`.
    pub size: u64,
    /// `SO_VM_SOCKETS_BUFFER_MAX_SIZE`.
    pub max: u64,
}

/// A listening socket; accepted sockets are blocking.
#[derive(Debug)]
pub struct Listener {
    inner: NetListener,
    ty: SockType,
}

impl Listener {
    /// Listens on `target` with `backlog` (AF_VSOCK; TCP uses std's) and, for AF_VSOCK, the
    /// buffer sizes `bufs`, which accepted sockets inherit.
    pub fn bind(target: &Target, backlog: u32, bufs: Option<BufferRange>) -> io::Result<Listener> {
        let inner = match target {
            Target::Vsock(addr, ty) => {
                NetListener::Vsock(VsockListener::bind_with(*addr, *ty, backlog, |fd| {
                    if let Some(b) = bufs {
                        // Max first and min last keep min <= size <= max at every step.
                        vsock::set_buffer_opt(fd, BufferOpt::Max, b.max.max(b.size))?;
                        vsock::set_buffer_opt(fd, BufferOpt::Min, 0)?;
                        vsock::set_buffer_opt(fd, BufferOpt::Size, b.size)?;
                        vsock::set_buffer_opt(fd, BufferOpt::Min, b.min.min(b.size))?;
                        vsock::set_buffer_opt(fd, BufferOpt::Max, b.max)?;
                    }
                    Ok(())
                })?)
            }
            _ => NetListener::bind(target, ListenOpts::default())?,
        };
        Ok(Listener {
            inner,
            ty: target.sock_type(),
        })
    }

    /// The address to connect to for this listener: `target` with the port it really got
    /// (when bound to port 0 or `VMADDR_PORT_ANY`) and, for AF_VSOCK, CID `cid`.
    pub fn connect_target(&self, cid: u32) -> io::Result<Target> {
        Ok(match &self.inner {
            NetListener::Vsock(l) => {
                let a = l.local_addr()?;
                Target::Vsock(VsockAddr::new(cid, a.port), self.ty)
            }
            NetListener::Tcp(l) => {
                let mut a = l.local_addr()?;
                if a.ip().is_unspecified() {
                    a.set_ip(std::net::Ipv4Addr::LOCALHOST.into());
                }
                Target::Tcp(a)
            }
            NetListener::Unix(_, p) => Target::Unix(p.clone()),
        })
    }

    /// Accepts one connection within `timeout` (`ETIMEDOUT` after it).
    pub fn accept(&self, timeout: Option<Duration>) -> io::Result<Sock> {
        let (c, _) = self.inner.accept(timeout)?;
        Ok(Sock::from_conn(c))
    }

    /// Accepts a connection if one is waiting (`Ok(None)` if not).
    pub fn try_accept(&self) -> io::Result<Option<Sock>> {
        match self.inner.accept(Some(Duration::ZERO)) {
            Ok((c, _)) => Ok(Some(Sock::from_conn(c))),
            Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) || is_again(&e) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

impl AsFd for Listener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        match &self.inner {
            NetListener::Vsock(l) => l.as_fd(),
            NetListener::Tcp(l) => l.as_fd(),
            NetListener::Unix(l, _) => l.as_fd(),
        }
    }
}

/// `poll(2)` over `fds` for at most `timeout`; returns how many have events (0 on timeout).
/// `EINTR` counts as a timeout.
pub fn poll(fds: &mut [libc::pollfd], timeout: Duration) -> io::Result<usize> {
    let ms = timeout.as_micros().div_ceil(1000).min(c_int::MAX as u128) as c_int;
    // SAFETY: `fds` is a live slice of initialised pollfd and the count passed is its length.
    match cvt(unsafe { libc::poll(fds.as_mut_ptr(), fds.len() as libc::nfds_t, ms) }) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.kind() == io::ErrorKind::Interrupted => Ok(0),
        Err(e) => Err(e),
    }
}

/// A `pollfd` for `fd` and `events`.
pub fn pollfd(fd: BorrowedFd<'_>, events: libc::c_short) -> libc::pollfd {
    libc::pollfd {
        fd: fd.as_raw_fd(),
        events,
        revents: 0,
    }
}

/// The `Slab:` line of `/proc/meminfo`, in bytes (`None` where there is no such file).
pub fn slab_bytes() -> Option<u64> {
    let s = std::fs::read_to_string("/proc/meminfo").ok()?;
    let line = s.lines().find(|l| l.starts_with("Slab:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// Sleeps until `deadline` or for `d`, whichever comes first.
pub fn sleep_until_or(deadline: Instant, d: Duration) {
    let left = deadline.saturating_duration_since(Instant::now());
    std::thread::sleep(left.min(d));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tcp_roundtrip_and_ports() {
        let l = Listener::bind(&Target::Tcp("127.0.0.1:0".parse().unwrap()), 16, None).unwrap();
        let t = l.connect_target(1).unwrap();
        let c = Sock::connect(&t, Duration::from_secs(5)).unwrap();
        let s = l.accept(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(c.local_port().unwrap(), s.peer_port().unwrap());
        c.send_all(b"hello").unwrap();
        let mut buf = [0u8; 5];
        s.recv_exact(&mut buf).unwrap();
        assert_eq!(&buf, b"hello");
        c.shutdown_write().unwrap();
        assert_eq!(s.recv(&mut buf, 0).unwrap(), 0);
        assert!(l.try_accept().unwrap().is_none());
    }

    #[test]
    fn timeval_rounds_up() {
        let tv = timeval(Duration::from_nanos(1));
        assert_eq!((tv.tv_sec, tv.tv_usec), (0, 1));
        let tv = timeval(Duration::from_millis(1500));
        assert_eq!((tv.tv_sec, tv.tv_usec), (1, 500_000));
    }

    #[test]
    fn slab_is_read() {
        if std::path::Path::new("/proc/meminfo").exists() {
            assert!(slab_bytes().is_some());
        }
    }
}
