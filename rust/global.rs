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
    pub(crate) fn publish(&self, val: Pin<KBox<T>>) -> Option<Pin<KBox<T>>> {
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

    /// Withdraws the value.
    ///
    /// # Safety
    ///
    /// No reference obtained from [`ModuleGlobal::get`] may be in use or taken later: every
    /// callback that reads the slot must be unregistered, and finished, before this is called.
    pub(crate) unsafe fn withdraw(&self) -> Option<Pin<KBox<T>>> {
        let old = self.ptr.swap(core::ptr::null_mut(), Ordering::AcqRel);
        // SAFETY: From `KBox::into_raw` (type invariant); unpublished now.
        (!old.is_null()).then(|| unsafe { Pin::new_unchecked(KBox::from_raw(old)) })
    }
}
