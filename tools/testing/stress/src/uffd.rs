// SPDX-License-Identifier: GPL-2.0

//! Stalling a socket's owner inside the kernel with userfaultfd.
//!
//! [`Staller::stalled_send`] sends bytes from a fresh anonymous mapping registered with a
//! userfaultfd (`UFFDIO_REGISTER_MODE_MISSING`) and not yet populated.  The kernel takes the
//! socket lock, then its copy from user memory faults, and the calling thread sleeps in the
//! fault handler *holding the socket lock*, until the [`Staller`]'s handler thread fills the
//! page (`UFFDIO_COPY`) after the hold time asked for.  Meanwhile the socket's peer keeps
//! sending, and every packet for the socket finds it owned.
//!
//! Faults in kernel mode need `CAP_SYS_PTRACE` (root) unless `vm.unprivileged_userfaultfd` is
//! 1; the test kernel has `CONFIG_USERFAULTFD=y`.

#![warn(clippy::undocumented_unsafe_blocks)]

use std::io;
use std::mem;
use std::os::fd::{AsFd, AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libc::{c_int, c_ulong, c_void};

use crate::sock::Sock;

const UFFD_API: u64 = 0xAA;
const UFFD_EVENT_PAGEFAULT: u8 = 0x12;
const UFFDIO_REGISTER_MODE_MISSING: u64 = 1;
// _IOWR(0xAA, nr, struct) and _IOR(0xAA, nr, struct) of <linux/userfaultfd.h>, checked against
// the C header: see the `ioctl_numbers` test.
const UFFDIO_API: c_ulong = ioc(3, 0x3F, mem::size_of::<UffdioApi>());
const UFFDIO_REGISTER: c_ulong = ioc(3, 0x00, mem::size_of::<UffdioRegister>());
const UFFDIO_WAKE: c_ulong = ioc(2, 0x02, mem::size_of::<UffdioRange>());
const UFFDIO_COPY: c_ulong = ioc(3, 0x03, mem::size_of::<UffdioCopy>());

/// `_IOC(dir, 0xAA, nr, size)` on x86-64 (and the other architectures with the generic
/// layout): dir 2 is read, 3 read+write.
const fn ioc(dir: c_ulong, nr: c_ulong, size: usize) -> c_ulong {
    (dir << 30) | ((size as c_ulong) << 16) | (0xAA << 8) | nr
}

/// `struct uffdio_api`.
#[repr(C)]
#[derive(Default)]
struct UffdioApi {
    api: u64,
    features: u64,
    ioctls: u64,
}

/// `struct uffdio_range`.
#[repr(C)]
#[derive(Default)]
struct UffdioRange {
    start: u64,
    len: u64,
}

/// `struct uffdio_register`.
#[repr(C)]
#[derive(Default)]
struct UffdioRegister {
    range: UffdioRange,
    mode: u64,
    ioctls: u64,
}

/// `struct uffdio_copy`.
#[repr(C)]
#[derive(Default)]
struct UffdioCopy {
    dst: u64,
    src: u64,
    len: u64,
    mode: u64,
    copy: i64,
}

/// `struct uffd_msg` (packed, 32 bytes): the event, then for a page fault `flags`, `address`
/// and the faulting thread's id.
#[repr(C, packed)]
#[derive(Clone, Copy, Default)]
struct UffdMsg {
    event: u8,
    reserved1: u8,
    reserved2: u16,
    reserved3: u32,
    arg: [u64; 3],
}

fn cvt(ret: c_int) -> io::Result<c_int> {
    if ret == -1 {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

/// The page size.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes no pointers.
    let n = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    if n > 0 {
        n as usize
    } else {
        4096
    }
}

/// A userfaultfd (`O_CLOEXEC | O_NONBLOCK`) after the `UFFDIO_API` handshake.
#[derive(Debug)]
struct Uffd {
    fd: OwnedFd,
}

impl Uffd {
    fn new() -> io::Result<Uffd> {
        // SAFETY: userfaultfd(2) takes only flags; the result is checked.
        let fd =
            unsafe { libc::syscall(libc::SYS_userfaultfd, libc::O_CLOEXEC | libc::O_NONBLOCK) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by userfaultfd(2), is open and owned by no one else.
        let fd = unsafe { OwnedFd::from_raw_fd(fd as c_int) };
        let mut api = UffdioApi {
            api: UFFD_API,
            ..Default::default()
        };
        // SAFETY: UFFDIO_API reads and writes one struct uffdio_api, which `api` is.
        cvt(unsafe { libc::ioctl(fd.as_raw_fd(), UFFDIO_API, &mut api as *mut UffdioApi) })?;
        Ok(Uffd { fd })
    }

    fn register(&self, start: u64, len: u64) -> io::Result<()> {
        let mut reg = UffdioRegister {
            range: UffdioRange { start, len },
            mode: UFFDIO_REGISTER_MODE_MISSING,
            ioctls: 0,
        };
        // SAFETY: UFFDIO_REGISTER reads and writes one struct uffdio_register, which `reg` is.
        cvt(unsafe {
            libc::ioctl(
                self.fd.as_raw_fd(),
                UFFDIO_REGISTER,
                &mut reg as *mut UffdioRegister,
            )
        })?;
        Ok(())
    }

    /// Fills the page at `dst` from `src` (one page) and wakes the threads waiting on it.
    fn copy(&self, dst: u64, src: &[u8]) -> io::Result<()> {
        let mut c = UffdioCopy {
            dst,
            src: src.as_ptr() as u64,
            len: src.len() as u64,
            mode: 0,
            copy: 0,
        };
        // SAFETY: UFFDIO_COPY reads and writes one struct uffdio_copy, which `c` is; the kernel
        // reads `len` bytes at `src`, which `src` holds, and writes only into the registered
        // mapping at `dst`, which no Rust reference covers.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_COPY, &mut c as *mut UffdioCopy) })?;
        Ok(())
    }

    /// Wakes the threads waiting on the page at `start` (when it is already populated).
    fn wake(&self, start: u64, len: u64) -> io::Result<()> {
        let mut r = UffdioRange { start, len };
        // SAFETY: UFFDIO_WAKE reads one struct uffdio_range, which `r` is.
        cvt(unsafe { libc::ioctl(self.fd.as_raw_fd(), UFFDIO_WAKE, &mut r as *mut UffdioRange) })?;
        Ok(())
    }

    /// The address of the next page fault reported, if one is waiting.
    fn read_fault(&self) -> io::Result<Option<u64>> {
        loop {
            let mut msg = UffdMsg::default();
            // SAFETY: `msg` is a live, writable 32-byte struct uffd_msg and that is the length
            // passed.
            let n = unsafe {
                libc::read(
                    self.fd.as_raw_fd(),
                    (&mut msg as *mut UffdMsg).cast::<c_void>(),
                    mem::size_of::<UffdMsg>(),
                )
            };
            if n < 0 {
                let e = io::Error::last_os_error();
                if e.kind() == io::ErrorKind::WouldBlock {
                    return Ok(None);
                }
                if e.kind() == io::ErrorKind::Interrupted {
                    continue;
                }
                return Err(e);
            }
            if n as usize != mem::size_of::<UffdMsg>() {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    format!("short read of a uffd_msg: {n} bytes"),
                ));
            }
            if msg.event == UFFD_EVENT_PAGEFAULT {
                let address = msg.arg[1];
                return Ok(Some(address));
            }
            // Other events (fork, remap...) are not asked for; skip them.
        }
    }
}

/// A private anonymous mapping, unmapped (and so unregistered) on drop.
struct Mapping {
    addr: *mut c_void,
    len: usize,
}

impl Mapping {
    fn new(len: usize) -> io::Result<Mapping> {
        // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
        // existing memory; the result is checked.
        let addr = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if addr == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        Ok(Mapping { addr, len })
    }

    fn start(&self) -> u64 {
        self.addr as u64
    }
}

impl Drop for Mapping {
    fn drop(&mut self) {
        // SAFETY: `addr` and `len` are exactly what mmap returned and no reference into the
        // mapping outlives it (only the kernel reads it, during `send`).
        unsafe { libc::munmap(self.addr, self.len) };
    }
}

/// How long the handler leaves a stalled fault unresolved.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Hold {
    /// This long after the fault was reported.
    For(Duration),
    /// Until [`Staller::release_all`], or `Duration` after the fault at the latest.
    UntilReleased(Duration),
}

/// One registered mapping waiting for, or in, a stalled send.
struct Region {
    start: u64,
    len: u64,
    /// What the pages hold once filled.
    src: Vec<u8>,
    hold: Hold,
    released: bool,
    /// Faults reported and not resolved yet: page address, when it was reported, whether it
    /// is the region's first.
    pending: Vec<(u64, Instant, bool)>,
    faults: u32,
}

impl Region {
    /// When a fault reported at `reported` is resolved: the first one after the hold, later
    /// ones at once.
    fn due(&self, reported: Instant, first: bool) -> Instant {
        match self.hold {
            _ if !first => reported,
            Hold::For(d) => reported + d,
            Hold::UntilReleased(max) => reported + max,
        }
    }
}

/// What the handler thread and the stalling threads share.
struct Shared {
    uffd: Uffd,
    page: usize,
    regions: Mutex<Vec<Region>>,
    /// Signalled when a fault is reported.
    fault_seen: Condvar,
    faults: AtomicU64,
    stop: AtomicBool,
    errors: Mutex<Vec<String>>,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Vec<Region>> {
        // A panic elsewhere must not stop the handler from resolving faults.
        self.regions.lock().unwrap_or_else(|p| p.into_inner())
    }

    fn error(&self, msg: String) {
        self.errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(msg);
    }
}

/// The outcome of one [`Staller::stalled_send`].
#[derive(Debug)]
pub struct Stall {
    /// What `send` returned.
    pub result: io::Result<usize>,
    /// Page faults the handler saw during the send: 0 means the owner was not stalled
    /// (the send failed or waited before copying).  Only the first one is held.
    pub faults: u32,
    /// How long `send` took.
    pub elapsed: Duration,
}

/// A userfaultfd and its handler thread; see the module documentation.
pub struct Staller {
    shared: Arc<Shared>,
    handler: Option<JoinHandle<()>>,
}

impl Staller {
    /// Opens the userfaultfd and starts the handler thread.
    pub fn new() -> io::Result<Staller> {
        let shared = Arc::new(Shared {
            uffd: Uffd::new()?,
            page: page_size(),
            regions: Mutex::new(Vec::new()),
            fault_seen: Condvar::new(),
            faults: AtomicU64::new(0),
            stop: AtomicBool::new(false),
            errors: Mutex::new(Vec::new()),
        });
        let s = shared.clone();
        let handler = std::thread::Builder::new()
            .name("uffd-handler".into())
            .spawn(move || handler(&s))?;
        Ok(Staller {
            shared,
            handler: Some(handler),
        })
    }

    /// Sends `data` on `sock` (with `MSG_NOSIGNAL | flags`) from a fresh registered mapping,
    /// `data` starting `offset` bytes into its first page (`offset` is reduced modulo the
    /// page size): the kernel's copy faults on the first missing page it touches, and the
    /// calling thread stays in the kernel, holding the socket lock, for `hold`.  Further
    /// faults of the same send are resolved at once.
    ///
    /// With `mid_copy`, the first page is filled before the send, so when `data` spans two
    /// pages the kernel copies the first part and stalls in the middle of the copy.
    pub fn stalled_send(
        &self,
        sock: &Sock,
        data: &[u8],
        offset: usize,
        mid_copy: bool,
        hold: Hold,
        flags: c_int,
    ) -> io::Result<Stall> {
        let page = self.shared.page;
        let offset = offset % page;
        let pages = (offset + data.len()).div_ceil(page).max(1);
        let map = Mapping::new(pages * page)?;
        let mut src = vec![0u8; pages * page];
        src[offset..offset + data.len()].copy_from_slice(data);
        if mid_copy && pages > 1 {
            // SAFETY: the mapping is live, writable, at least two pages long, and not
            // registered yet (so the write does not fault through the handler); `src` holds
            // a page.
            unsafe { std::ptr::copy_nonoverlapping(src.as_ptr(), map.addr.cast::<u8>(), page) };
        }
        self.shared.uffd.register(map.start(), map.len as u64)?;
        self.shared.lock().push(Region {
            start: map.start(),
            len: map.len as u64,
            src,
            hold,
            released: false,
            pending: Vec::new(),
            faults: 0,
        });
        let t0 = Instant::now();
        // SAFETY: the pointer and length stay inside the live mapping `map`; the kernel reads
        // them (faulting the pages in through the handler), and no Rust reference covers them.
        let ret = unsafe {
            libc::send(
                sock.as_raw_fd(),
                map.addr.cast::<u8>().add(offset).cast::<c_void>(),
                data.len(),
                flags | libc::MSG_NOSIGNAL,
            )
        };
        let result = if ret < 0 {
            Err(io::Error::last_os_error())
        } else {
            Ok(ret as usize)
        };
        let elapsed = t0.elapsed();
        let faults = {
            let mut regions = self.shared.lock();
            match regions.iter().position(|r| r.start == map.start()) {
                Some(i) => regions.swap_remove(i).faults,
                None => 0,
            }
        };
        // Unmapped (and unregistered) only now, after the region left the handler's list.
        drop(map);
        Ok(Stall {
            result,
            faults,
            elapsed,
        })
    }

    /// Lets every held fault go now (and the ones reported later, for the regions registered
    /// so far).
    pub fn release_all(&self) {
        for r in self.shared.lock().iter_mut() {
            r.released = true;
        }
    }

    /// Waits until at least `n` faults were reported in all, for at most `timeout`; returns
    /// whether they were.
    pub fn wait_faults(&self, n: u64, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut g = self.shared.lock();
        while self.shared.faults.load(Ordering::Acquire) < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            g = match self.shared.fault_seen.wait_timeout(g, left) {
                Ok((g, _)) => g,
                Err(p) => p.into_inner().0,
            };
        }
        true
    }

    /// Faults reported so far.
    pub fn faults(&self) -> u64 {
        self.shared.faults.load(Ordering::Acquire)
    }

    /// Problems the handler met (failed `UFFDIO_COPY`, faults outside any region...).
    pub fn errors(&self) -> Vec<String> {
        self.shared
            .errors
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for Staller {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Release);
        if let Some(h) = self.handler.take() {
            let _ = h.join();
        }
    }
}

/// How long a stopping handler waits for the stalled sends still in the kernel to return.
const STOP_GRACE: Duration = Duration::from_secs(30);

/// The handler thread: collects fault reports and resolves each when its hold is over.  On stop
/// it resolves everything still held and returns once no region is left (or after
/// [`STOP_GRACE`]).
fn handler(s: &Shared) {
    let mut stop_at = None;
    loop {
        if s.stop.load(Ordering::Acquire) {
            let since = *stop_at.get_or_insert_with(Instant::now);
            if s.lock().is_empty() {
                return;
            }
            if since.elapsed() > STOP_GRACE {
                // Closing the userfaultfd (when the last reference goes) wakes whatever
                // faults on the remaining regions later; they then read zeros.
                s.error("stopped with stalled sends still registered".into());
                return;
            }
        }
        // Sleep until the next fault is due, a new fault is reported, or 20 ms.
        let now = Instant::now();
        let next_due = s
            .lock()
            .iter()
            .flat_map(|r| {
                r.pending
                    .iter()
                    .map(move |&(_, t, first)| if r.released { now } else { r.due(t, first) })
            })
            .min();
        let wait = next_due
            .map(|d| d.saturating_duration_since(now))
            .unwrap_or(Duration::from_millis(20))
            .min(Duration::from_millis(20));
        let mut pfd = crate::sock::pollfd(s.uffd.fd.as_fd(), libc::POLLIN);
        if let Err(e) = crate::sock::poll(std::slice::from_mut(&mut pfd), wait) {
            s.error(format!("poll on the userfaultfd: {e}"));
            std::thread::sleep(Duration::from_millis(5));
        }
        loop {
            match s.uffd.read_fault() {
                Ok(Some(addr)) => record_fault(s, addr),
                Ok(None) => break,
                Err(e) => {
                    s.error(format!("read from the userfaultfd: {e}"));
                    break;
                }
            }
        }
        resolve_due(s, s.stop.load(Ordering::Acquire));
    }
}

fn record_fault(s: &Shared, addr: u64) {
    let page = addr & !(s.page as u64 - 1);
    let now = Instant::now();
    let mut regions = s.lock();
    match regions
        .iter_mut()
        .find(|r| page >= r.start && page < r.start + r.len)
    {
        Some(r) => {
            r.pending.push((page, now, r.faults == 0));
            r.faults += 1;
        }
        None => {
            drop(regions);
            // Not ours (cannot happen): fill it with zeros rather than leave a thread stuck.
            s.error(format!("fault at {addr:#x} outside every stall region"));
            let zeros = vec![0u8; s.page];
            if let Err(e) = s.uffd.copy(page, &zeros) {
                s.error(format!("UFFDIO_COPY of a zero page at {page:#x}: {e}"));
            }
            return;
        }
    }
    s.faults.fetch_add(1, Ordering::AcqRel);
    s.fault_seen.notify_all();
}

fn resolve_due(s: &Shared, all: bool) {
    let now = Instant::now();
    let mut regions = s.lock();
    for r in regions.iter_mut() {
        let mut i = 0;
        while i < r.pending.len() {
            let (page, reported, first) = r.pending[i];
            if !(all || r.released || now >= r.due(reported, first)) {
                i += 1;
                continue;
            }
            let off = (page - r.start) as usize;
            let src = &r.src[off..off + s.page];
            match s.uffd.copy(page, src) {
                Ok(()) => {
                    r.pending.swap_remove(i);
                }
                // The mapping is changing: try again on the next round.
                Err(e) if e.raw_os_error() == Some(libc::EAGAIN) => i += 1,
                // Already filled (two threads faulted on it): just wake the waiters.
                Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                    if let Err(e) = s.uffd.wake(page, s.page as u64) {
                        s.error(format!("UFFDIO_WAKE at {page:#x}: {e}"));
                    }
                    r.pending.swap_remove(i);
                }
                Err(e) => {
                    s.error(format!("UFFDIO_COPY at {page:#x}: {e}"));
                    let _ = s.uffd.wake(page, s.page as u64);
                    r.pending.swap_remove(i);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_numbers() {
        // From <linux/userfaultfd.h> on x86-64.
        assert_eq!(UFFDIO_API, 0xC018_AA3F);
        assert_eq!(UFFDIO_REGISTER, 0xC020_AA00);
        assert_eq!(UFFDIO_WAKE, 0x8010_AA02);
        assert_eq!(UFFDIO_COPY, 0xC028_AA03);
        assert_eq!(mem::size_of::<UffdMsg>(), 32);
    }

    /// A stalled send over a TCP pair on the host, where userfaultfd is allowed (root).
    #[test]
    fn stalled_send_holds_and_delivers() {
        let st = match Staller::new() {
            Ok(st) => st,
            Err(e) => {
                eprintln!("skipped: no userfaultfd here ({e})");
                return;
            }
        };
        let l = crate::sock::Listener::bind(
            &rvsock_samples::net::Target::Tcp("127.0.0.1:0".parse().unwrap()),
            4,
            None,
        )
        .unwrap();
        let t = l.connect_target(1).unwrap();
        let c = Sock::connect(&t, Duration::from_secs(5)).unwrap();
        let srv = l.accept(Some(Duration::from_secs(5))).unwrap();
        let data: Vec<u8> = (0..6000u32).map(|i| (i * 7) as u8).collect();
        let out = st
            .stalled_send(
                &c,
                &data,
                100,
                false,
                Hold::For(Duration::from_millis(150)),
                0,
            )
            .unwrap();
        assert_eq!(out.result.unwrap(), data.len());
        // 100 + 6000 bytes span two pages: two faults, the first held.
        assert_eq!(out.faults, 2, "faults");
        assert!(
            out.elapsed >= Duration::from_millis(150),
            "{:?}",
            out.elapsed
        );
        let mut got = vec![0u8; data.len()];
        srv.set_timeouts(Some(Duration::from_secs(5))).unwrap();
        srv.recv_exact(&mut got).unwrap();
        assert_eq!(got, data);
        // Mid-copy: the first page is there, only the second faults.
        let out = st
            .stalled_send(
                &c,
                &data,
                100,
                true,
                Hold::For(Duration::from_millis(100)),
                0,
            )
            .unwrap();
        assert_eq!(out.result.unwrap(), data.len());
        assert_eq!(out.faults, 1, "faults");
        assert!(
            out.elapsed >= Duration::from_millis(100),
            "{:?}",
            out.elapsed
        );
        srv.recv_exact(&mut got).unwrap();
        assert_eq!(got, data);
        assert!(st.errors().is_empty(), "{:?}", st.errors());
    }

    #[test]
    fn release_all_ends_the_hold() {
        let st = match Staller::new() {
            Ok(st) => Arc::new(st),
            Err(_) => return,
        };
        let l = crate::sock::Listener::bind(
            &rvsock_samples::net::Target::Tcp("127.0.0.1:0".parse().unwrap()),
            4,
            None,
        )
        .unwrap();
        let t = l.connect_target(1).unwrap();
        let c = Sock::connect(&t, Duration::from_secs(5)).unwrap();
        let _srv = l.accept(Some(Duration::from_secs(5))).unwrap();
        let st2 = st.clone();
        let h = std::thread::spawn(move || {
            st2.stalled_send(
                &c,
                b"x",
                0,
                false,
                Hold::UntilReleased(Duration::from_secs(20)),
                0,
            )
            .unwrap()
        });
        assert!(st.wait_faults(1, Duration::from_secs(5)));
        std::thread::sleep(Duration::from_millis(50));
        st.release_all();
        let out = h.join().unwrap();
        assert_eq!(out.result.unwrap(), 1);
        assert!(out.elapsed < Duration::from_secs(10));
    }
}
