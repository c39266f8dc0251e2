"""When did these bytes arrive? Kernel receive stamps where the platform has them, else the clock at read time.

With Linux software receive timestamps (SO_TIMESTAMPNS) the kernel stamps each packet as it arrives, so a
stamp does not wait for this process to be scheduled. A read that drains several packets carries the stamp of
the last one, so when a read completes several events, the time between its stamp and the read bounds how far
the earlier events' stamps can be off; `Delays` keeps that bound's distribution, and the run reports it.
"""

from __future__ import annotations

import socket
import struct
import sys
import time

import numpy as np

SO_TIMESTAMPNS = 35  # Linux (asm-generic); Python does not name it
_TIMESPEC = struct.Struct("qq")
_ANC_SIZE = socket.CMSG_SPACE(_TIMESPEC.size)
_available = sys.platform.startswith("linux")


def enable(sock: socket.socket) -> bool:
    """Ask the kernel to stamp this socket's packets; False where it cannot."""
    global _available
    if _available:
        try:
            sock.setsockopt(socket.SOL_SOCKET, SO_TIMESTAMPNS, 1)
        except OSError:
            _available = False
    return _available


class Delays:
    """A histogram of delays (how late reads came after their data arrived; how late the event loop ran), in
    0.1 ms bins up to 1 s: its p99 is cheap to read at any time, as the live view does."""

    BIN_S = 1e-4

    def __init__(self) -> None:
        self.counts = np.zeros(10_001, dtype=np.int64)

    def add(self, delay_s: float) -> None:
        i = int(delay_s / self.BIN_S)
        self.counts[i if 0 <= i < 10_000 else (0 if i < 0 else 10_000)] += 1

    def p99_ms(self) -> float | None:
        total = int(self.counts.sum())
        if total == 0:
            return None
        i = int(np.searchsorted(np.cumsum(self.counts), 0.99 * total))
        return (i + 1) * self.BIN_S * 1000.0


BRACKET_S = 20e-6  # two clock reads this close were not split by a preemption worth speaking of


def wall_to_perf() -> float:
    """What to add to a wall-clock time to put it on the perf_counter clock. The wall clock is read between two
    reads of perf_counter, and the tightest of three tries kept: a process preempted between the reads (a loaded
    machine) would otherwise shift every stamp mapped with the offset by as long as it waited."""
    best_width, offset = float("inf"), 0.0
    for _ in range(3):
        before = time.perf_counter()
        wall = time.time()
        after = time.perf_counter()
        if after - before < best_width:
            best_width, offset = after - before, (before + after) / 2 - wall
        if best_width <= BRACKET_S:
            break
    return offset


def recv_stamped(sock: socket.socket, size: int) -> tuple[bytes, float, float]:
    """Receive once; return the data, when it arrived and when it was read, on the perf_counter clock."""
    data, anc, _, _ = sock.recvmsg(size, _ANC_SIZE)
    now = time.perf_counter()
    for level, kind, raw in anc:
        if level == socket.SOL_SOCKET and kind == SO_TIMESTAMPNS and len(raw) >= _TIMESPEC.size:
            sec, nsec = _TIMESPEC.unpack_from(raw)
            # The stamp is wall-clock time; data cannot have arrived after it was read.
            return data, min(sec + nsec * 1e-9 + wall_to_perf(), now), now
    return data, now, now


def recv_clocked(sock: socket.socket, size: int) -> tuple[bytes, float, float]:
    data = sock.recv(size)
    now = time.perf_counter()
    return data, now, now
