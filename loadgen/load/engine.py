"""Running a workload through Locust: headless, or driven from Locust's web UI.

The engine knows nothing of databases or terminals: finished requests go to the recorder's writer and
progress goes to a callback, so the same engine can later feed a Locust master from its workers.
"""

from __future__ import annotations

import signal
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import flask
import gevent
import gevent.event
from locust import LoadTestShape
from locust.env import Environment

from loadgen.load.description import RunDescription
from loadgen.load.monitor import DelayMonitor
from loadgen.load.recorder import Recorder
from loadgen.load.stages import StageWalker
from loadgen.load.state import RunState
from loadgen.load.user import StreamUser
from loadgen.results import Progress

TICK_S = 0.002
PROGRESS_EVERY_S = 0.5
# Above this p99 of its own scheduling delay, loadgen says its stamps (and so the latencies) may be inflated.
DELAY_WARN_MS = 1.0


@dataclass
class Outcome:
    status: str  # completed | interrupted | failed
    client_delay_p99_ms: float | None
    note: str | None
    signum: int | None = None


class Engine:
    def __init__(
        self,
        description: RunDescription,
        recorder: Recorder,
        headers: dict[str, str],
        on_progress: Callable[[Progress], None] | None = None,
    ):
        self.ctx = ctx = RunState.start(description, recorder, headers)
        stages = description.stages
        self.on_progress = on_progress
        self.walker = StageWalker(ctx)
        self.monitor = DelayMonitor()
        self.signum: int | None = None
        self.grace_s = description.timeouts.grace_s  # after an interrupt, in-flight requests get this long
        self._interrupted_at: float | None = None
        self.user_class = type("LLMUser", (StreamUser,), {"ctx": ctx, "abstract": False, "host": description.base_url})
        self.planned = (
            sum(s.stop.requests for s in stages if s.stop.requests is not None)
            if all(s.stop.requests is not None for s in stages)
            else None
        )

    def interrupt(self, signum: int) -> None:
        if self.signum is None:
            self.signum = signum
            self._interrupted_at = time.perf_counter()
            self.walker.stop()

    def progress(self) -> Progress:
        rec = self.ctx.recorder
        ttft, tpot = rec.rolling_p50()
        d = self.ctx.dispatch
        return Progress(
            planned=self.planned,
            done=rec.done,
            in_flight=rec.in_flight,
            errors=rec.errors,
            ttft_p50_ms=ttft,
            tpot_p50_ms=tpot,
            stage=d.stage.name if d is not None else "",
            elapsed_s=self.ctx.clock.elapsed_s(),
        )

    def _outcome(self) -> Outcome:
        """Bound loadgen's own stamping error: with kernel stamps, how late reads came after their data
        arrived; otherwise how late the event loop ran."""
        kernel = self.ctx.read_delays.p99_ms()
        bound, how = (kernel, "read streamed data") if kernel is not None else (self.monitor.p99_ms(), "ran")
        note = None
        if bound is not None and bound > DELAY_WARN_MS:
            note = (
                f"loadgen {how} {bound:.1f} ms late (p99), above its {DELAY_WARN_MS:.0f} ms bound: the client "
                "was saturated, and event times may be late by up to that much"
            )
        if self.ctx.recorder.write_error is not None:
            return Outcome("failed", bound, str(self.ctx.recorder.write_error))
        if self.ctx.recorder.refused is not None:
            return Outcome("failed", bound, self.ctx.recorder.refused)
        status = "interrupted" if self.signum is not None else "completed"
        return Outcome(status, bound, note, self.signum)

    def _stop_if_pointless(self) -> None:
        """Results can no longer be stored, or the endpoint refuses every request alike: sending more would
        measure nothing."""
        rec = self.ctx.recorder
        if (rec.write_error is not None or rec.refused is not None) and not self.walker.stopping:
            self.walker.stop()

    def _record_unsent(self) -> None:
        """A run that stopped early still ends with a row for every planned request."""
        if self.walker.stopping and self.ctx.recorder.write_error is None:
            for r, stage in self.walker.unsent():
                self.ctx.recorder.add_unsent(r, stage.slo)

    def run_headless(self) -> Outcome:
        env = Environment(user_classes=[self.user_class], host=self.ctx.description.base_url)
        runner = env.create_local_runner()
        handlers = [gevent.signal_handler(s, self.interrupt, s) for s in (signal.SIGINT, signal.SIGTERM)]
        self.ctx.clock.start()
        self.ctx.recorder.start()
        self.monitor.start()
        last_progress = time.perf_counter()
        if self.on_progress is not None:  # the first render is the slowest; do it before any clock starts
            self.on_progress(self.progress())
        try:
            while True:
                want = self.walker.step(runner.user_count)
                if want is None:
                    break
                if want != runner.target_user_count:
                    runner.start(want, spawn_rate=want)
                self._stop_if_pointless()
                if self._interrupted_at is not None and time.perf_counter() - self._interrupted_at > self.grace_s:
                    break
                now = time.perf_counter()
                if self.on_progress is not None and now - last_progress >= PROGRESS_EVERY_S:
                    last_progress = now
                    self.on_progress(self.progress())
                gevent.sleep(TICK_S)
        finally:
            runner.quit()  # users still in flight record themselves as interrupted
            for h in handlers:
                h.cancel()
            self.monitor.stop()
            self._record_unsent()
            self.ctx.recorder.stop()
        if self.on_progress is not None:
            self.on_progress(self.progress())
        return self._outcome()

    def run_ui(
        self,
        host: str,
        port: int,
        on_listening: Callable[[str], None],
        on_finished: Callable[[Outcome], None],
        on_started: Callable[[], None] = lambda: None,
    ) -> Outcome:
        """Serve Locust's web UI. The run starts with its Start button (`on_started` then) and ends with its plan or
        its Stop button; then `on_finished` gets the outcome and the UI stays up, showing the final figures, until
        a signal. One UI is one run: a second Start is refused with a message, never silently ignored."""
        walker = self.walker
        finished = gevent.event.Event()
        plan_done = gevent.event.Event()
        started = gevent.event.Event()

        class Shape(LoadTestShape):
            def tick(self_inner) -> tuple[int, float] | None:
                runner = self_inner.runner
                want = walker.step(runner.user_count if runner is not None else 0)
                if want is None:
                    plan_done.set()
                    return None
                return (want, float(want))

        env = Environment(user_classes=[self.user_class], host=self.ctx.description.base_url, shape_class=Shape())
        runner = env.create_local_runner()
        # Locust's UI reads its own options from sys.argv, which holds loadgen's; loadgen has parsed them already.
        sys.argv = sys.argv[:1]
        web = env.create_web_ui(host=host, port=port)
        target = self.ctx.description.base_url

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

        env.events.test_start.add_listener(lambda **_: started.set())
        env.events.test_stop.add_listener(lambda **_: finished.set())
        closing = gevent.event.Event()

        def on_signal(signum: int) -> None:
            if not finished.is_set():
                self.interrupt(signum)
            closing.set()

        handlers = [gevent.signal_handler(s, on_signal, s) for s in (signal.SIGINT, signal.SIGTERM)]
        on_listening(f"http://{host}:{port}")
        try:
            while not started.is_set() and not closing.is_set():
                gevent.sleep(0.1)
            if started.is_set():
                on_started()
                self.ctx.clock.start()
                self.ctx.recorder.start()
                self.monitor.start()
                while not finished.is_set():
                    self._stop_if_pointless()
                    if self._interrupted_at is not None and time.perf_counter() - self._interrupted_at > self.grace_s:
                        runner.stop()  # users still in flight record themselves as interrupted
                        break
                    if self.on_progress is not None:
                        self.on_progress(self.progress())
                    gevent.sleep(PROGRESS_EVERY_S)
                runner.stop()
                if not plan_done.is_set() and self.signum is None:  # stopped from the web UI
                    self.signum = signal.SIGINT
            self.monitor.stop()
            self._record_unsent()
            self.ctx.recorder.stop()
            outcome = self._outcome()
            on_finished(outcome)
            if self.signum is None:  # completed: keep the final figures on view until told to close
                closing.wait()
        finally:
            runner.quit()
            web.stop()
            for h in handlers:
                h.cancel()
        return outcome
