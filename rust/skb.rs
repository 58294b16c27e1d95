// SPDX-License-Identifier: GPL-2.0

//! Socket buffers: packets of the virtio-vsock protocol.
//!
//! C header: [`include/linux/skbuff.h`](srctree/include/linux/skbuff.h)
//!
//! A packet is an `sk_buff` whose 44-byte header lives in the headroom (at `skb->head`) and whose
//! payload is `skb->data .. + skb->len`, linear or in page fragments, as in Linux's virtio-vsock
//! code; transports move the same buffers.  [`Skb`] is the borrowed view, [`SkBuff`] owns one,
//! and [`SkbList`] is a FIFO of owned buffers linked through `skb->next`.

use crate::kx::msg::Msg;
use crate::kx::sys;
use crate::kx::Gfp;
use crate::proto::hdr::{Hdr, HDR_LEN};
use core::ptr::NonNull;
use kernel::error::{code::*, to_result, Result};
use kernel::types::Opaque;

/// Per-packet state kept in `skb->cb` while rvsock owns the buffer.
///
/// Every field is a plain integer, so any bytes a transport left in `skb->cb` read as a valid
/// value; the receive path overwrites the whole of it anyway before use.
#[repr(C)]
#[derive(Clone, Copy, Default)]
pub(crate) struct SkbCb {
    /// Payload bytes already consumed by reads.
    pub(crate) offset: u32,
    /// Payload bytes counted in the sender's unsent bytes (`SIOCOUTQ`).
    pub(crate) unsent: u32,
    /// Identity of the transport the packet travels on (rvsock's registry id).
    pub(crate) transport: u64,
    /// The protocol's own per-packet flags.
    pub(crate) flags: u32,
}

const _: () = assert!(core::mem::size_of::<SkbCb>() <= sys::SOCK_CB_SIZE as usize);

/// A socket buffer.
///
/// # Invariants
///
/// The wrapped `struct sk_buff` is valid while the reference is.
#[repr(transparent)]
pub(crate) struct Skb(Opaque<sys::sk_buff>);

impl Skb {
    /// Borrows the `Skb` behind a raw pointer.
    ///
    /// # Safety
    ///
    /// `ptr` must point to a valid `sk_buff` that outlives `'a` and that nothing else mutates
    /// meanwhile.
    pub(crate) unsafe fn from_raw<'a>(ptr: *mut sys::sk_buff) -> &'a Skb {
        // SAFETY: `Skb` is transparent over `Opaque<sk_buff>`; the caller guarantees validity.
        unsafe { &*ptr.cast() }
    }

    /// The raw pointer, for C calls.
    pub(crate) fn as_ptr(&self) -> *mut sys::sk_buff {
        self.0.get()
    }

    /// Payload bytes (`skb->len`).
    pub(crate) fn len(&self) -> u32 {
        // SAFETY: The type invariant makes the read valid.
        unsafe { (*self.as_ptr()).len }
    }

    /// Bytes between `skb->head` and `skb->data`.
    pub(crate) fn headroom(&self) -> usize {
        // SAFETY: The type invariant makes the reads valid; `data` never precedes `head`.
        unsafe { ((*self.as_ptr()).data as usize).saturating_sub((*self.as_ptr()).head as usize) }
    }

    /// The memory the buffer costs (`skb->truesize`).
    pub(crate) fn truesize(&self) -> u32 {
        // SAFETY: The type invariant makes the read valid.
        unsafe { (*self.as_ptr()).truesize }
    }

    /// Decodes the packet header at `skb->head`, or `None` if the headroom cannot hold one.
    pub(crate) fn hdr(&self) -> Option<Hdr> {
        if self.headroom() < HDR_LEN {
            return None;
        }
        let mut raw = [0u8; HDR_LEN];
        // SAFETY: The headroom holds `HDR_LEN` initialised bytes at `head` (checked above; every
        // packet's header is written there before the buffer is handed around).
        unsafe { core::ptr::copy_nonoverlapping((*self.as_ptr()).head, raw.as_mut_ptr(), HDR_LEN) };
        Some(Hdr::decode(&raw))
    }

    /// Writes the packet header at `skb->head`.  The buffer must have been allocated with
    /// [`SkBuff::alloc_pkt`], which reserves the room.
    pub(crate) fn set_hdr(&mut self, hdr: &Hdr) {
        if self.headroom() < HDR_LEN {
            return;
        }
        let raw = hdr.encode();
        // SAFETY: The headroom holds at least `HDR_LEN` bytes (checked above) and `&mut self`
        // gives exclusive access.
        unsafe { core::ptr::copy_nonoverlapping(raw.as_ptr(), (*self.as_ptr()).head, HDR_LEN) };
    }

    /// rvsock's per-packet state.
    pub(crate) fn cb(&self) -> SkbCb {
        // SAFETY: `cb` is 8-byte aligned and large enough for `SkbCb` (asserted above), and
        // every bit pattern of it is a valid `SkbCb` (integers only).
        unsafe { core::ptr::read((*self.as_ptr()).cb.as_ptr().cast::<SkbCb>()) }
    }

    /// Replaces rvsock's per-packet state.
    pub(crate) fn set_cb(&mut self, cb: SkbCb) {
        // SAFETY: As in `cb`; `&mut self` gives exclusive access.
        unsafe { core::ptr::write((*self.as_ptr()).cb.as_mut_ptr().cast::<SkbCb>(), cb) };
    }

    /// Whether the payload is (partly) in page fragments.
    pub(crate) fn is_nonlinear(&self) -> bool {
        // SAFETY: The type invariant makes the call valid.
        unsafe { sys::rvsock_h_skb_is_nonlinear(self.as_ptr()) }
    }

    /// Whether nothing else references the buffer or its data (neither shared nor cloned), as
    /// the transport ABI requires of received packets.
    pub(crate) fn is_exclusive(&self) -> bool {
        // SAFETY: The type invariant makes the call valid.
        unsafe { sys::rvsock_h_skb_exclusive(self.as_ptr()) }
    }

    /// Whether the payload is (partly) in user pages attached by a zerocopy send.
    pub(crate) fn has_user_pages(&self) -> bool {
        // SAFETY: The type invariant makes the call valid.
        unsafe { sys::rvsock_h_skb_zcopy(self.as_ptr()) }
    }

    /// Gives the payload in user pages its own copy, so that the buffer no longer holds them
    /// (`skb_copy_ubufs`); the zerocopy notification then reports a copy.  Nothing to do for
    /// other buffers.  `ENOMEM` leaves the buffer as it was.
    pub(crate) fn copy_user_pages(&mut self, gfp: Gfp) -> Result {
        if !self.has_user_pages() {
            return Ok(());
        }
        // SAFETY: `&mut self` is exclusive access to a buffer that is neither shared nor cloned
        // (rvsock never clones, and transports hand over exclusive buffers); the copy drops the
        // buffer's reference on the notification.
        to_result(unsafe { sys::skb_copy_ubufs(self.as_ptr(), gfp.raw()) })
    }

    /// The payload was copied elsewhere and the buffer is about to be freed: its user pages,
    /// if any, are released now with the notification reporting a copy, not a zerocopy send.
    pub(crate) fn release_user_pages_copied(&mut self) {
        if self.has_user_pages() {
            // SAFETY: `&mut self` is exclusive access; the call drops the buffer's reference on
            // the notification, which the buffer no longer points to afterwards.
            unsafe { sys::rvsock_h_skb_zcopy_clear(self.as_ptr()) };
        }
    }

    /// Free bytes after the linear data.
    pub(crate) fn tailroom(&self) -> u32 {
        // SAFETY: The type invariant makes the call valid.
        unsafe { sys::rvsock_h_skb_tailroom(self.as_ptr()) }
    }

    /// The buffer's linear memory, from `skb->head` to the end of the tailroom (header room,
    /// linear payload, tailroom): where a device writes a received packet.  The bytes may be
    /// uninitialised.  `None` if another buffer shares the data (shared or cloned).
    pub(crate) fn linear_room_mut(&mut self) -> Option<&mut [core::mem::MaybeUninit<u8>]> {
        if !self.is_exclusive() {
            return None;
        }
        // SAFETY: The type invariant makes the reads valid; `data_len <= len`.
        let headlen = unsafe { (*self.as_ptr()).len - (*self.as_ptr()).data_len };
        let n = self.headroom() + headlen as usize + self.tailroom() as usize;
        // SAFETY: `head .. head + n` is the buffer's linear area (headroom, linear data and
        // tailroom, up to the end pointer), allocated with the buffer and not shared with
        // another (checked above); `&mut self` gives exclusive access for the borrow, and
        // `MaybeUninit` admits any contents.
        Some(unsafe { core::slice::from_raw_parts_mut((*self.as_ptr()).head.cast(), n) })
    }

    /// Copies `len` payload bytes starting at `offset` into the message's iterator.  `EFAULT` if
    /// the user buffer faults; the iterator then advanced by what was copied.
    pub(crate) fn copy_to_msg(&self, offset: u32, msg: &mut Msg<'_>, len: usize) -> Result {
        if offset as usize + len > self.len() as usize {
            return Err(EINVAL);
        }
        // SAFETY: The buffer is valid; `msg.iter()` is the message's live iterator; the range
        // is within the payload (checked above).
        to_result(unsafe {
            sys::skb_copy_datagram_iter(self.as_ptr(), offset as i32, msg.iter(), len as i32)
        })
    }

    /// Appends `len` payload bytes of `src`, from `offset`, to this buffer's linear data.
    pub(crate) fn append_from(&mut self, src: &Skb, offset: u32, len: u32) -> Result {
        if self.is_nonlinear()
            || len > self.tailroom()
            || offset as u64 + len as u64 > src.len() as u64
        {
            return Err(EINVAL);
        }
        // SAFETY: `skb_put` returns `len` bytes of room (within the tailroom, checked above) in
        // this buffer, which is distinct from `src`; the source range is within its payload.
        to_result(unsafe {
            let dst = sys::skb_put(self.as_ptr(), len);
            sys::skb_copy_bits(src.as_ptr(), offset as i32, dst, len as i32)
        })
    }

    /// Charges the buffer to `sk`'s write allocation (`skb_set_owner_w`).
    ///
    /// # Safety
    ///
    /// `sk` must be a valid socket; the buffer must have no owner yet.
    pub(crate) unsafe fn set_owner_w(&mut self, sk: *mut sys::sock) {
        // SAFETY: Guaranteed by the caller.
        unsafe { sys::skb_set_owner_w(self.as_ptr(), sk) };
    }

    /// The socket the buffer is charged to (`skb->sk`), if any.
    pub(crate) fn owner(&self) -> *mut sys::sock {
        // SAFETY: The type invariant makes the read valid.
        unsafe { (*self.as_ptr()).sk }
    }

    /// Drops the buffer's owner (`skb_orphan`), running its destructor.
    pub(crate) fn orphan(&mut self) {
        // SAFETY: The type invariant makes the call valid.
        unsafe { sys::rvsock_h_skb_orphan(self.as_ptr()) };
    }

    fn next(&self) -> *mut sys::sk_buff {
        // SAFETY: The type invariant makes the read valid.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.next }
    }

    fn set_next(&self, next: *mut sys::sk_buff) {
        // SAFETY: The type invariant makes the write valid; `next` is only used by `SkbList`,
        // which owns the buffer.
        unsafe { (*self.as_ptr()).__bindgen_anon_1.__bindgen_anon_1.next = next };
    }
}

/// What a device transport needs to lend a packet to a device (`rvsock_virtio.ko` only: the
/// helpers are in `rust/virtio_helpers.c`).
#[cfg(rvsock_virtio)]
impl Skb {
    /// The packet header as it is at `skb->head` (the header room in front of the data); `None`
    /// if the headroom cannot hold one.
    pub(crate) fn hdr_bytes(&self) -> Option<&[u8]> {
        if self.headroom() < HDR_LEN {
            return None;
        }
        // SAFETY: The headroom holds `HDR_LEN` bytes at `head` (checked above), initialised as
        // in `hdr`; the borrow of `self` keeps the buffer alive and, being shared, unmodified.
        Some(unsafe { core::slice::from_raw_parts((*self.as_ptr()).head, HDR_LEN) })
    }

    /// The linear part of the payload (`skb->data`, `skb_headlen()` bytes).
    pub(crate) fn linear_data(&self) -> &[u8] {
        // SAFETY: The type invariant makes the reads valid; `data_len <= len`, and the linear
        // payload `data .. data + len - data_len` is initialised (it was put there).
        unsafe {
            let skb = self.as_ptr();
            let n = ((*skb).len - (*skb).data_len) as usize;
            if n == 0 {
                return &[];
            }
            core::slice::from_raw_parts((*skb).data, n)
        }
    }

    /// The number of page fragments.
    pub(crate) fn nr_frags(&self) -> usize {
        // SAFETY: The type invariant makes the call valid.
        unsafe { sys::rvsock_hv_skb_nr_frags(self.as_ptr()) as usize }
    }
}

/// An owned socket buffer, freed when dropped (as a drop, `kfree_skb`; [`SkBuff::consume`]
/// frees it as consumed).
///
/// # Invariants
///
/// `self.0` is a valid `sk_buff` owned by this value and in no list.
pub(crate) struct SkBuff(NonNull<sys::sk_buff>);

// SAFETY: An `sk_buff` may be freed and used from any thread; the owner has exclusive access.
unsafe impl Send for SkBuff {}

impl SkBuff {
    /// Takes ownership of a raw buffer.
    ///
    /// # Safety
    ///
    /// `ptr` must be a valid `sk_buff` whose ownership passes to the new value.
    pub(crate) unsafe fn from_raw(ptr: NonNull<sys::sk_buff>) -> Self {
        // INVARIANT: Guaranteed by the caller.
        SkBuff(ptr)
    }

    /// Gives up ownership.
    pub(crate) fn into_raw(self) -> *mut sys::sk_buff {
        let p = self.0.as_ptr();
        core::mem::forget(self);
        p
    }

    /// A packet buffer with room for the header in front and `payload` bytes after it
    /// (linear when small, page fragments otherwise).
    pub(crate) fn alloc_pkt(payload: u32, gfp: Gfp) -> Result<Self> {
        // SAFETY: FFI call without preconditions.
        let p = unsafe { sys::rvsock_h_alloc_skb(HDR_LEN as u32, payload, false, gfp.raw()) };
        // INVARIANT: A fresh buffer, owned by nobody else.
        NonNull::new(p).map(SkBuff).ok_or(ENOMEM)
    }

    /// A packet buffer whose payload room is linear, for collapsing queued packets.
    pub(crate) fn alloc_linear_pkt(payload: u32, gfp: Gfp) -> Result<Self> {
        // SAFETY: FFI call without preconditions.
        let p = unsafe { sys::rvsock_h_alloc_skb(HDR_LEN as u32, payload, true, gfp.raw()) };
        // INVARIANT: A fresh buffer, owned by nobody else.
        NonNull::new(p).map(SkBuff).ok_or(ENOMEM)
    }

    /// Fills the payload of a fresh buffer with `len` bytes from the message.  On a fault the
    /// error is `EFAULT` and the buffer should be dropped.
    pub(crate) fn fill_from_msg(&mut self, msg: &mut Msg<'_>, len: u32) -> Result {
        // SAFETY: The buffer is fresh from `alloc_pkt` with room for at least `len` bytes (the
        // caller's contract), which `put_payload` accounts; the iterator is the message's.
        unsafe {
            sys::rvsock_h_skb_put_payload(self.as_ptr(), len);
            to_result(sys::skb_copy_datagram_from_iter_full(
                self.as_ptr(),
                0,
                msg.iter(),
                len as i32,
            ))
        }
    }

    /// Fills the payload of a fresh buffer with kernel data (test transports).
    pub(crate) fn fill_from_slice(&mut self, data: &[u8]) -> Result {
        let len = u32::try_from(data.len()).map_err(|_| EINVAL)?;
        if self.is_nonlinear() || len > self.tailroom() {
            return Err(EINVAL);
        }
        // SAFETY: `skb_put` returns `len` bytes of room in the linear data (checked above).
        unsafe {
            let dst = sys::skb_put(self.as_ptr(), len);
            core::ptr::copy_nonoverlapping(data.as_ptr(), dst.cast::<u8>(), data.len());
        }
        Ok(())
    }

    /// Accounts `len` payload bytes that a device wrote after the header into the linear room
    /// of a receive buffer ([`Skb::linear_room_mut`]): `skb_put`.  `EINVAL` if the buffer is
    /// nonlinear or the tailroom is shorter.
    pub(crate) fn put_received(&mut self, len: u32) -> Result {
        if self.is_nonlinear() || len > self.tailroom() {
            return Err(EINVAL);
        }
        // SAFETY: `len` bytes of tailroom exist (checked above); `skb_put` only moves `tail`.
        unsafe { sys::skb_put(self.as_ptr(), len) };
        Ok(())
    }

    /// Frees the buffer as consumed (not dropped).
    pub(crate) fn consume(self) {
        // SAFETY: The buffer is owned (type invariant) and given up here.
        unsafe { sys::rvsock_h_consume_skb(self.into_raw()) };
    }
}

impl core::ops::Deref for SkBuff {
    type Target = Skb;

    fn deref(&self) -> &Skb {
        // SAFETY: The buffer is valid while owned (type invariant).
        unsafe { Skb::from_raw(self.0.as_ptr()) }
    }
}

impl core::ops::DerefMut for SkBuff {
    fn deref_mut(&mut self) -> &mut Skb {
        // SAFETY: The buffer is valid while owned and `&mut self` is exclusive.
        unsafe { &mut *self.0.as_ptr().cast() }
    }
}

impl Drop for SkBuff {
    fn drop(&mut self) {
        // SAFETY: The buffer is owned (type invariant) and freed once, here.
        unsafe { sys::rvsock_h_kfree_skb(self.0.as_ptr()) };
    }
}

/// A FIFO of owned socket buffers, linked through `skb->next`.
///
/// # Invariants
///
/// `head` .. `tail` is a chain of `len` valid buffers, each owned by the list and linked by
/// `next`, the last one's `next` null; both are null when the list is empty.
pub(crate) struct SkbList {
    head: *mut sys::sk_buff,
    tail: *mut sys::sk_buff,
    len: usize,
}

// SAFETY: The list owns its buffers (see `SkBuff: Send`).
unsafe impl Send for SkbList {}

impl SkbList {
    /// An empty list.
    pub(crate) const fn new() -> Self {
        // INVARIANT: The empty list.
        SkbList {
            head: core::ptr::null_mut(),
            tail: core::ptr::null_mut(),
            len: 0,
        }
    }

    /// Number of buffers.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Whether the list is empty.
    pub(crate) fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends a buffer.
    pub(crate) fn push_back(&mut self, skb: SkBuff) {
        skb.set_next(core::ptr::null_mut());
        let p = skb.into_raw();
        if self.tail.is_null() {
            self.head = p;
        } else {
            // SAFETY: `tail` is a valid buffer of the list (type invariant).
            unsafe { Skb::from_raw(self.tail) }.set_next(p);
        }
        // INVARIANT: `p` is now the owned last element.
        self.tail = p;
        self.len += 1;
    }

    /// Puts a buffer back at the head.
    pub(crate) fn push_front(&mut self, skb: SkBuff) {
        skb.set_next(self.head);
        let p = skb.into_raw();
        if self.tail.is_null() {
            self.tail = p;
        }
        // INVARIANT: `p` is now the owned first element, linked to the old head.
        self.head = p;
        self.len += 1;
    }

    /// Removes the first buffer.
    pub(crate) fn pop_front(&mut self) -> Option<SkBuff> {
        let p = NonNull::new(self.head)?;
        // SAFETY: `head` is a valid, owned buffer of the list (type invariant).
        let next = unsafe { Skb::from_raw(p.as_ptr()) }.next();
        self.head = next;
        if next.is_null() {
            self.tail = core::ptr::null_mut();
        }
        self.len -= 1;
        // SAFETY: The buffer was owned by the list and is unlinked now.
        let skb = unsafe { SkBuff::from_raw(p) };
        skb.set_next(core::ptr::null_mut());
        Some(skb)
    }

    /// The first buffer.
    pub(crate) fn front(&self) -> Option<&Skb> {
        // SAFETY: `head` is null or a valid buffer owned by the list, which `&self` borrows.
        (!self.head.is_null()).then(|| unsafe { Skb::from_raw(self.head) })
    }

    /// The first buffer, mutably.
    pub(crate) fn front_mut(&mut self) -> Option<&mut Skb> {
        // SAFETY: As in `front`, with `&mut self` giving exclusive access.
        (!self.head.is_null()).then(|| unsafe { &mut *self.head.cast::<Skb>() })
    }

    /// The last buffer, mutably.
    pub(crate) fn back_mut(&mut self) -> Option<&mut Skb> {
        // SAFETY: `tail` is null or a valid buffer owned by the list; `&mut self` is exclusive.
        (!self.tail.is_null()).then(|| unsafe { &mut *self.tail.cast::<Skb>() })
    }

    /// Iterates over the buffers, first to last.
    pub(crate) fn iter(&self) -> SkbIter<'_> {
        SkbIter {
            next: self.head,
            _list: self,
        }
    }

    /// Calls `f` on each buffer, first to last.
    pub(crate) fn for_each_mut(&mut self, mut f: impl FnMut(&mut Skb)) {
        let mut p = self.head;
        while !p.is_null() {
            // SAFETY: `p` is a valid buffer owned by the list (type invariant); `&mut self`
            // makes the access exclusive, and `f` cannot unlink it.
            let skb = unsafe { &mut *p.cast::<Skb>() };
            p = skb.next();
            f(skb);
        }
    }

    /// Frees every buffer.
    pub(crate) fn clear(&mut self) {
        while let Some(skb) = self.pop_front() {
            drop(skb);
        }
    }
}

impl Default for SkbList {
    fn default() -> Self {
        SkbList::new()
    }
}

impl Drop for SkbList {
    fn drop(&mut self) {
        self.clear();
    }
}

/// Iterator over an [`SkbList`].
pub(crate) struct SkbIter<'a> {
    next: *mut sys::sk_buff,
    _list: &'a SkbList,
}

impl<'a> Iterator for SkbIter<'a> {
    type Item = &'a Skb;

    fn next(&mut self) -> Option<&'a Skb> {
        if self.next.is_null() {
            return None;
        }
        // SAFETY: `next` is a valid buffer of the borrowed list.
        let skb = unsafe { Skb::from_raw(self.next) };
        self.next = skb.next();
        Some(skb)
    }
}
