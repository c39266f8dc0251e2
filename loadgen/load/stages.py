"""Walking a run's stages in turn. Shared by the headless loop and the web UI's load shape."""

from __future__ import annotations

import itertools
import time
from collections.abc import Callable, Iterator, Sequence

from loadgen.load.dispatch import Dispatch, unsent_row
from loadgen.load.saturation import Saturation
from loadgen.load.state import RunState
from loadgen.results import RequestResult
from loadgen.schedule.plan import plan_stage
from loadgen.spec.workload import StageSpec

START_TIMEOUT_S = 30.0  # a stage starts even if Locust has not brought up all its users by then


class StageWalker:
    """Each stage: ask Locust for its users, start its clock once they are up, end it when its plan is done."""

    def __init__(self, ctx: RunState, more: Callable[[], StageSpec | None] | None = None):
        self.ctx = ctx
        self.stages = list(ctx.description.stages)
        # Asked for a further stage once the planned ones are done (a capacity search's next trial), or None.
        self.more = more
        self.ended: dict[str, str] = {}  # stage -> why it ended before its plan did
        self.saturation: Saturation | None = None  # watching the current stage, when it stops on saturation
        self.index = -1  # the stage being run or prepared
        self.next_id = 0  # request IDs are unique across the run's stages
        self.stopping = False
        self._asked_at: float | None = None  # when the prepared stage's users were asked for

    def stop(self) -> None:
        """No new sends; the stage ends once its in-flight requests have."""
        self.stopping = True
        if self.ctx.dispatch is not None:
            self.ctx.dispatch.stop()

    def step(self, users_running: int) -> int | None:
        """Advance as far as possible; return the number of users wanted now, or None when the run is over."""
        ctx = self.ctx
        d = ctx.dispatch
        if d is not None:
            if not d.done:
                if self.saturation is not None and not d.stopping and (why := self.saturation.check(d.now_s())):
                    self.ended[d.stage.name] = why
                    d.stop(why)  # what is in flight finishes; the next stage follows
                return d.stage.load.users
            self.next_id = d.next_id
            ctx.close_stage()
            if self.saturation is not None:
                ctx.recorder.listeners.remove(self.saturation.add)
                self.saturation = None
        if self.stopping:
            return None
        if self._asked_at is None:
            if self.index + 1 >= len(self.stages):
                following = self.more() if self.more is not None else None
                if following is None:
                    return None
                self.stages.append(following)
            self.index += 1
            self._asked_at = time.perf_counter()
        stage = self.stages[self.index]
        ready = users_running == stage.load.users and ctx.waiting == stage.load.users
        if ready or time.perf_counter() - self._asked_at > START_TIMEOUT_S:
            self._asked_at = None
            plan = plan_stage(stage, ctx.description.seed, self.index, first_id=self.next_id)
            # Draw the first request now: setting up the random streams takes milliseconds, which would
            # otherwise delay the stage's first send behind its schedule.
            first = next(plan, None)
            plan = itertools.chain([first] if first is not None else [], plan)
            if stage.stop.on_saturation:
                self.saturation = Saturation(stage.stop.saturation_window_s)
                ctx.recorder.listeners.append(self.saturation.add)
            ctx.open_stage(Dispatch(stage, plan, ctx.clock.origin, self.next_id))
        return stage.load.users

    def unsent(self) -> Iterator[tuple[RequestResult, StageSpec]]:
        """After a stop: every planned request never taken, the current stage's rest and every later stage's, as
        `not_sent` rows. A closed loop bounded only by time plans no number of requests, so it has none."""
        d = self.ctx.dispatch
        next_id = self.next_id
        first = self.index + 1
        if d is not None:
            next_id = max(next_id, d.next_id)
            if finite(d.stage):
                for item in d.remaining():
                    next_id = item.request_id + 1
                    scheduled = None if item.offset_s is None else d.start_s + item.offset_s
                    yield unsent_row(item, d.stage, scheduled, d.first_id), d.stage
        elif self._asked_at is not None:
            first = self.index  # asked for its users, never started
        for index in range(first, len(self.stages)):
            stage = self.stages[index]
            if not finite(stage):
                continue
            stage_first = next_id
            for item in plan_stage(stage, self.ctx.description.seed, index, first_id=stage_first):
                next_id = item.request_id + 1
                yield unsent_row(item, stage, None, stage_first), stage


def planned_requests(stages: Sequence[StageSpec], seed: int) -> int | None:
    """How many requests the stages plan in all; None when any is bounded only by time. A stage of agent tasks
    plans whole tasks, so its calls are counted from its plan."""
    if any(s.stop.requests is None for s in stages):
        return None
    return sum(
        sum(1 for _ in plan_stage(s, seed, i)) if s.tasks is not None else s.stop.requests or 0
        for i, s in enumerate(stages)
    )


def finite(stage: StageSpec) -> bool:
    """Whether a stage plans a fixed list of requests (a closed loop bounded only by time plans none)."""
    return stage.stop.requests is not None or stage.load.arrival != "closed"
