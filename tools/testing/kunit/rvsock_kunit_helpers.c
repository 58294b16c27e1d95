// SPDX-License-Identifier: GPL-2.0
/* C side of rvsock's Rust KUnit suites: KUnit's reporting macros are C macros. */
#include <kunit/test.h>

void rvsock_kunit_fail(struct kunit *test, const char *msg);

void rvsock_kunit_fail(struct kunit *test, const char *msg)
{
	KUNIT_FAIL(test, "%s", msg);
}
