"""What every load-generating user of a run shares: where to send, how, and the current stage's dispatch."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import gevent.event

from loadgen.client.probe import TextCalibration
from loadgen.client.stamps import ReadDelays
from loadgen.client.tokenize import PromptTokenizer
from loadgen.load.dispatch import Dispatch
from loadgen.load.recorder import Recorder
from loadgen.spec.workload import RetrySpec, TimeoutSpec


@dataclass
class RunContext:
    base_url: str
    server: str
    model: str
    seed: int
    headers: dict[str, str]
    timeouts: TimeoutSpec
    retry: RetrySpec
    recorder: Recorder
    read_delays: ReadDelays = field(default_factory=ReadDelays)
    text_only: bool = False  # the server refuses token-ID prompts: every stage sends text
    calibration: dict[str, TextCalibration] = field(default_factory=dict)  # per api: words for a token count
    tokenizers: dict[str, PromptTokenizer] = field(default_factory=dict)  # by path (requests.tokenizer)
    t0: float = field(default_factory=time.perf_counter)  # origin of the run clock
    dispatch: Dispatch | None = None  # None between stages
    gate: gevent.event.Event = field(default_factory=gevent.event.Event)  # set while a stage is dispatching
    waiting: int = 0  # users ready and waiting at the gate; a stage's clock starts once all are

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
            d.ended.set()  # wakes users that waited for more work; they now wait at the gate
