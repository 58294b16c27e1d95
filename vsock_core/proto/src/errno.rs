// SPDX-License-Identifier: GPL-2.0

//! Linux error numbers, as the protocol logic reports them.
//!
//! The values are the x86-64 (and generic) `errno` numbers; the kernel glue turns an [`Errno`]
//! into a `kernel::error::Error` with `-errno`.

/// A positive Linux error number.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Errno(u16);

macro_rules! errnos {
    ($($name:ident = $val:literal: $doc:literal,)*) => {
        impl Errno {
            $(
                #[doc = $doc]
                pub const $name: Errno = Errno($val);
            )*
        }
    };
}

errnos! {
    EPERM = 1: "Operation not permitted.",
    EINTR = 4: "Interrupted system call.",
    EAGAIN = 11: "Try again.",
    ENOMEM = 12: "Out of memory.",
    EACCES = 13: "Permission denied.",
    EFAULT = 14: "Bad address.",
    EBUSY = 16: "Device or resource busy.",
    EEXIST = 17: "File exists.",
    ENODEV = 19: "No such device.",
    EINVAL = 22: "Invalid argument.",
    ENOTTY = 25: "Not a typewriter.",
    EPIPE = 32: "Broken pipe.",
    ERANGE = 34: "Math result not representable.",
    EDESTADDRREQ = 89: "Destination address required.",
    EMSGSIZE = 90: "Message too long.",
    ENOPROTOOPT = 92: "Protocol not available.",
    EPROTONOSUPPORT = 93: "Protocol not supported.",
    ESOCKTNOSUPPORT = 94: "Socket type not supported.",
    EOPNOTSUPP = 95: "Operation not supported on transport endpoint.",
    EAFNOSUPPORT = 97: "Address family not supported by protocol.",
    EADDRINUSE = 98: "Address already in use.",
    EADDRNOTAVAIL = 99: "Cannot assign requested address.",
    ENETUNREACH = 101: "Network is unreachable.",
    ECONNRESET = 104: "Connection reset by peer.",
    ENOBUFS = 105: "No buffer space available.",
    EISCONN = 106: "Transport endpoint is already connected.",
    ENOTCONN = 107: "Transport endpoint is not connected.",
    ESHUTDOWN = 108: "Cannot send after transport endpoint shutdown.",
    ETIMEDOUT = 110: "Connection timed out.",
    EALREADY = 114: "Operation already in progress.",
    EINPROGRESS = 115: "Operation now in progress.",
    EPROTO = 71: "Protocol error.",
}

impl Errno {
    /// The positive error number.
    pub const fn get(self) -> i32 {
        self.0 as i32
    }
}
