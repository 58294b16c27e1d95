/* SPDX-License-Identifier: GPL-2.0 */
/*
 * rvsock's C surface: the kernel headers bindgen reads for our own bindings, the prototypes of
 * the C helpers in helpers.c (inline functions and macros that Rust cannot call directly), and
 * the C ABI between rvsock.ko and its transport modules.
 *
 * Constants that bindgen cannot evaluate are declared as `RVSOCK_CONST_<NAME>`; the build strips
 * the prefix, so Rust sees `sys::<NAME>`.
 */
#ifndef RVSOCK_SYS_H
#define RVSOCK_SYS_H

#include <asm/ioctls.h>
#include <linux/capability.h>
#include <linux/errqueue.h>
#include <linux/file.h>
#include <linux/fs.h>
#include <linux/miscdevice.h>
#include <linux/module.h>
#include <linux/net.h>
#include <linux/poll.h>
#include <linux/random.h>
#include <linux/scatterlist.h>
#include <linux/sched/signal.h>
#include <linux/netlink.h>
#include <linux/skbuff.h>
#include <linux/socket.h>
#include <linux/sockptr.h>
#include <linux/uaccess.h>
#include <linux/uio.h>
#include <linux/virtio.h>
#include <linux/virtio_config.h>
#include <linux/wait.h>
#include <linux/workqueue.h>
#include <net/sock.h>
#include <net/tcp_states.h>
#include <uapi/linux/virtio_ids.h>
#include <uapi/linux/virtio_vsock.h>
#include <uapi/linux/vm_sockets.h>

/* ---- Constants (bindgen only: these definitions must not reach a C object) ---------------- */
#ifdef __BINDGEN__

const unsigned long RVSOCK_CONST_HZ = HZ;
const long RVSOCK_CONST_MAX_SCHEDULE_TIMEOUT = MAX_SCHEDULE_TIMEOUT;
const unsigned int RVSOCK_CONST_IOCTL_VM_SOCKETS_GET_LOCAL_CID = IOCTL_VM_SOCKETS_GET_LOCAL_CID;
const unsigned int RVSOCK_CONST_SIOCOUTQ = SIOCOUTQ;
const unsigned int RVSOCK_CONST_SIOCINQ = SIOCINQ;
const gfp_t RVSOCK_CONST_GFP_KERNEL = GFP_KERNEL;
const gfp_t RVSOCK_CONST_GFP_ATOMIC = GFP_ATOMIC;
const gfp_t RVSOCK_CONST_GFP_KERNEL_TRY = GFP_KERNEL | __GFP_NOWARN | __GFP_NORETRY;
const unsigned int RVSOCK_CONST_PAGE_SIZE = PAGE_SIZE;
const unsigned int RVSOCK_CONST_SKB_TRUESIZE_0 = SKB_TRUESIZE(0);
const unsigned int RVSOCK_CONST_MAX_SKB_FRAGS = MAX_SKB_FRAGS;
/* A one-page receive buffer less its skb_shared_info (VIRTIO_VSOCK_DEFAULT_RX_BUF_SIZE). */
const unsigned int RVSOCK_CONST_SKB_WITH_OVERHEAD_4K = SKB_WITH_OVERHEAD(4096);
const int RVSOCK_CONST_SOCK_CB_SIZE = sizeof(((struct sk_buff *)0)->cb);
const int RVSOCK_CONST_MISC_DYNAMIC_MINOR = MISC_DYNAMIC_MINOR;
const int RVSOCK_CONST_O_NONBLOCK = O_NONBLOCK;
const unsigned int RVSOCK_CONST_POLL_BITS =
	EPOLLIN | EPOLLOUT | EPOLLERR | EPOLLHUP | EPOLLRDNORM | EPOLLWRNORM | EPOLLRDHUP;
#endif

/* ---- Transport ABI between rvsock.ko and its transport modules ----------------------------- */
/*
 * Packets.  A packet is an sk_buff with the 44-byte virtio-vsock header (little-endian) at
 * skb->head, in the headroom, and the payload at skb->data .. skb->data + skb->len, linear or in
 * page fragments.
 *
 * Ownership.  Whoever is handed an skb owns it and must free or pass it on exactly once: the
 * transport owns the skbs of send_pkt(), the core those of rvsock_transport_recv(), in every
 * case (errors included).  Skbs given to rvsock_transport_recv() must be neither shared nor
 * cloned (skb_shared(), skb_cloned()); the core drops any that are.
 *
 * skb->cb.  The control buffer belongs to the core.  On an skb from send_pkt() it holds the
 * core's accounting (the sender's unsent bytes, read back when the skb is freed): a transport
 * must not write it.  On an skb passed to rvsock_transport_recv() the core ignores what it holds
 * and overwrites it.
 *
 * Contexts and locks.
 *  - rvsock_transport_register(), rvsock_transport_unregister(): process context, may sleep; no
 *    spinlock held, and never from inside one of the transport's own callbacks (unregister waits
 *    for the callbacks in flight, SRCU).
 *  - rvsock_transport_recv(): process context (a transport's work item, or inside its own
 *    send_pkt(), as the loopback does), with no spinlock held; it never sleeps.  It may run
 *    concurrently with rvsock_transport_unregister() of the same transport (a work item racing
 *    rmmod): a packet that arrives once the transport is revoked is dropped, and every
 *    connection it made is reset by the unregistration.  Not from hard or soft interrupt
 *    context: a virtqueue callback schedules work that calls it.
 *  - rvsock_transport_reset_all(): process context, may sleep (it allocates), no spinlock
 *    held; it may be called from inside send_pkt() (a socket whose owner is the caller, or any
 *    other owned socket, is reset when its owner releases it).
 *  - rvsock_transport_set_local_cid(): any context.
 *
 * What the core does with a packet for a socket that an owner holds (a task inside a socket
 * call on it): it never waits for the owner and never drops the packet silently.  Credit
 * updates and credit requests fold into the packet queued before them; small payloads are
 * appended to the one queued before, or, once the queue grows, packed into shared buffers; the
 * rest waits on the socket's backlog, which the owner processes when it releases the socket.
 * A peer that keeps to the credit it was given needs at most about buf_alloc bytes there, and
 * the backlog takes 2 * buf_alloc + 256 KiB, so no packet it was entitled to send is lost.  A
 * peer that goes beyond that is reset (RST, ENOBUFS) once the owner has processed what came
 * before; packets after the reset point are dropped, as after any reset.
 */

/* Feature flags of a transport: the registry slots it takes (as VSOCK_TRANSPORT_F_*). */
#define RVSOCK_TRANSPORT_F_H2G 0x1
#define RVSOCK_TRANSPORT_F_G2H 0x2
#define RVSOCK_TRANSPORT_F_DGRAM 0x4
#define RVSOCK_TRANSPORT_F_LOCAL 0x8

/* A registered transport, owned by rvsock.ko. */
struct rvsock_transport;

/*
 * What a transport does for the core.  The core calls them from process context, with no
 * spinlock held, possibly from several tasks at once and with the calling socket's lock owned;
 * never after rvsock_transport_unregister() returned.
 */
struct rvsock_transport_ops {
	/*
	 * Sends one packet.  Takes ownership of @skb in every case; returns 0 or -errno.  May call
	 * rvsock_transport_recv() for the packet it loops back, but no other entry point that
	 * waits (unregister).
	 */
	int (*send_pkt)(void *priv, struct sk_buff *skb);
	/* Drops the not yet transmitted packets of socket @sk.  May be NULL. */
	void (*cancel_pkt)(void *priv, struct sock *sk);
	/* Whether SOCK_SEQPACKET is allowed towards @remote_cid.  NULL means never. */
	bool (*seqpacket_allow)(void *priv, u32 remote_cid);
};

struct rvsock_transport_info {
	/* The transport's module (THIS_MODULE). */
	struct module *owner;
	/* Name for the kernel log. */
	const char *name;
	/* RVSOCK_TRANSPORT_F_* slots to take, all or nothing. */
	u32 features;
	/* This side's CID on the transport (can change: rvsock_transport_set_local_cid()). */
	u32 local_cid;
	/* MSG_ZEROCOPY is supported. */
	bool msgzerocopy;
	const struct rvsock_transport_ops *ops;
	void *priv;
};

/*
 * Registers a transport.  -EBUSY if one of its slots is taken, -EINVAL for bad features.  *@out
 * is set before the core can call @ops (which may happen before this returns); the core never
 * calls @ops after rvsock_transport_unregister() returns.
 */
int rvsock_transport_register(const struct rvsock_transport_info *info,
			      struct rvsock_transport **out);
/*
 * Unregisters a transport: revokes its operations and waits for the calls in flight into it
 * and for the receives in flight from it (SRCU), then resets every socket that uses it
 * (ECONNRESET).  Listening sockets are not affected.  @t is invalid afterwards.
 */
void rvsock_transport_unregister(struct rvsock_transport *t);
/* Hands a received packet to the core (see "Contexts and locks" above). */
void rvsock_transport_recv(struct rvsock_transport *t, struct sk_buff *skb);
/* Changes the transport's local CID (e.g. after a virtio TRANSPORT_RESET event). */
void rvsock_transport_set_local_cid(struct rvsock_transport *t, u32 cid);
/* Resets every connection of the transport (device reset): they get ECONNRESET. */
void rvsock_transport_reset_all(struct rvsock_transport *t);

/* ---- Helpers (helpers.c): inline functions and macros, exported in namespace RVSOCK ------- */

/* Socket lock and state. */
void rvsock_h_lock_sock(struct sock *sk);
void rvsock_h_lock_sock_nested(struct sock *sk);
void rvsock_h_bh_lock_sock(struct sock *sk);
void rvsock_h_bh_unlock_sock(struct sock *sk);
void rvsock_h_bh_lock_sock_nested(struct sock *sk);
bool rvsock_h_sock_owned_by_user(const struct sock *sk);
int rvsock_h_sk_add_backlog(struct sock *sk, struct sk_buff *skb, unsigned int limit);
void rvsock_h_sk_rmem_add(struct sock *sk, int delta);
u32 rvsock_h_sk_rmem(const struct sock *sk);
void rvsock_h_sk_drops_inc(struct sock *sk);
struct sk_buff *rvsock_h_backlog_tail(const struct sock *sk);
unsigned int rvsock_h_backlog_len(const struct sock *sk);
int rvsock_h_lock_sock_killable(struct sock *sk, long timeout);
void rvsock_h_sock_hold(struct sock *sk);
void rvsock_h_sock_put(struct sock *sk);
bool rvsock_h_sock_hold_not_zero(struct sock *sk);
bool rvsock_h_sock_flag(const struct sock *sk, int flag);
void rvsock_h_sock_set_flag(struct sock *sk, int flag, bool on);
void rvsock_h_sock_orphan(struct sock *sk);
void rvsock_h_sk_purge_queues(struct sock *sk);
void rvsock_h_sock_graft(struct sock *sk, struct socket *parent);
void rvsock_h_sk_acceptq_added(struct sock *sk);
void rvsock_h_sk_acceptq_removed(struct sock *sk);
bool rvsock_h_sk_acceptq_is_full(const struct sock *sk);
u32 rvsock_h_sk_acceptq_room(const struct sock *sk);
int rvsock_h_sock_error(struct sock *sk);
int rvsock_h_sock_rcvlowat(const struct sock *sk, int waitall, int len);
long rvsock_h_sock_rcvtimeo(const struct sock *sk, bool noblock);
long rvsock_h_sock_sndtimeo(const struct sock *sk, bool noblock);
bool rvsock_h_error_queue_empty(const struct sock *sk);
void rvsock_h_sk_state_change(struct sock *sk);
void rvsock_h_sk_data_ready(struct sock *sk);
void rvsock_h_sk_write_space(struct sock *sk);
void rvsock_h_socket_set_flag(struct socket *sock, int bit);
void rvsock_h_sock_poll_wait(struct file *file, struct socket *sock, poll_table *wait);
struct socket *rvsock_h_sk_socket(const struct sock *sk);
struct net *rvsock_h_sock_net(const struct sock *sk);

/* Waiting on a socket: the sk_wait_event() pattern, with the condition checked in Rust. */
void rvsock_h_init_wait(struct wait_queue_entry *wait);
void rvsock_h_sk_add_wait(struct sock *sk, struct wait_queue_entry *wait);
void rvsock_h_sk_remove_wait(struct sock *sk, struct wait_queue_entry *wait);
long rvsock_h_wait_woken(struct wait_queue_entry *wait, long timeout);
bool rvsock_h_signal_pending(void);
bool rvsock_h_current_exiting(void);

/* sk_buff. */
struct sk_buff *rvsock_h_alloc_skb(unsigned int headroom, unsigned int payload, bool linear,
				   gfp_t gfp);
void rvsock_h_skb_put_payload(struct sk_buff *skb, unsigned int len);
void rvsock_h_kfree_skb(struct sk_buff *skb);
void rvsock_h_consume_skb(struct sk_buff *skb);
void rvsock_h_skb_orphan(struct sk_buff *skb);
void rvsock_h_skb_set_destructor(struct sk_buff *skb, void (*fn)(struct sk_buff *skb));
unsigned int rvsock_h_skb_tailroom(const struct sk_buff *skb);
bool rvsock_h_skb_is_nonlinear(const struct sk_buff *skb);
bool rvsock_h_skb_exclusive(const struct sk_buff *skb);
bool rvsock_h_skb_zcopy(const struct sk_buff *skb);
void rvsock_h_skb_zcopy_clear(struct sk_buff *skb);
void rvsock_h_skb_zcopy_set(struct sk_buff *skb, struct ubuf_info *uarg);
void rvsock_h_net_zcopy_put(struct ubuf_info *uarg);
void rvsock_h_net_zcopy_put_abort(struct ubuf_info *uarg, bool have_uref);
void rvsock_h_uarg_mark_copied(struct ubuf_info *uarg);
struct ubuf_info *rvsock_h_lent_alloc(void);
int rvsock_h_lent_wait(struct ubuf_info *uarg, unsigned long timeout);
void rvsock_h_lent_release(struct ubuf_info *uarg);
void rvsock_h_lent_note_peer(struct sk_buff *skb, struct sock *sk);
struct sock *rvsock_h_lent_peer(struct ubuf_info *uarg);
bool rvsock_h_skb_zcopy_is(struct sk_buff *skb, const struct ubuf_info *uarg);
bool rvsock_h_skb_lends(struct sk_buff *skb);
bool rvsock_h_msg_user_backed(const struct msghdr *msg);
void rvsock_h_msg_revert(struct msghdr *msg, size_t bytes);
size_t rvsock_h_msg_data_left(const struct msghdr *msg);
int rvsock_h_iov_iter_npages(const struct msghdr *msg, int maxpages);

/* Userspace access. */
int rvsock_h_copy_from_sockptr(void *dst, sockptr_t src, size_t size);

/* Delayed work, on rvsock.ko's own workqueue (flushed at module exit). */
int rvsock_h_wq_init(void);
void rvsock_h_wq_exit(void);
void rvsock_h_init_delayed_work(struct delayed_work *dw, work_func_t fn);
bool rvsock_h_mod_delayed_work(struct delayed_work *dw, unsigned long delay);

/* SRCU protecting calls into transports against their unregistration. */
int rvsock_h_srcu_read_lock(void);
void rvsock_h_srcu_read_unlock(int idx);
void rvsock_h_synchronize_srcu(void);

/* Modules. */
bool rvsock_h_try_module_get(struct module *m);

/* Kernel sockets (tests). */
struct net *rvsock_h_init_net(void);

/* Miscellaneous. */
u32 rvsock_h_random_u32(void);
bool rvsock_h_capable_net_bind_service(void);
const char *rvsock_h_kernel_release(void);

/* sock_diag (rust/diag.rs). */
struct rvsock_diag_row {
	u32 src_cid;
	u32 src_port;
	u32 dst_cid;
	u32 dst_port;
};

int rvsock_h_diag_register(int (*dump)(struct sk_buff *skb, struct netlink_callback *cb));
void rvsock_h_diag_unregister(void);
u32 rvsock_h_diag_states(const struct netlink_callback *cb);
unsigned long rvsock_h_diag_cursor(const struct netlink_callback *cb);
void rvsock_h_diag_set_cursor(struct netlink_callback *cb, unsigned long cursor);
bool rvsock_h_diag_same_net(const struct sk_buff *skb, const struct sock *sk);
int rvsock_h_diag_fill(struct sk_buff *skb, struct netlink_callback *cb, struct sock *sk,
		       const struct rvsock_diag_row *row);

/*
 * Virtio (rust/virtio_helpers.c, linked into rvsock_virtio.ko only, so that rvsock.ko does not
 * depend on CONFIG_VIRTIO).  Inline functions and config ops of include/linux/virtio_config.h.
 */
int rvsock_hv_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue *vqs[],
		       struct virtqueue_info vqs_info[]);
void rvsock_hv_del_vqs(struct virtio_device *vdev);
void rvsock_hv_config_get(struct virtio_device *vdev, unsigned int offset, void *buf,
			  unsigned int len);
bool rvsock_hv_device_ready(struct virtio_device *vdev);
bool rvsock_hv_virt_addr_valid(const void *addr);
/* The end of a device's virtqueues: wait for it (bounded), and signal it. */
bool rvsock_hv_wait_vqs_gone(struct virtio_device *vdev, unsigned int timeout_ms);
void rvsock_hv_vqs_gone(struct virtio_device *vdev);
/* A private workqueue of the driver (alloc_workqueue(), flush_workqueue(), destroy_workqueue()). */
struct workqueue_struct *rvsock_hv_alloc_wq(const char *name);
void rvsock_hv_flush_wq(struct workqueue_struct *wq);
void rvsock_hv_destroy_wq(struct workqueue_struct *wq);
/*
 * The number of page fragments of @skb; whether they carry all of its nonlinear payload; a
 * one-entry scatterlist for fragment @i, by page (false if none or empty).
 */
unsigned int rvsock_hv_skb_nr_frags(const struct sk_buff *skb);
bool rvsock_hv_skb_frags_whole(const struct sk_buff *skb);
bool rvsock_hv_sg_set_skb_frag(struct scatterlist *sg, const struct sk_buff *skb, unsigned int i);
/* The rx_buf_size parameter of rvsock_virtio.ko (declared in rust/virtio_helpers.c). */
unsigned int rvsock_hv_rx_buf_size(void);

/*
 * Module parameters of rvsock_test_transport.ko (6.12's Rust module! has none; they are
 * declared in tools/testing/transport/rvsock_test_transport_params.c), read through
 * rust/params.rs.  Only that module defines and uses them.
 */
unsigned int rvsock_tt_slots(void);
unsigned int rvsock_tt_g2h_cid(void);
unsigned int rvsock_tt_answer(void);
bool rvsock_tt_verbose(void);
unsigned int rvsock_tt_feed(void);

#endif /* RVSOCK_SYS_H */
