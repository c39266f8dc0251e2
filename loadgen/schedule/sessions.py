"""The plan of a session stage: conversations of several turns, each turn a planned request.

A session's turns are planned back to back (the same worker and the same user send them all): its first turn at
the arrival process's offset (open loop) or when a user is free (closed loop), each later one `think_s` after the
answer it follows has ended. Lengths are planned as if every answer is as long as asked for (servers asked to
ignore end-of-sequence give exactly that); what is sent resends the answers the server really returned.

With `steady_state`, the stage opens with sessions already partway: a session is met at a turn other than its
first with odds that grow with its length, as an observer arriving at a random instant would meet it. Its earlier
turns are made up (never sent), so the server's cache does not hold them.
"""

from __future__ import annotations

import heapq
import itertools
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from loadgen.schedule.items import Planned, SessionTurn, stream
from loadgen.schedule.lengths import LengthSampler, SecondsSampler
from loadgen.schedule.pacer import make_pacer
from loadgen.spec.workload import SessionsSpec, StageSpec

POOL = 4096  # draws of the turns distribution from which sessions met partway are picked


@dataclass(frozen=True)
class _Turn:
    user: int
    output: int
    think_s: float
    prompt: int  # planned prompt tokens: the system prompt, the turns in context, the new message
    drop: int  # oldest turns dropped from the context just before this one


@dataclass(frozen=True)
class _Session:
    system: int | None
    system_tokens: int
    turns: list[_Turn]
    first: int  # the index of the first turn sent (0 unless met partway)


class _Draws:
    """Every random quantity of a stage's sessions, each from its own stream."""

    def __init__(self, spec: SessionsSpec, seed: int, stage_index: int):
        def rng(n: int) -> np.random.Generator:
            return stream(seed, stage_index, n)

        self.spec = spec
        self.turns = LengthSampler(spec.turns, rng(4))
        self.user = LengthSampler(spec.user_tokens, rng(5))
        self.output = LengthSampler(spec.output_tokens, rng(6))
        self.think = SecondsSampler(spec.think_s, rng(7))
        sp = spec.system_prompts
        lengths = LengthSampler(sp.tokens, rng(8))
        self.system_tokens = [lengths() for _ in range(sp.count)]
        weights = 1 / np.arange(1, sp.count + 1) if sp.pick == "zipf" else np.ones(sp.count)
        self.pick_p = weights / weights.sum() if sp.count else weights
        self.pick = rng(9)
        self.meet = rng(10)
        pool = LengthSampler(spec.turns, rng(11))
        self.pool = np.array([pool() for _ in range(POOL)])

    def session(self, met_from: int | None = None) -> _Session:
        """A session; `met_from` (1 or 2): met partway, at a turn from that one on, its length drawn with odds in
        proportion to the turns it could be met at."""
        if met_from is None:
            n = self.turns()
        else:
            w = np.maximum(self.pool - (met_from - 1), 0).astype(float)
            n = int(self.pool[self.meet.choice(POOL, p=w / w.sum())]) if w.sum() > 0 else 1
        system = int(self.pick.choice(len(self.system_tokens), p=self.pick_p)) if self.system_tokens else None
        s_tokens = self.system_tokens[system] if system is not None else 0
        turns = self._within_context(s_tokens, n)
        first = 0
        if met_from is not None:
            lo = min(met_from, len(turns))
            first = int(self.meet.integers(lo, len(turns), endpoint=True)) - 1
        return _Session(system, s_tokens, turns, first)

    def _within_context(self, system_tokens: int, n: int) -> list[_Turn]:
        """n turns' lengths, kept within max_context: the session ends there, or its oldest turns are dropped."""
        spec = self.spec
        limit = spec.max_context
        context: list[int] = []  # tokens of each turn in context: its message and its answer
        turns: list[_Turn] = []
        for k in range(n):
            user, output = self.user(), min(self.output(), limit - 1)
            think = self.think() if k else 0.0
            drop = 0
            while system_tokens + sum(context) + user + output > limit and context:
                if spec.at_context_limit == "end":
                    return turns
                context.pop(0)
                drop += 1
            user = max(1, min(user, limit - system_tokens - output))  # a first turn longer than the context
            turns.append(_Turn(user, output, think, system_tokens + sum(context) + user, drop))
            context.append(user + output)
        return turns


def _starts(stage: StageSpec, draws: _Draws, seed: int, stage_index: int) -> Iterator[tuple[float | None, _Session]]:
    """Sessions in the order their first turns are sent, with that turn's offset (None: a closed loop's)."""
    spec = stage.sessions
    assert spec is not None
    load = stage.load
    if load.arrival == "closed":
        for i in itertools.count():
            met = spec.steady_state and i < load.users  # each user's first session is met partway
            yield None, draws.session(met_from=1 if met else None)
        return
    assert load.rate is not None
    pacer = make_pacer(load.arrival, load.rate, load.burstiness, stream(seed, stage_index, 0))
    arrivals = ((pacer.next_offset(), draws.session()) for _ in itertools.count())
    if not spec.steady_state:
        yield from arrivals
        return
    # Little's law: sessions in progress = the rate they start x how long each lasts, here its think times
    # (answers take far less, and are not known before the run).
    mean_span = float(np.mean(np.maximum(draws.pool - 1, 0))) * draws.think.mean
    met = []
    for _ in range(round(load.rate * mean_span)):
        s = draws.session(met_from=2)
        met.append((float(draws.meet.uniform(0, s.turns[s.first].think_s)), s))  # within the wait for that turn
    met.sort(key=lambda m: m[0])
    yield from heapq.merge(met, arrivals, key=lambda m: m[0])


def session_plan(stage: StageSpec, seed: int, stage_index: int, first_id: int = 0) -> Iterator[Planned]:
    """The stage's turns, session after session, until `stop.requests` turns or sessions starting after
    `stop.duration_s`."""
    assert stage.sessions is not None
    draws = _Draws(stage.sessions, seed, stage_index)
    left = stage.stop.requests
    horizon = stage.stop.duration_s
    rid = first_id
    for offset, s in _starts(stage, draws, seed, stage_index):
        if horizon is not None and offset is not None and offset >= horizon:
            return
        group, parent = rid, None
        made_up = tuple((t.user, t.output) for t in s.turns[: s.first])
        # Only the turns still in context when the first is sent are made up.
        dropped = sum(t.drop for t in s.turns[: s.first + 1])
        made_up = made_up[dropped:]
        for k in range(s.first, len(s.turns)):
            if left is not None and left <= 0:
                return
            t = s.turns[k]
            first = k == s.first
            turn = SessionTurn(
                user_tokens=t.user,
                think_s=0.0 if first else t.think_s,
                system=s.system,
                system_tokens=s.system_tokens,
                drop=0 if first else t.drop,
                made_up=made_up if first else (),
            )
            yield Planned(
                rid, stage.name, offset if first else None, t.prompt, t.output, None, group, parent, k + 1, turn
            )
            parent = rid
            rid += 1
            if left is not None:
                left -= 1
