// SPDX-License-Identifier: GPL-2.0

//! The host's side: AF_VSOCK sockets of the kernel under test (the peers of the userspace
//! guest), through libc.  Every blocking call is bounded by SO_RCVTIMEO/SO_SNDTIMEO or poll.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// `AF_VSOCK`.
pub const AF_VSOCK: i32 = 40;
/// `VMADDR_CID_ANY`.
pub const CID_ANY: u32 = u32::MAX;
/// `SO_VM_SOCKETS_BUFFER_SIZE` (level AF_VSOCK).
const SO_VM_SOCKETS_BUFFER_SIZE: i32 = 0;

/// `struct sockaddr_vm`.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
pub struct SockaddrVm {
    family: u16,
    reserved1: u16,
    /// Port.
    pub port: u32,
    /// CID.
    pub cid: u32,
    flags: u8,
    zero: [u8; 3],
}

impl SockaddrVm {
    /// The address (cid, port).
    pub fn new(cid: u32, port: u32) -> SockaddrVm {
        SockaddrVm {
            family: AF_VSOCK as u16,
            port,
            cid,
            ..Default::default()
        }
    }
}

/// The errno of the last failed call.
pub fn errno() -> i32 {
    io::Error::last_os_error().raw_os_error().unwrap_or(0)
}

/// An errno's name, for messages.
pub fn ename(e: i32) -> String {
    let n = match e {
        libc::EPERM => "EPERM",
        libc::ENOENT => "ENOENT",
        libc::EINTR => "EINTR",
        libc::EBADF => "EBADF",
        libc::EAGAIN => "EAGAIN",
        libc::ENOMEM => "ENOMEM",
        libc::EFAULT => "EFAULT",
        libc::EBUSY => "EBUSY",
        libc::EINVAL => "EINVAL",
        libc::ENODEV => "ENODEV",
        libc::ENOBUFS => "ENOBUFS",
        libc::EPIPE => "EPIPE",
        libc::ENOTTY => "ENOTTY",
        libc::EOPNOTSUPP => "EOPNOTSUPP",
        libc::EADDRINUSE => "EADDRINUSE",
        libc::EADDRNOTAVAIL => "EADDRNOTAVAIL",
        libc::ENETUNREACH => "ENETUNREACH",
        libc::ECONNRESET => "ECONNRESET",
        libc::ECONNREFUSED => "ECONNREFUSED",
        libc::ENOTCONN => "ENOTCONN",
        libc::ETIMEDOUT => "ETIMEDOUT",
        libc::ESOCKTNOSUPPORT => "ESOCKTNOSUPPORT",
        libc::EHOSTUNREACH => "EHOSTUNREACH",
        libc::EPROTO => "EPROTO",
        _ => return format!("errno {e}"),
    };
    n.to_string()
}

/// A host AF_VSOCK socket.
#[derive(Debug)]
pub struct Sock(OwnedFd);

fn timeval(d: Duration) -> libc::timeval {
    libc::timeval {
        tv_sec: d.as_secs() as libc::time_t,
        tv_usec: d.subsec_micros() as libc::suseconds_t,
    }
}

impl Sock {
    /// A new socket of `type_` (`libc::SOCK_STREAM` or `libc::SOCK_SEQPACKET`) with both
    /// timeouts set to `t`.
    pub fn new(type_: i32, t: Duration) -> Result<Sock, i32> {
        // SAFETY: plain socket(2); the fd is owned below.
        let fd = unsafe { libc::socket(AF_VSOCK, type_ | libc::SOCK_CLOEXEC, 0) };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let s = Sock(unsafe { OwnedFd::from_raw_fd(fd) });
        s.set_timeouts(t)?;
        Ok(s)
    }

    fn fd(&self) -> i32 {
        self.0.as_raw_fd()
    }

    /// SO_RCVTIMEO and SO_SNDTIMEO.
    pub fn set_timeouts(&self, t: Duration) -> Result<(), i32> {
        let tv = timeval(t);
        for opt in [libc::SO_RCVTIMEO, libc::SO_SNDTIMEO] {
            // SAFETY: tv is a valid timeval for the call.
            let r = unsafe {
                libc::setsockopt(
                    self.fd(),
                    libc::SOL_SOCKET,
                    opt,
                    &tv as *const _ as *const libc::c_void,
                    std::mem::size_of::<libc::timeval>() as libc::socklen_t,
                )
            };
            if r < 0 {
                return Err(errno());
            }
        }
        Ok(())
    }

    /// `SO_VM_SOCKETS_BUFFER_SIZE` (also raises the max when needed, as vsock_perf does not).
    pub fn set_buffer_size(&self, v: u64) -> Result<(), i32> {
        for opt in [2 /* BUFFER_MAX_SIZE */, SO_VM_SOCKETS_BUFFER_SIZE] {
            // SAFETY: v is a valid u64 for the call.
            let r = unsafe {
                libc::setsockopt(
                    self.fd(),
                    AF_VSOCK,
                    opt,
                    &v as *const u64 as *const libc::c_void,
                    8,
                )
            };
            if r < 0 {
                return Err(errno());
            }
        }
        Ok(())
    }

    /// bind + listen on (ANY, port).
    pub fn listen(type_: i32, port: u32, t: Duration) -> Result<Sock, i32> {
        let s = Sock::new(type_, t)?;
        let a = SockaddrVm::new(CID_ANY, port);
        // SAFETY: a is a valid sockaddr_vm of the given size.
        let r = unsafe {
            libc::bind(
                s.fd(),
                &a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<SockaddrVm>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(errno());
        }
        // SAFETY: plain listen(2).
        if unsafe { libc::listen(s.fd(), 16) } < 0 {
            return Err(errno());
        }
        Ok(s)
    }

    /// Waits up to `t` for `events`; the revents.
    pub fn poll(&self, events: i16, t: Duration) -> i16 {
        let mut p = libc::pollfd {
            fd: self.fd(),
            events,
            revents: 0,
        };
        // SAFETY: p is a valid pollfd.
        let r = unsafe { libc::poll(&mut p, 1, t.as_millis() as i32) };
        if r <= 0 {
            0
        } else {
            p.revents
        }
    }

    /// accept with a bound wait; the new socket and its peer address.
    pub fn accept(&self, t: Duration) -> Result<(Sock, SockaddrVm), i32> {
        if self.poll(libc::POLLIN, t) & libc::POLLIN == 0 {
            return Err(libc::ETIMEDOUT);
        }
        let mut a = SockaddrVm::default();
        let mut len = std::mem::size_of::<SockaddrVm>() as libc::socklen_t;
        // SAFETY: a and len are valid for the call.
        let fd = unsafe {
            libc::accept4(
                self.fd(),
                &mut a as *mut _ as *mut libc::sockaddr,
                &mut len,
                libc::SOCK_CLOEXEC,
            )
        };
        if fd < 0 {
            return Err(errno());
        }
        // SAFETY: fd is a fresh descriptor we own.
        let s = Sock(unsafe { OwnedFd::from_raw_fd(fd) });
        s.set_timeouts(t)?;
        Ok((s, a))
    }

    /// connect (blocking; the kernel bounds it by the 2 s connect timeout).
    pub fn connect(type_: i32, cid: u32, port: u32, t: Duration) -> Result<Sock, i32> {
        let s = Sock::new(type_, t)?;
        let a = SockaddrVm::new(cid, port);
        // SAFETY: a is a valid sockaddr_vm of the given size.
        let r = unsafe {
            libc::connect(
                s.fd(),
                &a as *const _ as *const libc::sockaddr,
                std::mem::size_of::<SockaddrVm>() as libc::socklen_t,
            )
        };
        if r < 0 {
            return Err(errno());
        }
        Ok(s)
    }

    /// One send; bytes sent or errno.
    pub fn send(&self, b: &[u8], flags: i32) -> Result<usize, i32> {
        // SAFETY: b is valid for reads of its length.
        let r = unsafe {
            libc::send(
                self.fd(),
                b.as_ptr() as *const libc::c_void,
                b.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as usize)
        }
    }

    /// Sends all of `b` (stream).
    pub fn send_all(&self, mut b: &[u8]) -> Result<(), (usize, i32)> {
        let mut done = 0;
        while !b.is_empty() {
            match self.send(b, 0) {
                Ok(n) => {
                    done += n;
                    b = &b[n..];
                }
                Err(e) => return Err((done, e)),
            }
        }
        Ok(())
    }

    /// One recv; bytes read (0 at EOF) or errno.
    pub fn recv(&self, b: &mut [u8], flags: i32) -> Result<usize, i32> {
        // SAFETY: b is valid for writes of its length.
        let r = unsafe {
            libc::recv(
                self.fd(),
                b.as_mut_ptr() as *mut libc::c_void,
                b.len(),
                flags,
            )
        };
        if r < 0 {
            Err(errno())
        } else {
            Ok(r as usize)
        }
    }

    /// recvmsg of one SEQPACKET message: (length, msg_flags).
    pub fn recv_msg(&self, b: &mut [u8]) -> Result<(usize, i32), i32> {
        let mut iov = libc::iovec {
            iov_base: b.as_mut_ptr() as *mut libc::c_void,
            iov_len: b.len(),
        };
        // SAFETY: an all-zero msghdr is valid; fields set below.
        let mut m: libc::msghdr = unsafe { std::mem::zeroed() };
        m.msg_iov = &mut iov;
        m.msg_iovlen = 1;
        // SAFETY: m points at valid iov and buffer.
        let r = unsafe { libc::recvmsg(self.fd(), &mut m, 0) };
        if r < 0 {
            Err(errno())
        } else {
            Ok((r as usize, m.msg_flags))
        }
    }

    /// sendmsg of one SEQPACKET message, with MSG_EOR if asked.
    pub fn send_msg(&self, b: &[u8], eor: bool) -> Result<usize, i32> {
        self.send(b, if eor { libc::MSG_EOR } else { 0 })
    }

    /// shutdown(how).
    pub fn shutdown(&self, how: i32) -> Result<(), i32> {
        // SAFETY: plain shutdown(2).
        if unsafe { libc::shutdown(self.fd(), how) } < 0 {
            Err(errno())
        } else {
            Ok(())
        }
    }

    /// SO_ERROR (reading clears it).
    pub fn so_error(&self) -> i32 {
        let mut v: i32 = 0;
        let mut len = 4 as libc::socklen_t;
        // SAFETY: v and len are valid for the call.
        unsafe {
            libc::getsockopt(
                self.fd(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                &mut v as *mut i32 as *mut libc::c_void,
                &mut len,
            )
        };
        v
    }
}

/// Reads until EOF or error; (bytes, the end: Ok(()) at EOF or the errno).
pub fn read_to_end(s: &Sock, max: usize, mut f: impl FnMut(&[u8])) -> (usize, Result<(), i32>) {
    let mut buf = vec![0u8; 64 * 1024];
    let mut total = 0;
    loop {
        match s.recv(&mut buf, 0) {
            Ok(0) => return (total, Ok(())),
            Ok(n) => {
                f(&buf[..n]);
                total += n;
                if total >= max {
                    return (total, Ok(()));
                }
            }
            Err(e) => return (total, Err(e)),
        }
    }
}
