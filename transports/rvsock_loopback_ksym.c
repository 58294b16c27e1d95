// SPDX-License-Identifier: GPL-2.0
/*
 * Newer upstream vsock_test (get_transports() in tools/testing/vsock/util.c) learns which vsock
 * transports are loaded by looking for their transport objects in /proc/kallsyms:
 * "loopback_transport", "virtio_transport", "vhost_transport" (first as data symbols, "d",
 * later any type).  This is the loopback's: a data symbol of that name in this module, holding
 * the transport's name.
 */
#include <linux/compiler.h>

static char loopback_transport[] __used = "rvsock_loopback";
