// SPDX-License-Identifier: GPL-2.0

//! Network-layer sockets (`struct sock`) carrying a protocol's Rust state.
//!
//! C header: [`include/net/sock.h`](srctree/include/net/sock.h)
//!
//! A [`ProtoSock<P>`] is one allocation made by `sk_alloc` from the protocol's slab: the C
//! `struct sock` first, then the protocol's lock-protected state ([`SockProto::Locked`]), then its
//! shared state (`P` itself), then its timers.  The networking core owns the allocation and its
//! reference count ([`ARef`]); `sk_destruct` drops the Rust parts.
//!
//! The socket lock is the kernel's: an owner takes it with `lock_sock` and may sleep
//! ([`ProtoSock::lock`]); the receive path takes its spinlock and, if an owner holds the socket,
//! appends the packet to the backlog, which `release_sock` later feeds to
//! [`SockProto::backlog_rcv`] ([`ProtoSock::lock_bh`]).  Either way a [`SockGuard`] proves
//! exclusive access to the locked state.

use crate::kx::skb::{SkBuff, Skb};
use crate::kx::sys;
use crate::proto::errno::Errno;
use core::cell::UnsafeCell;
use core::marker::PhantomData;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::error::{code::*, Error, Result};
use kernel::init::PinInit;
use kernel::prelude::*;
use kernel::types::{ARef, AlwaysRefCounted, Opaque};

/// Number of timers each socket has.
pub(crate) const SOCK_TIMERS: usize = 2;

/// A protocol whose sockets carry Rust state: `Self` is the shared part of it.
pub(crate) trait SockProto: Sized + Send + Sync + 'static {
    /// State protected by the socket lock.
    type Locked: Send;

    /// Handles a packet that arrived while the socket was owned; `release_sock` calls it with
    /// the socket still owned.
    fn backlog_rcv(guard: &mut SockGuard<'_, Self>, skb: SkBuff);

    /// A timer of the socket fired (see [`ProtoSock::arm_timer`]); process context, no lock held.
    fn timer_fired(sk: ARef<ProtoSock<Self>>, timer: usize);

    /// A packet charged with [`ProtoSock::charge_skb`] is consumed or freed: `bytes` of it
    /// were counted as unsent.  Any context.
    fn skb_sent(&self, _bytes: u32) {}
}

/// One timer slot of a socket.
#[repr(transparent)]
struct TimerSlot(Opaque<sys::delayed_work>);

/// A `struct sock` followed by protocol state.
///
/// # Invariants
///
/// - `sk` was allocated by `sk_alloc` for a protocol registered with [`ProtoReg<P>`] (so the
///   allocation is a whole `ProtoSock<P>`), and `locked`, `data` and `timers` are initialised.
/// - `locked` is only accessed by the holder of the socket lock (see [`SockGuard`]).
/// - Each pending timer owns one reference to the socket.
#[repr(C)]
pub(crate) struct ProtoSock<P: SockProto> {
    sk: Opaque<sys::sock>,
    timers: [TimerSlot; SOCK_TIMERS],
    locked: UnsafeCell<P::Locked>,
    data: P,
}

// SAFETY: The C parts are protected by the kernel's own locking; `locked` is only reached through
// the socket lock (type invariant) and `data` is `Sync`.
unsafe impl<P: SockProto> Sync for ProtoSock<P> {}
// SAFETY: As above; the socket may be released from any thread.
unsafe impl<P: SockProto> Send for ProtoSock<P> {}

// SAFETY: `sock_hold`/`sock_put` are the reference count of `struct sock`; the last put runs
// `sk_destruct` and frees the allocation.
unsafe impl<P: SockProto> AlwaysRefCounted for ProtoSock<P> {
    fn inc_ref(&self) {
        // SAFETY: `&self` proves a reference is held, so taking another is valid.
        unsafe { sys::rvsock_h_sock_hold(self.as_ptr()) };
    }

    unsafe fn dec_ref(obj: NonNull<Self>) {
        // SAFETY: The caller gives up one reference.
        unsafe { sys::rvsock_h_sock_put(obj.as_ptr().cast()) };
    }
}

/// A network namespace, borrowed for `'a` from whoever keeps it alive (the socket being created,
/// or a socket of the namespace).
///
/// # Invariants
///
/// `0` points to a valid `struct net` for `'a`.
#[derive(Clone, Copy)]
pub(crate) struct Net<'a>(NonNull<sys::net>, PhantomData<&'a sys::net>);

impl Net<'_> {
    /// Borrows a namespace.
    ///
    /// # Safety
    ///
    /// `net` must be a valid `struct net` for the returned lifetime.
    pub(crate) unsafe fn from_raw<'a>(net: NonNull<sys::net>) -> Net<'a> {
        // INVARIANT: Guaranteed by the caller.
        Net(net, PhantomData)
    }

    /// The raw pointer, for C calls.
    pub(crate) fn as_ptr(&self) -> *mut sys::net {
        self.0.as_ptr()
    }
}

/// Where and how [`ProtoSock::alloc`] creates a socket.
pub(crate) struct NewSock<'a> {
    /// Network namespace.
    pub(crate) net: Net<'a>,
    /// The `struct socket` being created, or none for a child made by the receive path.
    pub(crate) sock: Option<crate::kx::socket::Creating<'a>>,
    /// Address family.
    pub(crate) family: i32,
    /// Socket type (`SOCK_STREAM`, ...).
    pub(crate) sk_type: u16,
    /// Allocation context.
    pub(crate) gfp: crate::kx::Gfp,
    /// Created by the kernel rather than a user.
    pub(crate) kern: bool,
}

/// A registered `struct proto`: the slab and identity of a protocol's sockets.
///
/// # Invariants
///
/// When `registered` is set, `proto` is registered with `proto_register`, with the `obj_size` of
/// a `ProtoSock<P>`.
#[pin_data(PinnedDrop)]
pub(crate) struct ProtoReg<P: SockProto> {
    #[pin]
    proto: Opaque<sys::proto>,
    registered: AtomicBool,
    _p: PhantomData<P>,
}

// SAFETY: The registered `proto` is only read by the networking core after registration.
unsafe impl<P: SockProto> Sync for ProtoReg<P> {}
// SAFETY: As above.
unsafe impl<P: SockProto> Send for ProtoReg<P> {}

impl<P: SockProto> ProtoReg<P> {
    /// Registers a protocol named `name` (shown in `/proc/net/protocols`) with its own slab.
    pub(crate) fn register(
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result<Pin<KBox<Self>>> {
        let this = KBox::pin_init(
            pin_init!(Self {
                proto: Opaque::uninit(),
                registered: AtomicBool::new(false),
                _p: PhantomData,
            }),
            GFP_KERNEL,
        )?;
        let p = this.proto.get();
        // SAFETY: `p` is valid for writes and not shared yet; an all-zero `proto` is a valid
        // starting point, and the name fits (it is checked against the array).
        unsafe {
            p.write_bytes(0, 1);
            let n = name.as_bytes_with_nul();
            if n.len() > (*p).name.len() {
                return Err(EINVAL);
            }
            for (d, s) in (*p).name.iter_mut().zip(n.iter()) {
                *d = *s as _;
            }
            (*p).owner = module.as_ptr().cast();
            (*p).obj_size = core::mem::size_of::<ProtoSock<P>>() as u32;
            kernel::error::to_result(sys::proto_register(p, 1))?;
        }
        // INVARIANT: Registered just now; unregistered in `drop`.
        this.registered.store(true, Ordering::Release);
        Ok(this)
    }

    fn as_ptr(&self) -> *mut sys::proto {
        self.proto.get()
    }

    /// The protocol socket of `sock`, if `sock` is one of this protocol's sockets (checked
    /// against `sk->sk_prot`).
    pub(crate) fn sock_of<'a>(
        &self,
        sock: &'a crate::kx::socket::Socket,
    ) -> Option<&'a ProtoSock<P>> {
        let sk = sock.sk();
        if sk.is_null() {
            return None;
        }
        // SAFETY: `sock->sk` is valid while the socket layer calls into `sock`, which `'a`
        // borrows.
        let prot = unsafe { (*sk).__sk_common.skc_prot };
        if prot != self.as_ptr() {
            return None;
        }
        // SAFETY: Sockets of our `proto` are allocated by `ProtoSock::alloc` with this `P`
        // (`ProtoReg<P>` is the only user of the registration), and `sock` holds a reference
        // for `'a`.
        Some(unsafe { ProtoSock::from_raw(sk) })
    }

    /// Takes the socket layer's reference to `sock`'s protocol socket and detaches it
    /// (`sock->sk = NULL`), for `release`.
    pub(crate) fn detach(&self, sock: &crate::kx::socket::Socket) -> Option<ARef<ProtoSock<P>>> {
        let sk = self.sock_of(sock)?;
        let ptr = NonNull::from(sk);
        sock.clear_sk();
        // SAFETY: `sock->sk` owned one reference (taken over from `alloc` by `attach` or
        // `graft`), which passes to the `ARef` now that `sock` no longer points at it.
        Some(unsafe { ARef::from_raw(ptr) })
    }
}

#[pinned_drop]
impl<P: SockProto> PinnedDrop for ProtoReg<P> {
    fn drop(self: Pin<&mut Self>) {
        if self.registered.load(Ordering::Acquire) {
            // SAFETY: Registered (type invariant); every socket pins the module, so none is left
            // when the registration goes.
            unsafe { sys::proto_unregister(self.as_ptr()) };
        }
    }
}

impl<P: SockProto> ProtoSock<P> {
    /// Allocates a socket of protocol `proto` in namespace `net`, attached to `sock` if given
    /// (`sk_alloc` + `sock_init_data`), with the given initial state.
    pub(crate) fn alloc(
        proto: &ProtoReg<P>,
        how: NewSock<'_>,
        locked: P::Locked,
        data: impl PinInit<P, Error>,
    ) -> Result<ARef<Self>> {
        let NewSock {
            net,
            sock,
            family,
            sk_type,
            gfp,
            kern,
        } = how;
        // SAFETY: `net` is valid (its type invariant); `proto` is registered (its type
        // invariant).
        let sk =
            unsafe { sys::sk_alloc(net.as_ptr(), family, gfp.raw(), proto.as_ptr(), kern as i32) };
        let sk = NonNull::new(sk).ok_or(ENOMEM)?;
        let this = sk.as_ptr().cast::<Self>();
        // SAFETY: The allocation is a whole `ProtoSock<P>` (`obj_size`), nothing else knows of it
        // yet; the fields are written once, before use.  `data` is pinned in the allocation, which
        // never moves.
        let res = unsafe {
            core::ptr::addr_of_mut!((*this).locked).write(UnsafeCell::new(locked));
            match data.__pinned_init(core::ptr::addr_of_mut!((*this).data)) {
                Ok(()) => Ok(()),
                Err(e) => {
                    core::ptr::drop_in_place(core::ptr::addr_of_mut!((*this).locked));
                    Err(e)
                }
            }
        };
        if let Err(e) = res {
            // SAFETY: `sk_destruct` is still the default one, which knows nothing of our parts,
            // and `sock_init_data` has not run, so no `struct socket` points at `sk` yet.
            unsafe { sys::sk_free(sk.as_ptr()) };
            return Err(e);
        }
        let sock = sock.map_or(core::ptr::null_mut(), |s| s.as_ptr());
        // SAFETY: `sk` is a fresh socket; `sock` is null or the socket being created (the
        // invariant of `Creating`), which has no `sk` yet.  From here
        // on nothing fails, so `sock->sk` never points at a freed socket.
        unsafe {
            sys::sock_init_data(sock, sk.as_ptr());
            // `sock_init_data` sets the type from `sock` only.
            (*sk.as_ptr()).sk_type = sk_type;
        }
        for (i, t) in [
            timer_trampoline::<P, 0> as unsafe extern "C" fn(_),
            timer_trampoline::<P, 1>,
        ]
        .into_iter()
        .enumerate()
        {
            // SAFETY: The slot is in the allocation; initialised once, before any use.
            unsafe {
                sys::rvsock_h_init_delayed_work(
                    Opaque::raw_get(core::ptr::addr_of!((*this).timers[i].0)),
                    Some(t),
                )
            };
        }
        // SAFETY: Every part is initialised now; from here `sk_destruct` drops them.
        unsafe {
            (*sk.as_ptr()).sk_destruct = Some(destruct_trampoline::<P>);
            (*sk.as_ptr()).sk_backlog_rcv = Some(backlog_trampoline::<P>);
        }
        // INVARIANT: Allocated for `proto`, all parts initialised.
        // SAFETY: `sk_alloc` returned the one reference, which the `ARef` takes over.
        Ok(unsafe { ARef::from_raw(NonNull::new_unchecked(this)) })
    }

    /// Borrows the socket behind a `struct sock` pointer of this protocol.
    ///
    /// # Safety
    ///
    /// `sk` must be a socket allocated by [`ProtoSock::alloc`] for this `P`, alive for `'a`.
    pub(crate) unsafe fn from_raw<'a>(sk: *mut sys::sock) -> &'a Self {
        // SAFETY: Guaranteed by the caller; `sk` is the first field of the `repr(C)` struct.
        unsafe { &*sk.cast::<Self>() }
    }

    /// The raw `struct sock`.
    pub(crate) fn as_ptr(&self) -> *mut sys::sock {
        self.sk.get()
    }

    /// The shared protocol state.
    pub(crate) fn data(&self) -> &P {
        &self.data
    }

    fn raw(&self) -> &sys::sock {
        // SAFETY: The socket is valid while borrowed; fields read through this reference are the
        // ones protected by the socket lock or read locklessly in C as well.
        unsafe { &*self.as_ptr() }
    }

    fn raw_mut(&self) -> *mut sys::sock {
        self.as_ptr()
    }

    /// Takes the socket lock as its owner (`lock_sock`); may sleep.
    pub(crate) fn lock(&self) -> SockGuard<'_, P> {
        // SAFETY: The socket is valid while borrowed.
        unsafe { sys::rvsock_h_lock_sock(self.as_ptr()) };
        SockGuard {
            sk: self,
            mode: Mode::Owner,
        }
    }

    /// Takes the socket lock as its owner like [`ProtoSock::lock`], but gives up on a fatal
    /// signal (`Interrupted`) or after `timeout` jiffies (`Timeout`), for callers that must not
    /// wait uninterruptibly behind another task's owner (which may be stalled in a page fault).
    pub(crate) fn lock_killable(
        &self,
        timeout: i64,
    ) -> core::result::Result<SockGuard<'_, P>, WaitError> {
        // SAFETY: The socket is valid while borrowed.
        match unsafe { sys::rvsock_h_lock_sock_killable(self.as_ptr(), timeout as _) } {
            // INVARIANT: Owned now, released by the guard.
            1 => Ok(SockGuard {
                sk: self,
                mode: Mode::Owner,
            }),
            0 => Err(WaitError::Timeout),
            _ => Err(WaitError::Interrupted(timeout)),
        }
    }

    /// Takes the lock of a child socket while its parent's is held (`SINGLE_DEPTH_NESTING`).
    pub(crate) fn lock_nested(&self) -> SockGuard<'_, P> {
        // SAFETY: The socket is valid while borrowed.
        unsafe { sys::rvsock_h_lock_sock_nested(self.as_ptr()) };
        SockGuard {
            sk: self,
            mode: Mode::Owner,
        }
    }

    /// Takes the socket spinlock from the receive path: the socket is free (process the packet
    /// now, atomically) or owned (queue it on the backlog).
    pub(crate) fn lock_bh(&self) -> BhLock<'_, P> {
        // SAFETY: The socket is valid while borrowed.
        unsafe { sys::rvsock_h_bh_lock_sock(self.as_ptr()) };
        // SAFETY: The spinlock is held, as `sock_owned_by_user` requires.
        if unsafe { sys::rvsock_h_sock_owned_by_user(self.as_ptr()) } {
            BhLock::Owned(BacklogGuard { sk: self })
        } else {
            BhLock::Free(SockGuard {
                sk: self,
                mode: Mode::Bh,
            })
        }
    }

    /// Takes the spinlock of a socket nobody else can hold yet (a child being set up while its
    /// listener's lock is held), as a guard over its state.
    pub(crate) fn lock_fresh_nested(&self) -> SockGuard<'_, P> {
        // SAFETY: The socket is valid while borrowed.
        unsafe { sys::rvsock_h_bh_lock_sock_nested(self.as_ptr()) };
        SockGuard {
            sk: self,
            mode: Mode::Bh,
        }
    }

    /// A guard over the state of a socket whose lock the caller already owns; `None` if the
    /// proof is for another socket.
    pub(crate) fn locked_by_caller<'a>(
        &'a self,
        proof: &'a crate::kx::socket::LockedByCaller,
    ) -> Option<SockGuard<'a, P>> {
        if proof.sk != self.as_ptr() {
            return None;
        }
        // INVARIANT: The lock is owned by the caller (the proof's invariant); mode `Backlog`
        // leaves releasing it to them.
        Some(SockGuard {
            sk: self,
            mode: Mode::Backlog,
        })
    }

    /// `sk_type`.
    pub(crate) fn sk_type(&self) -> u16 {
        self.raw().sk_type
    }

    /// The pending socket error (`sk_err`), 0 if none.
    pub(crate) fn err(&self) -> i32 {
        // SAFETY: An aligned int read; C reads it locklessly too.
        unsafe { core::ptr::read_volatile(core::ptr::addr_of!((*self.raw_mut()).sk_err)) }
    }

    /// Takes the pending socket error (`sock_error`): `Err(-sk_err)` once, then `Ok`.
    pub(crate) fn take_err(&self) -> Result {
        // SAFETY: The socket is valid.
        let e = unsafe { sys::rvsock_h_sock_error(self.as_ptr()) };
        if e < 0 {
            Err(Error::from_errno(e))
        } else {
            Ok(())
        }
    }

    /// Sets `sk_err` and reports it (`sk_error_report`).
    pub(crate) fn report_error(&self, err: Errno) {
        // SAFETY: `sk_err` is written under the socket lock by the callers, as in C.
        unsafe {
            (*self.raw_mut()).sk_err = err.get();
            sys::sk_error_report(self.as_ptr());
        }
    }

    /// Clears `sk_err`.
    pub(crate) fn clear_err(&self) {
        // SAFETY: As in `report_error`.
        unsafe { (*self.raw_mut()).sk_err = 0 };
    }

    /// Mirrors the connection state into `sk_state` (read by generic code and diagnostics).
    pub(crate) fn set_sk_state(&self, state: u8) {
        // SAFETY: Written under the socket lock, as in C.
        unsafe { (*self.raw_mut()).__sk_common.skc_state = state };
    }

    /// The `sk_state` mirror (a TCP state value), as lockless readers see it.
    pub(crate) fn sk_state(&self) -> u8 {
        // SAFETY: The socket is valid; a one-byte read races benignly with the writers, which
        // hold the socket lock, as in C.
        unsafe { core::ptr::read_volatile(&(*self.as_ptr()).__sk_common.skc_state) }
    }

    /// Mirrors the local shutdown bits into `sk_shutdown`.
    pub(crate) fn set_sk_shutdown(&self, bits: u8) {
        // SAFETY: Written under the socket lock, as in C.
        unsafe { (*self.raw_mut()).sk_shutdown = bits };
    }

    /// The receive low-water mark for a read of `len` bytes (`sock_rcvlowat`).
    pub(crate) fn rcvlowat(&self, waitall: bool, len: usize) -> usize {
        let len = len.min(i32::MAX as usize) as i32;
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sock_rcvlowat(self.as_ptr(), waitall as i32, len) as usize }
    }

    /// The receive timeout in jiffies (`sock_rcvtimeo`), 0 for non-blocking calls.
    pub(crate) fn rcvtimeo(&self, nonblock: bool) -> i64 {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sock_rcvtimeo(self.as_ptr(), nonblock) as i64 }
    }

    /// The send timeout in jiffies (`sock_sndtimeo`), 0 for non-blocking calls.
    pub(crate) fn sndtimeo(&self, nonblock: bool) -> i64 {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sock_sndtimeo(self.as_ptr(), nonblock) as i64 }
    }

    /// Sets the receive low-water mark (`SO_RCVLOWAT`).
    pub(crate) fn set_rcvlowat(&self, val: i32) {
        // SAFETY: An aligned int write; C writes it with WRITE_ONCE too.
        unsafe {
            core::ptr::write_volatile(core::ptr::addr_of_mut!((*self.raw_mut()).sk_rcvlowat), val)
        };
    }

    /// Tests a socket flag (`sock_flag`).
    pub(crate) fn flag(&self, flag: sys::sock_flags) -> bool {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sock_flag(self.as_ptr(), flag as i32) }
    }

    /// Sets or clears a socket flag.
    pub(crate) fn set_flag(&self, flag: sys::sock_flags, on: bool) {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sock_set_flag(self.as_ptr(), flag as i32, on) };
    }

    /// The linger time in jiffies (`sk_lingertime`).
    pub(crate) fn lingertime(&self) -> i64 {
        self.raw().sk_lingertime as i64
    }

    /// Whether the error queue holds something (zerocopy completions).
    pub(crate) fn error_queue_nonempty(&self) -> bool {
        // SAFETY: The socket is valid; the check is lockless, as in C.
        !unsafe { sys::rvsock_h_error_queue_empty(self.as_ptr()) }
    }

    /// Wakes whoever waits for a state change (`sk_state_change`).
    pub(crate) fn state_change(&self) {
        // SAFETY: The socket is valid; the callback is always set by `sock_init_data`.
        unsafe { sys::rvsock_h_sk_state_change(self.as_ptr()) };
    }

    /// Wakes readers (`sk_data_ready`).
    pub(crate) fn data_ready(&self) {
        // SAFETY: As in `state_change`.
        unsafe { sys::rvsock_h_sk_data_ready(self.as_ptr()) };
    }

    /// Wakes writers (`sk_write_space`).
    pub(crate) fn write_space(&self) {
        // SAFETY: As in `state_change`.
        unsafe { sys::rvsock_h_sk_write_space(self.as_ptr()) };
    }

    /// Connection requests waiting to be accepted exceed the backlog (`sk_acceptq_is_full`).
    pub(crate) fn acceptq_is_full(&self) -> bool {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sk_acceptq_is_full(self.as_ptr()) }
    }

    /// Accounts `bytes` more (or, negative, less) memory in the receive queue (`sk_rmem_alloc`,
    /// which `SO_MEMINFO` reports).
    pub(crate) fn rmem_add(&self, bytes: i32) {
        // SAFETY: The socket is valid; an atomic update.
        unsafe { sys::rvsock_h_sk_rmem_add(self.as_ptr(), bytes) };
    }

    /// The memory accounted in the receive queue.
    pub(crate) fn rmem(&self) -> u32 {
        // SAFETY: The socket is valid; an atomic read.
        unsafe { sys::rvsock_h_sk_rmem(self.as_ptr()) }
    }

    /// Counts a packet for the socket that was dropped (`SO_MEMINFO`'s drops).
    pub(crate) fn count_drop(&self) {
        // SAFETY: The socket is valid; an atomic update.
        unsafe { sys::rvsock_h_sk_drops_inc(self.as_ptr()) };
    }

    /// How many more connections the accept queue takes now (read without the lock).
    pub(crate) fn acceptq_room(&self) -> u32 {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sk_acceptq_room(self.as_ptr()) }
    }

    /// One more connection waits to be accepted.
    pub(crate) fn acceptq_added(&self) {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sk_acceptq_added(self.as_ptr()) };
    }

    /// One connection less waits to be accepted.
    pub(crate) fn acceptq_removed(&self) {
        // SAFETY: The socket is valid.
        unsafe { sys::rvsock_h_sk_acceptq_removed(self.as_ptr()) };
    }

    /// Sets the listen backlog (`sk_max_ack_backlog`).
    pub(crate) fn set_max_ack_backlog(&self, backlog: u32) {
        // SAFETY: Written under the socket lock; C writes it with WRITE_ONCE.
        unsafe {
            core::ptr::write_volatile(
                core::ptr::addr_of_mut!((*self.raw_mut()).sk_max_ack_backlog),
                backlog,
            )
        };
    }

    /// The socket's network namespace.
    pub(crate) fn net(&self) -> Net<'_> {
        // SAFETY: The socket is valid; `sk_alloc` set its namespace, which is never null, and a
        // socket holds its namespace for as long as it lives, which `&self` borrows.
        unsafe {
            let net = sys::rvsock_h_sock_net(self.as_ptr());
            Net::from_raw(NonNull::new_unchecked(net))
        }
    }

    /// Marks the socket dead and detaches it from its `struct socket` (`SOCK_DEAD` +
    /// `sock_orphan`).
    pub(crate) fn orphan(&self) {
        // SAFETY: The socket is valid; called once, under the socket lock, by `release`.
        unsafe { sys::rvsock_h_sock_orphan(self.as_ptr()) };
    }

    /// Attaches the socket to `sock` (`sock_graft`), for `accept`; `sock` takes over the
    /// reference.
    pub(crate) fn graft(this: ARef<Self>, sock: &crate::kx::socket::Socket) {
        let p = ARef::into_raw(this);
        // SAFETY: Both are valid; `accept` grafts a child onto the fresh `struct socket`, which
        // keeps the reference until `release` detaches it.
        unsafe { sys::rvsock_h_sock_graft(p.as_ptr().cast(), sock.as_ptr()) };
    }

    /// Leaves the reference `alloc` returned to the `struct socket` it was allocated for
    /// (`sock_init_data` attached them), for `create`.
    pub(crate) fn attach(this: ARef<Self>) {
        let _ = ARef::into_raw(this);
    }

    /// The result of a stream send that failed with `err` (`sk_stream_error`): a pending socket
    /// error replaces `EPIPE`, and `EPIPE` raises `SIGPIPE` unless `MSG_NOSIGNAL`.
    pub(crate) fn stream_error(&self, msg_flags: u32, err: Error) -> Error {
        // SAFETY: The socket is valid; the function only reads flags and may signal `current`.
        let e = unsafe { sys::sk_stream_error(self.as_ptr(), msg_flags as i32, err.to_errno()) };
        Error::from_errno(e)
    }

    /// Reads the error queue (`MSG_ERRQUEUE`: zerocopy completions) into `msg`.
    pub(crate) fn recv_errqueue(
        &self,
        msg: &mut crate::kx::msg::Msg<'_>,
        len: usize,
        level: i32,
        ty: i32,
    ) -> Result<usize> {
        // SAFETY: The socket and message are valid for the call.
        let r =
            unsafe { sys::sock_recv_errqueue(self.as_ptr(), msg.as_ptr(), len as i32, level, ty) };
        if r < 0 {
            Err(Error::from_errno(r))
        } else {
            Ok(r as usize)
        }
    }

    /// The `struct socket` the socket is attached to, if any.
    pub(crate) fn socket(&self) -> Option<&crate::kx::socket::Socket> {
        // SAFETY: The socket is valid.
        let s = unsafe { sys::rvsock_h_sk_socket(self.as_ptr()) };
        // SAFETY: While attached, the `struct socket` lives at least as long as the socket's
        // attachment; callers use it under the socket lock, which `sock_orphan` also takes.
        (!s.is_null()).then(|| unsafe { crate::kx::socket::Socket::from_raw(s) })
    }

    /// Charges an outgoing packet to the socket's write allocation (`skb_set_owner_w`) and
    /// arranges for [`SockProto::skb_sent`] to learn about `unsent` bytes when it is consumed.
    pub(crate) fn charge_skb(&self, skb: &mut Skb, unsent: u32) {
        let mut cb = skb.cb();
        cb.unsent = unsent;
        skb.set_cb(cb);
        // SAFETY: The socket is valid and the buffer fresh (no owner yet); the destructor
        // replaces `sock_wfree`, which it calls in turn.  The write allocation keeps the socket,
        // and so `data`, alive until the destructor ran.
        unsafe {
            sys::skb_set_owner_w(skb.as_ptr(), self.as_ptr());
            sys::rvsock_h_skb_set_destructor(skb.as_ptr(), Some(skb_destructor::<P>));
        }
    }

    /// Arms timer `idx` to fire after `delay` jiffies, or re-arms it; a pending timer holds a
    /// reference to the socket.
    pub(crate) fn arm_timer(&self, idx: usize, delay: u64) {
        let Some(slot) = self.timers.get(idx) else {
            return;
        };
        self.inc_ref();
        // SAFETY: The slot was initialised in `alloc`.
        let was_pending = unsafe { sys::rvsock_h_mod_delayed_work(slot.0.get(), delay as _) };
        if was_pending {
            // SAFETY: The pending timer already owns a reference; drop the one just taken. The
            // caller's reference keeps the socket alive.
            unsafe { Self::dec_ref(NonNull::from(self)) };
        }
    }

    /// Cancels timer `idx` if pending (not waiting for a running one); `true` if it was pending,
    /// and then its reference is dropped.
    pub(crate) fn disarm_timer(&self, idx: usize) -> bool {
        let Some(slot) = self.timers.get(idx) else {
            return false;
        };
        // SAFETY: The slot was initialised in `alloc`.
        let cancelled = unsafe { sys::cancel_delayed_work(slot.0.get()) };
        if cancelled {
            // SAFETY: The cancelled timer owned a reference (type invariant); the caller holds
            // another.
            unsafe { Self::dec_ref(NonNull::from(self)) };
        }
        cancelled
    }
}

/// The `sk_destruct` of our sockets: drops the Rust parts before the networking core frees the
/// allocation.
///
/// # Safety
///
/// Called once by the networking core, with the last reference gone.
unsafe extern "C" fn destruct_trampoline<P: SockProto>(sk: *mut sys::sock) {
    let this = sk.cast::<ProtoSock<P>>();
    // SAFETY: `sk_destruct` was set by `alloc` once every part was initialised; nobody else
    // references the socket any more, and no timer is pending (each holds a reference).
    unsafe {
        core::ptr::drop_in_place(core::ptr::addr_of_mut!((*this).data));
        core::ptr::drop_in_place(core::ptr::addr_of_mut!((*this).locked));
        sys::rvsock_h_sk_purge_queues(sk);
    }
}

/// The destructor of packets charged with [`ProtoSock::charge_skb`].
///
/// # Safety
///
/// Called by the networking core when the buffer is orphaned or freed, with `skb->sk` set.
unsafe extern "C" fn skb_destructor<P: SockProto>(skb: *mut sys::sk_buff) {
    // SAFETY: The buffer is valid during its destructor.
    let skb_ref = unsafe { Skb::from_raw(skb) };
    let sk = skb_ref.owner();
    if !sk.is_null() {
        // SAFETY: `sk` is one of our sockets (set by `charge_skb`), kept alive by the write
        // allocation this destructor is about to release.
        unsafe { ProtoSock::<P>::from_raw(sk) }
            .data
            .skb_sent(skb_ref.cb().unsent);
    }
    // SAFETY: The destructor `skb_set_owner_w` installed, which ours replaced.
    unsafe { sys::sock_wfree(skb) };
}

/// The `sk_backlog_rcv` of our sockets.
///
/// # Safety
///
/// Called by `__release_sock` with the socket owned by the caller of `release_sock` and `skb`
/// given to us.
unsafe extern "C" fn backlog_trampoline<P: SockProto>(
    sk: *mut sys::sock,
    skb: *mut sys::sk_buff,
) -> core::ffi::c_int {
    // SAFETY: `sk` is one of our sockets, owned (locked) by this thread for the call.
    let this = unsafe { ProtoSock::<P>::from_raw(sk) };
    let Some(skb) = NonNull::new(skb) else {
        return 0;
    };
    // SAFETY: The backlog gives us the buffer.
    let skb = unsafe { SkBuff::from_raw(skb) };
    let mut guard = SockGuard {
        sk: this,
        mode: Mode::Backlog,
    };
    P::backlog_rcv(&mut guard, skb);
    0
}

/// The work function of timer `I`.
///
/// # Safety
///
/// Called by the workqueue for the `delayed_work` of slot `I` of one of our sockets.
unsafe extern "C" fn timer_trampoline<P: SockProto, const I: usize>(work: *mut sys::work_struct) {
    let off = core::mem::offset_of!(ProtoSock<P>, timers) + I * core::mem::size_of::<TimerSlot>();
    // SAFETY: `work` is the first field of the `delayed_work` in slot `I` of a `ProtoSock<P>`
    // (the slot is `repr(transparent)` over it), so subtracting the offset gives the socket.
    let sk = unsafe { work.cast::<u8>().sub(off).cast::<ProtoSock<P>>() };
    // SAFETY: The pending timer owned a reference (type invariant), which passes to the `ARef`.
    let sk = unsafe { ARef::from_raw(NonNull::new_unchecked(sk)) };
    P::timer_fired(sk, I);
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Mode {
    /// `lock_sock`: may sleep; dropping releases (and processes the backlog).
    Owner,
    /// The spinlock from the receive path: atomic context.
    Bh,
    /// Inside `release_sock`'s backlog processing: owned, nothing to release.
    Backlog,
}

/// Exclusive access to a socket's locked state.
///
/// # Invariants
///
/// The socket lock of `sk` is held in the way `mode` says for the guard's lifetime.
pub(crate) struct SockGuard<'a, P: SockProto> {
    sk: &'a ProtoSock<P>,
    mode: Mode,
}

/// Why a wait ended without its condition.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum WaitError {
    /// The timeout expired (or there was none).
    Timeout,
    /// A signal is pending; the remaining timeout is given (for `sock_intr_errno`).
    Interrupted(i64),
}

impl WaitError {
    /// The errno a socket call returns: `EAGAIN` on timeout, `ERESTARTSYS` or `EINTR` on a
    /// signal (`sock_intr_errno`).
    pub(crate) fn to_error(self) -> Error {
        match self {
            WaitError::Timeout => EAGAIN,
            WaitError::Interrupted(t) if t == sys::MAX_SCHEDULE_TIMEOUT as i64 => ERESTARTSYS,
            WaitError::Interrupted(_) => EINTR,
        }
    }
}

impl<'a, P: SockProto> SockGuard<'a, P> {
    /// The socket.
    pub(crate) fn sock(&self) -> &'a ProtoSock<P> {
        self.sk
    }

    /// The locked state.
    pub(crate) fn state(&mut self) -> &mut P::Locked {
        // SAFETY: The lock is held (type invariant) and `&mut self` makes this the only
        // reference derived from it.
        unsafe { &mut *self.sk.locked.get() }
    }

    /// Whether the holder may sleep (owner) or runs atomically (receive path).
    pub(crate) fn can_sleep(&self) -> bool {
        self.mode != Mode::Bh
    }

    /// Waits until `cond` holds, releasing the lock while asleep (the `sk_wait_event` pattern).
    ///
    /// `timeo` is in jiffies and is updated with what is left.  Returns `Timeout` when it runs
    /// out (at once if it is 0) and `Interrupted` on a signal.  Only an owner can wait; from the
    /// receive path this returns `Timeout` at once.
    pub(crate) fn wait_until(
        &mut self,
        timeo: &mut i64,
        mut cond: impl FnMut(&mut Self) -> bool,
    ) -> core::result::Result<(), WaitError> {
        if cond(self) {
            return Ok(());
        }
        if self.mode != Mode::Owner {
            return Err(WaitError::Timeout);
        }
        let entry = Opaque::<sys::wait_queue_entry>::uninit();
        let entry = core::pin::pin!(entry);
        let ep = entry.get();
        // SAFETY: `ep` is valid and pinned on this stack frame until removed below; the socket
        // is valid and its wait queue outlives the wait.
        unsafe {
            sys::rvsock_h_init_wait(ep);
            sys::rvsock_h_sk_add_wait(self.sk.as_ptr(), ep);
        }
        let res = loop {
            if cond(self) {
                break Ok(());
            }
            if *timeo <= 0 {
                break Err(WaitError::Timeout);
            }
            // SAFETY: We own the lock (mode `Owner`); it is released, then taken back before
            // the locked state is touched again.  The wait entry is on the queue, so a wake-up
            // between the check and the sleep is not lost.
            unsafe {
                sys::release_sock(self.sk.as_ptr());
                *timeo = sys::rvsock_h_wait_woken(ep, *timeo as _) as i64;
                sys::rvsock_h_lock_sock(self.sk.as_ptr());
            }
            // SAFETY: FFI call without preconditions.
            if unsafe { sys::rvsock_h_signal_pending() } {
                break Err(WaitError::Interrupted(*timeo));
            }
        };
        // SAFETY: Added above.
        unsafe { sys::rvsock_h_sk_remove_wait(self.sk.as_ptr(), ep) };
        res
    }

    /// Releases and retakes the lock so that packets queued on the backlog meanwhile are
    /// processed (owners only).
    pub(crate) fn flush_backlog(&mut self) {
        if self.mode == Mode::Owner {
            // SAFETY: We own the lock; it is taken back at once.
            unsafe {
                sys::release_sock(self.sk.as_ptr());
                sys::rvsock_h_lock_sock(self.sk.as_ptr());
            }
        }
    }
}

impl<P: SockProto> Drop for SockGuard<'_, P> {
    fn drop(&mut self) {
        match self.mode {
            // SAFETY: Taken by `lock`/`lock_nested` (type invariant).
            Mode::Owner => unsafe { sys::release_sock(self.sk.as_ptr()) },
            // SAFETY: Taken by `lock_bh` (type invariant).
            Mode::Bh => unsafe { sys::rvsock_h_bh_unlock_sock(self.sk.as_ptr()) },
            Mode::Backlog => {}
        }
    }
}

/// The socket spinlock held on a socket that an owner holds: only the backlog may be used.
///
/// # Invariants
///
/// The spinlock of `sk` is held and the socket is owned by someone else.
pub(crate) struct BacklogGuard<'a, P: SockProto> {
    sk: &'a ProtoSock<P>,
}

impl<'a, P: SockProto> BacklogGuard<'a, P> {
    /// The socket.
    pub(crate) fn sock(&self) -> &'a ProtoSock<P> {
        self.sk
    }

    /// The last packet waiting on the backlog, which may still be extended (merged into).
    pub(crate) fn tail_mut(&mut self) -> Option<&mut Skb> {
        // SAFETY: The spinlock is held (type invariant), which protects the backlog list.
        let tail = unsafe { sys::rvsock_h_backlog_tail(self.sk.as_ptr()) };
        // SAFETY: A backlog packet is owned by the socket until the owner takes the whole list
        // (`__release_sock` detaches it under the spinlock, after which it is no longer the
        // tail); `&mut self` keeps the spinlock held and the access exclusive meanwhile.
        (!tail.is_null()).then(|| unsafe { &mut *tail.cast::<Skb>() })
    }

    /// The memory (truesize) on the backlog, counting what its owner is processing now.
    pub(crate) fn len(&self) -> u32 {
        // SAFETY: The spinlock is held (type invariant).
        unsafe { sys::rvsock_h_backlog_len(self.sk.as_ptr()) }
    }

    /// Appends a packet to the backlog, unless the backlog and receive memory exceed `limit`
    /// bytes; the packet is given back then.
    pub(crate) fn add_backlog(
        &mut self,
        skb: SkBuff,
        limit: u32,
    ) -> core::result::Result<(), SkBuff> {
        let p = skb.into_raw();
        // SAFETY: The spinlock is held (type invariant) and `p` is an owned buffer.
        let r = unsafe { sys::rvsock_h_sk_add_backlog(self.sk.as_ptr(), p, limit) };
        if r == 0 {
            Ok(())
        } else {
            // SAFETY: Refused, so the buffer is still ours.
            Err(unsafe { SkBuff::from_raw(NonNull::new_unchecked(p)) })
        }
    }
}

impl<P: SockProto> Drop for BacklogGuard<'_, P> {
    fn drop(&mut self) {
        // SAFETY: Taken by `lock_bh` (type invariant).
        unsafe { sys::rvsock_h_bh_unlock_sock(self.sk.as_ptr()) };
    }
}

/// The outcome of [`ProtoSock::lock_bh`].
pub(crate) enum BhLock<'a, P: SockProto> {
    /// Nobody owns the socket: process now.
    Free(SockGuard<'a, P>),
    /// An owner holds the socket: use the backlog.
    Owned(BacklogGuard<'a, P>),
}
