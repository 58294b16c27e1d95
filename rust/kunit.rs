// SPDX-License-Identifier: GPL-2.0

//! KUnit suites written in Rust.
//!
//! 6.12 has no `#[kunit_tests]`; [`kunit_suite!`] builds the same C structures the C
//! `kunit_test_suite()` macro does and places a pointer to the suite in the
//! `.kunit_test_suites` section, which the module loader hands to KUnit.  The suites run when the
//! module is loaded and report KTAP on the kernel log.
//!
//! A test is a plain `fn() -> TestResult`; the [`kcheck!`] family of macros returns a
//! [`Failure`] naming the file, line and failed condition, which the trampoline reports to KUnit.

use core::fmt::{self, Write};
use kernel::prelude::*;

/// Why a test case failed: the location and a short, NUL-terminated message.
pub(crate) struct Failure {
    msg: Option<KBox<[u8; 256]>>,
}

/// The result of one test case.
pub(crate) type TestResult = core::result::Result<(), Failure>;

impl Failure {
    /// Builds a failure from a location and a formatted message (truncated to fit).
    pub(crate) fn new(file: &str, line: u32, args: fmt::Arguments<'_>) -> Self {
        let mut buf = KBox::new([0u8; 256], GFP_KERNEL).ok();
        if let Some(b) = buf.as_mut() {
            let mut w = Cursor {
                buf: &mut b[..],
                len: 0,
            };
            // Truncation is the only possible error, and a truncated message is still useful.
            let _ = write!(w, "{file}:{line}: {args}");
        }
        Failure { msg: buf }
    }

    /// The message as a C string; the last byte of the buffer is never written, so it is
    /// NUL-terminated.
    pub(crate) fn as_c_ptr(&self) -> *const u8 {
        match &self.msg {
            Some(b) => b.as_ptr(),
            None => c"test failed (no memory for the message)".as_ptr().cast(),
        }
    }
}

/// Writes into a byte buffer, keeping the last byte as the NUL terminator.
struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl Write for Cursor<'_> {
    fn write_str(&mut self, s: &str) -> fmt::Result {
        let room = self.buf.len().saturating_sub(self.len + 1);
        let n = s.len().min(room);
        self.buf[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        if n < s.len() {
            Err(fmt::Error)
        } else {
            Ok(())
        }
    }
}

/// Fails the test case with the condition's text unless `cond` holds.
macro_rules! kcheck {
    ($cond:expr $(,)?) => {
        if !$cond {
            return Err($crate::kunit::Failure::new(
                file!(),
                line!(),
                format_args!("expected {}", stringify!($cond)),
            ));
        }
    };
}

/// Fails the test case unless `left == right`, printing both values.
macro_rules! kcheck_eq {
    ($left:expr, $right:expr $(,)?) => {
        match (&$left, &$right) {
            (l, r) => {
                if !(*l == *r) {
                    return Err($crate::kunit::Failure::new(
                        file!(),
                        line!(),
                        format_args!(
                            "expected {} == {}, got {:?} and {:?}",
                            stringify!($left),
                            stringify!($right),
                            l,
                            r
                        ),
                    ));
                }
            }
        }
    };
}

/// Fails the test case with a message.
#[allow(unused_macros)]
macro_rules! kfail {
    ($($arg:tt)*) => {
        return Err($crate::kunit::Failure::new(file!(), line!(), format_args!($($arg)*)))
    };
}

#[allow(unused_imports)]
pub(crate) use {kcheck, kcheck_eq, kfail};

/// Builds `len` bytes of a suite name from a string literal at compile time.
pub(crate) const fn suite_name(name: &str) -> [kernel::ffi::c_char; 256] {
    let bytes = name.as_bytes();
    let mut out = [0 as kernel::ffi::c_char; 256];
    let mut i = 0;
    // Leave room for the terminating NUL.
    while i < bytes.len() && i < 255 {
        out[i] = bytes[i] as kernel::ffi::c_char;
        i += 1;
    }
    out
}

/// Runs `case` and reports a failure to KUnit; called by the trampolines [`kunit_suite!`] makes.
///
/// # Safety
///
/// `test` must be the `struct kunit` KUnit passed to the running case.
pub(crate) unsafe fn run(test: *mut kernel::bindings::kunit, case: fn() -> TestResult) {
    if let Err(failure) = case() {
        // SAFETY: The caller guarantees `test` is the running test; the message is
        // NUL-terminated (see `Failure::as_c_ptr`) and lives across the call.
        unsafe { rvsock_kunit_fail(test, failure.as_c_ptr()) };
    }
}

extern "C" {
    /// Marks the running test failed with `msg` (`KUNIT_FAIL`); in the test module's C file.
    fn rvsock_kunit_fail(test: *mut kernel::bindings::kunit, msg: *const u8);
}

/// Declares a KUnit suite of Rust test functions and registers it for the module's loading.
///
/// ```ignore
/// kunit_suite!(rvsock_proto = "rvsock_proto" [hdr_roundtrip, credit_never_negative]);
/// ```
macro_rules! kunit_suite {
    ($id:ident = $name:literal [$($case:ident),+ $(,)?]) => {
        #[allow(non_upper_case_globals)]
        mod $id {
            use super::*;
            use kernel::bindings::{kunit, kunit_case, kunit_suite};

            const N: usize = [$(stringify!($case)),+].len() + 1;

            // KUnit writes the status, module name and log of each case, so they live in
            // mutable statics that only KUnit touches.
            static mut CASES: [kunit_case; N] = [
                $(
                    kunit_case {
                        run_case: Some({
                            /// Runs the case.
                            ///
                            /// # Safety
                            ///
                            /// Called by KUnit with the running test.
                            unsafe extern "C" fn trampoline(test: *mut kunit) {
                                // SAFETY: KUnit passes the running test.
                                unsafe { $crate::kunit::run(test, $case) }
                            }
                            trampoline
                        }),
                        name: concat!(stringify!($case), "\0").as_ptr().cast(),
                        // SAFETY: All-zero is a valid `kunit_case` tail (no generator, normal
                        // speed, success status, no log).
                        ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
                    },
                )+
                // SAFETY: The all-zero case terminates the array.
                unsafe { core::mem::MaybeUninit::zeroed().assume_init() },
            ];

            static mut SUITE: kunit_suite = kunit_suite {
                name: $crate::kunit::suite_name($name),
                test_cases: core::ptr::addr_of_mut!(CASES).cast(),
                // SAFETY: All-zero is a valid tail: no init/exit hooks, no attributes, no state.
                ..unsafe { core::mem::MaybeUninit::zeroed().assume_init() }
            };

            /// The suite pointer the module loader finds in `.kunit_test_suites`.
            #[used]
            #[link_section = ".kunit_test_suites"]
            static mut SUITE_PTR: *mut kunit_suite = core::ptr::addr_of_mut!(SUITE);
        }
    };
}

pub(crate) use kunit_suite;
