// SPDX-License-Identifier: GPL-2.0

//! Safe wrappers over the libc socket calls the samples need.
//!
//! This is the only module of the crate with `unsafe` code.  Besides the AF_VSOCK types
//! ([`VsockAddr`], [`VsockStream`], [`VsockListener`]) it holds the few other libc calls the
//! tools need and std does not offer: `poll(2)` with a timeout, an AF_UNIX connect bounded by
//! `SO_SNDTIMEO`, raising `RLIMIT_NOFILE`, and the process's CPU time and the clock tick rate
//! (for the connect-flood figures).
//!
//! Every socket is created with `SOCK_CLOEXEC`; sends use `MSG_NOSIGNAL`.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::fmt;
use std::io::{self, IoSlice, Read, Write};
use std::mem;
use std::net::Shutdown;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, IntoRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::UnixStream;
use std::path::Path;
use std::time::{Duration, Instant};

use libc::{c_int, c_void, socklen_t};

/// `AF_VSOCK`, also the `setsockopt` level of the `SO_VM_SOCKETS_*` options.
pub const AF_VSOCK: c_int = 40;
/// Any CID: what listeners bind to.
pub const VMADDR_CID_ANY: u32 = 0xFFFF_FFFF;
/// The hypervisor's CID.
pub const VMADDR_CID_HYPERVISOR: u32 = 0;
/// Local loopback (`VMADDR_CID_LOCAL`), served by a loopback transport.
pub const VMADDR_CID_LOCAL: u32 = 1;
/// The host's CID, as seen from a guest.
pub const VMADDR_CID_HOST: u32 = 2;
/// Any port: bind picks a free one.
pub const VMADDR_PORT_ANY: u32 = 0xFFFF_FFFF;

/// `SO_VM_SOCKETS_BUFFER_SIZE` (u64): the socket's receive buffer size.
pub const SO_VM_SOCKETS_BUFFER_SIZE: c_int = 0;
/// `SO_VM_SOCKETS_BUFFER_MIN_SIZE` (u64).
pub const SO_VM_SOCKETS_BUFFER_MIN_SIZE: c_int = 1;
/// `SO_VM_SOCKETS_BUFFER_MAX_SIZE` (u64).
pub const SO_VM_SOCKETS_BUFFER_MAX_SIZE: c_int = 2;
/// `SO_VM_SOCKETS_CONNECT_TIMEOUT` (old): a `struct timeval` of the C library's layout.
pub const SO_VM_SOCKETS_CONNECT_TIMEOUT: c_int = 6;

/// The socket type of an AF_VSOCK socket.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SockType {
    /// `SOCK_STREAM`: a byte stream.
    Stream,
    /// `SOCK_SEQPACKET`: records with boundaries.
    SeqPacket,
}

impl SockType {
    fn raw(self) -> c_int {
        match self {
            SockType::Stream => libc::SOCK_STREAM,
            SockType::SeqPacket => libc::SOCK_SEQPACKET,
        }
    }

    /// `"stream"` or `"seqpacket"`.
    pub fn name(self) -> &'static str {
        match self {
            SockType::Stream => "stream",
            SockType::SeqPacket => "seqpacket",
        }
    }
}

impl fmt::Display for SockType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            SockType::Stream => "SOCK_STREAM",
            SockType::SeqPacket => "SOCK_SEQPACKET",
        })
    }
}

/// An AF_VSOCK address: context ID and port.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct VsockAddr {
    /// Context ID.
    pub cid: u32,
    /// Port.
    pub port: u32,
}

impl VsockAddr {
    /// The address `cid:port`.
    pub const fn new(cid: u32, port: u32) -> Self {
        VsockAddr { cid, port }
    }

    fn to_raw(self) -> libc::sockaddr_vm {
        // SAFETY: sockaddr_vm is a C struct of integers and a byte array, for which all-zero
        // bytes are a valid value (and what the kernel wants in the reserved fields).
        let mut sa: libc::sockaddr_vm = unsafe { mem::zeroed() };
        sa.svm_family = AF_VSOCK as libc::sa_family_t;
        sa.svm_cid = self.cid;
        sa.svm_port = self.port;
        sa
    }

    fn from_raw(sa: &libc::sockaddr_vm, len: socklen_t) -> io::Result<Self> {
        if (len as usize) < mem::size_of::<libc::sockaddr_vm>()
            || c_int::from(sa.svm_family) != AF_VSOCK
        {
            return Err(io::Error::new(
                io::ErrorKind::InvalidData,
                format!(
                    "the kernel returned a non-AF_VSOCK address (family {}, length {len})",
                    sa.svm_family
                ),
            ));
        }
        Ok(VsockAddr::new(sa.svm_cid, sa.svm_port))
    }
}

impl fmt::Display for VsockAddr {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.cid {
            VMADDR_CID_ANY => f.write_str("any")?,
            cid => write!(f, "{cid}")?,
        }
        match self.port {
            VMADDR_PORT_ANY => f.write_str(":any"),
            port => write!(f, ":{port}"),
        }
    }
}

/// Turns a `-1` return into the thread's `errno`.
fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// Same as [`cvt`] for the `ssize_t` returns of send/recv.
fn cvt_size(ret: libc::ssize_t) -> io::Result<usize> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret as usize)
    }
}

/// `socket(domain, ty | SOCK_CLOEXEC, 0)`.
fn new_socket(domain: c_int, ty: c_int) -> io::Result<OwnedFd> {
    // SAFETY: socket(2) takes no pointers; the return value is checked before use.
    let fd = cvt(unsafe { libc::socket(domain, ty | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `fd` was just returned by socket(2), is open, and is owned by no one else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}

/// Plain-old-data option values: every bit pattern (all zero bytes in particular) is a valid
/// value, so the kernel may fill them in.
pub trait Pod: Copy {}
impl Pod for u64 {}
impl Pod for c_int {}
impl Pod for libc::timeval {}
impl Pod for libc::linger {}

/// `setsockopt(2)` of an option whose value is a plain integer or a C struct of integers.
pub fn setsockopt<T: Pod>(
    fd: BorrowedFd<'_>,
    level: c_int,
    name: c_int,
    val: &T,
) -> io::Result<()> {
    // SAFETY: `val` points to a live, initialised T for the duration of the call, and the
    // length passed is exactly its size; the kernel only reads it.
    cvt(unsafe {
        libc::setsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (val as *const T).cast::<c_void>(),
            mem::size_of::<T>() as socklen_t,
        )
    })?;
    Ok(())
}

fn getsockopt<T: Pod>(fd: BorrowedFd<'_>, level: c_int, name: c_int) -> io::Result<T> {
    // SAFETY: T is Pod (see the trait): all-zero bytes are a valid T.
    let mut val: T = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<T>() as socklen_t;
    // SAFETY: `val` and `len` are live locals; the kernel writes at most `len` bytes to `val`
    // and any bit pattern is a valid T.
    cvt(unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            level,
            name,
            (&mut val as *mut T).cast::<c_void>(),
            &mut len,
        )
    })?;
    if len as usize != mem::size_of::<T>() {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            format!(
                "getsockopt({level}, {name}) returned {len} bytes, expected {}",
                mem::size_of::<T>()
            ),
        ));
    }
    Ok(val)
}

fn timeval(d: Duration) -> libc::timeval {
    let mut tv = libc::timeval {
        tv_sec: d.as_secs().min(libc::time_t::MAX as u64) as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    };
    // A zero timeval means "no timeout" to SO_RCVTIMEO/SO_SNDTIMEO: round tiny ones up.
    if tv.tv_sec == 0 && tv.tv_usec == 0 && !d.is_zero() {
        tv.tv_usec = 1;
    }
    tv
}

/// Sets `SO_RCVTIMEO` (`SO_SNDTIMEO` if `send`); `None` or zero means block forever.
fn set_timeout(fd: BorrowedFd<'_>, send: bool, d: Option<Duration>) -> io::Result<()> {
    let opt = if send {
        libc::SO_SNDTIMEO
    } else {
        libc::SO_RCVTIMEO
    };
    let tv = timeval(d.unwrap_or(Duration::ZERO));
    setsockopt(fd, libc::SOL_SOCKET, opt, &tv)
}

fn get_timeout(fd: BorrowedFd<'_>, send: bool) -> io::Result<Option<Duration>> {
    let opt = if send {
        libc::SO_SNDTIMEO
    } else {
        libc::SO_RCVTIMEO
    };
    let tv: libc::timeval = getsockopt(fd, libc::SOL_SOCKET, opt)?;
    let d =
        Duration::new(tv.tv_sec.max(0) as u64, 0) + Duration::from_micros(tv.tv_usec.max(0) as u64);
    Ok(if d.is_zero() { None } else { Some(d) })
}

/// Sets or clears `O_NONBLOCK` on `fd`, without a syscall to set it when it is already right.
pub fn set_nonblocking(fd: BorrowedFd<'_>, nonblocking: bool) -> io::Result<()> {
    // SAFETY: fcntl(F_GETFL) takes no pointer argument.
    let flags = cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_GETFL) })?;
    let new = if nonblocking {
        flags | libc::O_NONBLOCK
    } else {
        flags & !libc::O_NONBLOCK
    };
    if new != flags {
        // SAFETY: fcntl(F_SETFL) takes an integer argument, no pointer.
        cvt(unsafe { libc::fcntl(fd.as_raw_fd(), libc::F_SETFL, new) })?;
    }
    Ok(())
}

/// `poll(2)` on one descriptor for `events`, retried on `EINTR` with the time left.
///
/// Returns the `revents` seen, or an error of kind `TimedOut` (errno `ETIMEDOUT`) when nothing
/// happened within `timeout`; `None` waits forever.
pub fn poll_fd(
    fd: BorrowedFd<'_>,
    events: libc::c_short,
    timeout: Option<Duration>,
) -> io::Result<libc::c_short> {
    let deadline = timeout.map(|t| Instant::now() + t);
    loop {
        let ms: c_int = match deadline {
            None => -1,
            Some(deadline) => {
                let left = deadline.saturating_duration_since(Instant::now());
                // Round up so that we never spin with a zero timeout before the deadline.
                let ms = left.as_micros().div_ceil(1000);
                ms.min(c_int::MAX as u128) as c_int
            }
        };
        let mut pfd = libc::pollfd {
            fd: fd.as_raw_fd(),
            events,
            revents: 0,
        };
        // SAFETY: `pfd` is a live, initialised pollfd and we pass a count of exactly 1.
        match cvt(unsafe { libc::poll(&mut pfd, 1, ms) }) {
            Ok(0) => {
                if ms == 0 || deadline.is_some_and(|d| Instant::now() >= d) {
                    return Err(io::Error::from_raw_os_error(libc::ETIMEDOUT));
                }
            }
            Ok(_) => return Ok(pfd.revents),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Waits until `fd` is readable (or at EOF/error); `Ok(false)` when `timeout` passed first.
pub fn wait_readable(fd: BorrowedFd<'_>, timeout: Option<Duration>) -> io::Result<bool> {
    match poll_fd(fd, libc::POLLIN, timeout) {
        Ok(_) => Ok(true),
        Err(e) if e.raw_os_error() == Some(libc::ETIMEDOUT) => Ok(false),
        Err(e) => Err(e),
    }
}

/// The pending error of a socket (`SO_ERROR`), which reading clears.
fn take_error(fd: BorrowedFd<'_>) -> io::Result<Option<io::Error>> {
    let err: c_int = getsockopt(fd, libc::SOL_SOCKET, libc::SO_ERROR)?;
    Ok((err != 0).then(|| io::Error::from_raw_os_error(err)))
}

/// `connect(2)` to `sa` on a socket already set non-blocking, then waits for the outcome
/// with `poll(2)`.  The socket is left non-blocking.
fn connect_nonblocking(
    fd: BorrowedFd<'_>,
    sa: &libc::sockaddr_vm,
    timeout: Duration,
) -> io::Result<()> {
    // SAFETY: `sa` is a live sockaddr_vm and the length passed is its size.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (sa as *const libc::sockaddr_vm).cast(),
            mem::size_of::<libc::sockaddr_vm>() as socklen_t,
        )
    };
    match cvt(ret) {
        Ok(_) => return Ok(()),
        Err(e)
            if e.raw_os_error() == Some(libc::EINPROGRESS)
                || e.raw_os_error() == Some(libc::EINTR) => {}
        Err(e) => return Err(e),
    }
    let revents = poll_fd(fd, libc::POLLOUT, Some(timeout))?;
    if let Some(e) = take_error(fd)? {
        return Err(e);
    }
    if revents & libc::POLLOUT == 0 {
        // Hung up (or an error condition) without SO_ERROR: report it as a reset.
        return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
    }
    Ok(())
}

/// Reads the address `getsockname`/`getpeername`/`accept` fills in.
fn vsock_name(
    fd: BorrowedFd<'_>,
    f: unsafe extern "C" fn(c_int, *mut libc::sockaddr, *mut socklen_t) -> c_int,
) -> io::Result<VsockAddr> {
    // SAFETY: all-zero bytes are a valid sockaddr_vm (integers and a byte array).
    let mut sa: libc::sockaddr_vm = unsafe { mem::zeroed() };
    let mut len = mem::size_of::<libc::sockaddr_vm>() as socklen_t;
    // SAFETY: `f` is getsockname or getpeername; `sa` and `len` are live locals and `len`
    // holds the size of `sa`, which the kernel does not write past.
    cvt(unsafe {
        f(
            fd.as_raw_fd(),
            (&mut sa as *mut libc::sockaddr_vm).cast(),
            &mut len,
        )
    })?;
    VsockAddr::from_raw(&sa, len)
}

/// A buffer-size option of AF_VSOCK (the `SO_VM_SOCKETS_BUFFER_*` family, all u64).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum BufferOpt {
    /// `SO_VM_SOCKETS_BUFFER_SIZE`.
    Size,
    /// `SO_VM_SOCKETS_BUFFER_MIN_SIZE`.
    Min,
    /// `SO_VM_SOCKETS_BUFFER_MAX_SIZE`.
    Max,
}

impl BufferOpt {
    fn raw(self) -> c_int {
        match self {
            BufferOpt::Size => SO_VM_SOCKETS_BUFFER_SIZE,
            BufferOpt::Min => SO_VM_SOCKETS_BUFFER_MIN_SIZE,
            BufferOpt::Max => SO_VM_SOCKETS_BUFFER_MAX_SIZE,
        }
    }
}

/// Sets one AF_VSOCK buffer-size option.
pub fn set_buffer_opt(fd: BorrowedFd<'_>, opt: BufferOpt, bytes: u64) -> io::Result<()> {
    setsockopt(fd, AF_VSOCK, opt.raw(), &bytes)
}

/// Reads one AF_VSOCK buffer-size option.
pub fn buffer_opt(fd: BorrowedFd<'_>, opt: BufferOpt) -> io::Result<u64> {
    getsockopt(fd, AF_VSOCK, opt.raw())
}

/// Sets `SO_VM_SOCKETS_BUFFER_SIZE` to `bytes`, first raising `SO_VM_SOCKETS_BUFFER_MAX_SIZE`
/// (or lowering `..._MIN_SIZE`) as needed, since the kernel clamps the size to [min, max].
pub fn set_buffer_size_clamped(fd: BorrowedFd<'_>, bytes: u64) -> io::Result<()> {
    if buffer_opt(fd, BufferOpt::Max)? < bytes {
        set_buffer_opt(fd, BufferOpt::Max, bytes)?;
    }
    if buffer_opt(fd, BufferOpt::Min)? > bytes {
        set_buffer_opt(fd, BufferOpt::Min, bytes)?;
    }
    set_buffer_opt(fd, BufferOpt::Size, bytes)
}

/// A connected AF_VSOCK socket (`SOCK_STREAM` or `SOCK_SEQPACKET`).
///
/// `Read` is `recv(2)` and `Write` is `send(2)` with `MSG_NOSIGNAL`; on a `SOCK_SEQPACKET`
/// socket one `write` sends one record and one `read` receives (at most) one record.
#[derive(Debug)]
pub struct VsockStream {
    fd: OwnedFd,
}

impl VsockStream {
    /// Connects to `addr` with a blocking `connect(2)`.  With `kernel_timeout`, sets
    /// `SO_VM_SOCKETS_CONNECT_TIMEOUT` first (the kernel's default is 2 s), so the call is
    /// bounded by the kernel's own connect timeout.
    pub fn connect_blocking(
        addr: VsockAddr,
        ty: SockType,
        kernel_timeout: Option<Duration>,
    ) -> io::Result<VsockStream> {
        let fd = new_socket(AF_VSOCK, ty.raw())?;
        if let Some(t) = kernel_timeout {
            setsockopt(
                fd.as_fd(),
                AF_VSOCK,
                SO_VM_SOCKETS_CONNECT_TIMEOUT,
                &timeval(t),
            )?;
        }
        let sa = addr.to_raw();
        // SAFETY: `sa` is a live sockaddr_vm and the length passed is its size.
        let ret = unsafe {
            libc::connect(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_vm).cast(),
                mem::size_of::<libc::sockaddr_vm>() as socklen_t,
            )
        };
        match cvt(ret) {
            Ok(_) => {}
            // An interrupted connect goes on in the background: wait for its outcome.
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {
                let revents = poll_fd(fd.as_fd(), libc::POLLOUT, kernel_timeout)?;
                if let Some(e) = take_error(fd.as_fd())? {
                    return Err(e);
                }
                if revents & libc::POLLOUT == 0 {
                    return Err(io::Error::from_raw_os_error(libc::ECONNRESET));
                }
            }
            Err(e) => return Err(e),
        }
        Ok(VsockStream { fd })
    }

    /// Connects to `addr`, giving up after `timeout`: a non-blocking `connect(2)` followed by
    /// `poll(2)`, so the bound holds even if the kernel never answers.  The kernel's own
    /// `SO_VM_SOCKETS_CONNECT_TIMEOUT` is set to `timeout` too (best effort).  A timeout is
    /// reported as `ETIMEDOUT`.
    pub fn connect_timeout(
        addr: VsockAddr,
        ty: SockType,
        timeout: Duration,
    ) -> io::Result<VsockStream> {
        let fd = new_socket(AF_VSOCK, ty.raw() | libc::SOCK_NONBLOCK)?;
        // Best effort: without it the kernel's 2 s default may end the attempt first, which is
        // fine too (ETIMEDOUT either way).
        let _ = setsockopt(
            fd.as_fd(),
            AF_VSOCK,
            SO_VM_SOCKETS_CONNECT_TIMEOUT,
            &timeval(timeout),
        );
        let sa = addr.to_raw();
        connect_nonblocking(fd.as_fd(), &sa, timeout)?;
        set_nonblocking(fd.as_fd(), false)?;
        Ok(VsockStream { fd })
    }

    /// The peer's address (`getpeername`).
    pub fn peer_addr(&self) -> io::Result<VsockAddr> {
        vsock_name(self.fd.as_fd(), libc::getpeername)
    }

    /// The local address (`getsockname`).
    pub fn local_addr(&self) -> io::Result<VsockAddr> {
        vsock_name(self.fd.as_fd(), libc::getsockname)
    }

    /// Sets `SO_RCVTIMEO`; `None` blocks forever.
    pub fn set_read_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        set_timeout(self.fd.as_fd(), false, d)
    }

    /// Sets `SO_SNDTIMEO`; `None` blocks forever.
    pub fn set_write_timeout(&self, d: Option<Duration>) -> io::Result<()> {
        set_timeout(self.fd.as_fd(), true, d)
    }

    /// Reads `SO_RCVTIMEO`.
    pub fn read_timeout(&self) -> io::Result<Option<Duration>> {
        get_timeout(self.fd.as_fd(), false)
    }

    /// Reads `SO_SNDTIMEO`.
    pub fn write_timeout(&self) -> io::Result<Option<Duration>> {
        get_timeout(self.fd.as_fd(), true)
    }

    /// Sets `SO_VM_SOCKETS_BUFFER_SIZE` (raising the max/lowering the min first if needed).
    pub fn set_buffer_size(&self, bytes: u64) -> io::Result<()> {
        set_buffer_size_clamped(self.fd.as_fd(), bytes)
    }

    /// Reads `SO_VM_SOCKETS_BUFFER_SIZE`.
    pub fn buffer_size(&self) -> io::Result<u64> {
        buffer_opt(self.fd.as_fd(), BufferOpt::Size)
    }

    /// Sets or clears `O_NONBLOCK`.
    pub fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        set_nonblocking(self.fd.as_fd(), nonblocking)
    }

    /// `shutdown(2)`.
    pub fn shutdown(&self, how: Shutdown) -> io::Result<()> {
        let how = match how {
            Shutdown::Read => libc::SHUT_RD,
            Shutdown::Write => libc::SHUT_WR,
            Shutdown::Both => libc::SHUT_RDWR,
        };
        // SAFETY: shutdown(2) takes no pointers.
        cvt(unsafe { libc::shutdown(self.fd.as_raw_fd(), how) })?;
        Ok(())
    }

    /// The pending socket error (`SO_ERROR`), cleared by the read.
    pub fn take_error(&self) -> io::Result<Option<io::Error>> {
        take_error(self.fd.as_fd())
    }

    /// `recv(2)` with `flags`.
    pub fn recv(&self, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration of the call.
        cvt_size(unsafe {
            libc::recv(
                self.fd.as_raw_fd(),
                buf.as_mut_ptr().cast::<c_void>(),
                buf.len(),
                flags,
            )
        })
    }

    /// `send(2)` with `MSG_NOSIGNAL | flags`.
    pub fn send(&self, buf: &[u8], flags: c_int) -> io::Result<usize> {
        // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration of the call.
        cvt_size(unsafe {
            libc::send(
                self.fd.as_raw_fd(),
                buf.as_ptr().cast::<c_void>(),
                buf.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        })
    }

    /// Receives one record of a `SOCK_SEQPACKET` socket with `recvmsg(2)`: returns its
    /// length as received and whether it was truncated (`MSG_TRUNC` in `msg_flags`) because
    /// `buf` was too small.
    pub fn recv_record(&self, buf: &mut [u8]) -> io::Result<(usize, bool)> {
        let mut iov = libc::iovec {
            iov_base: buf.as_mut_ptr().cast::<c_void>(),
            iov_len: buf.len(),
        };
        // SAFETY: all-zero bytes are a valid msghdr (null pointers, zero lengths).
        let mut msg: libc::msghdr = unsafe { mem::zeroed() };
        msg.msg_iov = &mut iov;
        msg.msg_iovlen = 1;
        // SAFETY: `msg` points to one live iovec describing `buf`, which is valid for writes
        // of its length; no name or control buffer is passed.
        let n = cvt_size(unsafe { libc::recvmsg(self.fd.as_raw_fd(), &mut msg, 0) })?;
        Ok((n, msg.msg_flags & libc::MSG_TRUNC != 0))
    }
}

impl Read for &VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.recv(buf, 0)
    }
}

impl Write for &VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.send(buf, 0)
    }

    fn write_vectored(&mut self, bufs: &[IoSlice<'_>]) -> io::Result<usize> {
        match bufs.iter().find(|b| !b.is_empty()) {
            Some(b) => self.send(b, 0),
            None => Ok(0),
        }
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Read for VsockStream {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        (&*self).read(buf)
    }
}

impl Write for VsockStream {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        (&*self).write(buf)
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl AsFd for VsockStream {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for VsockStream {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

impl IntoRawFd for VsockStream {
    fn into_raw_fd(self) -> RawFd {
        self.fd.into_raw_fd()
    }
}

impl From<OwnedFd> for VsockStream {
    /// Wraps a descriptor that must be a connected AF_VSOCK socket.
    fn from(fd: OwnedFd) -> Self {
        VsockStream { fd }
    }
}

impl From<VsockStream> for OwnedFd {
    fn from(s: VsockStream) -> OwnedFd {
        s.fd
    }
}

/// A listening AF_VSOCK socket.  It is non-blocking: [`VsockListener::accept_timeout`] waits
/// with `poll(2)` and hands out blocking sockets.
#[derive(Debug)]
pub struct VsockListener {
    fd: OwnedFd,
}

impl VsockListener {
    /// `socket` + `bind(addr)` + `listen(backlog)`.  Use [`VMADDR_CID_ANY`] to listen on
    /// every CID, [`VMADDR_PORT_ANY`] to have the kernel pick a port (see
    /// [`VsockListener::local_addr`]).
    pub fn bind(addr: VsockAddr, ty: SockType, backlog: u32) -> io::Result<VsockListener> {
        Self::bind_with(addr, ty, backlog, |_| Ok(()))
    }

    /// Like [`VsockListener::bind`], calling `setup` on the socket before `bind` (to set
    /// options the accepted sockets inherit, such as the buffer sizes).
    pub fn bind_with(
        addr: VsockAddr,
        ty: SockType,
        backlog: u32,
        setup: impl FnOnce(BorrowedFd<'_>) -> io::Result<()>,
    ) -> io::Result<VsockListener> {
        let fd = new_socket(AF_VSOCK, ty.raw() | libc::SOCK_NONBLOCK)?;
        setup(fd.as_fd())?;
        let sa = addr.to_raw();
        // SAFETY: `sa` is a live sockaddr_vm and the length passed is its size.
        cvt(unsafe {
            libc::bind(
                fd.as_raw_fd(),
                (&sa as *const libc::sockaddr_vm).cast(),
                mem::size_of::<libc::sockaddr_vm>() as socklen_t,
            )
        })?;
        let backlog = backlog.min(c_int::MAX as u32) as c_int;
        // SAFETY: listen(2) takes no pointers.
        cvt(unsafe { libc::listen(fd.as_raw_fd(), backlog) })?;
        Ok(VsockListener { fd })
    }

    /// The bound address (`getsockname`).
    pub fn local_addr(&self) -> io::Result<VsockAddr> {
        vsock_name(self.fd.as_fd(), libc::getsockname)
    }

    /// Accepts a connection, waiting at most `timeout` (`None`: forever) for one.  A timeout
    /// is an error of kind `TimedOut`.  The returned socket is blocking.
    pub fn accept_timeout(
        &self,
        timeout: Option<Duration>,
    ) -> io::Result<(VsockStream, VsockAddr)> {
        let deadline = timeout.map(|t| Instant::now() + t);
        loop {
            // SAFETY: all-zero bytes are a valid sockaddr_vm.
            let mut sa: libc::sockaddr_vm = unsafe { mem::zeroed() };
            let mut len = mem::size_of::<libc::sockaddr_vm>() as socklen_t;
            // SAFETY: `sa` and `len` are live locals and `len` holds the size of `sa`, which
            // the kernel does not write past.
            let ret = unsafe {
                libc::accept4(
                    self.fd.as_raw_fd(),
                    (&mut sa as *mut libc::sockaddr_vm).cast(),
                    &mut len,
                    libc::SOCK_CLOEXEC,
                )
            };
            match cvt(ret) {
                Ok(fd) => {
                    // SAFETY: `fd` was just returned by accept4, is open, and is owned by no
                    // one else.
                    let fd = unsafe { OwnedFd::from_raw_fd(fd) };
                    let stream = VsockStream { fd };
                    // accept4 does not pass O_NONBLOCK on, but do not rely on the module.
                    stream.set_nonblocking(false)?;
                    let peer = VsockAddr::from_raw(&sa, len)?;
                    return Ok((stream, peer));
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    let left = deadline.map(|d| d.saturating_duration_since(Instant::now()));
                    poll_fd(self.fd.as_fd(), libc::POLLIN, left)?;
                }
                Err(e)
                    if e.kind() == io::ErrorKind::Interrupted
                        || e.raw_os_error() == Some(libc::ECONNABORTED) => {}
                Err(e) => return Err(e),
            }
        }
    }

    /// Accepts a connection, waiting forever for one.
    pub fn accept(&self) -> io::Result<(VsockStream, VsockAddr)> {
        self.accept_timeout(None)
    }

    /// Sets `SO_VM_SOCKETS_BUFFER_SIZE` (inherited by accepted sockets).
    pub fn set_buffer_size(&self, bytes: u64) -> io::Result<()> {
        set_buffer_size_clamped(self.fd.as_fd(), bytes)
    }
}

impl AsFd for VsockListener {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

impl AsRawFd for VsockListener {
    fn as_raw_fd(&self) -> RawFd {
        self.fd.as_raw_fd()
    }
}

/// Connects an AF_UNIX stream socket to `path` with `SO_SNDTIMEO` set to `timeout` first,
/// which bounds how long `connect(2)` waits on a full backlog.
pub fn unix_connect_timeout(path: &Path, timeout: Duration) -> io::Result<UnixStream> {
    let bytes = path.as_os_str().as_bytes();
    // SAFETY: all-zero bytes are a valid sockaddr_un (an integer and a byte array).
    let mut sa: libc::sockaddr_un = unsafe { mem::zeroed() };
    if bytes.is_empty() || bytes.len() >= sa.sun_path.len() || bytes.contains(&0) {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!(
                "unusable AF_UNIX path (empty, NUL, or not under {} bytes)",
                sa.sun_path.len()
            ),
        ));
    }
    sa.sun_family = libc::AF_UNIX as libc::sa_family_t;
    for (dst, src) in sa.sun_path.iter_mut().zip(bytes) {
        *dst = *src as libc::c_char;
    }
    let len = (mem::size_of::<libc::sa_family_t>() + bytes.len() + 1) as socklen_t;
    let fd = new_socket(libc::AF_UNIX, libc::SOCK_STREAM)?;
    set_timeout(fd.as_fd(), true, Some(timeout))?;
    // SAFETY: `sa` is a live sockaddr_un whose first `len` bytes hold the family and the
    // NUL-terminated path.
    let ret = unsafe {
        libc::connect(
            fd.as_raw_fd(),
            (&sa as *const libc::sockaddr_un).cast(),
            len,
        )
    };
    match cvt(ret) {
        Ok(_) => Ok(UnixStream::from(fd)),
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
            Err(io::Error::from_raw_os_error(libc::ETIMEDOUT))
        }
        Err(e) => Err(e),
    }
}

/// Raises the soft `RLIMIT_NOFILE` to at least `needed` descriptors (and the hard limit too,
/// which needs `CAP_SYS_RESOURCE`, if it is lower).  Returns the soft limit in force.
pub fn raise_nofile_limit(needed: u64) -> io::Result<u64> {
    let mut rl = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `rl` is a live rlimit the kernel fills in.
    cvt(unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut rl) })?;
    let needed = needed as libc::rlim_t;
    if rl.rlim_cur != libc::RLIM_INFINITY && rl.rlim_cur < needed {
        rl.rlim_cur = needed;
        if rl.rlim_max != libc::RLIM_INFINITY && rl.rlim_max < needed {
            rl.rlim_max = needed;
        }
        // SAFETY: `rl` is a live, initialised rlimit the kernel only reads.
        cvt(unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &rl) })?;
    }
    Ok(rl.rlim_cur)
}

/// The CPU time this process has used so far, all its threads together
/// (`getrusage(RUSAGE_SELF)`): `(user, system)`.
pub fn process_cpu_time() -> io::Result<(Duration, Duration)> {
    // SAFETY: all-zero bytes are a valid rusage (integers and timevals).
    let mut ru: libc::rusage = unsafe { mem::zeroed() };
    // SAFETY: `ru` is a live rusage the kernel fills in.
    cvt(unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut ru) })?;
    let d = |tv: libc::timeval| {
        Duration::new(tv.tv_sec.max(0) as u64, 0) + Duration::from_micros(tv.tv_usec.max(0) as u64)
    };
    Ok((d(ru.ru_utime), d(ru.ru_stime)))
}

/// The unit of the times in `/proc/stat` (`sysconf(_SC_CLK_TCK)`, `USER_HZ`), per second.
pub fn clock_ticks_per_sec() -> u64 {
    // SAFETY: sysconf takes an integer and touches no memory of ours.
    let n = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if n > 0 {
        n as u64
    } else {
        100
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addr_display() {
        assert_eq!(VsockAddr::new(1, 1234).to_string(), "1:1234");
        assert_eq!(
            VsockAddr::new(VMADDR_CID_ANY, VMADDR_PORT_ANY).to_string(),
            "any:any"
        );
    }

    #[test]
    fn raw_addr_roundtrip() {
        let a = VsockAddr::new(3, 5000);
        let raw = a.to_raw();
        let len = mem::size_of::<libc::sockaddr_vm>() as socklen_t;
        assert_eq!(VsockAddr::from_raw(&raw, len).unwrap(), a);
        assert!(VsockAddr::from_raw(&raw, 4).is_err());
    }

    #[test]
    fn timeval_rounds_up() {
        let tv = timeval(Duration::from_nanos(10));
        assert_eq!((tv.tv_sec, tv.tv_usec), (0, 1));
        let tv = timeval(Duration::from_millis(2500));
        assert_eq!((tv.tv_sec, tv.tv_usec), (2, 500_000));
    }

    #[test]
    fn unix_connect_errors() {
        let e = unix_connect_timeout(Path::new(""), Duration::from_secs(1)).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::InvalidInput);
        let e = unix_connect_timeout(
            Path::new("/nonexistent/rvsock-test.sock"),
            Duration::from_secs(1),
        )
        .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::ENOENT));
    }

    #[test]
    fn poll_times_out() {
        let (a, _b) = UnixStream::pair().unwrap();
        let t = Instant::now();
        assert!(!wait_readable(a.as_fd(), Some(Duration::from_millis(20))).unwrap());
        assert!(t.elapsed() >= Duration::from_millis(20));
    }

    #[test]
    fn cpu_time_grows() {
        let (u0, s0) = process_cpu_time().unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(50) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        let (u1, s1) = process_cpu_time().unwrap();
        assert!(u1 + s1 > u0 + s0, "{x}");
        assert!(clock_ticks_per_sec() >= 1);
    }

    #[test]
    fn socket_timeouts_roundtrip() {
        // Exercise set/get on an AF_UNIX socket (AF_VSOCK may be missing on the test host).
        let (a, _b) = UnixStream::pair().unwrap();
        set_timeout(a.as_fd(), false, Some(Duration::from_millis(1500))).unwrap();
        assert_eq!(
            get_timeout(a.as_fd(), false).unwrap(),
            Some(Duration::from_millis(1500))
        );
        set_timeout(a.as_fd(), true, None).unwrap();
        assert_eq!(get_timeout(a.as_fd(), true).unwrap(), None);
    }
}
