"""Child processes that loadgen starts (an emulator, local workers) never outlive it, and start cheaply."""

from __future__ import annotations

import os
import sys


def one_blas_thread() -> None:
    """Before numpy is imported, in each of loadgen's entry points (children inherit it): one BLAS thread unless
    the environment says otherwise. loadgen's numpy work is on small arrays, and OpenBLAS's pool of a thread per
    core cost each process (an emulator, a worker) about 0.2 s of CPU to start, measured on 2 cores."""
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")


def die_with_parent() -> None:
    """In the child, before exec: on Linux, ask for SIGTERM when loadgen dies, even by SIGKILL, so that no
    child outlives the run that started it."""
    if sys.platform.startswith("linux"):
        import ctypes
        import signal

        pr_set_pdeathsig = 1
        ctypes.CDLL(None, use_errno=True).prctl(pr_set_pdeathsig, signal.SIGTERM)
