// SPDX-License-Identifier: GPL-2.0

//! Fuzzes what a virtio-vsock device controls of a used buffer: its bytes and the used length
//! it reports, through header decoding, `validate_rx` and the event decoder, as the guest
//! driver does.  Any panic, and any accepted packet that would read past what the device was
//! lent or wrote, is a finding.

#![no_main]

use libfuzzer_sys::fuzz_target;
use rvsock_proto::hdr::{Hdr, HDR_LEN, MAX_PKT_PAYLOAD};
use rvsock_proto::virtio::{event_id, validate_rx, EVENT_LEN};

fuzz_target!(|data: &[u8]| {
    // The first four bytes are the used length (le32), the rest the buffer as lent.
    let Some((used, buf)) = data.split_first_chunk::<4>() else {
        return;
    };
    let used_len = u32::from_le_bytes(*used);
    // The driver decodes the header from the buffer's head, zeroed before it was lent.
    let mut head = [0u8; HDR_LEN];
    let n = buf.len().min(HDR_LEN);
    head[..n].copy_from_slice(&buf[..n]);
    let hdr = Hdr::decode(&head);
    if let Ok(len) = validate_rx(used_len, buf.len(), &hdr) {
        assert_eq!(len, hdr.len);
        assert!(len <= MAX_PKT_PAYLOAD);
        let end = HDR_LEN + len as usize;
        assert!(end <= used_len as usize && used_len as usize <= buf.len());
        assert!(buf.get(HDR_LEN..end).is_some());
    }
    if let Some(id) = event_id(used_len, buf) {
        assert!(used_len as usize >= EVENT_LEN && used_len as usize <= buf.len());
        assert_eq!(id.to_le_bytes(), buf[..EVENT_LEN]);
    }
});
