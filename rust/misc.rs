// SPDX-License-Identifier: GPL-2.0

//! Miscellaneous character devices (`/dev/<name>`, major 10) with an ioctl handler.
//!
//! C header: [`include/linux/miscdevice.h`](srctree/include/linux/miscdevice.h)

use crate::kx::socket::UserPtr;
use crate::kx::sys;
use core::marker::PhantomData;
use core::sync::atomic::{AtomicBool, Ordering};
use kernel::error::{from_result, to_result, Result};
use kernel::prelude::*;
use kernel::types::Opaque;

/// What a misc device does.
pub(crate) trait MiscDevice: 'static {
    /// Handles an ioctl; `ENOTTY` for unknown commands.
    fn ioctl(cmd: u32, arg: UserPtr) -> Result<i32>;
}

/// A registered misc device.
///
/// # Invariants
///
/// When `registered` is set, `dev` is registered with `misc_register` and points at `fops`.
#[pin_data(PinnedDrop)]
pub(crate) struct MiscReg<T: MiscDevice> {
    #[pin]
    dev: Opaque<sys::miscdevice>,
    #[pin]
    fops: Opaque<sys::file_operations>,
    registered: AtomicBool,
    _t: PhantomData<T>,
}

// SAFETY: The registered structures are only read by the misc and VFS layers.
unsafe impl<T: MiscDevice> Sync for MiscReg<T> {}
// SAFETY: As above.
unsafe impl<T: MiscDevice> Send for MiscReg<T> {}

impl<T: MiscDevice> MiscReg<T> {
    /// Registers `/dev/<name>` with a dynamic minor.
    pub(crate) fn register(
        name: &'static CStr,
        module: &'static ThisModule,
    ) -> Result<Pin<KBox<Self>>> {
        let this = KBox::pin_init(
            pin_init!(Self {
                dev: Opaque::uninit(),
                fops: Opaque::uninit(),
                registered: AtomicBool::new(false),
                _t: PhantomData,
            }),
            GFP_KERNEL,
        )?;
        let fops = this.fops.get();
        let dev = this.dev.get();
        // SAFETY: Both are valid for writes and not shared yet; all-zero means "no operation"
        // for every optional entry.  Both live, pinned, as long as the registration.
        unsafe {
            fops.write_bytes(0, 1);
            (*fops).owner = module.as_ptr().cast();
            (*fops).open = Some(sys::nonseekable_open);
            (*fops).unlocked_ioctl = Some(ioctl_trampoline::<T>);
            #[cfg(CONFIG_COMPAT)]
            {
                (*fops).compat_ioctl = Some(sys::compat_ptr_ioctl);
            }
            dev.write_bytes(0, 1);
            (*dev).minor = sys::MISC_DYNAMIC_MINOR;
            (*dev).name = name.as_char_ptr().cast();
            (*dev).fops = fops;
            to_result(sys::misc_register(dev))?;
        }
        // INVARIANT: Registered just now, deregistered in `drop`.
        this.registered.store(true, Ordering::Release);
        Ok(this)
    }
}

#[pinned_drop]
impl<T: MiscDevice> PinnedDrop for MiscReg<T> {
    fn drop(self: Pin<&mut Self>) {
        if self.registered.load(Ordering::Acquire) {
            // SAFETY: Registered (type invariant).  Open files pin the module through
            // `fops.owner`, so none is left when this runs at module exit.
            unsafe { sys::misc_deregister(self.dev.get()) };
        }
    }
}

/// # Safety
///
/// Called by the VFS for an open file of the device with a user argument.
unsafe extern "C" fn ioctl_trampoline<T: MiscDevice>(
    _file: *mut sys::file,
    cmd: u32,
    arg: usize,
) -> isize {
    from_result(|| T::ioctl(cmd, UserPtr::new(arg)).map(|v| v as isize))
}
