// SPDX-License-Identifier: GPL-2.0

//! Virtio drivers: registration, devices and virtqueues.
//!
//! C headers: [`include/linux/virtio.h`](srctree/include/linux/virtio.h),
//! [`include/linux/virtio_config.h`](srctree/include/linux/virtio_config.h)
//!
//! The 6.12 `kernel` crate has no virtio support; this follows the shape of the posted Rust
//! virtio RFCs over 6.12's `struct virtio_driver`:
//!
//! - a [`Driver`] trait (id table, feature table, `probe` returning the per-device data, `remove`
//!   taking it back, optional `freeze`/`restore`) and a [`Registration`] that registers it and
//!   unregisters on drop; the data lives in `vdev->priv` while the device is bound;
//! - [`Device`], the bound device, only reachable while the driver is bound to it;
//! - [`Virtqueues`], the queues found on a device: dropping them resets the device, hands back
//!   (drops) the buffers the device still held and deletes the queues.  Each queue has its own
//!   mutex; [`Virtqueues::lock`] gives a [`Virtqueue`] to add, kick and reap buffers;
//! - buffers are owned tokens ([`Buffer`]: an [`SkBuff`] or a [`KBox`]) that the queue holds while
//!   the device owns their memory, and that [`Virtqueue::get_buf`] and
//!   [`VirtqueuesShutdown::detach_unused`] hand back: no buffer can be freed or touched while the
//!   device may read or write it.
//!
//! Virtqueue callbacks run in interrupt context; they reach only the driver's
//! [`VqHandler::notified`], which gets the queue's index and nothing that could touch the ring:
//! it is meant to schedule work.
//!
//! The abstraction makes `remove` wait until the device's [`Virtqueues`] are gone, so no queue
//! outlives the binding, even one kept in an `Arc` by a work item.

use crate::kx::skb::{SkBuff, Skb};
use crate::kx::sys;
use crate::kx::Gfp;
use core::ffi::c_void;
use core::marker::PhantomData;
use core::mem::MaybeUninit;
use core::ptr::NonNull;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::error::{code::*, from_result, to_result, Error, Result};
use kernel::prelude::*;
use kernel::sync::{Arc, ArcBorrow, LockClassKey, Mutex};
use kernel::types::{ForeignOwnable, Opaque};

/// `VIRTIO_ID_VSOCK`: the virtio-vsock device type.
pub(crate) const ID_VSOCK: u32 = sys::VIRTIO_ID_VSOCK;
/// `VIRTIO_DEV_ANY_ID`: any vendor.
pub(crate) const DEV_ANY_ID: u32 = sys::VIRTIO_DEV_ANY_ID;
/// `VIRTIO_VSOCK_F_SEQPACKET`: the device supports `SOCK_SEQPACKET`.
pub(crate) const VSOCK_F_SEQPACKET: u32 = sys::VIRTIO_VSOCK_F_SEQPACKET;

/// The most virtqueues one device may have here (each gets its own lockdep class).
pub(crate) const MAX_VQS: usize = 8;
/// The most segments one buffer may have ([`Virtqueue::add_sgs`]): a header, a linear part and
/// one per page fragment of an `sk_buff`.
pub(crate) const MAX_SEGS: usize = sys::MAX_SKB_FRAGS as usize + 2;

/// An entry of a driver's id table (`struct virtio_device_id`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct DeviceId {
    /// Device type (`VIRTIO_ID_*`); never 0, which ends the C table.
    pub(crate) device: u32,
    /// Vendor, or [`DEV_ANY_ID`].
    pub(crate) vendor: u32,
}

/// A virtio driver.
#[vtable]
pub(crate) trait Driver: 'static {
    /// Per-device data: made by [`Driver::probe`], kept in `vdev->priv`, handed back to
    /// [`Driver::remove`].
    type Data: Send + Sync + 'static;

    /// Driver name (`driver.name`), as in sysfs.
    const NAME: &'static CStr;
    /// The devices the driver binds to.
    const ID_TABLE: &'static [DeviceId];
    /// The feature bits the driver supports (each below 64); the device's features are
    /// intersected with them before `probe`.
    const FEATURES: &'static [u32];

    /// Binds to a device.  Process context; may sleep.  The device is marked ready after this
    /// returns if the driver did not do it ([`Device::ready`]).
    fn probe(dev: &Device) -> Result<Self::Data>;

    /// Unbinds from a device; `data` is what `probe` returned.  Process context; may sleep.
    /// The device's [`Virtqueues`] must be dropped by the time this returns, or the unbinding
    /// waits for them; the device is reset afterwards.
    fn remove(dev: &Device, data: Self::Data);

    /// Prepares for suspend (only called with `CONFIG_PM_SLEEP`).
    fn freeze(_dev: &Device, _data: &Self::Data) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }

    /// Resumes after suspend (only called with `CONFIG_PM_SLEEP`).
    fn restore(_dev: &Device, _data: &Self::Data) -> Result {
        kernel::build_error!(kernel::error::VTABLE_DEFAULT_ERROR)
    }
}

/// A registered virtio driver; unregistered (every bound device removed) on drop.
///
/// # Invariants
///
/// When `registered` is set, `drv` is registered with `__register_virtio_driver` and points at
/// `ids` (terminated by a zeroed entry) and at `T::FEATURES`.
#[pin_data(PinnedDrop)]
pub(crate) struct Registration<T: Driver> {
    #[pin]
    drv: Opaque<sys::virtio_driver>,
    ids: KVec<sys::virtio_device_id>,
    registered: AtomicBool,
    _t: PhantomData<T>,
}

// SAFETY: The registered structure is only read by the driver core after registration.
unsafe impl<T: Driver> Sync for Registration<T> {}
// SAFETY: As above.
unsafe impl<T: Driver> Send for Registration<T> {}

impl<T: Driver> Registration<T> {
    /// Registers the driver; devices already present are probed before this returns.
    ///
    /// `EINVAL` if a feature bit is 64 or more (6.12 BUGs on one at probe) or an id's device
    /// type is 0 (which would end the table).
    pub(crate) fn register(module: &'static ThisModule) -> Result<Pin<KBox<Self>>> {
        if T::FEATURES.iter().any(|&f| f >= 64) || T::ID_TABLE.iter().any(|id| id.device == 0) {
            return Err(EINVAL);
        }
        let mut ids = KVec::with_capacity(T::ID_TABLE.len() + 1, GFP_KERNEL)?;
        for id in T::ID_TABLE {
            ids.push(
                sys::virtio_device_id {
                    device: id.device,
                    vendor: id.vendor,
                },
                GFP_KERNEL,
            )?;
        }
        ids.push(sys::virtio_device_id::default(), GFP_KERNEL)?;
        let feature_count = u32::try_from(T::FEATURES.len()).map_err(|_| EINVAL)?;

        let this = KBox::pin_init(
            pin_init!(Self {
                drv: Opaque::uninit(),
                ids,
                registered: AtomicBool::new(false),
                _t: PhantomData,
            }),
            GFP_KERNEL,
        )?;
        let drv = this.drv.get();
        // SAFETY: `drv` is valid for writes and not shared yet; all-zero is a valid
        // `virtio_driver` (no callbacks, no tables).  It and the id table (a heap buffer that
        // moves with nothing) live, pinned, as long as the registration, and `T::FEATURES` is
        // static.
        unsafe {
            drv.write_bytes(0, 1);
            (*drv).driver.name = T::NAME.as_char_ptr().cast();
            (*drv).id_table = this.ids.as_ptr();
            (*drv).feature_table = T::FEATURES.as_ptr();
            (*drv).feature_table_size = feature_count;
            (*drv).probe = Some(probe_callback::<T>);
            (*drv).remove = Some(remove_callback::<T>);
            if T::HAS_FREEZE {
                (*drv).freeze = Some(freeze_callback::<T>);
            }
            if T::HAS_RESTORE {
                (*drv).restore = Some(restore_callback::<T>);
            }
            to_result(sys::__register_virtio_driver(drv, module.as_ptr().cast()))?;
        }
        // INVARIANT: Registered just now, unregistered in `drop`.
        this.registered.store(true, Ordering::Release);
        Ok(this)
    }
}

#[pinned_drop]
impl<T: Driver> PinnedDrop for Registration<T> {
    fn drop(self: Pin<&mut Self>) {
        if self.registered.load(Ordering::Acquire) {
            // SAFETY: Registered (type invariant).  This removes every bound device, which
            // drops their data, before it returns.
            unsafe { sys::unregister_virtio_driver(self.drv.get()) };
        }
    }
}

/// How long [`wait_vqs_gone`] waits before it warns (and then between warnings).
const VQS_GONE_WARN_MS: u32 = 10_000;

/// Waits until the device's [`Virtqueues`] are gone (they outlived the driver's data, e.g. in
/// an `Arc` of a work item still running): their drop clears `driver_data` and wakes this.
///
/// No busy polling: it sleeps on a wait queue.  It cannot give up (the queues still use the
/// device), so it waits in bounded rounds of [`VQS_GONE_WARN_MS`], warning after each, which
/// also keeps the hung-task detector quiet while it says why.
///
/// # Safety
///
/// `vdev` is a device bound to a driver of this module, in its `probe` or `remove` callback.
unsafe fn wait_vqs_gone(vdev: *mut sys::virtio_device) {
    // SAFETY: `vdev` is valid (the caller's guarantee); the helper reads `driver_data` with
    // `READ_ONCE` under the wait queue's protocol against `Virtqueues::drop`.
    while !unsafe { sys::rvsock_hv_wait_vqs_gone(vdev, VQS_GONE_WARN_MS) } {
        pr_warn!("virtio: still waiting for the virtqueues of a removed device to be dropped\n");
    }
}

/// # Safety
///
/// Called by the virtio core for a device matched to `T`'s driver, in process context.
unsafe extern "C" fn probe_callback<T: Driver>(vdev: *mut sys::virtio_device) -> i32 {
    let ret = from_result(|| {
        // SAFETY: The core hands a valid device that stays bound until `remove`.
        let dev = unsafe { Device::from_raw(vdev) };
        let data = KBox::new(T::probe(dev)?, GFP_KERNEL)?;
        // SAFETY: `priv` is the driver's; nothing reads it before probe returns.  `remove`
        // takes the data back.
        unsafe { (*vdev).priv_ = data.into_foreign().cast_mut() };
        Ok(0)
    });
    if ret != 0 {
        // A failed probe unbinds without `remove`: queues found during it must be gone first.
        // SAFETY: Still bound, in `probe`.
        unsafe { wait_vqs_gone(vdev) };
    }
    ret
}

/// # Safety
///
/// Called by the virtio core for a device `probe_callback::<T>` bound, in process context.
unsafe extern "C" fn remove_callback<T: Driver>(vdev: *mut sys::virtio_device) {
    // SAFETY: `vdev` is valid; `priv` holds the data `probe_callback` stored (a successful
    // probe precedes every remove), taken back exactly once here.
    let data = unsafe {
        let p = (*vdev).priv_;
        (*vdev).priv_ = core::ptr::null_mut();
        KBox::<T::Data>::from_foreign(p)
    };
    // SAFETY: `vdev` is bound until this returns.
    let dev = unsafe { Device::from_raw(vdev) };
    T::remove(dev, KBox::into_inner(data));
    // SAFETY: In `remove`.
    unsafe { wait_vqs_gone(vdev) };
    // The core expects a reset device after remove (it WARNs otherwise).
    dev.reset();
}

/// # Safety
///
/// Called by the virtio core for a bound device, in process context.
unsafe extern "C" fn freeze_callback<T: Driver>(vdev: *mut sys::virtio_device) -> i32 {
    // SAFETY: The device is bound, so `priv` holds `T::Data` (stored by `probe_callback`).
    let data = unsafe { KBox::<T::Data>::borrow((*vdev).priv_) };
    // SAFETY: The device is bound during the callback.
    let dev = unsafe { Device::from_raw(vdev) };
    from_result(|| T::freeze(dev, data).map(|()| 0))
}

/// # Safety
///
/// Called by the virtio core for a bound device, in process context.
unsafe extern "C" fn restore_callback<T: Driver>(vdev: *mut sys::virtio_device) -> i32 {
    // SAFETY: As in `freeze_callback`.
    let data = unsafe { KBox::<T::Data>::borrow((*vdev).priv_) };
    // SAFETY: The device is bound during the callback.
    let dev = unsafe { Device::from_raw(vdev) };
    from_result(|| T::restore(dev, data).map(|()| 0))
}

/// A virtio device bound to a driver of this module.
///
/// # Invariants
///
/// The wrapped `virtio_device` is valid and bound to one of this module's drivers while the
/// reference is (references are only handed out in driver callbacks and by [`Virtqueues`],
/// which the unbinding waits for).
#[repr(transparent)]
pub(crate) struct Device(Opaque<sys::virtio_device>);

impl Device {
    /// Borrows the device behind a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid device, bound to a driver of this module for at least `'a`.
    unsafe fn from_raw<'a>(ptr: *mut sys::virtio_device) -> &'a Device {
        // SAFETY: `Device` is transparent over `Opaque<virtio_device>`; the caller guarantees
        // validity.
        unsafe { &*ptr.cast() }
    }

    fn as_raw(&self) -> *mut sys::virtio_device {
        self.0.get()
    }

    /// The device's index on the virtio bus (`virtioN`).
    pub(crate) fn index(&self) -> i32 {
        // SAFETY: Valid (type invariant); `index` is set before the device is registered.
        unsafe { (*self.as_raw()).index }
    }

    /// Reads a little-endian u64 of the device's configuration space at `offset`
    /// (`vdev->config->get`, as upstream reads `guest_cid`).  May sleep.
    ///
    /// The virtio PCI transport BUGs on a read beyond the device's configuration space (as for
    /// the C drivers); only read fields of the device type's configuration.
    pub(crate) fn read_config_le64(&self, offset: u32) -> u64 {
        let mut buf = [0u8; 8];
        // SAFETY: Valid device (type invariant); `buf` is writable for 8 bytes.
        unsafe { sys::rvsock_hv_config_get(self.as_raw(), offset, buf.as_mut_ptr().cast(), 8) };
        u64::from_le_bytes(buf)
    }

    /// Whether the device and the driver negotiated feature `bit`.  False for a bit the
    /// driver's feature table does not list (where `virtio_has_feature` would BUG), except the
    /// transport's own bits, which the core keeps without the driver listing them.
    pub(crate) fn has_feature(&self, bit: u32) -> bool {
        if bit >= 64 {
            return false;
        }
        let transport = (sys::VIRTIO_TRANSPORT_F_START..sys::VIRTIO_TRANSPORT_F_END).contains(&bit);
        if !transport && !self.driver_features().contains(&bit) {
            return false;
        }
        // SAFETY: Valid device (type invariant); `features` is fixed once probe runs.
        unsafe { (*self.as_raw()).features & (1u64 << bit) != 0 }
    }

    /// The feature table of the bound driver.
    fn driver_features(&self) -> &[u32] {
        // SAFETY: The device is bound (type invariant), so `dev.driver` is the `driver` field,
        // the first, of the `virtio_driver` a `Registration` set up with a table of
        // `feature_table_size` entries (or none), which outlives the binding.
        unsafe {
            let drv = (*self.as_raw()).dev.driver.cast::<sys::virtio_driver>();
            if drv.is_null() || (*drv).feature_table.is_null() {
                return &[];
            }
            core::slice::from_raw_parts((*drv).feature_table, (*drv).feature_table_size as usize)
        }
    }

    /// Marks the device ready (`virtio_device_ready`, DRIVER_OK): after this the device may use
    /// the buffers added to its queues.  Needed in `probe` before adding buffers there; the core
    /// does it after `probe` otherwise.  False (nothing done) if the device already is.
    pub(crate) fn ready(&self) -> bool {
        // SAFETY: Valid, bound device (type invariant).
        unsafe { sys::rvsock_hv_device_ready(self.as_raw()) }
    }

    /// Resets the device (`virtio_reset_device`): it stops using its queues and raising
    /// interrupts.  Buffers stay in their queues until [`Virtqueues`] is dropped.  May sleep.
    pub(crate) fn reset(&self) {
        // SAFETY: Valid, bound device (type invariant).  A concurrent kick of a queue (which the
        // C function asks callers to exclude) at worst notifies a reset device: the ring memory
        // stays owned by `Virtqueues` until they are deleted.
        unsafe { sys::virtio_reset_device(self.as_raw()) };
    }

    /// Finds the device's virtqueues (`virtio_find_vqs`), one per name, in order.  `handler`
    /// gets every queue's used-buffer notifications (in interrupt context).  `EBUSY` if the
    /// device's queues were found already and are still alive; `EINVAL` for no names or more
    /// than [`MAX_VQS`].
    pub(crate) fn find_vqs<H: VqHandler, B: Buffer>(
        &self,
        names: &[&'static CStr],
        handler: Arc<H>,
    ) -> Result<Virtqueues<B>> {
        let n = names.len();
        if n == 0 || n > MAX_VQS {
            return Err(EINVAL);
        }
        // Allocate everything that can fail before the queues exist.
        let mut slots = KVec::with_capacity(n, GFP_KERNEL)?;
        for (i, name) in names.iter().enumerate() {
            slots.push(
                KBox::pin_init(
                    Mutex::new(VqSlot(core::ptr::null_mut()), name, vq_lock_class(i)),
                    GFP_KERNEL,
                )?,
                GFP_KERNEL,
            )?;
        }
        let vdev = self.as_raw();
        // SAFETY: Valid device (type invariant): the field's address.
        let driver_data = unsafe { core::ptr::addr_of_mut!((*vdev).dev.driver_data) };
        // SAFETY: Valid device (type invariant); `driver_data` of the virtio device is ours
        // while bound (the virtio core and transports do not use it); only process context
        // writes it, under the driver core's device lock (probe, remove) or with the previous
        // `Virtqueues` gone.
        if !unsafe { driver_data.read_volatile() }.is_null() {
            return Err(EBUSY);
        }
        let hptr = handler.into_foreign();
        // SAFETY: As above; the callbacks of the queues found below read it.
        unsafe { driver_data.write_volatile(hptr.cast_mut()) };

        let mut infos = [sys::virtqueue_info::default(); MAX_VQS];
        for (info, name) in infos.iter_mut().zip(names) {
            info.name = name.as_char_ptr().cast();
            info.callback = Some(vq_callback::<H>);
        }
        let mut vqs = [core::ptr::null_mut::<sys::virtqueue>(); MAX_VQS];
        // SAFETY: Valid device; both arrays hold at least `n` entries; the names are static.
        let ret = unsafe {
            sys::rvsock_hv_find_vqs(vdev, n as u32, vqs.as_mut_ptr(), infos.as_mut_ptr())
        };
        if let Err(e) = to_result(ret) {
            // SAFETY: No queue exists, so no callback can read the handler any more.
            unsafe {
                driver_data.write_volatile(core::ptr::null_mut());
                drop(Arc::<H>::from_foreign(hptr));
            }
            return Err(e);
        }
        for (slot, vq) in slots.iter().zip(vqs) {
            // Not shared yet: the lock is uncontended.
            slot.lock().0 = vq;
        }
        // INVARIANT: The queues were just found on this bound device, the handler is stored in
        // `driver_data`, and `slots` holds one queue each.
        Ok(Virtqueues {
            vdev: NonNull::from(self),
            slots,
            handler: hptr,
            drop_handler: drop_handler::<H>,
            _b: PhantomData,
        })
    }
}

/// A lockdep class per queue index, so a driver may hold two queues' locks at once.
fn vq_lock_class(i: usize) -> &'static LockClassKey {
    match i {
        0 => kernel::static_lock_class!(),
        1 => kernel::static_lock_class!(),
        2 => kernel::static_lock_class!(),
        3 => kernel::static_lock_class!(),
        4 => kernel::static_lock_class!(),
        5 => kernel::static_lock_class!(),
        6 => kernel::static_lock_class!(),
        _ => kernel::static_lock_class!(),
    }
}

/// Receives used-buffer notifications of a device's virtqueues.
pub(crate) trait VqHandler: Send + Sync + 'static {
    /// The device used buffers of queue `index` (or the queue was notified spuriously).  Runs
    /// in interrupt context: must not sleep nor take a lock also taken with interrupts on;
    /// schedule work that reaps the queue (`this` converts into an `Arc` for
    /// [`kernel::workqueue::Queue::enqueue`]).
    fn notified(this: ArcBorrow<'_, Self>, index: usize);
}

/// # Safety
///
/// Called by `vring_interrupt` for a queue found by [`Device::find_vqs`] with handler `H`.
unsafe extern "C" fn vq_callback<H: VqHandler>(vq: *mut sys::virtqueue) {
    // SAFETY: `vq` and its device are valid during the callback; `driver_data` holds the
    // handler while the queues exist (set before they are found, cleared after they are
    // deleted, which waits for the callbacks in flight).
    unsafe {
        let h = core::ptr::addr_of!((*(*vq).vdev).dev.driver_data).read_volatile();
        if h.is_null() {
            return;
        }
        H::notified(Arc::<H>::borrow(h), (*vq).index as usize);
    }
}

/// # Safety
///
/// `p` comes from `Arc::<H>::into_foreign` and is not used afterwards.
unsafe fn drop_handler<H: VqHandler>(p: *const c_void) {
    // SAFETY: The caller's guarantee.
    drop(unsafe { Arc::<H>::from_foreign(p) });
}

/// An owned buffer that can be lent to a device.
///
/// # Safety
///
/// `into_raw` returns a non-null pointer from which `from_raw` rebuilds the same value, and the
/// memory that `&Self`/`&mut Self` reach does not move when the value is moved or converted to
/// the raw pointer (it is on the heap), so the device may use it while the queue holds the
/// pointer.
pub(crate) unsafe trait Buffer: Send + Sized + 'static {
    /// Gives up ownership.
    fn into_raw(self) -> NonNull<c_void>;

    /// Takes ownership back.
    ///
    /// # Safety
    ///
    /// `ptr` comes from `into_raw` of this type and is not used afterwards.
    unsafe fn from_raw(ptr: NonNull<c_void>) -> Self;
}

// SAFETY: A socket buffer's data is on the heap; the pointer round-trips.
unsafe impl Buffer for SkBuff {
    fn into_raw(self) -> NonNull<c_void> {
        // SAFETY: An `SkBuff` wraps a non-null pointer (its invariant).
        unsafe { NonNull::new_unchecked(SkBuff::into_raw(self).cast()) }
    }

    unsafe fn from_raw(ptr: NonNull<c_void>) -> Self {
        // SAFETY: `ptr` is an `sk_buff` from `into_raw` (the caller's guarantee).
        unsafe { SkBuff::from_raw(ptr.cast()) }
    }
}

// SAFETY: A box's contents are on the heap; the pointer round-trips.
unsafe impl<T: Send + 'static> Buffer for KBox<T> {
    fn into_raw(self) -> NonNull<c_void> {
        // SAFETY: `KBox::into_raw` never returns null.
        unsafe { NonNull::new_unchecked(KBox::into_raw(self).cast()) }
    }

    unsafe fn from_raw(ptr: NonNull<c_void>) -> Self {
        // SAFETY: `ptr` comes from `KBox::into_raw` (the caller's guarantee).
        unsafe { KBox::from_raw(ptr.as_ptr().cast()) }
    }
}

/// One segment of an [`Sgs`].
#[derive(Clone, Copy)]
enum Seg {
    /// `len` bytes at `p`, in the kernel's linear mapping (checked by [`dma_able`] before use).
    Buf(*const u8, usize),
    /// Page fragment `i` of the socket buffer `skb` (kernel pages or user pages attached by a
    /// zerocopy send), by page, offset and size: it need not be addressable.
    Frag(*const sys::sk_buff, u32),
}

/// The segments of one buffer, built by the closure given to [`Virtqueue::add_sgs`]: the
/// device reads the readable ones and writes the writable ones.  Segments borrow from the
/// buffer (or are static), so they stay valid while the queue holds it: a slice is the
/// buffer's memory, a page fragment is a page the borrowed `sk_buff` holds a reference on.
pub(crate) struct Sgs<'a> {
    out: [Seg; MAX_SEGS],
    n_out: usize,
    inp: [Seg; MAX_SEGS],
    n_in: usize,
    /// More than [`MAX_SEGS`] segments, or a socket buffer whose payload is not all in its
    /// linear part and page fragments: [`Virtqueue::add_sgs`] refuses the buffer.
    invalid: bool,
    _l: PhantomData<&'a mut [MaybeUninit<u8>]>,
}

impl<'a> Sgs<'a> {
    fn new() -> Self {
        Sgs {
            out: [Seg::Buf(core::ptr::null(), 0); MAX_SEGS],
            n_out: 0,
            inp: [Seg::Buf(core::ptr::null(), 0); MAX_SEGS],
            n_in: 0,
            invalid: false,
            _l: PhantomData,
        }
    }

    fn push(&mut self, out: bool, seg: Seg) {
        if self.n_out + self.n_in >= MAX_SEGS {
            self.invalid = true;
            return;
        }
        if out {
            self.out[self.n_out] = seg;
            self.n_out += 1;
        } else {
            self.inp[self.n_in] = seg;
            self.n_in += 1;
        }
    }

    fn push_buf(&mut self, out: bool, p: *const u8, len: usize) {
        if len > 0 {
            self.push(out, Seg::Buf(p, len));
        }
    }

    /// Adds a segment the device reads.  Empty segments are left out.
    pub(crate) fn readable(&mut self, s: &'a [u8]) {
        self.push_buf(true, s.as_ptr(), s.len());
    }

    /// Adds a segment the device writes.  Empty segments are left out.
    pub(crate) fn writable(&mut self, s: &'a mut [u8]) {
        self.push_buf(false, s.as_ptr(), s.len());
    }

    /// Adds a segment the device writes, of possibly uninitialised memory (a receive buffer
    /// before the device filled it).  Empty segments are left out.
    pub(crate) fn writable_uninit(&mut self, s: &'a mut [MaybeUninit<u8>]) {
        self.push_buf(false, s.as_ptr().cast(), s.len());
    }

    /// Adds the page fragments of `skb` as segments the device reads, one per fragment, in
    /// order, by page (`sg_set_page`): kernel pages and user pages attached by a zerocopy send
    /// alike, never copied nor mapped here.  The buffer lent to the device must be the one that
    /// owns `skb` (the borrow says so): its fragment references keep the pages alive until the
    /// device gives the buffer back.  The linear part is not included (see
    /// [`Sgs::readable`]).
    ///
    /// [`Virtqueue::add_sgs`] refuses the buffer (`EINVAL`) if the fragments do not carry the
    /// whole nonlinear payload (`data_len`: a frag list), or with the other segments they
    /// exceed [`MAX_SEGS`].
    pub(crate) fn readable_skb_frags(&mut self, skb: &'a Skb) {
        // SAFETY: `skb` is valid for the borrow (`Skb`'s invariant).
        let (n, whole) = unsafe {
            (
                sys::rvsock_hv_skb_nr_frags(skb.as_ptr()),
                sys::rvsock_hv_skb_frags_whole(skb.as_ptr()),
            )
        };
        if !whole {
            self.invalid = true;
            return;
        }
        for i in 0..n {
            self.push(true, Seg::Frag(skb.as_ptr(), i));
        }
    }
}

/// Whether `len` bytes at `p` (`len > 0`) can be a scatterlist entry: below 4 GiB and in the
/// kernel's linear mapping (not vmalloc or module memory), so `sg_init_one` finds their pages.
fn dma_able(p: *const u8, len: usize) -> bool {
    // SAFETY: FFI calls without preconditions (address checks only; nothing is dereferenced).
    u32::try_from(len).is_ok()
        && unsafe {
            sys::rvsock_hv_virt_addr_valid(p.cast())
                && sys::rvsock_hv_virt_addr_valid(p.wrapping_add(len - 1).cast())
        }
}

/// Makes `sg` a one-entry scatterlist for `seg`; false if the segment cannot be one (a slice
/// outside the linear mapping or of 4 GiB or more, an empty or missing fragment).
///
/// # Safety
///
/// A [`Seg::Frag`]'s `sk_buff` is valid for the call.
unsafe fn sg_fill(sg: &mut sys::scatterlist, seg: Seg) -> bool {
    match seg {
        Seg::Buf(p, len) => {
            if !dma_able(p, len) {
                return false;
            }
            // SAFETY: `p .. p + len` is in the linear mapping (checked above); `len` fits in
            // u32.  `sg` is a valid entry.
            unsafe { sys::sg_init_one(sg, p.cast(), len as u32) };
            true
        }
        // SAFETY: The `sk_buff` is valid (the caller's guarantee); `sg` is a valid entry; the
        // helper checks the index and the size.
        Seg::Frag(skb, i) => unsafe { sys::rvsock_hv_sg_set_skb_frag(sg, skb, i) },
    }
}

/// One queue, behind its mutex in [`Virtqueues`].
///
/// # Invariants
///
/// Once `Device::find_vqs` returned, `.0` is a live queue of the set that holds the slot.
struct VqSlot(*mut sys::virtqueue);

// SAFETY: A virtqueue may be used from any thread, one at a time (the mutex).
unsafe impl Send for VqSlot {}

/// The virtqueues of a device, found by [`Device::find_vqs`], holding buffers of type `B`.
///
/// Dropping them (or [`Virtqueues::shutdown`]) resets the device, takes back every buffer the
/// device still held and deletes the queues.
///
/// # Invariants
///
/// `vdev` is bound to a driver of this module while `self` lives (its `remove` waits for
/// `driver_data` to be cleared, which only `drop` does); its queues are those of `slots`;
/// `driver_data` holds `handler` (from `Arc::<H>::into_foreign`, dropped by `drop_handler`);
/// every buffer the queues hold is a `B` from `B::into_raw`.
pub(crate) struct Virtqueues<B: Buffer> {
    vdev: NonNull<Device>,
    slots: KVec<Pin<KBox<Mutex<VqSlot>>>>,
    handler: *const c_void,
    drop_handler: unsafe fn(*const c_void),
    _b: PhantomData<B>,
}

// SAFETY: The queues are used under their mutexes; the device pointer is valid from any thread.
unsafe impl<B: Buffer> Send for Virtqueues<B> {}
// SAFETY: As above: every operation on a queue takes its mutex.
unsafe impl<B: Buffer> Sync for Virtqueues<B> {}

impl<B: Buffer> Virtqueues<B> {
    /// The device the queues belong to.
    pub(crate) fn device(&self) -> &Device {
        // SAFETY: Bound while `self` lives (type invariant).
        unsafe { self.vdev.as_ref() }
    }

    /// The number of queues.
    pub(crate) fn len(&self) -> usize {
        self.slots.len()
    }

    /// Locks queue `index` (the order given to `find_vqs`); `None` if there is no such queue.
    /// Process context (a mutex).
    pub(crate) fn lock(&self, index: usize) -> Option<Virtqueue<'_, B>> {
        let guard = self.slots.get(index)?.lock();
        Some(Virtqueue {
            guard,
            _b: PhantomData,
        })
    }

    /// Resets the device, so that it no longer uses any buffer, and returns the queues for
    /// taking back their unused buffers; they are deleted when the result is dropped.
    pub(crate) fn shutdown(self) -> VirtqueuesShutdown<B> {
        self.device().reset();
        VirtqueuesShutdown(self)
    }
}

impl<B: Buffer> Drop for Virtqueues<B> {
    fn drop(&mut self) {
        // Nothing uses the queues any more (`&mut self`); after the reset neither does the
        // device, so the buffers can be taken back (a second reset after `shutdown` is
        // harmless).
        self.device().reset();
        for slot in self.slots.iter() {
            let vq = slot.lock().0;
            // SAFETY: `vq` is a live queue (type invariant) of a reset device; its buffers are
            // `B`s (type invariant) that the device no longer uses.
            while let Some(p) = NonNull::new(unsafe { sys::virtqueue_detach_unused_buf(vq) }) {
                // SAFETY: As above; detached, so handed back exactly once.
                drop(unsafe { B::from_raw(p) });
            }
        }
        let vdev = self.device().as_raw();
        // SAFETY: The device is bound (type invariant); deleting the queues frees their
        // interrupts, so no callback runs after this (none reads `driver_data` any more), and
        // then the handler can go.  Clearing `driver_data` last wakes a waiting `remove`, which
        // may then unbind the device: nothing here touches it afterwards.
        unsafe {
            sys::rvsock_hv_del_vqs(vdev);
            (self.drop_handler)(self.handler);
            sys::rvsock_hv_vqs_gone(vdev);
        }
    }
}

/// The queues of a reset device ([`Virtqueues::shutdown`]): buffers can be taken back; the
/// queues are deleted on drop.
pub(crate) struct VirtqueuesShutdown<B: Buffer>(Virtqueues<B>);

impl<B: Buffer> VirtqueuesShutdown<B> {
    /// Takes back a buffer the device held in queue `index` and did not use
    /// (`virtqueue_detach_unused_buf`); `None` once there is none.
    pub(crate) fn detach_unused(&self, index: usize) -> Option<B> {
        let vq = self.0.slots.get(index)?.lock().0;
        // SAFETY: `vq` is a live queue of a reset device (type invariants), its buffers are
        // `B`s that the device no longer uses.
        let p = NonNull::new(unsafe { sys::virtqueue_detach_unused_buf(vq) })?;
        // SAFETY: Detached, so handed back exactly once.
        Some(unsafe { B::from_raw(p) })
    }
}

/// A locked virtqueue ([`Virtqueues::lock`]).
pub(crate) struct Virtqueue<'a, B: Buffer> {
    guard: kernel::sync::lock::Guard<'a, VqSlot, kernel::sync::lock::mutex::MutexBackend>,
    _b: PhantomData<B>,
}

impl<B: Buffer> Virtqueue<'_, B> {
    fn raw(&self) -> *mut sys::virtqueue {
        self.guard.0
    }

    /// The queue's index on its device.
    pub(crate) fn index(&self) -> u32 {
        // SAFETY: A live queue (`VqSlot` invariant).
        unsafe { (*self.raw()).index }
    }

    /// Lends `buf` to the device, which writes the segment `f` picks (from the buffer itself,
    /// or static memory; it may be uninitialised) (`virtqueue_add_inbuf`).  Gives the buffer
    /// back with the error on failure (`ENOSPC`: the queue is full; `EIO`: broken; `EINVAL`:
    /// an empty segment or one outside the linear mapping).
    pub(crate) fn add_inbuf(
        &mut self,
        buf: B,
        gfp: Gfp,
        f: impl for<'b> FnOnce(&'b mut B) -> &'b mut [MaybeUninit<u8>],
    ) -> core::result::Result<(), (Error, B)> {
        self.add_sgs(buf, gfp, |b, sgs| sgs.writable_uninit(f(b)))
    }

    /// Lends `buf` to the device, which reads the segment `f` picks (`virtqueue_add_outbuf`).
    /// Errors as for [`Virtqueue::add_inbuf`].
    pub(crate) fn add_outbuf(
        &mut self,
        buf: B,
        gfp: Gfp,
        f: impl for<'b> FnOnce(&'b B) -> &'b [u8],
    ) -> core::result::Result<(), (Error, B)> {
        self.add_sgs(buf, gfp, |b, sgs| sgs.readable(f(b)))
    }

    /// Lends `buf` to the device with the segments `f` adds (`virtqueue_add_sgs`): readable
    /// ones are passed first, then writable ones, each in the order added.  `EINVAL` (the
    /// buffer given back) for no segment, more than [`MAX_SEGS`], a slice of 4 GiB or more,
    /// one outside the kernel's linear mapping (a DMA-able address), or an `sk_buff` whose
    /// fragments do not carry its nonlinear payload ([`Sgs::readable_skb_frags`]); otherwise
    /// errors as for [`Virtqueue::add_inbuf`].
    pub(crate) fn add_sgs(
        &mut self,
        mut buf: B,
        gfp: Gfp,
        f: impl for<'b> FnOnce(&'b mut B, &mut Sgs<'b>),
    ) -> core::result::Result<(), (Error, B)> {
        let mut sgs = Sgs::new();
        f(&mut buf, &mut sgs);
        let (n_out, n_in) = (sgs.n_out, sgs.n_in);
        if sgs.invalid || n_out + n_in == 0 {
            return Err((EINVAL, buf));
        }
        let segs = Iterator::chain(sgs.out[..n_out].iter(), sgs.inp[..n_in].iter());
        let mut table = [sys::scatterlist::default(); MAX_SEGS];
        let mut ptrs = [core::ptr::null_mut::<sys::scatterlist>(); MAX_SEGS];
        for ((sg, ptr), &seg) in table.iter_mut().zip(ptrs.iter_mut()).zip(segs) {
            // SAFETY: A fragment's `sk_buff` is borrowed from `buf` (the lifetime of `Sgs`),
            // which is still ours.
            if !unsafe { sg_fill(sg, seg) } {
                return Err((EINVAL, buf));
            }
            *ptr = sg;
        }
        let token = buf.into_raw();
        // SAFETY: A live queue that we hold exclusively (its mutex); `n_out + n_in` one-entry
        // scatterlists, readable first.  Their memory stays valid until the device hands the
        // token back: it belongs to the buffer, whose memory does not move (`Buffer`'s
        // contract) and which only `get_buf` or the detach on reset gives back, or is static;
        // a page fragment's page is referenced by the buffer's `sk_buff` for as long.
        let ret = unsafe {
            sys::virtqueue_add_sgs(
                self.raw(),
                ptrs.as_mut_ptr(),
                n_out as u32,
                n_in as u32,
                token.as_ptr(),
                gfp.raw(),
            )
        };
        if ret < 0 {
            // SAFETY: Not added, so still ours.
            return Err((Error::from_errno(ret), unsafe { B::from_raw(token) }));
        }
        Ok(())
    }

    /// Notifies the device of the buffers added (`virtqueue_kick`); false if the queue is
    /// broken.
    pub(crate) fn kick(&mut self) -> bool {
        // SAFETY: A live queue held exclusively.
        unsafe { sys::virtqueue_kick(self.raw()) }
    }

    /// First half of a split kick (`virtqueue_kick_prepare`): whether [`Virtqueue::notify`] is
    /// needed.
    pub(crate) fn kick_prepare(&mut self) -> bool {
        // SAFETY: A live queue held exclusively.
        unsafe { sys::virtqueue_kick_prepare(self.raw()) }
    }

    /// Second half of a split kick (`virtqueue_notify`); false if the queue is broken.
    pub(crate) fn notify(&mut self) -> bool {
        // SAFETY: A live queue.
        unsafe { sys::virtqueue_notify(self.raw()) }
    }

    /// Takes back a buffer the device used, with the length it says it wrote
    /// (`virtqueue_get_buf`).  The length comes from the device: check it against the buffer.
    pub(crate) fn get_buf(&mut self) -> Option<(B, u32)> {
        let mut len = 0u32;
        // SAFETY: A live queue held exclusively; `len` is writable.
        let p = NonNull::new(unsafe { sys::virtqueue_get_buf(self.raw(), &mut len) })?;
        // SAFETY: Every token of the queue is a `B` (`Virtqueues` invariant), handed back once.
        Some((unsafe { B::from_raw(p) }, len))
    }

    /// Asks the device not to notify used buffers (`virtqueue_disable_cb`); a hint.
    pub(crate) fn disable_cb(&mut self) {
        // SAFETY: A live queue held exclusively.
        unsafe { sys::virtqueue_disable_cb(self.raw()) }
    }

    /// Re-enables notifications (`virtqueue_enable_cb`).  False if buffers were used meanwhile:
    /// reap them (and call this again) or they may never be notified.
    pub(crate) fn enable_cb(&mut self) -> bool {
        // SAFETY: A live queue held exclusively.
        unsafe { sys::virtqueue_enable_cb(self.raw()) }
    }

    /// The number of descriptors of the ring (`virtqueue_get_vring_size`).
    pub(crate) fn vring_size(&self) -> u32 {
        // SAFETY: A live queue.
        unsafe { sys::virtqueue_get_vring_size(self.raw()) }
    }

    /// Whether the queue is broken (`virtqueue_is_broken`): the device misbehaved or was reset.
    pub(crate) fn is_broken(&self) -> bool {
        // SAFETY: A live queue.
        unsafe { sys::virtqueue_is_broken(self.raw()) }
    }
}

/// The module parameters of `rvsock_virtio.ko`, declared in C (`rust/virtio_helpers.c`): 6.12's
/// `module!` has none.
pub(crate) mod params {
    use crate::kx::sys;

    /// `rx_buf_size`: bytes of one rx buffer, header included, as given (unchecked).
    pub(crate) fn rx_buf_size() -> u32 {
        // SAFETY: A read of a read-only parameter, set before the module's `init` runs.
        unsafe { sys::rvsock_hv_rx_buf_size() }
    }
}

/// A private workqueue (`alloc_workqueue`), drained and destroyed on drop.  It dereferences to
/// the `kernel` crate's [`kernel::workqueue::Queue`], so work items are enqueued as on the
/// system queues.
///
/// Drop it from process context and never from a work item running on it (destroying a queue
/// waits for its own work: that would not finish).
///
/// # Invariants
///
/// `.0` is a workqueue from `alloc_workqueue`, destroyed only by `drop`.
pub(crate) struct WorkQueue(NonNull<sys::workqueue_struct>);

// SAFETY: A workqueue may be used and destroyed from any thread.
unsafe impl Send for WorkQueue {}
// SAFETY: Queueing and flushing are thread-safe.
unsafe impl Sync for WorkQueue {}

impl WorkQueue {
    /// Allocates a workqueue named `name` (a plain, per-CPU one).  Process context.
    pub(crate) fn new(name: &'static CStr) -> Result<Self> {
        // SAFETY: FFI call; `name` is a NUL-terminated static string.
        let wq = unsafe { sys::rvsock_hv_alloc_wq(name.as_char_ptr().cast()) };
        // INVARIANT: Fresh from `alloc_workqueue`.
        NonNull::new(wq).map(WorkQueue).ok_or(ENOMEM)
    }

    /// Waits until every work item queued before this call has finished (`flush_workqueue`).
    /// Process context; not from a work item of this queue.
    pub(crate) fn flush(&self) {
        // SAFETY: A live workqueue (type invariant).
        unsafe { sys::rvsock_hv_flush_wq(self.0.as_ptr()) };
    }
}

impl core::ops::Deref for WorkQueue {
    type Target = kernel::workqueue::Queue;

    fn deref(&self) -> &kernel::workqueue::Queue {
        // SAFETY: A live workqueue (type invariant) that outlives the borrow; it is destroyed
        // only in `drop`, which `&self` excludes.
        unsafe { kernel::workqueue::Queue::from_raw(self.0.as_ptr().cast()) }
    }
}

impl Drop for WorkQueue {
    fn drop(&mut self) {
        // SAFETY: A live workqueue (type invariant), destroyed once; `destroy_workqueue` drains
        // it first.  Nothing can queue on it any more: every `&Queue` borrowed from `self`
        // ended.
        unsafe { sys::rvsock_hv_destroy_wq(self.0.as_ptr()) };
    }
}
