"""Child processes that loadgen starts (an emulator, local workers) never outlive it."""

from __future__ import annotations

import sys


def die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when loadgen dies, even by SIGKILL, so that no
    child outlives the run that started it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
