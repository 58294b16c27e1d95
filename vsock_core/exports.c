// SPDX-License-Identifier: GPL-2.0
/*
 * Exports of rvsock.ko's transport ABI (rust/rvsock_sys.h) for its transport modules.  The
 * functions are defined in Rust (export_transport_host! in rust/transport.rs); 6.12 cannot
 * export a symbol from Rust, so this file does it, in namespace RVSOCK.
 */
#include <linux/export.h>
#include "rvsock_sys.h"

EXPORT_SYMBOL_NS_GPL(rvsock_transport_register, RVSOCK);
EXPORT_SYMBOL_NS_GPL(rvsock_transport_unregister, RVSOCK);
EXPORT_SYMBOL_NS_GPL(rvsock_transport_recv, RVSOCK);
EXPORT_SYMBOL_NS_GPL(rvsock_transport_set_local_cid, RVSOCK);
EXPORT_SYMBOL_NS_GPL(rvsock_transport_reset_all, RVSOCK);
