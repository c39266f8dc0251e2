"""The live state of one load-generating process: its description, clock, recorder, what to send, and the
current stage's dispatch with the gate users wait at between stages."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent.event

from loadgen.client.stamps import Delays
from loadgen.load.description import RunDescription
from loadgen.load.dispatch import Dispatch
from loadgen.load.recorder import Recorder
from loadgen.target.targeter import Targeter


class Clock:
    """The run clock: seconds since its origin, which is set once, when the load starts."""

    def __init__(self) -> None:
        self.t0: float | None = None

    def start(self, t0: float | None = None) -> None:
        """Now, or at `t0` (this process's perf_counter): a worker's origin is the master's, mapped onto its
        own clock, so that its stamps are on the master's timeline."""
        assert self.t0 is None, "the run clock starts once"
        self.t0 = time.perf_counter() if t0 is None else t0

    def elapsed_s(self) -> float:
        """Seconds since the origin; 0 before the load starts."""
        return 0.0 if self.t0 is None else time.perf_counter() - self.t0

    @property
    def origin(self) -> float:
        assert self.t0 is not None, "the run clock has not started"
        return self.t0


@dataclass
class RunState:
    description: RunDescription
    recorder: Recorder
    targeter: Targeter
    headers: dict[str, str] = field(default_factory=dict, repr=False)  # this process's, with any API key
    clock: Clock = field(default_factory=Clock)
    read_delays: Delays = field(default_factory=Delays)
    dispatch: Dispatch | None = None  # None between stages
    gate: gevent.event.Event = field(default_factory=gevent.event.Event)  # set while a stage is dispatching
    waiting: int = 0  # users ready and waiting at the gate; a stage's clock starts once all are

    @classmethod
    def start(cls, description: RunDescription, recorder: Recorder, headers: dict[str, str]) -> RunState:
        d = description
        targeter = Targeter(d.server, d.model, d.seed, d.prompts, d.stages)
        return cls(description, recorder, targeter, headers)

    def wait_at_gate(self) -> None:
        self.waiting += 1
        try:
            self.gate.wait()
        finally:
            self.waiting -= 1

    def open_stage(self, dispatch: Dispatch) -> None:
        self.dispatch = dispatch
        self.gate.set()

    def close_stage(self) -> None:
        d, self.dispatch = self.dispatch, None
        self.gate.clear()
        if d is not None:
            d.end()  # users that waited for more work now wait at the gate
