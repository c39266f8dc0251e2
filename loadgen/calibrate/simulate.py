"""A measured stage replayed on a fitted engine on a virtual clock: the twin's own scheduling (slots, prompts
riding with decodes, replacements' prefills in a closed loop) without waiting out its steps in real time."""

from __future__ import annotations

import heapq
from typing import TYPE_CHECKING

import numpy as np

from loadgen.emulator.engine import FittedEngine, Seq
from loadgen.hardware.profiles import model_profile

if TYPE_CHECKING:
    from loadgen.calibrate.measured import Stage
    from loadgen.spec.endpoint import FittedSpec


def replay(fitted: FittedSpec, stage: Stage) -> tuple[float, float | None]:
    """(TTFT p50, TPOT p50) in ms of `stage.requests` requests sent by `stage.batch` closed-loop users."""
    engine = FittedEngine(fitted.model_copy(update={"request_ms": 0.0, "gather_ms": 0.0}), model_profile("llama-2-7b"))
    prompt, output = max(round(stage.prompt), 1), max(round(stage.output), 1)
    gather_s = min(fitted.gather_ms, fitted.request_ms) / 1000.0
    request_s = fitted.request_ms / 1000.0 - gather_s  # as the engine: the gathering is part of request_ms
    clock = [0.0]  # the virtual now, read by the token callbacks
    arrivals: list[tuple[float, int]] = []  # (when it reaches the engine, request number)
    sent: dict[int, float] = {}
    stamps: dict[int, list[float]] = {}
    live: dict[int, Seq] = {}
    issued = 0

    def send(at: float) -> None:
        nonlocal issued
        if issued < stage.requests:
            sent[issued] = at
            heapq.heappush(arrivals, (at + request_s, issued))
            issued += 1

    for _ in range(min(stage.batch, stage.requests)):
        send(0.0)
    while arrivals or live:
        if engine.idle() and arrivals:  # an idle engine gathers what reaches it within gather_ms
            clock[0] = max(clock[0], arrivals[0][0] + gather_s)
        while arrivals and arrivals[0][0] <= clock[0] + 1e-12:
            _, i = heapq.heappop(arrivals)
            seq = Seq(prompt, output)
            stamps[i] = []
            seq.on_tokens = lambda n, i=i: stamps[i].extend([clock[0]] * n)
            live[i] = seq
            engine.submit(seq)  # request_ms and gather_ms are 0 here: enqueued at once
        step = engine.plan()
        if step is None:
            continue  # idle until the next arrival (and its gathering)
        clock[0] += step.duration_s
        engine.complete(step)
        for i in [i for i, q in live.items() if q.done]:
            del live[i]
            send(clock[0])
    ttft = [(stamps[i][0] - sent[i]) * 1000 for i in stamps]
    tpot = [(s[-1] - s[0]) * 1000 / (len(s) - 1) for s in stamps.values() if len(s) > 1]
    return float(np.median(ttft)), (float(np.median(tpot)) if tpot else None)
