# SPDX-License-Identifier: GPL-2.0
"""Ending a command that runs in its own process group (the host-side harness's helper)."""

import os
import signal
import subprocess


def kill_group(proc, grace=30):
    """SIGTERM, then SIGKILL, to the process group of proc (started with start_new_session);
    waits up to `grace` seconds after each signal for proc to exit."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(proc.pid, sig)
        except ProcessLookupError:
            return
        try:
            proc.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            pass
