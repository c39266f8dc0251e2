"""A worker: one load-generating process under a master (master.py), on this machine or another.

It learns the run from the master, sends its share of each stage's plan at the instants the master chose (on
the master's timeline: its clock origin is the master's, mapped onto this machine's clock), and sends every
finished request back as rows; it never writes a database. Locust's WorkerRunner carries the messages, spawns
the users the master asks for and reports their statistics to the master's UI.
"""

from __future__ import annotations

import itertools
import signal
import time
from collections.abc import Sequence
from typing import Any

import gevent
import gevent.event
from locust.env import Environment

from loadgen.load import wire
from loadgen.load.description import RunDescription
from loadgen.load.dispatch import Dispatch
from loadgen.load.monitor import DelayMonitor, timing_bound
from loadgen.load.recorder import Recorder
from loadgen.load.stages import START_TIMEOUT_S
from loadgen.load.state import RunState
from loadgen.load.user import sleep_to_send, user_class
from loadgen.metrics import Derived
from loadgen.results import RequestResult
from loadgen.schedule.plan import plan_stage, share

FLUSH_INTERVAL_S = 0.2  # rows go to the master in small batches: encoding runs on the event loop that stamps
POLL_S = 0.002
LEAVE_S = 1.0  # an interrupted worker gives its last messages this long to leave
QUIT_WAIT_S = 30.0  # a finished worker waits this long for the master's quit


class WorkerRefused(Exception):
    """This worker cannot take part in the run (its API key is missing, say); the master has been told."""


class WorkerLate(Exception):
    """This worker connected after the run had started."""


class Worker:
    def __init__(self, master_host: str, master_port: int):
        self.user_class = user_class(None, None)
        self.env = Environment(user_classes=[self.user_class])
        self.runner = self.env.create_worker_runner(master_host, master_port)
        self.ctx: RunState | None = None
        self.monitor = DelayMonitor()
        self.refused: str | None = None  # cannot take part: its input is wrong (exit 2)
        self.left_out: str | None = None  # came too late to take part (exit 1)
        self.signum: int | None = None
        self.finished = gevent.event.Event()
        for name, handler in {
            wire.CLOCK: self._on_clock,
            wire.RUN: self._on_run,
            wire.PREPARE: self._on_prepare,
            wire.OPEN: self._on_open,
            wire.STOP: self._on_stop,
            wire.FINISH: self._on_finish,
            wire.LATE: self._on_late,
        }.items():
            self.runner.register_message(name, handler)

    @property
    def index(self) -> int:
        return self.runner.worker_index

    def _send(self, kind: str, data: dict[str, Any]) -> None:
        self.runner.send_message(kind, data)

    def _on_clock(self, msg: Any, **_: Any) -> None:
        self._send(wire.CLOCK_REPLY, {"seq": msg.data["seq"], "t": time.perf_counter()})

    def _on_run(self, msg: Any, **_: Any) -> None:
        description = RunDescription.from_json(msg.data["description"])
        try:  # the API key from this worker's own environment, never from the wire
            headers = description.headers()
        except KeyError as e:
            who = f"worker {self.index} ({self.runner.client_id})"
            self.refused = f"{who}: environment variable {e.args[0]} is not set on this worker"
            self._send(wire.JOINED, {"refused": self.refused})
            self.finished.set()
            return
        recorder = Recorder(self._send_rows, threaded=False, flush_interval_s=FLUSH_INTERVAL_S)
        ctx = RunState.start(description, recorder, headers)
        ctx.clock.start(msg.data["origin"])
        self.ctx = ctx
        self.user_class.ctx = ctx
        self.user_class.host = description.base_url
        self.env.host = description.base_url
        recorder.start()
        self.monitor.start()
        gevent.spawn(self._report_load, recorder)
        self._send(wire.JOINED, {})

    def _load(self) -> dict[str, Any]:
        assert self.ctx is not None
        return {"in_flight": self.ctx.recorder.in_flight, "in_flight_s": self.ctx.recorder.in_flight_s()}

    def _send_rows(self, batch: Sequence[tuple[RequestResult, Derived]]) -> None:
        self._send(wire.ROWS, {"rows": wire.encode_rows([r for r, _ in batch]), **self._load()})

    def _report_load(self, recorder: Recorder) -> None:
        """The master's live view learns what is in flight here while no row comes (a long request's stream)."""
        last = -1
        while not self.finished.wait(FLUSH_INTERVAL_S):
            if recorder.in_flight or last:
                self._send(wire.LOAD, self._load())
            last = recorder.in_flight

    def _on_prepare(self, msg: Any, **_: Any) -> None:
        gevent.spawn(self._report_ready, msg.data["stage"])

    def _report_ready(self, stage: int) -> None:
        """Once every user Locust gave this worker waits at the gate (or after the stages' start timeout)."""
        assert self.ctx is not None
        deadline = time.perf_counter() + START_TIMEOUT_S
        r = self.runner
        while time.perf_counter() < deadline:
            if r.user_count == r.target_user_count and self.ctx.waiting == r.user_count:
                break
            gevent.sleep(POLL_S)
        self._send(wire.READY, {"stage": stage, "users": r.user_count})

    def _on_open(self, msg: Any, **_: Any) -> None:
        gevent.spawn(self._run_stage, msg.data["stage"], msg.data["start_s"], msg.data["slots"], msg.data["first_id"])

    def _run_stage(self, index: int, start_s: float, dealt: list[int], first_id: int) -> None:
        ctx = self.ctx
        assert ctx is not None
        stage = ctx.description.stages[index]
        plan = share(plan_stage(stage, ctx.description.seed, index, first_id=first_id), self.index, dealt)
        # Draw the first request before the start: setting up the random streams takes milliseconds.
        first = next(plan, None)
        if first is None:  # nothing of this stage is this worker's (it may have no users in it)
            self._send(wire.STAGE_DONE, {"stage": index, "next_id": first_id})
            return
        plan = itertools.chain([first], plan)
        delay = start_s - ctx.clock.elapsed_s()
        if delay > 0:
            sleep_to_send(delay)
        d = Dispatch(stage, plan, ctx.clock.origin, first_id, start_s=start_s)
        if self.signum is not None or ctx.recorder.write_error is not None:
            d.stop()
        ctx.open_stage(d)
        while not d.done:
            if ctx.recorder.write_error is not None:  # rows can no longer reach the master: send no more
                d.stop()
            gevent.sleep(POLL_S)
        ctx.close_stage()
        self._send(wire.STAGE_DONE, {"stage": index, "next_id": d.next_id})

    def _on_stop(self, msg: Any = None, **_: Any) -> None:
        if self.ctx is not None and self.ctx.dispatch is not None:
            self.ctx.dispatch.stop()

    def _on_late(self, msg: Any, **_: Any) -> None:
        if self.left_out is None:
            self.left_out = "the master's run had started before this worker connected: it took no part"
            self.env.events.quitting.fire(environment=self.env)  # Locust tells the master this worker is gone
            self.finished.set()

    def _on_finish(self, msg: Any, **_: Any) -> None:
        gevent.spawn(self._finish)

    def _finish(self) -> None:
        """End what is still in flight (recorded as interrupted), send every row, then the timing bound."""
        self.runner.stop()
        self.monitor.stop()
        bound: float | None = None
        how = "ran"
        if self.ctx is not None:
            self.ctx.recorder.stop()
            bound, how = timing_bound(self.ctx.read_delays, self.monitor)
        self._send(wire.FINISHED, {"client_delay_p99_ms": bound, "how": how})
        self.finished.set()

    def interrupt(self, signum: int) -> None:
        """Ctrl-C or SIGTERM on the worker itself: no new sends, what is in flight ends, its rows still go to the
        master, which records this worker's unsent share as lost."""
        if self.signum is None:
            self.signum = signum
            self._on_stop()
            gevent.spawn(self._finish)

    def serve(self) -> int:
        """Until the master ends the run with Locust's quit (after this worker has finished, or when it cannot
        take part), or, interrupted, until its last rows have had a moment to leave."""
        handlers = [gevent.signal_handler(s, self.interrupt, s) for s in (signal.SIGINT, signal.SIGTERM)]
        finished_at: float | None = None
        try:
            while len(self.runner.greenlet):  # Locust's quit empties the runner's group
                if self.finished.is_set():
                    finished_at = finished_at or time.perf_counter()
                    wait_s = LEAVE_S if self.signum is not None or self.left_out else QUIT_WAIT_S
                    if time.perf_counter() - finished_at > wait_s:
                        break
                gevent.sleep(0.05)
        finally:
            for h in handlers:
                h.cancel()
            self.runner.quit()
        if self.refused is not None:
            raise WorkerRefused(self.refused)
        if self.left_out is not None:
            raise WorkerLate(self.left_out)
        return 0 if self.signum is None else 128 + self.signum
