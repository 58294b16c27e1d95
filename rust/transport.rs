// SPDX-License-Identifier: GPL-2.0

//! The transport side of rvsock's transport ABI: a transport module registers with `rvsock.ko`
//! through [`Registration`] and implements [`Transport`].
//!
//! C header: `rust/rvsock_sys.h` (section "Transport ABI").

use crate::kx::skb::SkBuff;
use crate::kx::sys;
use core::ffi::c_void;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::error::{to_result, Result};
use kernel::prelude::*;

/// Registry slots a transport can take (`RVSOCK_TRANSPORT_F_*`).
pub(crate) mod features {
    use crate::kx::sys;
    /// Host to guest (vhost).
    pub(crate) const H2G: u32 = sys::RVSOCK_TRANSPORT_F_H2G;
    /// Guest to host (virtio).
    pub(crate) const G2H: u32 = sys::RVSOCK_TRANSPORT_F_G2H;
    /// Datagrams.
    pub(crate) const DGRAM: u32 = sys::RVSOCK_TRANSPORT_F_DGRAM;
    /// Loopback.
    pub(crate) const LOCAL: u32 = sys::RVSOCK_TRANSPORT_F_LOCAL;
}

/// What a transport does for the core.
pub(crate) trait Transport: Send + Sync + 'static {
    /// Sends one packet (header at `skb->head`, payload at `skb->data`).  `core` is this
    /// transport's handle, e.g. to loop the packet back with [`Core::recv`].
    fn send_pkt(&self, core: &Core<'_>, skb: SkBuff) -> Result;

    /// Drops the not yet sent packets of the socket `sk` (an opaque identity).
    fn cancel_pkt(&self, _sk: *mut c_void) {}

    /// Whether `SOCK_SEQPACKET` may talk to `remote_cid`.
    fn seqpacket_allow(&self, remote_cid: u32) -> bool;
}

/// The core's handle of a registered transport, usable while this value lives.
///
/// [`Registration::core`] hands it out inside a read section of the core's SRCU, and
/// [`Registration::unregister`] hides the handle and then waits for those sections before it
/// unregisters: so a transport's work item or interrupt-driven path may call into the core while
/// the transport is being unregistered (`rmmod`), and either gets no handle or finishes first.
///
/// # Invariants
///
/// `handle` is the handle returned by `rvsock_transport_register`, not yet passed to
/// `rvsock_transport_unregister`; `srcu` is the index of a read section of the core's SRCU that
/// the unregistration waits for, left when this is dropped.
pub(crate) struct Core<'a> {
    handle: NonNull<sys::rvsock_transport>,
    srcu: i32,
    _reg: core::marker::PhantomData<&'a ()>,
}

impl Drop for Core<'_> {
    fn drop(&mut self) {
        // SAFETY: Pairs with the read lock taken in `Registration::core` (type invariant).
        unsafe { sys::rvsock_h_srcu_read_unlock(self.srcu) };
    }
}

impl Core<'_> {
    /// Hands a received packet to the core (an exclusive buffer: neither shared nor cloned).
    pub(crate) fn recv(&self, skb: SkBuff) {
        // SAFETY: The handle is valid (type invariant); the core takes the buffer.
        unsafe { sys::rvsock_transport_recv(self.handle.as_ptr(), skb.into_raw()) };
    }

    /// Changes the local CID.
    pub(crate) fn set_local_cid(&self, cid: u32) {
        // SAFETY: The handle is valid (type invariant).
        unsafe { sys::rvsock_transport_set_local_cid(self.handle.as_ptr(), cid) };
    }

    /// Resets every connection of the transport.
    pub(crate) fn reset_all(&self) {
        // SAFETY: The handle is valid (type invariant).
        unsafe { sys::rvsock_transport_reset_all(self.handle.as_ptr()) };
    }
}

/// Static description of a transport.
pub(crate) struct Info {
    /// Name for the kernel log.
    pub(crate) name: &'static CStr,
    /// `features::*` slots to take.
    pub(crate) features: u32,
    /// Local CID.
    pub(crate) local_cid: u32,
    /// `MSG_ZEROCOPY` support.
    pub(crate) msgzerocopy: bool,
}

/// A transport registered with the core; unregisters when dropped.
///
/// # Invariants
///
/// `handle` holds the registration's handle once `rvsock_transport_register` set it; `ops` and
/// `data` live, pinned, for as long as the registration.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Transport> {
    handle: AtomicPtr<sys::rvsock_transport>,
    ops: sys::rvsock_transport_ops,
    #[pin]
    data: T,
}

// SAFETY: `ops` is read-only after construction; `data` is `Sync`.
unsafe impl<T: Transport> Sync for Registration<T> {}
// SAFETY: As above.
unsafe impl<T: Transport> Send for Registration<T> {}

impl<T: Transport> Registration<T> {
    /// Registers `data` as a transport; `EBUSY` if a slot it asks for is taken.
    pub(crate) fn register(
        info: Info,
        module: &'static ThisModule,
        data: impl PinInit<T, Error>,
    ) -> Result<Pin<KBox<Self>>> {
        let this = KBox::pin_init(
            try_pin_init!(Self {
                handle: AtomicPtr::new(core::ptr::null_mut()),
                ops: sys::rvsock_transport_ops {
                    send_pkt: Some(send_pkt::<T>),
                    cancel_pkt: Some(cancel_pkt::<T>),
                    seqpacket_allow: Some(seqpacket_allow::<T>),
                },
                data <- data,
            }),
            GFP_KERNEL,
        )?;
        let cinfo = sys::rvsock_transport_info {
            owner: module.as_ptr().cast(),
            name: info.name.as_char_ptr().cast(),
            features: info.features,
            local_cid: info.local_cid,
            msgzerocopy: info.msgzerocopy,
            ops: &this.ops,
            priv_: (&*this as *const Self).cast_mut().cast(),
        };
        // SAFETY: `cinfo` points at `ops` and at `this`, which stay pinned until `drop`
        // unregisters; the core writes the handle into `handle` before using the transport.
        to_result(unsafe { sys::rvsock_transport_register(&cinfo, this.handle.as_ptr()) })?;
        Ok(this)
    }

    /// The transport's own data.
    pub(crate) fn data(&self) -> &T {
        &self.data
    }

    /// The core handle, while registered; `None` once [`Registration::unregister`] started.
    /// The caller must not hold it across a call of [`Registration::unregister`].
    pub(crate) fn core(&self) -> Option<Core<'_>> {
        // SAFETY: FFI call without preconditions.
        let srcu = unsafe { sys::rvsock_h_srcu_read_lock() };
        match NonNull::new(self.handle.load(Ordering::Acquire)) {
            // INVARIANT: A handle set by the core; `unregister` hides it and waits for this read
            // section before unregistering it.
            Some(handle) => Some(Core {
                handle,
                srcu,
                _reg: core::marker::PhantomData,
            }),
            None => {
                // SAFETY: Pairs with the lock above.
                unsafe { sys::rvsock_h_srcu_read_unlock(srcu) };
                None
            }
        }
    }

    /// Unregisters the transport now (dropping the registration does it too): hides the
    /// handle, waits until no [`Core`] of it is in use, then unregisters, which resets the
    /// transport's connections.  Afterwards the core calls no callback, and [`Registration::core`]
    /// returns `None`, so the transport's work may still run safely until it is stopped.
    ///
    /// Process context; not from inside a callback of this transport, nor with a [`Core`] held.
    pub(crate) fn unregister(&self) {
        let handle = self.handle.swap(core::ptr::null_mut(), Ordering::AcqRel);
        let Some(handle) = NonNull::new(handle) else {
            return;
        };
        // SAFETY: FFI call; may sleep, and this is process context outside any read section.
        unsafe { sys::rvsock_h_synchronize_srcu() };
        // SAFETY: Registered (type invariant), hidden above so no `Core` uses it any more; after
        // this returns the core calls no callback.
        unsafe { sys::rvsock_transport_unregister(handle.as_ptr()) };
    }
}

#[pinned_drop]
impl<T: Transport> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        self.unregister();
    }
}

/// Recovers the registration from the `priv` pointer.
///
/// # Safety
///
/// `priv_` must be the pointer `register` passed, while registered.
unsafe fn reg<'a, T: Transport>(priv_: *mut c_void) -> &'a Registration<T> {
    // SAFETY: Guaranteed by the caller.
    unsafe { &*priv_.cast::<Registration<T>>() }
}

/// # Safety
///
/// Called by the core with our `priv` and an owned buffer.
unsafe extern "C" fn send_pkt<T: Transport>(priv_: *mut c_void, skb: *mut sys::sk_buff) -> i32 {
    let Some(skb) = NonNull::new(skb) else {
        return 0;
    };
    // SAFETY: The core passes ownership of the buffer.
    let skb = unsafe { SkBuff::from_raw(skb) };
    // SAFETY: The core passes our `priv` while we are registered.
    let r = unsafe { reg::<T>(priv_) };
    let Some(core) = r.core() else {
        return ENODEV.to_errno();
    };
    match r.data.send_pkt(&core, skb) {
        Ok(()) => 0,
        Err(e) => e.to_errno(),
    }
}

/// # Safety
///
/// Called by the core with our `priv`.
unsafe extern "C" fn cancel_pkt<T: Transport>(priv_: *mut c_void, sk: *mut sys::sock) {
    // SAFETY: The core passes our `priv` while we are registered.
    unsafe { reg::<T>(priv_) }.data.cancel_pkt(sk.cast());
}

/// # Safety
///
/// Called by the core with our `priv`.
unsafe extern "C" fn seqpacket_allow<T: Transport>(priv_: *mut c_void, cid: u32) -> bool {
    // SAFETY: The core passes our `priv` while we are registered.
    unsafe { reg::<T>(priv_) }.data.seqpacket_allow(cid)
}

/// The core's side of the transport ABI: the core implements [`Host`] and invokes
/// [`export_transport_host!`] once, which defines the exported C functions.
pub(crate) mod host {
    use super::*;
    use core::sync::atomic::AtomicBool;
    use kernel::sync::Arc;

    /// Static facts a transport registered with.
    pub(crate) struct Desc {
        /// Name for the kernel log (NUL-terminated, truncated to fit).
        pub(crate) name: [u8; 32],
        /// `RVSOCK_TRANSPORT_F_*` slots.
        pub(crate) features: u32,
        /// Initial local CID.
        pub(crate) local_cid: u32,
        /// `MSG_ZEROCOPY` support.
        pub(crate) msgzerocopy: bool,
    }

    impl Desc {
        /// The name as text.
        pub(crate) fn name(&self) -> &str {
            let n = self
                .name
                .iter()
                .position(|&b| b == 0)
                .unwrap_or(self.name.len());
            core::str::from_utf8(&self.name[..n]).unwrap_or("?")
        }
    }

    /// A registered transport as the core sees it: its operations, callable until revoked.
    ///
    /// # Invariants
    ///
    /// Until `revoked` is set and the SRCU grace period that follows has passed, `ops` and
    /// `priv_` are the ones the transport registered and are valid to call; afterwards nobody
    /// calls them ([`Ops::call`] checks `revoked` inside an SRCU read section).
    pub(crate) struct Ops {
        ops: sys::rvsock_transport_ops,
        priv_: *mut c_void,
        revoked: AtomicBool,
    }

    // SAFETY: The transport's callbacks are callable from any thread (transport ABI contract);
    // `priv_` is only passed back to them.
    unsafe impl Send for Ops {}
    // SAFETY: As above.
    unsafe impl Sync for Ops {}

    /// A read section during which a transport is not revoked: [`Ops::revoke`] waits for it
    /// to end.  Work done under it (a received packet making a connection) is therefore
    /// finished before the unregistration resets the transport's connections.
    ///
    /// # Invariants
    ///
    /// `idx` is the index of an SRCU read section entered by [`Ops::enter`] and left on drop.
    pub(crate) struct Entered<'a> {
        idx: i32,
        _ops: &'a Ops,
    }

    impl Drop for Entered<'_> {
        fn drop(&mut self) {
            // SAFETY: Pairs with the read lock of `enter` (type invariant).
            unsafe { sys::rvsock_h_srcu_read_unlock(self.idx) };
        }
    }

    impl Ops {
        /// Enters a read section, unless the transport is revoked already.
        pub(crate) fn enter(&self) -> Option<Entered<'_>> {
            // SAFETY: FFI call without preconditions.
            let idx = unsafe { sys::rvsock_h_srcu_read_lock() };
            // INVARIANT: The section is left when the value is dropped.
            let entered = Entered { idx, _ops: self };
            (!self.revoked.load(Ordering::Acquire)).then_some(entered)
        }

        fn call<R>(&self, f: impl FnOnce(&sys::rvsock_transport_ops) -> R) -> Option<R> {
            let _entered = self.enter()?;
            Some(f(&self.ops))
        }

        /// Sends a packet; `ENODEV` once the transport is gone.
        pub(crate) fn send_pkt(&self, skb: SkBuff) -> Result {
            let raw = skb.into_raw();
            let r = self.call(|ops| match ops.send_pkt {
                // SAFETY: Not revoked inside the read section, so the callback is valid (type
                // invariant); it takes the buffer.
                Some(f) => unsafe { f(self.priv_, raw) },
                None => {
                    // SAFETY: The buffer is still ours.
                    drop(unsafe { SkBuff::from_raw(NonNull::new_unchecked(raw)) });
                    -crate::proto::errno::Errno::EOPNOTSUPP.get()
                }
            });
            match r {
                Some(0) => Ok(()),
                Some(e) if e < 0 => Err(Error::from_errno(e)),
                Some(_) => Ok(()),
                None => {
                    // SAFETY: Not handed over; the buffer is still ours.
                    drop(unsafe { SkBuff::from_raw(NonNull::new_unchecked(raw)) });
                    Err(ENODEV)
                }
            }
        }

        /// Drops the queued packets of socket `sk`.
        pub(crate) fn cancel_pkt(&self, sk: *mut sys::sock) {
            self.call(|ops| {
                if let Some(f) = ops.cancel_pkt {
                    // SAFETY: Valid while not revoked (type invariant).
                    unsafe { f(self.priv_, sk) };
                }
            });
        }

        /// Whether `SOCK_SEQPACKET` may talk to `cid`.
        pub(crate) fn seqpacket_allow(&self, cid: u32) -> bool {
            self.call(|ops| match ops.seqpacket_allow {
                // SAFETY: Valid while not revoked (type invariant).
                Some(f) => unsafe { f(self.priv_, cid) },
                None => false,
            })
            .unwrap_or(false)
        }

        /// Stops every future call and waits for the running ones to return.
        pub(crate) fn revoke(&self) {
            self.revoked.store(true, Ordering::Release);
            // SAFETY: FFI call; may sleep, and callers are in process context.
            unsafe { sys::rvsock_h_synchronize_srcu() };
        }
    }

    /// What the core does for the transport ABI.
    pub(crate) trait Host: 'static {
        /// The core's record of a registered transport.
        type Transport: Send + Sync;

        /// Registers a transport: take its slots or fail (`EBUSY`).  `publish` must be called
        /// with the new record before the transport can be used.
        fn register(desc: Desc, ops: Ops, publish: &mut dyn FnMut(&Arc<Self::Transport>))
            -> Result;
        /// Unregisters: revoke the ops, reset the sockets, free the slots.
        fn unregister(t: Arc<Self::Transport>);
        /// A packet arrived on `t` (an exclusive buffer); process context, never sleeps.
        fn recv(t: &Arc<Self::Transport>, skb: SkBuff);
        /// The local CID of `t` changed.
        fn set_local_cid(t: &Arc<Self::Transport>, cid: u32);
        /// Every connection of `t` is reset.
        fn reset_all(t: &Arc<Self::Transport>);
    }

    /// Builds the core-side values from a transport's registration info.
    ///
    /// # Safety
    ///
    /// `info` must be a valid `rvsock_transport_info` whose `ops` and `priv` stay valid until
    /// unregistration (transport ABI contract).
    pub(crate) unsafe fn from_info(info: *const sys::rvsock_transport_info) -> Result<(Desc, Ops)> {
        if info.is_null() {
            return Err(EINVAL);
        }
        // SAFETY: Valid (caller).
        let i = unsafe { &*info };
        if i.ops.is_null() {
            return Err(EINVAL);
        }
        let mut name = [0u8; 32];
        if !i.name.is_null() {
            // SAFETY: A NUL-terminated string (ABI contract).
            let s = unsafe { CStr::from_char_ptr(i.name) };
            for (d, b) in name.iter_mut().take(31).zip(s.as_bytes()) {
                *d = *b;
            }
        }
        let desc = Desc {
            name,
            features: i.features,
            local_cid: i.local_cid,
            msgzerocopy: i.msgzerocopy,
        };
        // SAFETY: `i.ops` is valid (checked non-null, ABI contract).
        let table = unsafe { *i.ops };
        // INVARIANT: The ops are valid until unregistration (caller), which revokes first.
        let ops = Ops {
            ops: table,
            priv_: i.priv_,
            revoked: AtomicBool::new(false),
        };
        Ok((desc, ops))
    }

    /// Defines the exported functions of the transport ABI for host `$host`.
    #[allow(unused_macros)]
    macro_rules! export_transport_host {
        ($host:ty) => {
            type __TransportRecord = <$host as $crate::kx::transport::host::Host>::Transport;

            /// Borrows the record behind a handle.
            ///
            /// # Safety
            ///
            /// `t` must be a handle from `rvsock_transport_register`, not yet unregistered.
            unsafe fn __record<'a>(
                t: *mut $crate::kx::sys::rvsock_transport,
            ) -> kernel::sync::ArcBorrow<'a, __TransportRecord> {
                // SAFETY: Handles are `Arc::into_raw` of a record, alive until unregistered.
                unsafe {
                    kernel::sync::ArcBorrow::from_raw(t.cast::<__TransportRecord>().cast_const())
                }
            }

            /// Registers a transport (see `rust/rvsock_sys.h`).
            ///
            /// # Safety
            ///
            /// Transport ABI contract: valid `info` and `out`, `ops` valid until unregistered.
            #[no_mangle]
            pub unsafe extern "C" fn rvsock_transport_register(
                info: *const $crate::kx::sys::rvsock_transport_info,
                out: *mut *mut $crate::kx::sys::rvsock_transport,
            ) -> kernel::ffi::c_int {
                kernel::error::from_result(|| {
                    if out.is_null() {
                        return Err(kernel::error::code::EINVAL);
                    }
                    // SAFETY: The ABI contract of this function.
                    let (desc, ops) = unsafe { $crate::kx::transport::host::from_info(info)? };
                    let mut publish = |rec: &kernel::sync::Arc<__TransportRecord>| {
                        let raw = kernel::sync::Arc::into_raw(rec.clone());
                        // SAFETY: `out` is valid (ABI contract); the handle owns one reference,
                        // returned in `rvsock_transport_unregister`.
                        unsafe { out.write(raw.cast_mut().cast()) };
                    };
                    <$host as $crate::kx::transport::host::Host>::register(
                        desc,
                        ops,
                        &mut publish,
                    )?;
                    Ok(0)
                })
            }

            /// Unregisters a transport.
            ///
            /// # Safety
            ///
            /// `t` must be a registered handle; it is invalid afterwards.
            #[no_mangle]
            pub unsafe extern "C" fn rvsock_transport_unregister(
                t: *mut $crate::kx::sys::rvsock_transport,
            ) {
                if t.is_null() {
                    return;
                }
                // SAFETY: The handle owns one reference (see `register`), given back here.
                let rec = unsafe {
                    kernel::sync::Arc::from_raw(t.cast::<__TransportRecord>().cast_const())
                };
                <$host as $crate::kx::transport::host::Host>::unregister(rec);
            }

            /// Hands a received packet to the core.
            ///
            /// # Safety
            ///
            /// `t` must be a registered handle and `skb` an owned buffer.
            #[no_mangle]
            pub unsafe extern "C" fn rvsock_transport_recv(
                t: *mut $crate::kx::sys::rvsock_transport,
                skb: *mut $crate::kx::sys::sk_buff,
            ) {
                let Some(skb) = core::ptr::NonNull::new(skb) else {
                    return;
                };
                // SAFETY: The caller gives us the buffer.
                let skb = unsafe { $crate::kx::skb::SkBuff::from_raw(skb) };
                // A shared or cloned buffer is not the transport's to give (ABI contract).
                if t.is_null() || !skb.is_exclusive() {
                    return;
                }
                // SAFETY: Registered handle (caller).
                let rec: kernel::sync::Arc<__TransportRecord> = unsafe { __record(t) }.into();
                <$host as $crate::kx::transport::host::Host>::recv(&rec, skb);
            }

            /// Changes a transport's local CID.
            ///
            /// # Safety
            ///
            /// `t` must be a registered handle.
            #[no_mangle]
            pub unsafe extern "C" fn rvsock_transport_set_local_cid(
                t: *mut $crate::kx::sys::rvsock_transport,
                cid: u32,
            ) {
                if t.is_null() {
                    return;
                }
                // SAFETY: Registered handle (caller).
                let rec: kernel::sync::Arc<__TransportRecord> = unsafe { __record(t) }.into();
                <$host as $crate::kx::transport::host::Host>::set_local_cid(&rec, cid);
            }

            /// Resets every connection of a transport.
            ///
            /// # Safety
            ///
            /// `t` must be a registered handle.
            #[no_mangle]
            pub unsafe extern "C" fn rvsock_transport_reset_all(
                t: *mut $crate::kx::sys::rvsock_transport,
            ) {
                if t.is_null() {
                    return;
                }
                // SAFETY: Registered handle (caller).
                let rec: kernel::sync::Arc<__TransportRecord> = unsafe { __record(t) }.into();
                <$host as $crate::kx::transport::host::Host>::reset_all(&rec);
            }
        };
    }

    #[allow(unused_imports)]
    pub(crate) use export_transport_host;
}
