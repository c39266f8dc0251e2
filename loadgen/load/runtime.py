"""The process setup that sending load needs, done once, explicitly, before any command that sends load.

Locust monkey-patches the standard library for gevent when it is imported; that must happen before anything
imports ssl, socket users or threading (urllib.request, say), so the CLI calls `prepare()` first of all.
"""

from __future__ import annotations

import inspect
import logging
import sys
import types

SWITCH_INTERVAL_S = 0.0005


def prepare() -> None:
    import locust  # noqa: F401  (gevent's monkey-patching happens here)

    # Locust logs every ramp and the spawn-rate advice at INFO/WARNING; loadgen has its own progress view.
    logging.getLogger("locust").setLevel(logging.ERROR)
    # The database writer is a real thread: by default it may hold the GIL for 5 ms at a time, and every send and
    # stamp on the load's event loop would wait behind it. Half a millisecond keeps the loop's delays below that.
    sys.setswitchinterval(SWITCH_INTERVAL_S)
    # Runner.stop() names its caller in a debug line through inspect, which reads the source around each frame
    # (and looks up every module loaded to find the caller's): about 0.2 s of CPU a stop, here. Without the source
    # lines it names the caller as well, nearly free.
    from locust import runners

    runners.inspect = types.SimpleNamespace(
        stack=lambda: inspect.stack(0), getframeinfo=lambda frame: inspect.getframeinfo(frame, 0)
    )
