// SPDX-License-Identifier: GPL-2.0

//! The poll/epoll mask of a stream or seqpacket socket (`vsock_poll`), as a pure function of
//! the socket's state.

use super::conn::{SkState, RCV_SHUTDOWN, SEND_SHUTDOWN, SHUTDOWN_MASK};

/// `EPOLLIN`.
pub const EPOLLIN: u32 = 0x0001;
/// `EPOLLOUT`.
pub const EPOLLOUT: u32 = 0x0004;
/// `EPOLLERR`.
pub const EPOLLERR: u32 = 0x0008;
/// `EPOLLHUP`.
pub const EPOLLHUP: u32 = 0x0010;
/// `EPOLLRDNORM`.
pub const EPOLLRDNORM: u32 = 0x0040;
/// `EPOLLWRNORM`.
pub const EPOLLWRNORM: u32 = 0x0100;
/// `EPOLLRDHUP`.
pub const EPOLLRDHUP: u32 = 0x2000;

/// What the mask depends on.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PollInput {
    /// Connection state.
    pub state: SkState,
    /// Local shutdown bits (`sk_shutdown`).
    pub shutdown: u8,
    /// Peer shutdown bits.
    pub peer_shutdown: u8,
    /// A socket error is pending or the error queue is not empty.
    pub error: bool,
    /// Listening with a connection ready to accept.
    pub accept_ready: bool,
    /// A transport is assigned.
    pub has_transport: bool,
    /// Readable bytes reach the receive low-water mark.
    pub readable: bool,
    /// Credit allows sending at least one byte.
    pub writable: bool,
}

/// Computes the mask.
///
/// `EPOLLIN` respects `SO_RCVLOWAT` (for SEQPACKET it counts bytes, not whole messages, as
/// upstream); a peer write shutdown gives `EPOLLRDHUP|EPOLLIN` but `EPOLLHUP` only together with
/// a local write shutdown; a closed socket is writable unless shut down for sending (as INET).
pub fn mask(p: &PollInput) -> u32 {
    let mut mask = 0;
    if p.error {
        mask |= EPOLLERR;
    }
    if p.state == SkState::Listen && p.accept_ready {
        mask |= EPOLLIN | EPOLLRDNORM;
    }
    if p.has_transport && p.shutdown & RCV_SHUTDOWN == 0 && p.readable {
        mask |= EPOLLIN | EPOLLRDNORM;
    }
    if p.shutdown == SHUTDOWN_MASK
        || (p.shutdown & SEND_SHUTDOWN != 0 && p.peer_shutdown & SEND_SHUTDOWN != 0)
    {
        mask |= EPOLLHUP;
    }
    if p.shutdown & RCV_SHUTDOWN != 0 || p.peer_shutdown & SEND_SHUTDOWN != 0 {
        mask |= EPOLLRDHUP | EPOLLIN | EPOLLRDNORM;
    }
    if p.has_transport
        && p.state == SkState::Established
        && p.shutdown & SEND_SHUTDOWN == 0
        && p.writable
    {
        mask |= EPOLLOUT | EPOLLWRNORM;
    }
    if matches!(p.state, SkState::Close | SkState::Closing) && p.shutdown & SEND_SHUTDOWN == 0 {
        mask |= EPOLLOUT | EPOLLWRNORM;
    }
    mask
}

#[cfg(test)]
mod tests {
    use super::*;

    fn established() -> PollInput {
        PollInput {
            state: SkState::Established,
            has_transport: true,
            ..PollInput::default()
        }
    }

    #[test]
    fn rcvlowat_gates_pollin() {
        // vsock_test 10: below the mark nothing, at the mark exactly POLLIN|POLLRDNORM (the
        // test polls only for those).
        let p = established();
        assert_eq!(mask(&p) & (EPOLLIN | EPOLLRDNORM), 0);
        let p = PollInput {
            readable: true,
            ..p
        };
        assert_eq!(
            mask(&p) & (EPOLLIN | EPOLLRDNORM | EPOLLERR | EPOLLHUP),
            EPOLLIN | EPOLLRDNORM
        );
    }

    #[test]
    fn peer_close_is_rdhup_not_hup() {
        let p = PollInput {
            peer_shutdown: SHUTDOWN_MASK,
            ..established()
        };
        let m = mask(&p);
        assert_ne!(m & EPOLLRDHUP, 0);
        assert_eq!(m & EPOLLHUP, 0);
        let p = PollInput {
            shutdown: SEND_SHUTDOWN,
            ..p
        };
        assert_ne!(mask(&p) & EPOLLHUP, 0);
    }

    #[test]
    fn fresh_socket_is_writable_connecting_is_silent() {
        assert_eq!(mask(&PollInput::default()), EPOLLOUT | EPOLLWRNORM);
        let p = PollInput {
            state: SkState::SynSent,
            has_transport: true,
            writable: true,
            ..PollInput::default()
        };
        assert_eq!(mask(&p), 0);
    }
}
