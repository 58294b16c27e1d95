// SPDX-License-Identifier: GPL-2.0

//! BSD sockets: `struct socket`, address families (`net_proto_family`) and their operations
//! (`proto_ops`).
//!
//! C header: [`include/linux/net.h`](srctree/include/linux/net.h)
//!
//! A protocol implements [`SocketOps`]; [`OpsTable`] turns it into a `proto_ops` whose C entry
//! points convert the raw arguments into safe ones and the results into errnos.  [`FamilyReg`]
//! registers the family's `create` function with `sock_register`.

use crate::kx::msg::{Msg, OptVal};
use crate::kx::sys;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::error::{code::*, from_result, to_result, Result};
use kernel::prelude::*;
use kernel::types::Opaque;
use kernel::uaccess::UserSlice;

/// `sock->state` (`socket_state`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SocketState {
    /// `SS_FREE`.
    Free,
    /// `SS_UNCONNECTED`.
    Unconnected,
    /// `SS_CONNECTING`.
    Connecting,
    /// `SS_CONNECTED`.
    Connected,
    /// `SS_DISCONNECTING`.
    Disconnecting,
}

impl SocketState {
    fn from_raw(v: sys::socket_state) -> Self {
        match v {
            sys::socket_state_SS_UNCONNECTED => SocketState::Unconnected,
            sys::socket_state_SS_CONNECTING => SocketState::Connecting,
            sys::socket_state_SS_CONNECTED => SocketState::Connected,
            sys::socket_state_SS_DISCONNECTING => SocketState::Disconnecting,
            _ => SocketState::Free,
        }
    }

    fn raw(self) -> sys::socket_state {
        match self {
            SocketState::Free => sys::socket_state_SS_FREE,
            SocketState::Unconnected => sys::socket_state_SS_UNCONNECTED,
            SocketState::Connecting => sys::socket_state_SS_CONNECTING,
            SocketState::Connected => sys::socket_state_SS_CONNECTED,
            SocketState::Disconnecting => sys::socket_state_SS_DISCONNECTING,
        }
    }
}

/// A BSD socket (`struct socket`).
///
/// # Invariants
///
/// The wrapped `struct socket` is valid while the reference is; its state is only changed under
/// the socket lock of its `sk`, as in C.
#[repr(transparent)]
pub(crate) struct Socket(Opaque<sys::socket>);

impl Socket {
    /// Borrows a `struct socket`.
    ///
    /// # Safety
    ///
    /// `ptr` must be valid for `'a`.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut sys::socket) -> &'a Socket {
        // SAFETY: Transparent wrapper; validity is the caller's guarantee.
        unsafe { &*ptr.cast() }
    }

    /// The raw pointer.
    pub(crate) fn as_ptr(&self) -> *mut sys::socket {
        self.0.get()
    }

    /// The network-layer socket (`sock->sk`), null after release.
    pub(crate) fn sk(&self) -> *mut sys::sock {
        // SAFETY: The socket is valid (type invariant).
        unsafe { (*self.as_ptr()).sk }
    }

    /// Detaches the network-layer socket (`sock->sk = NULL`) after release.
    pub(crate) fn clear_sk(&self) {
        // SAFETY: The socket is valid; `release` is its last operation.
        unsafe { (*self.as_ptr()).sk = core::ptr::null_mut() };
    }

    /// The socket type (`SOCK_STREAM`, ...).
    pub(crate) fn sock_type(&self) -> u32 {
        // SAFETY: The socket is valid (type invariant).
        unsafe { (*self.as_ptr()).type_ as u32 }
    }

    /// `sock->state`.
    pub(crate) fn state(&self) -> SocketState {
        // SAFETY: The socket is valid (type invariant).
        SocketState::from_raw(unsafe { (*self.as_ptr()).state })
    }

    /// Sets `sock->state`.
    pub(crate) fn set_state(&self, state: SocketState) {
        // SAFETY: The socket is valid; callers hold the socket lock (type invariant).
        unsafe { (*self.as_ptr()).state = state.raw() };
    }

    /// Sets a `SOCK_*` bit of `sock->flags` (`SOCK_CUSTOM_SOCKOPT`, `SOCK_SUPPORT_ZC`).
    pub(crate) fn set_flag(&self, bit: u32) {
        // SAFETY: The socket is valid; `set_bit` is atomic.
        unsafe { sys::rvsock_h_socket_set_flag(self.as_ptr(), bit as i32) };
    }

    /// Sets the operations of a socket being created.
    pub(crate) fn set_ops(&self, ops: &'static OpsTable) {
        // SAFETY: The socket is valid and being created (no operation can run yet); the table
        // is static, so it outlives every socket.
        unsafe { (*self.as_ptr()).ops = ops.0.get() };
    }
}

/// The `poll_table` of a `poll` call, with the file polled.
pub(crate) struct PollTable {
    file: *mut sys::file,
    table: *mut sys::poll_table_struct,
}

impl PollTable {
    /// Registers the socket's wait queue with the poll table (`sock_poll_wait`).
    pub(crate) fn wait(&self, sock: &Socket) {
        // SAFETY: `file` and `table` are the arguments of the running `poll` call on `sock`.
        unsafe { sys::rvsock_h_sock_poll_wait(self.file, sock.as_ptr(), self.table) };
    }
}

/// Proof that the caller of a socket operation holds the lock of socket `sk` as its owner.
///
/// # Invariants
///
/// The socket lock of `sk` is owned by the current task for the value's lifetime.
pub(crate) struct LockedByCaller {
    pub(crate) sk: *mut sys::sock,
}

/// A user pointer argument (`getsockopt`, `ioctl`).
#[derive(Clone, Copy)]
pub(crate) struct UserPtr(usize);

impl UserPtr {
    /// Wraps a user address.
    pub(crate) fn new(addr: usize) -> Self {
        UserPtr(addr)
    }

    /// Reads a `T` from user memory.
    pub(crate) fn read<T: kernel::types::FromBytes>(self) -> Result<T> {
        UserSlice::new(self.0, core::mem::size_of::<T>())
            .reader()
            .read::<T>()
    }

    /// Writes `bytes` to user memory.
    pub(crate) fn write_bytes(self, bytes: &[u8]) -> Result {
        UserSlice::new(self.0, bytes.len())
            .writer()
            .write_slice(bytes)
    }

    /// Writes a `T` to user memory.
    pub(crate) fn write<T: kernel::types::AsBytes>(self, v: &T) -> Result {
        UserSlice::new(self.0, core::mem::size_of::<T>())
            .writer()
            .write(v)
    }
}

/// The operations of a socket type.  Every method gets the `struct socket` it is called on;
/// errors become negative errnos.
pub(crate) trait SocketOps: 'static {
    /// `close()`: the last reference to the file is gone.
    fn release(sock: &Socket) -> Result;
    /// `bind()` with the kernel copy of the address.
    fn bind(sock: &Socket, addr: &[u8]) -> Result;
    /// `connect()`; `flags` holds the file flags (`O_NONBLOCK`).
    fn connect(sock: &Socket, addr: &[u8], flags: i32) -> Result;
    /// `accept()` into `newsock`; `flags` holds the file flags.
    fn accept(sock: &Socket, newsock: &Socket, flags: i32) -> Result;
    /// `getsockname()`/`getpeername()`: writes the address into `out`, returns its length.
    fn getname(sock: &Socket, out: &mut [u8], peer: bool) -> Result<usize>;
    /// `poll()`: the event mask.
    fn poll(sock: &Socket, table: &PollTable) -> u32;
    /// `ioctl()`.
    fn ioctl(sock: &Socket, cmd: u32, arg: UserPtr) -> Result<i32>;
    /// `listen()`.
    fn listen(sock: &Socket, backlog: i32) -> Result;
    /// `shutdown()` with the user's `how`.
    fn shutdown(sock: &Socket, how: i32) -> Result;
    /// `setsockopt()`.
    fn setsockopt(sock: &Socket, level: i32, optname: i32, val: OptVal) -> Result;
    /// `getsockopt()`.
    fn getsockopt(sock: &Socket, level: i32, optname: i32, val: UserPtr, len: UserPtr) -> Result;
    /// `sendmsg()`: bytes sent.
    fn sendmsg(sock: &Socket, msg: &mut Msg<'_>, len: usize) -> Result<usize>;
    /// `recvmsg()`: bytes received (or the message length, see `MSG_TRUNC`).
    fn recvmsg(sock: &Socket, msg: &mut Msg<'_>, len: usize, flags: i32) -> Result<usize>;
    /// `setsockopt(SO_RCVLOWAT)`, if the socket type handles it ([`OpsTable::new`]).  The
    /// generic code holds the socket lock: `locked` proves it.
    fn set_rcvlowat(sock: &Socket, locked: &LockedByCaller, val: i32) -> Result;
}

/// A `proto_ops` table built from a [`SocketOps`] implementation.
///
/// # Invariants
///
/// The table holds valid entry points of one [`SocketOps`] implementation and its owner.
#[repr(transparent)]
pub(crate) struct OpsTable(Opaque<sys::proto_ops>);

// SAFETY: The table is written once, at module init before any socket can use it, then only read.
unsafe impl Sync for OpsTable {}

impl OpsTable {
    /// The table for family `family` and socket operations `T`, owned by `module`.  `rcvlowat`
    /// says whether `SO_RCVLOWAT` goes to [`SocketOps::set_rcvlowat`].
    pub(crate) fn new<T: SocketOps>(
        family: i32,
        module: &'static ThisModule,
        rcvlowat: bool,
    ) -> Self {
        let t = OpsTable(Opaque::uninit());
        let p = t.0.get();
        // SAFETY: `p` is valid for writes and nobody else knows of the table yet; an all-zero
        // `proto_ops` means "no operation" for every optional entry.
        unsafe {
            p.write_bytes(0, 1);
            let o = &mut *p;
            o.family = family;
            o.owner = module.as_ptr().cast();
            o.release = Some(release::<T>);
            o.bind = Some(bind::<T>);
            o.connect = Some(connect::<T>);
            o.socketpair = Some(sys::sock_no_socketpair);
            o.accept = Some(accept::<T>);
            o.getname = Some(getname::<T>);
            o.poll = Some(poll::<T>);
            o.ioctl = Some(ioctl::<T>);
            o.listen = Some(listen::<T>);
            o.shutdown = Some(shutdown::<T>);
            o.setsockopt = Some(setsockopt::<T>);
            o.getsockopt = Some(getsockopt::<T>);
            o.sendmsg = Some(sendmsg::<T>);
            o.recvmsg = Some(recvmsg::<T>);
            o.mmap = Some(sys::sock_no_mmap);
            if rcvlowat {
                o.set_rcvlowat = Some(set_rcvlowat::<T>);
            }
        }
        // INVARIANT: Filled above.
        t
    }
}

fn ret(r: Result) -> i32 {
    from_result(|| r.map(|()| 0))
}

/// # Safety
///
/// Called by the socket layer with a valid socket.
unsafe extern "C" fn release<T: SocketOps>(sock: *mut sys::socket) -> i32 {
    // SAFETY: Valid for the call (socket layer).
    ret(T::release(unsafe { Socket::from_raw(sock) }))
}

/// Borrows the kernel copy of a user address, at most `sockaddr_storage` long.
///
/// # Safety
///
/// `addr` must be valid for `len` bytes, as the socket layer guarantees for its own copy.
unsafe fn addr_slice<'a>(addr: *mut sys::sockaddr, len: i32) -> &'a [u8] {
    let len = len.clamp(0, 128) as usize;
    if addr.is_null() {
        return &[];
    }
    // SAFETY: Guaranteed by the caller.
    unsafe { core::slice::from_raw_parts(addr.cast::<u8>(), len) }
}

/// # Safety
///
/// Called by the socket layer with a valid socket and its kernel copy of the address.
unsafe extern "C" fn bind<T: SocketOps>(
    sock: *mut sys::socket,
    addr: *mut sys::sockaddr,
    len: i32,
) -> i32 {
    // SAFETY: As documented.
    ret(T::bind(unsafe { Socket::from_raw(sock) }, unsafe {
        addr_slice(addr, len)
    }))
}

/// # Safety
///
/// As for `bind`.
unsafe extern "C" fn connect<T: SocketOps>(
    sock: *mut sys::socket,
    addr: *mut sys::sockaddr,
    len: i32,
    flags: i32,
) -> i32 {
    // SAFETY: As documented.
    ret(T::connect(
        unsafe { Socket::from_raw(sock) },
        unsafe { addr_slice(addr, len) },
        flags,
    ))
}

/// # Safety
///
/// Called by the socket layer with the listening socket, the new socket and the accept flags.
unsafe extern "C" fn accept<T: SocketOps>(
    sock: *mut sys::socket,
    newsock: *mut sys::socket,
    arg: *mut sys::proto_accept_arg,
) -> i32 {
    let flags = if arg.is_null() {
        0
    } else {
        // SAFETY: Valid for the call (socket layer).
        unsafe { (*arg).flags }
    };
    // SAFETY: Valid for the call (socket layer).
    ret(unsafe { T::accept(Socket::from_raw(sock), Socket::from_raw(newsock), flags) })
}

/// # Safety
///
/// Called by the socket layer with a buffer of `sockaddr_storage` size.
unsafe extern "C" fn getname<T: SocketOps>(
    sock: *mut sys::socket,
    addr: *mut sys::sockaddr,
    peer: i32,
) -> i32 {
    // SAFETY: The socket layer passes a `sockaddr_storage` (128 bytes) it owns.
    let out = unsafe { core::slice::from_raw_parts_mut(addr.cast::<u8>(), 128) };
    // SAFETY: Valid for the call.
    from_result(|| T::getname(unsafe { Socket::from_raw(sock) }, out, peer != 0).map(|n| n as i32))
}

/// # Safety
///
/// Called by the socket layer's `poll` with the file and the poll table.
unsafe extern "C" fn poll<T: SocketOps>(
    file: *mut sys::file,
    sock: *mut sys::socket,
    table: *mut sys::poll_table_struct,
) -> sys::__poll_t {
    let pt = PollTable { file, table };
    // SAFETY: Valid for the call.
    T::poll(unsafe { Socket::from_raw(sock) }, &pt)
}

/// # Safety
///
/// Called by the socket layer with a user argument.
unsafe extern "C" fn ioctl<T: SocketOps>(sock: *mut sys::socket, cmd: u32, arg: usize) -> i32 {
    // SAFETY: Valid for the call.
    from_result(|| T::ioctl(unsafe { Socket::from_raw(sock) }, cmd, UserPtr(arg)))
}

/// # Safety
///
/// Called by the socket layer.
unsafe extern "C" fn listen<T: SocketOps>(sock: *mut sys::socket, backlog: i32) -> i32 {
    // SAFETY: Valid for the call.
    ret(T::listen(unsafe { Socket::from_raw(sock) }, backlog))
}

/// # Safety
///
/// Called by the socket layer.
unsafe extern "C" fn shutdown<T: SocketOps>(sock: *mut sys::socket, how: i32) -> i32 {
    // SAFETY: Valid for the call.
    ret(T::shutdown(unsafe { Socket::from_raw(sock) }, how))
}

/// # Safety
///
/// Called by the socket layer with the option value as a `sockptr_t`.
unsafe extern "C" fn setsockopt<T: SocketOps>(
    sock: *mut sys::socket,
    level: i32,
    optname: i32,
    optval: sys::sockptr_t,
    optlen: u32,
) -> i32 {
    // SAFETY: Valid for the call.
    ret(T::setsockopt(
        unsafe { Socket::from_raw(sock) },
        level,
        optname,
        OptVal::new(optval, optlen),
    ))
}

/// # Safety
///
/// Called by the socket layer with user pointers.
unsafe extern "C" fn getsockopt<T: SocketOps>(
    sock: *mut sys::socket,
    level: i32,
    optname: i32,
    optval: *mut kernel::ffi::c_char,
    optlen: *mut i32,
) -> i32 {
    // SAFETY: Valid for the call.
    ret(T::getsockopt(
        unsafe { Socket::from_raw(sock) },
        level,
        optname,
        UserPtr(optval as usize),
        UserPtr(optlen as usize),
    ))
}

/// # Safety
///
/// Called by the socket layer with a valid message.
unsafe extern "C" fn sendmsg<T: SocketOps>(
    sock: *mut sys::socket,
    msg: *mut sys::msghdr,
    len: usize,
) -> i32 {
    // SAFETY: Valid and ours for the call.
    let mut m = unsafe { Msg::from_raw(msg) };
    // SAFETY: Valid for the call.
    from_result(|| T::sendmsg(unsafe { Socket::from_raw(sock) }, &mut m, len).map(clamp_len))
}

/// # Safety
///
/// Called by the socket layer with a valid message.
unsafe extern "C" fn recvmsg<T: SocketOps>(
    sock: *mut sys::socket,
    msg: *mut sys::msghdr,
    len: usize,
    flags: i32,
) -> i32 {
    // SAFETY: Valid and ours for the call.
    let mut m = unsafe { Msg::from_raw(msg) };
    // SAFETY: Valid for the call.
    from_result(|| T::recvmsg(unsafe { Socket::from_raw(sock) }, &mut m, len, flags).map(clamp_len))
}

/// # Safety
///
/// Called by `sk_setsockopt` with the socket's `sk`, whose lock the caller owns (`sk_setsockopt`
/// takes it around the option).
unsafe extern "C" fn set_rcvlowat<T: SocketOps>(sk: *mut sys::sock, val: i32) -> i32 {
    // SAFETY: `sk` is valid; its `struct socket` is attached while `setsockopt` runs.
    let sock = unsafe { sys::rvsock_h_sk_socket(sk) };
    if sock.is_null() {
        return EINVAL.to_errno();
    }
    // INVARIANT: `sk_setsockopt` calls `set_rcvlowat` with the socket lock owned.
    let locked = LockedByCaller { sk };
    // SAFETY: Valid for the call.
    ret(T::set_rcvlowat(
        unsafe { Socket::from_raw(sock) },
        &locked,
        val,
    ))
}

/// Byte counts are returned as `int`; the socket layer limits lengths to `INT_MAX`.
fn clamp_len(n: usize) -> i32 {
    n.min(i32::MAX as usize) as i32
}

/// A `struct socket` that `socket()` is creating: it has no network-layer socket yet, and only
/// the family's `create` gets one, so that only there a new `sock` can be attached to it.
///
/// # Invariants
///
/// `0` is the socket passed to `net_proto_family.create`, for the duration of the call.
#[derive(Clone, Copy)]
pub(crate) struct Creating<'a>(&'a Socket);

impl core::ops::Deref for Creating<'_> {
    type Target = Socket;

    fn deref(&self) -> &Socket {
        self.0
    }
}

/// An address family: what `socket(family, ...)` calls.
pub(crate) trait Family: 'static {
    /// Creates a socket of this family on `sock` in namespace `net` (`net_proto_family.create`).
    fn create(
        net: crate::kx::sock::Net<'_>,
        sock: Creating<'_>,
        protocol: i32,
        kern: bool,
    ) -> Result;
}

/// A registered address family.
///
/// # Invariants
///
/// When `registered` is set, `ops` is registered with `sock_register`.
#[pin_data(PinnedDrop)]
pub(crate) struct FamilyReg<F: Family> {
    #[pin]
    ops: Opaque<sys::net_proto_family>,
    family: i32,
    registered: AtomicBool,
    _f: PhantomData<F>,
}

// SAFETY: The registered structure is only read by the socket layer.
unsafe impl<F: Family> Sync for FamilyReg<F> {}
// SAFETY: As above.
unsafe impl<F: Family> Send for FamilyReg<F> {}

impl<F: Family> FamilyReg<F> {
    /// Registers family `family`; `EEXIST` if another implementation (e.g. the C `vsock`
    /// module) holds it.
    pub(crate) fn register(family: i32, module: &'static ThisModule) -> Result<Pin<KBox<Self>>> {
        let this = KBox::pin_init(
            pin_init!(Self {
                ops: Opaque::uninit(),
                family,
                registered: AtomicBool::new(false),
                _f: PhantomData,
            }),
            GFP_KERNEL,
        )?;
        let p = this.ops.get();
        // SAFETY: `p` is valid for writes and not shared yet.
        unsafe {
            p.write(sys::net_proto_family {
                family,
                create: Some(create::<F>),
                owner: module.as_ptr().cast(),
            });
            to_result(sys::sock_register(p))?;
        }
        // INVARIANT: Registered just now, unregistered in `drop`.
        this.registered.store(true, Ordering::Release);
        Ok(this)
    }
}

#[pinned_drop]
impl<F: Family> PinnedDrop for FamilyReg<F> {
    fn drop(self: Pin<&mut Self>) {
        if self.registered.load(Ordering::Acquire) {
            // SAFETY: Registered (type invariant); `sock_unregister` waits for running `create`
            // calls.
            unsafe { sys::sock_unregister(self.family) };
        }
    }
}

/// # Safety
///
/// Called by `__sock_create` with a valid namespace and a socket being created.
unsafe extern "C" fn create<F: Family>(
    net: *mut sys::net,
    sock: *mut sys::socket,
    protocol: i32,
    kern: i32,
) -> i32 {
    let Some(net) = core::ptr::NonNull::new(net) else {
        return EINVAL.to_errno();
    };
    if sock.is_null() {
        return EINVAL.to_errno();
    }
    // SAFETY: The namespace is valid for the call (and the socket created in it takes a
    // reference of its own).
    let net = unsafe { crate::kx::sock::Net::from_raw(net) };
    // INVARIANT: The socket being created, for the call.
    // SAFETY: Valid for the call.
    let sock = Creating(unsafe { Socket::from_raw(sock) });
    ret(F::create(net, sock, protocol, kern != 0))
}

/// Passes a `SOL_SOCKET` option to the generic socket code (`sock_setsockopt`).
pub(crate) fn sock_setsockopt(sock: &Socket, level: i32, optname: i32, val: &OptVal) -> Result {
    let (ptr, len) = val.raw();
    // SAFETY: The socket and the option value are the ones of the running `setsockopt` call;
    // the generic code takes the socket lock itself.
    to_result(unsafe { sys::sock_setsockopt(sock.as_ptr(), level, optname, ptr, len) })
}

/// Reads a timeout option (`sock_copy_user_timeval`): the native `struct timeval` when `old`,
/// else a 64-bit `struct __kernel_sock_timeval`.  Returns seconds and microseconds.
pub(crate) fn copy_timeval(val: &OptVal, old: bool) -> Result<(i64, i64)> {
    let (ptr, len) = val.raw();
    let mut tv = sys::__kernel_sock_timeval::default();
    // SAFETY: `tv` is valid for writes; the option value is the running call's.
    to_result(unsafe { sys::sock_copy_user_timeval(&mut tv, ptr, len as i32, old) })?;
    Ok((tv.tv_sec, tv.tv_usec))
}

/// Formats a timeout in jiffies as `getsockopt` returns it (`sock_get_timeout`) into `buf`;
/// returns its length.
pub(crate) fn get_timeout(ticks: u64, buf: &mut [u8; 16], old: bool) -> usize {
    let ticks = ticks.min(i64::MAX as u64) as isize;
    // SAFETY: `buf` holds 16 bytes, the size of either timeval layout on 64-bit.
    let n = unsafe { sys::sock_get_timeout(ticks as _, buf.as_mut_ptr().cast(), old) };
    (n.max(0) as usize).min(buf.len())
}
