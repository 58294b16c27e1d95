// SPDX-License-Identifier: GPL-2.0
/*
 * Module parameters of rvsock_test_transport (6.12's Rust `module!` has none).
 */
#include <linux/moduleparam.h>

static unsigned int slots = 0x2;
module_param(slots, uint, 0444);
MODULE_PARM_DESC(slots, "registry slots to take, one test transport each: 0x1 H2G, 0x2 G2H, 0x8 LOCAL");

static unsigned int g2h_cid = 3;
module_param(g2h_cid, uint, 0444);
MODULE_PARM_DESC(g2h_cid, "local CID of the G2H test transport (the guest's CID)");

static unsigned int answer = 1;
module_param(answer, uint, 0444);
MODULE_PARM_DESC(answer, "how the peer answers: 0 nothing, 1 RST, 2 accept");

static bool verbose = true;
module_param(verbose, bool, 0444);
MODULE_PARM_DESC(verbose, "log every packet the core sends (\"<name> saw <OP> ...\")");

static unsigned int feed = 4096;
module_param(feed, uint, 0444);
MODULE_PARM_DESC(feed, "headers each transport keeps for /dev/rvsock_inject readers (0: none)");

unsigned int rvsock_tt_slots(void);
unsigned int rvsock_tt_g2h_cid(void);
unsigned int rvsock_tt_answer(void);
bool rvsock_tt_verbose(void);
unsigned int rvsock_tt_feed(void);

unsigned int rvsock_tt_slots(void)
{
	return slots;
}

unsigned int rvsock_tt_g2h_cid(void)
{
	return g2h_cid;
}

unsigned int rvsock_tt_answer(void)
{
	return answer;
}

bool rvsock_tt_verbose(void)
{
	return verbose;
}

unsigned int rvsock_tt_feed(void)
{
	return feed;
}
