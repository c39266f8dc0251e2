"""The plan of one stage: a deterministic, lazy sequence of requests with their lengths and send offsets.

The plan is a pure function of the stage and the seed, so any process can rebuild it; a Locust worker takes
its share with `share()`, and the union of all shares is the whole plan.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from loadgen.schedule.items import Planned, stream
from loadgen.schedule.lengths import LengthSampler
from loadgen.schedule.pacer import make_pacer
from loadgen.schedule.sessions import session_plan
from loadgen.schedule.tasks import task_plan
from loadgen.spec.workload import DEFAULT_OUTPUT, DEFAULT_PROMPT, StageSpec
from loadgen.trace.readers import batches as trace_batches

# Builds a Planned from a row tuple in C: a trace is planned at millions of rows a second.
_planned = functools.partial(tuple.__new__, Planned)


def plan_stage(stage: StageSpec, seed: int, stage_index: int, first_id: int = 0) -> Iterator[Planned]:
    """Yield the stage's requests in send order, ending at `stop.requests` or `stop.duration_s`."""
    load = stage.load
    if load.arrival == "trace":
        yield from _trace_plan(stage, seed, stage_index, first_id)
        return
    if stage.sessions is not None:
        yield from session_plan(stage, seed, stage_index, first_id)
        return
    if stage.tasks is not None:
        yield from task_plan(stage, seed, stage_index, first_id)
        return
    prompt = LengthSampler(stage.requests.prompt_tokens or DEFAULT_PROMPT, stream(seed, stage_index, 1))
    output = LengthSampler(stage.requests.output_tokens or DEFAULT_OUTPUT, stream(seed, stage_index, 2))
    limit = stage.stop.requests
    ids = itertools.count(first_id) if limit is None else iter(range(first_id, first_id + limit))
    if load.arrival == "closed":
        for rid in ids:
            yield Planned(rid, stage.name, None, prompt(), output())
        return
    assert load.rate is not None  # the spec guarantees a rate for open arrivals
    pacer = make_pacer(load.arrival, load.rate, load.burstiness, stream(seed, stage_index, 0))
    horizon = stage.stop.duration_s
    for rid in ids:
        t = pacer.next_offset()
        if horizon is not None and t >= horizon:
            return
        yield Planned(rid, stage.name, t, prompt(), output())


def _trace_plan(stage: StageSpec, seed: int, stage_index: int, first_id: int) -> Iterator[Planned]:
    """Replay a trace: row i at (ts_i - ts_0) / time_scale, within the window, sample and limits."""
    spec = stage.load.trace
    assert spec is not None
    sample_rng = stream(seed, stage_index, 3)
    prompt_len = stage.requests.prompt_tokens
    output_len = stage.requests.output_tokens
    prompt_sampler = LengthSampler(prompt_len, stream(seed, stage_index, 1)) if prompt_len is not None else None
    output_sampler = LengthSampler(output_len, stream(seed, stage_index, 2)) if output_len is not None else None
    left = stage.stop.requests if stage.stop.requests is not None else -1
    horizon = stage.stop.duration_s
    ts0: int | None = None
    next_id = first_id
    planned_chats: dict[int, int] = {}  # a Bailian chat_id -> its request ID here, for its children
    for b in trace_batches(spec):
        if ts0 is None:
            ts0 = int(b.ts_ns[0])
        # Integer nanoseconds: the offsets are exactly what the trace says, scaled once.
        trace_s = (b.ts_ns - ts0) / 1e9
        keep = trace_s >= spec.start_s
        if spec.end_s is not None:
            keep &= trace_s < spec.end_s
        if spec.sample < 1.0:
            keep &= sample_rng.random(len(trace_s)) < spec.sample
        offsets = (trace_s - spec.start_s) / spec.time_scale
        if horizon is not None:
            keep &= offsets < horizon
        idx = np.flatnonzero(keep)
        if left >= 0:
            idx = idx[:left]
            left -= len(idx)
        n = len(idx)
        if n:
            prompt = b.prompt[idx] if prompt_sampler is None else np.array([prompt_sampler() for _ in range(n)])
            output = b.output[idx] if output_sampler is None else np.array([output_sampler() for _ in range(n)])
            prompt, output = np.maximum(prompt, 1), np.maximum(output, 1)
            if spec.max_context is not None:  # clip to the context: output first kept, prompt shortened
                output = np.minimum(output, spec.max_context - 1)
                prompt = np.minimum(prompt, spec.max_context - output)
            prefixes = [b.prefixes[i] for i in idx] if b.prefixes is not None else itertools.repeat(None)
            groups = [b.groups[i] for i in idx] if b.groups is not None else itertools.repeat(None)
            parents: Iterable[int | None] = itertools.repeat(None)
            turns: Iterable[int | None] = itertools.repeat(None)
            if b.chats is not None:
                parents, turns = [], []
                for rid, i in enumerate(idx.tolist(), start=next_id):
                    chat, parent, turn = b.chats[i]
                    planned_chats[chat] = rid
                    parents.append(planned_chats.get(parent))  # a parent outside what is replayed: none
                    turns.append(turn)
            rows = zip(
                range(next_id, next_id + n),
                itertools.repeat(stage.name),
                offsets[idx].tolist(),
                prompt.tolist(),
                output.tolist(),
                prefixes,
                groups,
                parents,
                turns,
                itertools.repeat(None),  # no session turns in a trace
                itertools.repeat(None),  # nor agent tasks
            )
            next_id += n
            yield from map(_planned, rows)
        if left == 0 or (spec.end_s is not None and trace_s[-1] >= spec.end_s):
            return
        if horizon is not None and offsets[-1] >= horizon:
            return


def slots(users: Sequence[int]) -> tuple[int, ...]:
    """How a stage's plan is dealt to workers that run `users[i]` users each: worker i holds one slot per user,
    slots interleaved (0, 1, 0, 1, ...), so that requests go out in proportion to users and evenly in time. A
    worker with no users holds none."""
    return tuple(w for k in range(max(users, default=0)) for w, n in enumerate(users) if n > k)


def owner(item: Planned, dealt: Sequence[int]) -> int:
    """The worker that sends `item`. A conversation's requests (a Bailian trace's turns) go out from one worker,
    which can keep their order. Requests that merely share prompt blocks need not: the server's prefix cache is
    shared by every client, and a prefix common to a whole trace (Mooncake's first block) would put all its
    load on one worker."""
    key = item.group if item.group is not None else item.request_id
    return dealt[key % len(dealt)]


def share(plan: Iterator[Planned], worker: int, dealt: Sequence[int]) -> Iterator[Planned]:
    """The part of a plan that `worker` sends; the shares of all workers in `dealt` are the whole plan."""
    return (p for p in plan if owner(p, dealt) == worker)


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
    sessions: int | None = None  # a session stage: its sessions (the rate is theirs, and so is the duration)
    tasks: int | None = None  # an agent-task stage: its tasks (as sessions)


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
    # Sessions and tasks: only first calls have offsets (later ones follow answers), so the rate is of starts.
    starts = [i.offset_s for i in items if i.offset_s is not None]
    if load.arrival != "closed" and starts:
        span = starts[-1]
        duration = span if duration is None else min(duration, max(span, 0.0))
        rate = (len(starts) - 1) / span if span > 0 else None
    return Preview(
        stage=stage.name,
        arrival=load.arrival,
        users=load.users,
        requests=None if unbounded else len(items),
        duration_s=duration,
        rate=rate,
        prompt_pcts=pcts([i.prompt_tokens for i in items]),
        output_pcts=pcts([i.output_tokens for i in items]),
        sessions=None if stage.sessions is None else len({i.group for i in items}),
        tasks=None if stage.tasks is None else len({i.group for i in items}),
    )
