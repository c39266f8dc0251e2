"""A run in this process: Locust's local runner, the stage walker, and the recorder.

The engine knows nothing of databases or terminals: finished requests go to the recorder's writer and
progress goes to a callback. drive.py runs it headless or from Locust's web UI.
"""

from __future__ import annotations

from collections.abc import Callable

from locust.env import Environment

from loadgen.load import drive
from loadgen.load.description import RunDescription
from loadgen.load.drive import Outcome
from loadgen.load.monitor import DelayMonitor, saturation_note, timing_bound
from loadgen.load.recorder import Recorder
from loadgen.load.stages import StageWalker, planned_requests
from loadgen.load.state import RunState
from loadgen.load.user import user_class
from loadgen.results import Progress
from loadgen.spec.workload import StageSpec


class Engine(drive.Load):
    def __init__(
        self,
        description: RunDescription,
        recorder: Recorder,
        headers: dict[str, str],
        on_progress: Callable[[Progress], None] | None = None,
        more: Callable[[], StageSpec | None] | None = None,
    ):
        """`more`: asked for a further stage once the planned ones are done (a capacity search's next trial)."""
        self.ctx = ctx = RunState.start(description, recorder, headers)
        self.on_progress = on_progress
        self.walker = StageWalker(ctx, more)
        self.monitor = DelayMonitor()
        self.grace_s = description.timeouts.grace_s
        self.planned = planned_requests(description.stages, description.seed) if more is None else None
        self.env = Environment(user_classes=[user_class(ctx, description.base_url)], host=description.base_url)
        self.runner = self.env.create_local_runner()

    def step(self, users_running: int) -> int | None:
        return self.walker.step(users_running)

    def begin(self) -> None:
        self.ctx.clock.start()
        self.ctx.recorder.start()
        self.monitor.start()

    def stop(self) -> None:
        self.walker.stop()

    def pointless(self) -> bool:
        rec = self.ctx.recorder
        return rec.write_error is not None or rec.refused is not None

    def progress(self) -> Progress:
        rec = self.ctx.recorder
        d = self.ctx.dispatch
        return Progress(
            planned=self.planned,
            done=rec.done,
            in_flight=rec.in_flight,
            in_flight_s=rec.in_flight_s(),
            stage=d.stage.name if d is not None else "",
            elapsed_s=self.ctx.clock.elapsed_s(),
            stage_start_s=d.start_s if d is not None else None,
            timing_bound_ms=timing_bound(self.ctx.read_delays, self.monitor)[0],
        )

    def end(self) -> Outcome:
        self.runner.stop()  # users still in flight record themselves as interrupted
        self.monitor.stop()
        rec = self.ctx.recorder
        if self.walker.stopping and rec.write_error is None:  # a run that stopped early: a row for every plan
            for r, stage in self.walker.unsent():
                rec.add_unsent(r, stage.slo)
        rec.stop()
        bound, how = timing_bound(self.ctx.read_delays, self.monitor)
        return drive.outcome(rec, bound, saturation_note(bound, how), self.signum)
