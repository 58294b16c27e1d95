// SPDX-License-Identifier: GPL-2.0

//! `/dev/vsock`: `IOCTL_VM_SOCKETS_GET_LOCAL_CID` tells a program this machine's CID.

use crate::kx::misc::MiscDevice;
use crate::kx::socket::UserPtr;
use crate::kx::sys;
use kernel::prelude::*;

/// The `/dev/vsock` device.
pub(crate) struct VsockDev;

impl MiscDevice for VsockDev {
    fn ioctl(cmd: u32, arg: UserPtr) -> Result<i32> {
        if cmd != sys::IOCTL_VM_SOCKETS_GET_LOCAL_CID {
            return Err(ENOTTY);
        }
        let core = crate::core().ok_or(ENODEV)?;
        let cid: u32 = core.registry.loaded().dev_local_cid();
        arg.write(&cid)?;
        Ok(0)
    }
}
