// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rvsock: one-line wrappers over kernel inline functions and macros, which Rust
 * cannot call.  The logic lives in Rust (the rust/ directory); nothing here decides anything.  They are
 * exported in namespace RVSOCK so that the transport modules share the core's copy.
 */
#include <linux/sock_diag.h>
#include <linux/srcu.h>
#include <linux/utsname.h>
#include <linux/vm_sockets_diag.h>
#include "rvsock_sys.h"

#define RVSOCK_EXPORT(sym) EXPORT_SYMBOL_NS_GPL(sym, RVSOCK)

void rvsock_h_lock_sock(struct sock *sk)
{
	lock_sock(sk);
}
RVSOCK_EXPORT(rvsock_h_lock_sock);

void rvsock_h_lock_sock_nested(struct sock *sk)
{
	lock_sock_nested(sk, SINGLE_DEPTH_NESTING);
}
RVSOCK_EXPORT(rvsock_h_lock_sock_nested);

/*
 * The BH variant: rvsock's receive path may run in any process context, and keeping BHs off
 * while holding the socket spinlock keeps lockdep's view of it simple.
 */
void rvsock_h_bh_lock_sock(struct sock *sk)
{
	spin_lock_bh(&sk->sk_lock.slock);
}
RVSOCK_EXPORT(rvsock_h_bh_lock_sock);

void rvsock_h_bh_unlock_sock(struct sock *sk)
{
	spin_unlock_bh(&sk->sk_lock.slock);
}
RVSOCK_EXPORT(rvsock_h_bh_unlock_sock);

/* A child's spinlock taken while its listener's is held. */
void rvsock_h_bh_lock_sock_nested(struct sock *sk)
{
	local_bh_disable();
	spin_lock_nested(&sk->sk_lock.slock, SINGLE_DEPTH_NESTING);
}
RVSOCK_EXPORT(rvsock_h_bh_lock_sock_nested);

bool rvsock_h_sock_owned_by_user(const struct sock *sk)
{
	return sock_owned_by_user(sk);
}
RVSOCK_EXPORT(rvsock_h_sock_owned_by_user);

int rvsock_h_sk_add_backlog(struct sock *sk, struct sk_buff *skb, unsigned int limit)
{
	return sk_add_backlog(sk, skb, limit);
}
RVSOCK_EXPORT(rvsock_h_sk_add_backlog);

/*
 * The memory of the socket's receive queue (sk_rmem_alloc, reported by SO_MEMINFO), kept by the
 * core as it queues and frees packets.
 */
void rvsock_h_sk_rmem_add(struct sock *sk, int delta)
{
	atomic_add(delta, &sk->sk_rmem_alloc);
}
RVSOCK_EXPORT(rvsock_h_sk_rmem_add);

u32 rvsock_h_sk_rmem(const struct sock *sk)
{
	return atomic_read(&sk->sk_rmem_alloc);
}
RVSOCK_EXPORT(rvsock_h_sk_rmem);

/* A packet for the socket was dropped (SO_MEMINFO's drops). */
void rvsock_h_sk_drops_inc(struct sock *sk)
{
	atomic_inc(&sk->sk_drops);
}
RVSOCK_EXPORT(rvsock_h_sk_drops_inc);

/* The last skb on the backlog; the socket spinlock must be held. */
struct sk_buff *rvsock_h_backlog_tail(const struct sock *sk)
{
	return sk->sk_backlog.tail;
}
RVSOCK_EXPORT(rvsock_h_backlog_tail);

/* The truesize the backlog holds (and held, while its owner processes it); spinlock held. */
unsigned int rvsock_h_backlog_len(const struct sock *sk)
{
	return sk->sk_backlog.len;
}
RVSOCK_EXPORT(rvsock_h_backlog_len);

/* Takes ownership of @sk if nobody owns it (lock_sock() without waiting). */
static bool rvsock_try_own(struct sock *sk)
{
	bool got;

	spin_lock_bh(&sk->sk_lock.slock);
	got = !sock_owned_by_user_nocheck(sk);
	if (got)
		sk->sk_lock.owned = 1;
	spin_unlock_bh(&sk->sk_lock.slock);
	return got;
}

/*
 * lock_sock() that a fatal signal interrupts and that gives up after @timeout jiffies: 1 when
 * the caller owns the socket (release_sock() releases it), 0 on timeout, -EINTR on a fatal
 * signal.  release_sock() wakes sk_lock.wq, where lock_sock() waiters sleep too.
 */
int rvsock_h_lock_sock_killable(struct sock *sk, long timeout)
{
	long left;

	might_sleep();
	left = wait_event_killable_timeout(sk->sk_lock.wq, rvsock_try_own(sk), timeout);
	if (left < 0)
		return -EINTR;
	if (left == 0)
		return 0;
	/* The sk_lock has mutex semantics; this was a trylock that succeeded. */
	mutex_acquire(&sk->sk_lock.dep_map, 0, 1, _RET_IP_);
	return 1;
}
RVSOCK_EXPORT(rvsock_h_lock_sock_killable);

void rvsock_h_sock_hold(struct sock *sk)
{
	sock_hold(sk);
}
RVSOCK_EXPORT(rvsock_h_sock_hold);

void rvsock_h_sock_put(struct sock *sk)
{
	sock_put(sk);
}
RVSOCK_EXPORT(rvsock_h_sock_put);

bool rvsock_h_sock_hold_not_zero(struct sock *sk)
{
	return refcount_inc_not_zero(&sk->sk_refcnt);
}
RVSOCK_EXPORT(rvsock_h_sock_hold_not_zero);

bool rvsock_h_sock_flag(const struct sock *sk, int flag)
{
	return sock_flag(sk, flag);
}
RVSOCK_EXPORT(rvsock_h_sock_flag);

void rvsock_h_sock_set_flag(struct sock *sk, int flag, bool on)
{
	sock_valbool_flag(sk, flag, on);
}
RVSOCK_EXPORT(rvsock_h_sock_set_flag);

void rvsock_h_sock_orphan(struct sock *sk)
{
	sock_orphan(sk);
}
RVSOCK_EXPORT(rvsock_h_sock_orphan);

/* Frees what the generic queues still hold at destruction (unread zerocopy completions). */
void rvsock_h_sk_purge_queues(struct sock *sk)
{
	__skb_queue_purge(&sk->sk_receive_queue);
	__skb_queue_purge(&sk->sk_error_queue);
}
RVSOCK_EXPORT(rvsock_h_sk_purge_queues);

void rvsock_h_sock_graft(struct sock *sk, struct socket *parent)
{
	sock_graft(sk, parent);
}
RVSOCK_EXPORT(rvsock_h_sock_graft);

void rvsock_h_sk_acceptq_added(struct sock *sk)
{
	sk_acceptq_added(sk);
}
RVSOCK_EXPORT(rvsock_h_sk_acceptq_added);

void rvsock_h_sk_acceptq_removed(struct sock *sk)
{
	sk_acceptq_removed(sk);
}
RVSOCK_EXPORT(rvsock_h_sk_acceptq_removed);

bool rvsock_h_sk_acceptq_is_full(const struct sock *sk)
{
	return sk_acceptq_is_full(sk);
}
RVSOCK_EXPORT(rvsock_h_sk_acceptq_is_full);

/*
 * How many more connections the accept queue takes before sk_acceptq_is_full() (which allows
 * one beyond the backlog, ack > max); lockless, as that function.
 */
u32 rvsock_h_sk_acceptq_room(const struct sock *sk)
{
	u32 ack = READ_ONCE(sk->sk_ack_backlog), max = READ_ONCE(sk->sk_max_ack_backlog);

	return ack <= max ? max - ack + 1 : 0;
}
RVSOCK_EXPORT(rvsock_h_sk_acceptq_room);

int rvsock_h_sock_error(struct sock *sk)
{
	return sock_error(sk);
}
RVSOCK_EXPORT(rvsock_h_sock_error);

int rvsock_h_sock_rcvlowat(const struct sock *sk, int waitall, int len)
{
	return sock_rcvlowat(sk, waitall, len);
}
RVSOCK_EXPORT(rvsock_h_sock_rcvlowat);

long rvsock_h_sock_rcvtimeo(const struct sock *sk, bool noblock)
{
	return sock_rcvtimeo(sk, noblock);
}
RVSOCK_EXPORT(rvsock_h_sock_rcvtimeo);

long rvsock_h_sock_sndtimeo(const struct sock *sk, bool noblock)
{
	return sock_sndtimeo(sk, noblock);
}
RVSOCK_EXPORT(rvsock_h_sock_sndtimeo);

bool rvsock_h_error_queue_empty(const struct sock *sk)
{
	return skb_queue_empty_lockless(&sk->sk_error_queue);
}
RVSOCK_EXPORT(rvsock_h_error_queue_empty);

void rvsock_h_sk_state_change(struct sock *sk)
{
	sk->sk_state_change(sk);
}
RVSOCK_EXPORT(rvsock_h_sk_state_change);

void rvsock_h_sk_data_ready(struct sock *sk)
{
	sk->sk_data_ready(sk);
}
RVSOCK_EXPORT(rvsock_h_sk_data_ready);

void rvsock_h_sk_write_space(struct sock *sk)
{
	sk->sk_write_space(sk);
}
RVSOCK_EXPORT(rvsock_h_sk_write_space);

void rvsock_h_socket_set_flag(struct socket *sock, int bit)
{
	set_bit(bit, &sock->flags);
}
RVSOCK_EXPORT(rvsock_h_socket_set_flag);

void rvsock_h_sock_poll_wait(struct file *file, struct socket *sock, poll_table *wait)
{
	sock_poll_wait(file, sock, wait);
}
RVSOCK_EXPORT(rvsock_h_sock_poll_wait);

struct socket *rvsock_h_sk_socket(const struct sock *sk)
{
	return sk->sk_socket;
}
RVSOCK_EXPORT(rvsock_h_sk_socket);

struct net *rvsock_h_sock_net(const struct sock *sk)
{
	return sock_net(sk);
}
RVSOCK_EXPORT(rvsock_h_sock_net);

void rvsock_h_init_wait(struct wait_queue_entry *wait)
{
	init_wait(wait);
	wait->func = woken_wake_function;
}
RVSOCK_EXPORT(rvsock_h_init_wait);

void rvsock_h_sk_add_wait(struct sock *sk, struct wait_queue_entry *wait)
{
	add_wait_queue(sk_sleep(sk), wait);
}
RVSOCK_EXPORT(rvsock_h_sk_add_wait);

void rvsock_h_sk_remove_wait(struct sock *sk, struct wait_queue_entry *wait)
{
	remove_wait_queue(sk_sleep(sk), wait);
}
RVSOCK_EXPORT(rvsock_h_sk_remove_wait);

long rvsock_h_wait_woken(struct wait_queue_entry *wait, long timeout)
{
	return wait_woken(wait, TASK_INTERRUPTIBLE, timeout);
}
RVSOCK_EXPORT(rvsock_h_wait_woken);

bool rvsock_h_signal_pending(void)
{
	return signal_pending(current);
}
RVSOCK_EXPORT(rvsock_h_signal_pending);

bool rvsock_h_current_exiting(void)
{
	return current->flags & PF_EXITING;
}
RVSOCK_EXPORT(rvsock_h_current_exiting);

/*
 * An skb for a packet: @headroom bytes in front of the data for the header and room for
 * @payload bytes, linear when asked or when that fits a costly-order allocation, else in page
 * fragments (virtio_vsock_alloc_skb()).  The payload is then added with rvsock_h_skb_put_payload().
 */
struct sk_buff *rvsock_h_alloc_skb(unsigned int headroom, unsigned int payload, bool linear,
				   gfp_t gfp)
{
	struct sk_buff *skb;
	int err;

	if (linear || headroom + payload <= SKB_WITH_OVERHEAD(PAGE_SIZE << PAGE_ALLOC_COSTLY_ORDER)) {
		skb = alloc_skb(headroom + payload, gfp);
		if (skb)
			skb_reserve(skb, headroom);
		return skb;
	}
	skb = alloc_skb_with_frags(headroom, payload, PAGE_ALLOC_COSTLY_ORDER, &err, gfp);
	if (skb) {
		skb_reserve(skb, headroom);
		skb->data_len = payload;
	}
	return skb;
}
RVSOCK_EXPORT(rvsock_h_alloc_skb);

/* Accounts @len payload bytes of a fresh skb from rvsock_h_alloc_skb() (virtio_vsock_skb_put()). */
void rvsock_h_skb_put_payload(struct sk_buff *skb, unsigned int len)
{
	if (skb_is_nonlinear(skb))
		skb->len = len;
	else
		skb_put(skb, len);
}
RVSOCK_EXPORT(rvsock_h_skb_put_payload);

void rvsock_h_kfree_skb(struct sk_buff *skb)
{
	kfree_skb(skb);
}
RVSOCK_EXPORT(rvsock_h_kfree_skb);

/* An inline function without CONFIG_TRACEPOINTS. */
void rvsock_h_consume_skb(struct sk_buff *skb)
{
	consume_skb(skb);
}
RVSOCK_EXPORT(rvsock_h_consume_skb);

void rvsock_h_skb_orphan(struct sk_buff *skb)
{
	skb_orphan(skb);
}
RVSOCK_EXPORT(rvsock_h_skb_orphan);

void rvsock_h_skb_set_destructor(struct sk_buff *skb, void (*fn)(struct sk_buff *skb))
{
	skb->destructor = fn;
}
RVSOCK_EXPORT(rvsock_h_skb_set_destructor);

unsigned int rvsock_h_skb_tailroom(const struct sk_buff *skb)
{
	return skb_tailroom(skb);
}
RVSOCK_EXPORT(rvsock_h_skb_tailroom);

bool rvsock_h_skb_is_nonlinear(const struct sk_buff *skb)
{
	return skb_is_nonlinear(skb);
}
RVSOCK_EXPORT(rvsock_h_skb_is_nonlinear);

/* Neither shared (another reference) nor cloned (another sk_buff on the same data). */
bool rvsock_h_skb_exclusive(const struct sk_buff *skb)
{
	return !skb_shared(skb) && !skb_cloned(skb);
}
RVSOCK_EXPORT(rvsock_h_skb_exclusive);

bool rvsock_h_skb_zcopy(const struct sk_buff *skb)
{
	return skb_zcopy((struct sk_buff *)skb) != NULL;
}
RVSOCK_EXPORT(rvsock_h_skb_zcopy);

/* The skb's user pages were copied elsewhere: it lets go of them, reporting a copy. */
void rvsock_h_skb_zcopy_clear(struct sk_buff *skb)
{
	skb_zcopy_clear(skb, false);
}
RVSOCK_EXPORT(rvsock_h_skb_zcopy_clear);

void rvsock_h_skb_zcopy_set(struct sk_buff *skb, struct ubuf_info *uarg)
{
	skb_zcopy_set(skb, uarg, NULL);
}
RVSOCK_EXPORT(rvsock_h_skb_zcopy_set);

void rvsock_h_net_zcopy_put(struct ubuf_info *uarg)
{
	net_zcopy_put(uarg);
}
RVSOCK_EXPORT(rvsock_h_net_zcopy_put);

void rvsock_h_net_zcopy_put_abort(struct ubuf_info *uarg, bool have_uref)
{
	net_zcopy_put_abort(uarg, have_uref);
}
RVSOCK_EXPORT(rvsock_h_net_zcopy_put_abort);

void rvsock_h_uarg_mark_copied(struct ubuf_info *uarg)
{
	uarg_to_msgzc(uarg)->zerocopy = 0;
}
RVSOCK_EXPORT(rvsock_h_uarg_mark_copied);

/*
 * Lent pages: a send that attaches the sender's user pages to packets for a receiver on this
 * machine and returns once the receiver read them (see rust/zerocopy.rs).  The notification
 * counts the packets that still hold the pages; its last reference completes `done`.  `peer`
 * is the socket the packets were queued on, held once set.  The structure itself has two
 * references: the sender's, and the packets' (dropped with the notification's last one), so a
 * sender that stops waiting (a fatal signal) leaves it to the last packet to free.
 */
struct rvsock_lent {
	struct ubuf_info ubuf;
	struct completion done;
	struct sock *peer;
	refcount_t refs;
};

static void rvsock_lent_put(struct rvsock_lent *l)
{
	if (!refcount_dec_and_test(&l->refs))
		return;
	if (l->peer)
		sock_put(l->peer);
	kfree(l);
}

static void rvsock_lent_complete(struct sk_buff *skb, struct ubuf_info *uarg, bool success)
{
	struct rvsock_lent *l = container_of(uarg, struct rvsock_lent, ubuf);

	if (refcount_dec_and_test(&uarg->refcnt)) {
		complete(&l->done);
		rvsock_lent_put(l);
	}
}

static const struct ubuf_info_ops rvsock_lent_ops = {
	.complete = rvsock_lent_complete,
};

struct ubuf_info *rvsock_h_lent_alloc(void)
{
	struct rvsock_lent *l = kzalloc(sizeof(*l), GFP_KERNEL);

	if (!l)
		return NULL;
	l->ubuf.ops = &rvsock_lent_ops;
	l->ubuf.flags = SKBFL_ZEROCOPY_FRAG | SKBFL_DONT_ORPHAN;
	refcount_set(&l->ubuf.refcnt, 1);
	refcount_set(&l->refs, 2);
	init_completion(&l->done);
	return &l->ubuf;
}
RVSOCK_EXPORT(rvsock_h_lent_alloc);

/* Waits for the packets to let go of the pages: 1 done, 0 timeout, -EINTR fatal signal. */
int rvsock_h_lent_wait(struct ubuf_info *uarg, unsigned long timeout)
{
	long r = wait_for_completion_killable_timeout(
		&container_of(uarg, struct rvsock_lent, ubuf)->done, timeout);

	if (r < 0)
		return -EINTR;
	return r > 0;
}
RVSOCK_EXPORT(rvsock_h_lent_wait);

/* The sender is done with the notification (its own reference on the ubuf already given up). */
void rvsock_h_lent_release(struct ubuf_info *uarg)
{
	rvsock_lent_put(container_of(uarg, struct rvsock_lent, ubuf));
}
RVSOCK_EXPORT(rvsock_h_lent_release);

void rvsock_h_lent_note_peer(struct sk_buff *skb, struct sock *sk)
{
	struct ubuf_info *uarg = skb_zcopy(skb);
	struct rvsock_lent *l;

	if (!uarg || uarg->ops != &rvsock_lent_ops)
		return;
	l = container_of(uarg, struct rvsock_lent, ubuf);
	if (READ_ONCE(l->peer))
		return;
	sock_hold(sk);
	if (cmpxchg(&l->peer, NULL, sk))
		sock_put(sk);
}
RVSOCK_EXPORT(rvsock_h_lent_note_peer);

struct sock *rvsock_h_lent_peer(struct ubuf_info *uarg)
{
	return READ_ONCE(container_of(uarg, struct rvsock_lent, ubuf)->peer);
}
RVSOCK_EXPORT(rvsock_h_lent_peer);

/* Whether @skb holds pages lent by a send of rvsock's own (not the user's MSG_ZEROCOPY). */
bool rvsock_h_skb_lends(struct sk_buff *skb)
{
	struct ubuf_info *uarg = skb_zcopy(skb);

	return uarg && uarg->ops == &rvsock_lent_ops;
}
RVSOCK_EXPORT(rvsock_h_skb_lends);

bool rvsock_h_skb_zcopy_is(struct sk_buff *skb, const struct ubuf_info *uarg)
{
	return skb_zcopy(skb) == uarg;
}
RVSOCK_EXPORT(rvsock_h_skb_zcopy_is);

bool rvsock_h_msg_user_backed(const struct msghdr *msg)
{
	return user_backed_iter(&msg->msg_iter);
}
RVSOCK_EXPORT(rvsock_h_msg_user_backed);

void rvsock_h_msg_revert(struct msghdr *msg, size_t bytes)
{
	iov_iter_revert(&msg->msg_iter, bytes);
}
RVSOCK_EXPORT(rvsock_h_msg_revert);

size_t rvsock_h_msg_data_left(const struct msghdr *msg)
{
	return iov_iter_count(&msg->msg_iter);
}
RVSOCK_EXPORT(rvsock_h_msg_data_left);

int rvsock_h_iov_iter_npages(const struct msghdr *msg, int maxpages)
{
	return iov_iter_npages(&msg->msg_iter, maxpages);
}
RVSOCK_EXPORT(rvsock_h_iov_iter_npages);

int rvsock_h_copy_from_sockptr(void *dst, sockptr_t src, size_t size)
{
	return copy_from_sockptr(dst, src, size) ? -EFAULT : 0;
}
RVSOCK_EXPORT(rvsock_h_copy_from_sockptr);

/*
 * Socket timers run on rvsock.ko's own workqueue: a timer's work may drop the last reference to
 * its socket, and with it the reference the socket held on this module, and then still run a
 * few instructions of this module.  destroy_workqueue() at module exit waits for that.
 */
static struct workqueue_struct *rvsock_wq;

int rvsock_h_wq_init(void)
{
	rvsock_wq = alloc_workqueue("rvsock", 0, 0);
	return rvsock_wq ? 0 : -ENOMEM;
}

void rvsock_h_wq_exit(void)
{
	if (rvsock_wq)
		destroy_workqueue(rvsock_wq);
	rvsock_wq = NULL;
}

void rvsock_h_init_delayed_work(struct delayed_work *dw, work_func_t fn)
{
	INIT_DELAYED_WORK(dw, fn);
}
RVSOCK_EXPORT(rvsock_h_init_delayed_work);

bool rvsock_h_mod_delayed_work(struct delayed_work *dw, unsigned long delay)
{
	return mod_delayed_work(rvsock_wq, dw, delay);
}
RVSOCK_EXPORT(rvsock_h_mod_delayed_work);

DEFINE_STATIC_SRCU(rvsock_transport_srcu);

int rvsock_h_srcu_read_lock(void)
{
	return srcu_read_lock(&rvsock_transport_srcu);
}
RVSOCK_EXPORT(rvsock_h_srcu_read_lock);

void rvsock_h_srcu_read_unlock(int idx)
{
	srcu_read_unlock(&rvsock_transport_srcu, idx);
}
RVSOCK_EXPORT(rvsock_h_srcu_read_unlock);

/*
 * Waits for the read sections in flight.  Only transport unregistration waits (rmmod, a device
 * going away), rarely and in process context: the expedited grace period keeps rmmod quick.
 */
void rvsock_h_synchronize_srcu(void)
{
	synchronize_srcu_expedited(&rvsock_transport_srcu);
}
RVSOCK_EXPORT(rvsock_h_synchronize_srcu);

bool rvsock_h_try_module_get(struct module *m)
{
	return try_module_get(m);
}
RVSOCK_EXPORT(rvsock_h_try_module_get);

struct net *rvsock_h_init_net(void)
{
	return &init_net;
}
RVSOCK_EXPORT(rvsock_h_init_net);

u32 rvsock_h_random_u32(void)
{
	return get_random_u32();
}
RVSOCK_EXPORT(rvsock_h_random_u32);

bool rvsock_h_capable_net_bind_service(void)
{
	return capable(CAP_NET_BIND_SERVICE);
}
RVSOCK_EXPORT(rvsock_h_capable_net_bind_service);

const char *rvsock_h_kernel_release(void)
{
	return init_utsname()->release;
}
RVSOCK_EXPORT(rvsock_h_kernel_release);

/*
 * sock_diag for AF_VSOCK (`ss --vsock`): the handler and the netlink framing are C, the walk over
 * the sockets is Rust (rust/diag.rs), called through `rvsock_diag_dump_fn`.
 */
static int (*rvsock_diag_dump_fn)(struct sk_buff *skb, struct netlink_callback *cb);

static int rvsock_diag_handler_dump(struct sk_buff *skb, struct nlmsghdr *h)
{
	struct netlink_dump_control c = { .dump = rvsock_diag_dump_fn };

	if (nlmsg_len(h) < sizeof(struct vsock_diag_req))
		return -EINVAL;
	if (!(h->nlmsg_flags & NLM_F_DUMP))
		return -EOPNOTSUPP;
	return netlink_dump_start(sock_net(skb->sk)->diag_nlsk, skb, h, &c);
}

static const struct sock_diag_handler rvsock_diag_handler = {
	.owner = THIS_MODULE,
	.family = AF_VSOCK,
	.dump = rvsock_diag_handler_dump,
};

int rvsock_h_diag_register(int (*dump)(struct sk_buff *skb, struct netlink_callback *cb))
{
	rvsock_diag_dump_fn = dump;
	return sock_diag_register(&rvsock_diag_handler);
}

void rvsock_h_diag_unregister(void)
{
	sock_diag_unregister(&rvsock_diag_handler);
}

u32 rvsock_h_diag_states(const struct netlink_callback *cb)
{
	return ((const struct vsock_diag_req *)nlmsg_data(cb->nlh))->vdiag_states;
}

unsigned long rvsock_h_diag_cursor(const struct netlink_callback *cb)
{
	return cb->args[0];
}

void rvsock_h_diag_set_cursor(struct netlink_callback *cb, unsigned long cursor)
{
	cb->args[0] = cursor;
}

bool rvsock_h_diag_same_net(const struct sk_buff *skb, const struct sock *sk)
{
	return net_eq(sock_net(sk), sock_net(skb->sk));
}

int rvsock_h_diag_fill(struct sk_buff *skb, struct netlink_callback *cb, struct sock *sk,
		       const struct rvsock_diag_row *row)
{
	struct vsock_diag_msg *rep;
	struct nlmsghdr *nlh;

	nlh = nlmsg_put(skb, NETLINK_CB(cb->skb).portid, cb->nlh->nlmsg_seq, SOCK_DIAG_BY_FAMILY,
			sizeof(*rep), NLM_F_MULTI);
	if (!nlh)
		return -EMSGSIZE;
	rep = nlmsg_data(nlh);
	rep->vdiag_family = AF_VSOCK;
	rep->vdiag_type = sk->sk_type;
	rep->vdiag_state = sk->sk_state;
	rep->vdiag_shutdown = sk->sk_shutdown;
	rep->vdiag_src_cid = row->src_cid;
	rep->vdiag_src_port = row->src_port;
	rep->vdiag_dst_cid = row->dst_cid;
	rep->vdiag_dst_port = row->dst_port;
	rep->vdiag_ino = sock_i_ino(sk);
	sock_diag_save_cookie(sk, rep->vdiag_cookie);
	return 0;
}
