// SPDX-License-Identifier: GPL-2.0

//! What a virtio-vsock guest driver checks of the buffers its (untrusted) device hands back.
//!
//! The event queue carries `struct virtio_vsock_event`: one le32 `id` at offset 0.  The device
//! reports how many bytes it wrote (the used length); the driver reads only what it lent and
//! what the device says it wrote.

/// Bytes of `struct virtio_vsock_event` (a le32 `id`).
pub const EVENT_LEN: usize = 4;
/// `VIRTIO_VSOCK_EVENT_TRANSPORT_RESET`: the device was migrated; CID and connections are gone.
pub const EVENT_TRANSPORT_RESET: u32 = 0;

/// The event id of a used event buffer: `buf` is the buffer lent to the device, `used_len` the
/// length the device reported.  `None` (the event is ignored, as upstream does) when the device
/// wrote less than an event, or claims more than it was lent.
pub fn event_id(used_len: u32, buf: &[u8]) -> Option<u32> {
    let used = usize::try_from(used_len).ok()?;
    if used < EVENT_LEN || used > buf.len() {
        return None;
    }
    let id = buf.get(..EVENT_LEN)?;
    Some(u32::from_le_bytes([id[0], id[1], id[2], id[3]]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn event_is_a_le32_at_offset_0() {
        assert_eq!(event_id(4, &[0, 0, 0, 0]), Some(EVENT_TRANSPORT_RESET));
        assert_eq!(event_id(4, &[1, 2, 3, 4]), Some(0x0403_0201));
        assert_eq!(event_id(3, &[0, 0, 0, 0]), None);
        assert_eq!(event_id(5, &[0, 0, 0, 0]), None);
        assert_eq!(event_id(4, &[0, 0, 0]), None);
        assert_eq!(event_id(u32::MAX, &[0; 8]), None);
    }

    proptest! {
        #[test]
        fn event_needs_a_whole_id_within_the_buffer(used_len: u32, buf in proptest::collection::vec(any::<u8>(), 0..16)) {
            let got = event_id(used_len, &buf);
            let ok = used_len as usize >= EVENT_LEN && used_len as usize <= buf.len();
            prop_assert_eq!(got.is_some(), ok);
            if let Some(id) = got {
                prop_assert_eq!(id.to_le_bytes(), [buf[0], buf[1], buf[2], buf[3]]);
            }
        }
    }
}
