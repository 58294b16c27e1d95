// SPDX-License-Identifier: GPL-2.0

//! rvsock_kunit: rvsock's KUnit suites.  Built only for tests; the suites run when it is loaded
//! and report KTAP on the kernel log, which `make check` parses.

use kernel::prelude::*;

#[allow(dead_code)]
#[path = "../../../rust/lib.rs"]
mod kx;

#[path = "../../../rust/kunit.rs"]
mod kunit;

#[path = "../../../rust/proto.rs"]
mod proto;

#[allow(dead_code)]
#[path = "../transport/test_transport.rs"]
mod test_transport;

mod core_tests;
mod proto_tests;
mod rx_tests;

use kunit::{kcheck, kcheck_eq, kunit_suite, TestResult};

kx::import_rvsock_namespace!();

module! {
    type: RvsockKunit,
    name: "rvsock_kunit",
    author: "rvsock developers",
    description: "KUnit tests for rvsock",
    license: "GPL",
}

struct RvsockKunit;

impl kernel::Module for RvsockKunit {
    fn init(_module: &'static ThisModule) -> Result<Self> {
        Ok(RvsockKunit)
    }
}

fn harness_reports_success() -> TestResult {
    kcheck!(true);
    kcheck_eq!(1 + 1, 2);
    Ok(())
}

kunit_suite!(rvsock_harness = "rvsock_harness"[harness_reports_success]);
