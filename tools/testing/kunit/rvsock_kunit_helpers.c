// SPDX-License-Identifier: GPL-2.0
/* C side of rvsock's Rust KUnit suites: KUnit's reporting macros are C macros. */
#include <kunit/test.h>

void rvsock_kunit_fail(struct kunit *test, const char *msg);

void rvsock_kunit_fail(struct kunit *test, const char *msg)
{
	KUNIT_FAIL(test, "%s", msg);
}

/* ---- Helpers of the receive-path suites (rx_tests.rs) ----------------------------------- */
#include <linux/delay.h>
#include <linux/moduleparam.h>
#include <linux/ktime.h>
#include <linux/mm.h>
#include <linux/slab.h>
#include <linux/vmstat.h>
#include <linux/workqueue.h>

/*
 * Rounds of the receive-versus-unregister race: make check runs the default, make stress loads
 * the module with race_rounds=10000.
 */
static unsigned int race_rounds = 1000;
module_param(race_rounds, uint, 0444);
MODULE_PARM_DESC(race_rounds, "rounds of rx_recv_racing_unregister (default 1000, at most 10000)");

unsigned int rvsock_kunit_race_rounds(void);

unsigned int rvsock_kunit_race_rounds(void)
{
	return race_rounds;
}

/* A function run once on the unbound workqueue, as a transport's receive work would be. */
struct rvsock_kunit_async {
	struct work_struct work;
	void (*fn)(void *arg);
	void *arg;
};

static void rvsock_kunit_async_work(struct work_struct *work)
{
	struct rvsock_kunit_async *a = container_of(work, struct rvsock_kunit_async, work);

	a->fn(a->arg);
}

void *rvsock_kunit_async_start(void (*fn)(void *arg), void *arg);
void rvsock_kunit_async_wait(void *handle);
unsigned long rvsock_kunit_slab_bytes(void);
u64 rvsock_kunit_now_ns(void);
void rvsock_kunit_cond_resched(void);
void rvsock_kunit_msleep(unsigned int ms);

/* Starts @fn(@arg) on a worker; NULL when out of memory (then nothing runs). */
void *rvsock_kunit_async_start(void (*fn)(void *arg), void *arg)
{
	struct rvsock_kunit_async *a = kzalloc(sizeof(*a), GFP_KERNEL);

	if (!a)
		return NULL;
	INIT_WORK(&a->work, rvsock_kunit_async_work);
	a->fn = fn;
	a->arg = arg;
	queue_work(system_unbound_wq, &a->work);
	return a;
}

/* Waits for a function started by rvsock_kunit_async_start() and frees its handle. */
void rvsock_kunit_async_wait(void *handle)
{
	struct rvsock_kunit_async *a = handle;

	if (!a)
		return;
	flush_work(&a->work);
	kfree(a);
}

/* The slab memory of the whole system, in bytes (/proc/meminfo's Slab). */
unsigned long rvsock_kunit_slab_bytes(void)
{
	return (global_node_page_state_pages(NR_SLAB_RECLAIMABLE_B) +
		global_node_page_state_pages(NR_SLAB_UNRECLAIMABLE_B)) << PAGE_SHIFT;
}

u64 rvsock_kunit_now_ns(void)
{
	return ktime_get_ns();
}

/* Lets other tasks run during a long loop (the test kernel does not preempt the kernel). */
void rvsock_kunit_cond_resched(void)
{
	cond_resched();
}

/* Sleeps for about @ms milliseconds. */
void rvsock_kunit_msleep(unsigned int ms)
{
	msleep(ms);
}
