// SPDX-License-Identifier: GPL-2.0

//! A module-wide value that C callbacks reach without an argument to carry it.
//!
//! The socket layer's `create` and the misc device's `ioctl` get no private pointer, so the
//! module publishes its state here at init and withdraws it at exit.

use core::sync::atomic::{AtomicPtr, Ordering};
use kernel::prelude::*;

/// A slot for a value of the module that lives from init to exit.
///
/// # Invariants
///
/// `ptr` is null or comes from `KBox::into_raw` of a pinned box, and stays valid until
/// [`ModuleGlobal::withdraw`].
pub(crate) struct ModuleGlobal<T> {
    ptr: AtomicPtr<T>,
}

impl<T: Sync> ModuleGlobal<T> {
    /// An empty slot.
    pub(crate) const fn new() -> Self {
        ModuleGlobal {
            ptr: AtomicPtr::new(core::ptr::null_mut()),
        }
    }

    /// Publishes `val`.  An earlier value, if any, is returned.
    fn publish(&self, val: Pin<KBox<T>>) -> Option<Pin<KBox<T>>> {
        // SAFETY: The box is turned back into one in `withdraw` only; the value stays pinned.
        let raw = KBox::into_raw(unsafe { Pin::into_inner_unchecked(val) });
        // INVARIANT: From `KBox::into_raw`.
        let old = self.ptr.swap(raw, Ordering::AcqRel);
        // SAFETY: `old` came from `KBox::into_raw` (type invariant) and is no longer published.
        (!old.is_null()).then(|| unsafe { Pin::new_unchecked(KBox::from_raw(old)) })
    }

    /// The published value.
    pub(crate) fn get(&self) -> Option<&T> {
        let p = self.ptr.load(Ordering::Acquire);
        // SAFETY: Non-null pointers are valid until withdrawn (type invariant), and `withdraw`'s
        // contract says no user of this reference remains by then.
        (!p.is_null()).then(|| unsafe { &*p })
    }

    /// Publishes `val` and then makes the registrations through which the kernel calls the
    /// module (`regs`, given the published value).  The result withdraws the value when dropped,
    /// after dropping the registrations and running `quiesce` (e.g. draining the module's
    /// workqueue).  If `regs` fails, the value is withdrawn at once.
    pub(crate) fn publish_with<R>(
        &'static self,
        val: Pin<KBox<T>>,
        quiesce: fn(),
        regs: impl FnOnce(&'static T) -> Result<R>,
    ) -> Result<Published<T, R>> {
        if let Some(old) = self.publish(val) {
            // Published twice: keep the first, never lose track of either.
            let _ = self.publish(old);
            return Err(EBUSY);
        }
        let mut published = Published {
            global: self,
            regs: None,
            quiesce,
        };
        let v = self.get().ok_or(EINVAL)?;
        published.regs = Some(regs(v)?);
        Ok(published)
    }

    /// Withdraws the value.
    ///
    /// # Safety
    ///
    /// No reference obtained from [`ModuleGlobal::get`] may be in use or taken later: every
    /// callback that reads the slot must be unregistered, and finished, before this is called.
    unsafe fn withdraw(&self) -> Option<Pin<KBox<T>>> {
        let old = self.ptr.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: From `KBox::into_raw` (type invariant); unpublished now.
        (!old.is_null()).then(|| unsafe { Pin::new_unchecked(KBox::from_raw(old)) })
    }
}

/// A value published in a [`ModuleGlobal`] for as long as the registrations `R` that reach it.
///
/// A module keeps this in its module object: dropping it (module exit, or a failed init) drops
/// the registrations, runs `quiesce`, and only then withdraws and frees the value.
///
/// # Invariants
///
/// `global` holds the value until `drop`.  Its readers are callbacks of the registrations in
/// `regs` (their unregistration waits for running calls) and work that the module's own objects
/// (sockets, their timers) run while they pin the module; when this is dropped from module exit,
/// no such object is left, and `quiesce` waits for work that is still finishing.
pub(crate) struct Published<T: Sync + 'static, R> {
    global: &'static ModuleGlobal<T>,
    regs: Option<R>,
    quiesce: fn(),
}

impl<T: Sync + 'static, R> Published<T, R> {
    /// The registrations.
    pub(crate) fn regs_mut(&mut self) -> Option<&mut R> {
        self.regs.as_mut()
    }
}

impl<T: Sync + 'static, R> Drop for Published<T, R> {
    fn drop(&mut self) {
        drop(self.regs.take());
        (self.quiesce)();
        // SAFETY: The registrations are gone and their calls finished, and `quiesce` waited for
        // the module's remaining work (type invariant): nobody reads the slot any more.
        drop(unsafe { self.global.withdraw() });
    }
}
