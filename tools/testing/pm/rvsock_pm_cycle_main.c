// SPDX-License-Identifier: GPL-2.0
/*
 * rvsock_pm_cycle: suspends and resumes the guest's virtio-vsock device as system sleep does,
 * whichever driver has it (rvsock_virtio or the C vmw_vsock_virtio_transport), for the tests of
 * the drivers' freeze and restore.
 *
 * Loading the module runs one cycle: under the device lock, virtio_device_freeze() (the
 * driver's freeze), a pause of pause_ms, then virtio_device_restore() (device reset, features
 * again, the driver's restore), which is what virtio-pci's system-sleep callbacks do around
 * the PCI-level steps.  The load fails with the error of freeze or restore, or ENODEV if no
 * virtio-vsock device has a driver; it stays loaded otherwise (rmmod it).
 *
 * Why not `echo freeze > /sys/power/state` with pm_test: that suspends every device, and the
 * test VM's root is on virtio-9p, whose driver has no restore, so the root would be lost.
 *
 * Test-only, written in C: it drives the kernel's PM entry points and nothing of rvsock.  The
 * virtio bus is not exported; a driver that matches no device gives its address.
 */
#include <linux/delay.h>
#include <linux/device.h>
#include <linux/module.h>
#include <linux/virtio.h>
#include <uapi/linux/virtio_ids.h>

static unsigned int pause_ms = 100;
module_param(pause_ms, uint, 0444);
MODULE_PARM_DESC(pause_ms, "Milliseconds between freeze and restore (default 100)");

/* Device type 0 ends the table: this driver matches nothing. */
static const struct virtio_device_id no_ids[] = { { 0 } };

static struct virtio_driver finder = {
	.driver.name = "rvsock_pm_cycle",
	.id_table = no_ids,
};

struct cycle {
	int cycled;
	int err;
};

static int cycle_one(struct device *dev, void *data)
{
	struct virtio_device *vdev = dev_to_virtio(dev);
	struct cycle *c = data;
	int err;

	if (vdev->id.device != VIRTIO_ID_VSOCK)
		return 0;
	device_lock(dev);
	if (!dev->driver) {
		dev_info(dev, "no driver bound: not cycled\n");
		goto out;
	}
	dev_info(dev, "freeze (driver %s)\n", dev->driver->name);
	err = virtio_device_freeze(vdev);
	if (err) {
		dev_err(dev, "freeze failed: %d\n", err);
		c->err = err;
		goto out;
	}
	msleep(pause_ms);
	err = virtio_device_restore(vdev);
	if (err) {
		dev_err(dev, "restore failed: %d\n", err);
		c->err = err;
		goto out;
	}
	dev_info(dev, "restored\n");
	c->cycled++;
out:
	device_unlock(dev);
	return c->err;
}

static int __init rvsock_pm_cycle_init(void)
{
	struct cycle c = { 0 };
	int err;

	err = register_virtio_driver(&finder);
	if (err)
		return err;
	bus_for_each_dev(finder.driver.bus, NULL, &c, cycle_one);
	unregister_virtio_driver(&finder);
	if (c.err)
		return c.err;
	return c.cycled ? 0 : -ENODEV;
}

static void __exit rvsock_pm_cycle_exit(void)
{
}

module_init(rvsock_pm_cycle_init);
module_exit(rvsock_pm_cycle_exit);
MODULE_DESCRIPTION("Test: suspend and resume the virtio-vsock device (freeze, restore)");
MODULE_LICENSE("GPL");
