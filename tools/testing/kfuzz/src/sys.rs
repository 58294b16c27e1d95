// SPDX-License-Identifier: GPL-2.0

//! The system calls of the fuzzer: the injection device's ioctls and non-blocking AF_VSOCK
//! sockets.  This is the crate's only `unsafe` code.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::fs::{File, OpenOptions};
use std::io;
use std::mem;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::path::Path;

use libc::{c_int, c_void, socklen_t};

use crate::wire::{self, Hdr, Info, BATCH_LEN, FEED_REC, HDR_LEN, INFO_LEN};

/// `AF_VSOCK`.
pub const AF_VSOCK: c_int = 40;
/// `VMADDR_CID_ANY`.
pub const VMADDR_CID_ANY: u32 = u32::MAX;
/// `SO_VM_SOCKETS_BUFFER_SIZE`.
const SO_VM_SOCKETS_BUFFER_SIZE: c_int = 0;
/// `SIOCINQ`.
const SIOCINQ: libc::c_ulong = 0x541B;

fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// `/dev/rvsock_inject`.
pub struct Device {
    file: File,
}

impl Device {
    /// Opens the device.
    pub fn open(path: &Path) -> io::Result<Device> {
        let file = OpenOptions::new().read(true).write(true).open(path)?;
        Ok(Device { file })
    }

    /// `ioctl(fd, req, arg)` with an argument of `N` bytes that the kernel reads and/or writes.
    fn ioctl<const N: usize>(&self, req: u64, arg: &mut [u8; N]) -> io::Result<()> {
        // SAFETY: `arg` is a live buffer of exactly the size encoded in `req` (the callers pass
        // the ioctl's own argument size), so the kernel reads and writes only within it.
        cvt(unsafe {
            libc::ioctl(
                self.file.as_raw_fd(),
                req as _,
                arg.as_mut_ptr().cast::<c_void>(),
            )
        })?;
        Ok(())
    }

    /// `RVSOCK_INJECT_INFO`.
    pub fn info(&self) -> io::Result<Info> {
        let mut b = [0u8; INFO_LEN];
        self.ioctl(wire::IOC_INFO, &mut b)?;
        Ok(Info::decode(&b))
    }

    /// `RVSOCK_INJECT_BATCH`: hands the records in `records` to the core (with `dry`, only
    /// builds and frees them); returns how many went in and how many the kernel dropped for
    /// want of memory.
    pub fn inject(&self, records: &[u8], dry: bool) -> io::Result<(u32, u32)> {
        let len = u32::try_from(records.len())
            .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "batch too large"))?;
        let mut b: [u8; BATCH_LEN] = wire::batch_arg(records.as_ptr() as u64, len);
        if dry {
            b[20..24].copy_from_slice(&wire::BATCH_DRY_RUN.to_le_bytes());
        }
        // The kernel only reads `records` (through the address in `b`), which stays borrowed,
        // unchanged, for the duration of the call.
        self.ioctl(wire::IOC_BATCH, &mut b)?;
        Ok((wire::le32(&b, 12), wire::le32(&b, 16)))
    }

    /// `RVSOCK_INJECT_EVENT`: device event `event` (`wire::EVENT_*`) on the transport in `slot`.
    pub fn event(&self, slot: u32, event: u32, cid: u32) -> io::Result<()> {
        let mut b = [0u8; wire::EVENT_LEN];
        b[0..4].copy_from_slice(&slot.to_le_bytes());
        b[4..8].copy_from_slice(&event.to_le_bytes());
        b[8..12].copy_from_slice(&cid.to_le_bytes());
        self.ioctl(wire::IOC_EVENT, &mut b)
    }

    /// `RVSOCK_INJECT_FEED`: appends the headers the core sent (with their slot) to `out`, up to
    /// `max`; returns how many headers were lost because a feed was full.
    pub fn feed(&self, out: &mut Vec<(Hdr, u32)>, max: usize) -> io::Result<u64> {
        let mut buf = vec![0u8; max * FEED_REC];
        let mut b: [u8; BATCH_LEN] = wire::feed_arg(buf.as_mut_ptr() as u64, max as u32);
        // The kernel writes at most `max` records of FEED_REC bytes through the address in `b`:
        // exactly `buf`, which stays mutably borrowed for the call.
        self.ioctl(wire::IOC_FEED, &mut b)?;
        let n = (wire::le32(&b, 12) as usize).min(max);
        for rec in buf[..n * FEED_REC].chunks_exact(FEED_REC) {
            out.push((Hdr::decode(rec), wire::le32(rec, HDR_LEN)));
        }
        Ok(wire::le64(&b, 16))
    }
}

/// A socket type.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Ty {
    /// `SOCK_STREAM`.
    Stream,
    /// `SOCK_SEQPACKET`.
    SeqPacket,
}

impl Ty {
    fn raw(self) -> c_int {
        match self {
            Ty::Stream => libc::SOCK_STREAM,
            Ty::SeqPacket => libc::SOCK_SEQPACKET,
        }
    }

    /// The type field of the wire header.
    pub fn wire(self) -> u16 {
        match self {
            Ty::Stream => wire::TYPE_STREAM,
            Ty::SeqPacket => wire::TYPE_SEQPACKET,
        }
    }
}

/// A non-blocking AF_VSOCK socket, closed when dropped.
#[derive(Debug)]
pub struct Sock {
    fd: OwnedFd,
}

fn sockaddr(cid: u32, port: u32) -> libc::sockaddr_vm {
    // SAFETY: sockaddr_vm is a C struct of integers and bytes; all-zero is a valid value and
    // what the kernel wants in the reserved fields.
    let mut sa: libc::sockaddr_vm = unsafe { mem::zeroed() };
    sa.svm_family = AF_VSOCK as libc::sa_family_t;
    sa.svm_cid = cid;
    sa.svm_port = port;
    sa
}

/// The result of `accept`: the socket and its peer's CID and port.
pub type Accepted = (Sock, u32, u32);

impl Sock {
    /// A new non-blocking socket of type `ty`.
    pub fn new(ty: Ty) -> io::Result<Sock> {
        // SAFETY: socket(2) takes no pointers; the result is checked.
        let fd = cvt(unsafe {
            libc::socket(
                AF_VSOCK,
                ty.raw() | libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
                0,
            )
        })?;
        // SAFETY: `fd` was just returned by socket(2), is open and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok(Sock { fd })
    }

    /// The descriptor, for poll(2).
    pub fn raw(&self) -> RawFd {
        self.fd.as_raw_fd()
    }

    fn addr_call(
        &self,
        f: unsafe extern "C" fn(c_int, *const libc::sockaddr, socklen_t) -> c_int,
        cid: u32,
        port: u32,
    ) -> io::Result<()> {
        let sa = sockaddr(cid, port);
        // SAFETY: `f` is bind(2) or connect(2), which read `len` bytes of the live `sa`.
        cvt(unsafe {
            f(
                self.raw(),
                (&sa as *const libc::sockaddr_vm).cast(),
                mem::size_of::<libc::sockaddr_vm>() as socklen_t,
            )
        })?;
        Ok(())
    }

    /// `bind(cid, port)`.
    pub fn bind(&self, cid: u32, port: u32) -> io::Result<()> {
        self.addr_call(libc::bind, cid, port)
    }

    /// `connect(cid, port)`: non-blocking, so usually `EINPROGRESS`.
    pub fn connect(&self, cid: u32, port: u32) -> io::Result<()> {
        self.addr_call(libc::connect, cid, port)
    }

    /// `listen(backlog)`.
    pub fn listen(&self, backlog: i32) -> io::Result<()> {
        // SAFETY: listen(2) takes no pointers.
        cvt(unsafe { libc::listen(self.raw(), backlog) })?;
        Ok(())
    }

    /// `accept4(SOCK_NONBLOCK)`: the new socket and its peer.
    pub fn accept(&self) -> io::Result<Accepted> {
        let mut sa = sockaddr(0, 0);
        let mut len = mem::size_of::<libc::sockaddr_vm>() as socklen_t;
        // SAFETY: `sa` and `len` are live locals; the kernel writes at most `len` bytes.
        let fd = cvt(unsafe {
            libc::accept4(
                self.raw(),
                (&mut sa as *mut libc::sockaddr_vm).cast(),
                &mut len,
                libc::SOCK_NONBLOCK | libc::SOCK_CLOEXEC,
            )
        })?;
        // SAFETY: `fd` was just returned by accept4(2) and is owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd) };
        Ok((Sock { fd }, sa.svm_cid, sa.svm_port))
    }

    /// `getsockname`: the local CID and port.
    pub fn local_addr(&self) -> io::Result<(u32, u32)> {
        let mut sa = sockaddr(0, 0);
        let mut len = mem::size_of::<libc::sockaddr_vm>() as socklen_t;
        // SAFETY: `sa` and `len` are live locals; the kernel writes at most `len` bytes.
        cvt(unsafe {
            libc::getsockname(
                self.raw(),
                (&mut sa as *mut libc::sockaddr_vm).cast(),
                &mut len,
            )
        })?;
        Ok((sa.svm_cid, sa.svm_port))
    }

    /// `recv(buf, flags | MSG_DONTWAIT)`.
    pub fn recv(&self, buf: &mut [u8], flags: c_int) -> io::Result<usize> {
        // SAFETY: `buf` is live and writable for its length.
        let n = unsafe {
            libc::recv(
                self.raw(),
                buf.as_mut_ptr().cast(),
                buf.len(),
                flags | libc::MSG_DONTWAIT,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// `send(buf, flags | MSG_DONTWAIT | MSG_NOSIGNAL)`.
    pub fn send(&self, buf: &[u8], flags: c_int) -> io::Result<usize> {
        // SAFETY: `buf` is live and readable for its length.
        let n = unsafe {
            libc::send(
                self.raw(),
                buf.as_ptr().cast(),
                buf.len(),
                flags | libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
            )
        };
        if n < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(n as usize)
        }
    }

    /// `shutdown(how)`.
    pub fn shutdown(&self, how: c_int) -> io::Result<()> {
        // SAFETY: shutdown(2) takes no pointers.
        cvt(unsafe { libc::shutdown(self.raw(), how) })?;
        Ok(())
    }

    /// `getsockopt(SO_ERROR)`: the pending error, 0 if none.
    pub fn so_error(&self) -> io::Result<i32> {
        let mut v: c_int = 0;
        let mut len = mem::size_of::<c_int>() as socklen_t;
        // SAFETY: `v` and `len` are live locals; the kernel writes at most `len` bytes.
        cvt(unsafe {
            libc::getsockopt(
                self.raw(),
                libc::SOL_SOCKET,
                libc::SO_ERROR,
                (&mut v as *mut c_int).cast(),
                &mut len,
            )
        })?;
        Ok(v)
    }

    /// `setsockopt(AF_VSOCK, SO_VM_SOCKETS_BUFFER_SIZE, bytes)`.
    pub fn set_buffer_size(&self, bytes: u64) -> io::Result<()> {
        // SAFETY: The kernel reads `len` bytes of the live `bytes`.
        cvt(unsafe {
            libc::setsockopt(
                self.raw(),
                AF_VSOCK,
                SO_VM_SOCKETS_BUFFER_SIZE,
                (&bytes as *const u64).cast(),
                mem::size_of::<u64>() as socklen_t,
            )
        })?;
        Ok(())
    }

    /// `ioctl(SIOCINQ)`: readable bytes.
    pub fn inq(&self) -> io::Result<i32> {
        let mut v: c_int = 0;
        // SAFETY: SIOCINQ writes one int to the live `v`.
        cvt(unsafe { libc::ioctl(self.raw(), SIOCINQ as _, &mut v as *mut c_int) })?;
        Ok(v)
    }
}

/// `poll(2)` with a zero timeout over `fds`: the `revents` of each, in order.
pub fn poll_now(fds: &[RawFd]) -> io::Result<Vec<i16>> {
    let mut p: Vec<libc::pollfd> = fds
        .iter()
        .map(|&fd| libc::pollfd {
            fd,
            events: libc::POLLIN | libc::POLLOUT | libc::POLLRDHUP,
            revents: 0,
        })
        .collect();
    // SAFETY: `p` is a live array of `p.len()` pollfds that the kernel updates in place.
    cvt(unsafe { libc::poll(p.as_mut_ptr(), p.len() as libc::nfds_t, 0) })?;
    Ok(p.iter().map(|x| x.revents).collect())
}

/// Appends `text` to the kernel log (`/dev/kmsg`), best effort: markers that place the
/// fuzzer's progress among the kernel's own messages.
pub fn kmsg(text: &str) {
    use std::io::Write;
    if let Ok(mut f) = OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(text.as_bytes());
    }
}
