// SPDX-License-Identifier: GPL-2.0
/*
 * C helpers for rust/virtio.rs: one-line wrappers over the inline functions and config ops of
 * include/linux/virtio_config.h, which Rust cannot call.  Linked into rvsock_virtio.ko only (not
 * exported), so that rvsock.ko does not depend on CONFIG_VIRTIO.
 */
#include <linux/moduleparam.h>
#include <linux/scatterlist.h>
#include <linux/sizes.h>
#include <linux/skbuff.h>
#include <linux/wait.h>
#include "rvsock_sys.h"

/* virtio_find_vqs() with the 6.11+ signature; no interrupt affinity. */
int rvsock_hv_find_vqs(struct virtio_device *vdev, unsigned int nvqs, struct virtqueue *vqs[],
		       struct virtqueue_info vqs_info[])
{
	return virtio_find_vqs(vdev, nvqs, vqs, vqs_info, NULL);
}

void rvsock_hv_del_vqs(struct virtio_device *vdev)
{
	vdev->config->del_vqs(vdev);
}

/* Raw config space read, as net/vmw_vsock/virtio_transport.c reads guest_cid. */
void rvsock_hv_config_get(struct virtio_device *vdev, unsigned int offset, void *buf,
			  unsigned int len)
{
	vdev->config->get(vdev, offset, buf, len);
}

/*
 * virtio_device_ready(), which WARNs on a device already DRIVER_OK: false (and nothing done)
 * in that case.
 */
bool rvsock_hv_device_ready(struct virtio_device *vdev)
{
	if (vdev->config->get_status(vdev) & VIRTIO_CONFIG_S_DRIVER_OK)
		return false;
	virtio_device_ready(vdev);
	return true;
}

/* Whether @addr is in the kernel's linear mapping (what sg_init_one() requires). */
bool rvsock_hv_virt_addr_valid(const void *addr)
{
	return virt_addr_valid(addr);
}

/*
 * Waiting for a device's virtqueues to be gone (rust/virtio.rs): their drop clears
 * vdev->dev.driver_data and wakes the waiters.  One wait queue for every device of the module;
 * each waiter checks its own device.
 */
static DECLARE_WAIT_QUEUE_HEAD(rvsock_hv_vqs_gone_wq);

/*
 * Waits until @vdev's driver_data is NULL, at most @timeout_ms milliseconds (uninterruptible).
 * True if it is.
 */
bool rvsock_hv_wait_vqs_gone(struct virtio_device *vdev, unsigned int timeout_ms)
{
	return wait_event_timeout(rvsock_hv_vqs_gone_wq, !READ_ONCE(vdev->dev.driver_data),
				  msecs_to_jiffies(timeout_ms)) != 0;
}

/* Clears @vdev's driver_data and wakes rvsock_hv_wait_vqs_gone(). */
void rvsock_hv_vqs_gone(struct virtio_device *vdev)
{
	WRITE_ONCE(vdev->dev.driver_data, NULL);
	wake_up_all(&rvsock_hv_vqs_gone_wq);
}

struct workqueue_struct *rvsock_hv_alloc_wq(const char *name)
{
	return alloc_workqueue("%s", 0, 0, name);
}

void rvsock_hv_flush_wq(struct workqueue_struct *wq)
{
	flush_workqueue(wq);
}

void rvsock_hv_destroy_wq(struct workqueue_struct *wq)
{
	destroy_workqueue(wq);
}

unsigned int rvsock_hv_skb_nr_frags(const struct sk_buff *skb)
{
	return skb_shinfo(skb)->nr_frags;
}

/* Whether @skb's page fragments carry all of its nonlinear payload (no frag list). */
bool rvsock_hv_skb_frags_whole(const struct sk_buff *skb)
{
	const struct skb_shared_info *si = skb_shinfo(skb);
	unsigned int i, n = 0;

	if (skb_has_frag_list(skb))
		return false;
	for (i = 0; i < si->nr_frags; i++)
		n += skb_frag_size(&si->frags[i]);
	return n == skb->data_len;
}

/*
 * Makes @sg a one-entry scatterlist for page fragment @i of @skb, by page (sg_set_page()), so
 * that kernel pages and user pages attached by a zerocopy send alike reach the device without a
 * copy or a mapping (what net/vmw_vsock/virtio_transport.c does with page_to_virt() and
 * sg_init_one()).  False if there is no such fragment or it is empty.
 */
bool rvsock_hv_sg_set_skb_frag(struct scatterlist *sg, const struct sk_buff *skb, unsigned int i)
{
	const skb_frag_t *f;

	if (i >= skb_shinfo(skb)->nr_frags)
		return false;
	f = &skb_shinfo(skb)->frags[i];
	if (!skb_frag_size(f))
		return false;
	sg_init_table(sg, 1);
	sg_set_page(sg, skb_frag_page(f), skb_frag_size(f), skb_frag_off(f));
	return true;
}

/*
 * Module parameter of rvsock_virtio.ko (6.12's Rust module! has none), read through
 * rust/virtio.rs.  The default is upstream's buffer (a 4 KiB allocation); 65216 fills an order-4
 * (64 KiB) allocation exactly.  The driver clamps the value to 3776 .. 65580 (upstream's 4 KiB
 * buffer .. a header and a 64 KiB payload).
 */
static unsigned int rx_buf_size = SKB_WITH_OVERHEAD(SZ_4K);
module_param(rx_buf_size, uint, 0444);
MODULE_PARM_DESC(rx_buf_size,
		 "bytes of one rx buffer, 44-byte header included (3776 .. 65580, default 3776)");

unsigned int rvsock_hv_rx_buf_size(void)
{
	return rx_buf_size;
}
