"""The plan of one stage: a deterministic, lazy sequence of requests with their lengths and send offsets.

The plan is a pure function of the stage and the seed, so any process can rebuild it; a Locust worker takes
its share with `share()` and the union of all shares is the whole plan.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from loadgen.schedule.lengths import LengthSampler
from loadgen.schedule.pacer import make_pacer
from loadgen.spec.workload import StageSpec


@dataclass(frozen=True, slots=True)
class Planned:
    request_id: int
    stage: str
    offset_s: float | None  # seconds after the stage's start; None in a closed loop (sent when a user is free)
    prompt_tokens: int
    output_tokens: int


def _rng(seed: int, stage_index: int, stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([seed, stage_index, stream]))


def plan_stage(stage: StageSpec, seed: int, stage_index: int, first_id: int = 0) -> Iterator[Planned]:
    """Yield the stage's requests in send order, ending at `stop.requests` or `stop.duration_s`."""
    load = stage.load
    prompt = LengthSampler(stage.requests.prompt_tokens, _rng(seed, stage_index, 1))
    output = LengthSampler(stage.requests.output_tokens, _rng(seed, stage_index, 2))
    limit = stage.stop.requests
    ids = itertools.count(first_id) if limit is None else iter(range(first_id, first_id + limit))
    if load.arrival == "closed":
        for rid in ids:
            yield Planned(rid, stage.name, None, prompt(), output())
        return
    assert load.rate is not None  # the spec guarantees a rate for open arrivals
    pacer = make_pacer(load.arrival, load.rate, load.burstiness, _rng(seed, stage_index, 0))
    horizon = stage.stop.duration_s
    for rid in ids:
        t = pacer.next_offset()
        if horizon is not None and t >= horizon:
            return
        yield Planned(rid, stage.name, t, prompt(), output())


def share(plan: Iterator[Planned], index: int, count: int) -> Iterator[Planned]:
    """The part of a plan that worker `index` of `count` sends."""
    return (p for p in plan if p.request_id % count == index)


@dataclass(frozen=True)
class Preview:
    stage: str
    arrival: str
    users: int
    requests: int | None  # None: a closed loop bounded only by time
    duration_s: float | None
    rate: float | None
    prompt_pcts: tuple[int, int, int]  # p10, p50, p90
    output_pcts: tuple[int, int, int]


PREVIEW_LIMIT = 100_000


def preview(stage: StageSpec, seed: int, stage_index: int) -> Preview:
    """Summarise what a stage would send, without sending it."""
    load = stage.load
    unbounded = load.arrival == "closed" and stage.stop.requests is None
    items = list(itertools.islice(plan_stage(stage, seed, stage_index), 1000 if unbounded else PREVIEW_LIMIT))

    def pcts(values: list[int]) -> tuple[int, int, int]:
        if not values:
            return (0, 0, 0)
        p = np.percentile(values, [10, 50, 90])
        return (int(round(p[0])), int(round(p[1])), int(round(p[2])))

    duration = stage.stop.duration_s
    rate = None
    if load.arrival != "closed" and items:
        span = items[-1].offset_s or 0.0
        duration = span if duration is None else min(duration, max(span, 0.0))
        rate = (len(items) - 1) / span if span > 0 else None
    return Preview(
        stage=stage.name,
        arrival=load.arrival,
        users=load.users,
        requests=None if unbounded else len(items),
        duration_s=duration,
        rate=rate,
        prompt_pcts=pcts([i.prompt_tokens for i in items]),
        output_pcts=pcts([i.output_tokens for i in items]),
    )
