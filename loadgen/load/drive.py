"""Driving a run through Locust: headless, or from Locust's web UI. The same two loops drive a run in this
process (engine.py) and a run on workers (master.py); each says what users it wants, when it has begun and
how it ends."""

from __future__ import annotations

import signal
import sys
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
import gevent
import gevent.event
from locust import LoadTestShape
from locust.env import Environment
from locust.runners import Runner
from locust.web import WebUI

from loadgen.load.recorder import Recorder
from loadgen.results import Progress

TICK_S = 0.002
PROGRESS_EVERY_S = 0.5


@dataclass
class Outcome:
    status: str  # completed | interrupted | failed
    client_delay_p99_ms: float | None
    note: str | None
    signum: int | None = None


def outcome(
    recorder: Recorder, bound: float | None, note: str | None, signum: int | None, failure: str | None = None
) -> Outcome:
    """How a run went: failed when its results could not be stored, it could not go on (`failure`), or the
    endpoint refused its first requests alike; otherwise interrupted or completed, with any note."""
    if recorder.write_error is not None:
        return Outcome("failed", bound, str(recorder.write_error))
    if failure is not None:
        return Outcome("failed", bound, failure)
    if recorder.refused is not None:
        return Outcome("failed", bound, recorder.refused)
    return Outcome("interrupted" if signum is not None else "completed", bound, note, signum)


class Load(ABC):
    """A run as the loops see it."""

    on_progress: Callable[[Progress], None] | None = None
    env: Environment
    runner: Runner
    grace_s: float  # after an interrupt, in-flight requests get this long
    signum: int | None = None
    _interrupted_at: float | None = None

    @abstractmethod
    def step(self, users_running: int) -> int | None:
        """Advance the stages as far as possible; the users wanted now, or None when the run is over."""

    @abstractmethod
    def begin(self) -> None:
        """The load starts now."""

    @abstractmethod
    def stop(self) -> None:
        """No new sends; what is in flight finishes."""

    @abstractmethod
    def pointless(self) -> bool:
        """Results can no longer be stored, or the endpoint refuses every request alike: sending more would
        measure nothing."""

    @abstractmethod
    def end(self) -> Outcome:
        """Stop the users (what is still in flight is recorded as interrupted), record every planned request
        that never went out, store the rest, and say how the run went."""

    @abstractmethod
    def progress(self) -> Progress: ...

    def interrupt(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            self._interrupted_at = time.perf_counter()
            self.stop()

    def going_on(self) -> bool:
        """Between ticks: stop sending when it is pointless; False once an interrupt's grace period is over."""
        if self.pointless():
            self.stop()
        return self._interrupted_at is None or time.perf_counter() - self._interrupted_at <= self.grace_s


def run_headless(load: Load) -> Outcome:
    runner = load.runner
    handlers = [gevent.signal_handler(s, load.interrupt, s) for s in (signal.SIGINT, signal.SIGTERM)]
    if load.on_progress is not None:  # the first render is the slowest; do it before any clock starts
        load.on_progress(load.progress())
    load.begin()
    last_progress = time.perf_counter()
    try:
        while True:
            want = load.step(runner.user_count)
            if want is None:
                break
            if want != runner.target_user_count:
                # Every user started or stopped within about a second: Locust paces a change at spawn_rate users
                # a second, and 256 open-loop users going down to a closed loop's 2 at 2 a second would hold that
                # stage's start until its timeout.
                runner.start(want, spawn_rate=max(want, runner.user_count, 1))
            if not load.going_on():
                break
            now = time.perf_counter()
            if load.on_progress is not None and now - last_progress >= PROGRESS_EVERY_S:
                last_progress = now
                load.on_progress(load.progress())
            gevent.sleep(TICK_S)
    finally:
        for h in handlers:
            h.cancel()
        try:
            outcome = load.end()
        finally:
            runner.quit()
    if load.on_progress is not None:
        load.on_progress(load.progress())
    return outcome


def run_ui(
    load: Load,
    host: str,
    port: int,
    on_listening: Callable[[str], None],
    on_finished: Callable[[Outcome], None],
    on_started: Callable[[], None] = lambda: None,
    on_web: Callable[[WebUI], None] = lambda web: None,
) -> Outcome:
    """Serve Locust's web UI. The run starts with its Start button (`on_started` then) and ends with its plan or
    its Stop button; then `on_finished` gets the outcome and the UI stays up, showing the final figures, until
    a signal. One UI is one run: a second Start is refused with a message, never silently ignored. `on_web` gets
    the web UI before it serves (to add to it)."""
    env, runner = load.env, load.runner
    finished = gevent.event.Event()
    plan_done = gevent.event.Event()
    started = gevent.event.Event()

    class Shape(LoadTestShape):
        def tick(self_inner) -> tuple[int, float] | None:
            want = load.step(runner.user_count)
            if want is None:
                plan_done.set()
                return None
            return (want, float(want))

    env.shape_class = Shape()
    env.shape_class.runner = runner
    # Locust's UI reads its own options from sys.argv, which holds loadgen's; loadgen has parsed them already.
    sys.argv = sys.argv[:1]
    web = env.create_web_ui(host=host, port=port, delayed_start=True)
    on_web(web)
    target = env.host

    @web.app.before_request
    def _one_run_to_its_endpoint() -> Any:
        # Locust's form hides users and ramp-up for a load shape, but not the host: a different host, or a
        # second Start after the run, would otherwise do nothing while looking as if it did.
        if flask.request.path != "/swarm":
            return None
        if started.is_set():
            message = "this web UI has run its workload; its results are in the database (run loadgen ui again)"
        elif flask.request.form.get("host", target) not in ("", target):
            message = f"loadgen sends to the workload's endpoint {target}; give another with --endpoint"
        else:
            return None
        return flask.jsonify({"success": False, "message": message, "host": target})

    web.start()  # every route and hook is in place before it serves

    env.events.test_start.add_listener(lambda **_: started.set())
    env.events.test_stop.add_listener(lambda **_: finished.set())
    closing = gevent.event.Event()

    def on_signal(signum: int) -> None:
        if not finished.is_set():
            load.interrupt(signum)
        closing.set()

    handlers = [gevent.signal_handler(s, on_signal, s) for s in (signal.SIGINT, signal.SIGTERM)]
    on_listening(f"http://{host}:{port}")
    try:
        while not started.is_set() and not closing.is_set():
            gevent.sleep(0.1)
        if started.is_set():
            on_started()
            load.begin()
            while not finished.is_set() and load.going_on():
                if load.on_progress is not None:
                    load.on_progress(load.progress())
                gevent.sleep(PROGRESS_EVERY_S)
            if not plan_done.is_set() and load.signum is None:  # stopped from the web UI
                load.interrupt(signal.SIGINT)
        outcome = load.end()
        on_finished(outcome)
        if load.signum is None:  # completed: keep the final figures on view until told to close
            closing.wait()
    finally:
        runner.quit()
        web.stop()
        for h in handlers:
            h.cancel()
    return outcome
