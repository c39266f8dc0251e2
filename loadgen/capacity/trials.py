"""A capacity search's trials, run as the stages of one run: between stages, the last trial's result (from the
database's `summary`, the one definition of its SLO share) decides the next load."""

from __future__ import annotations

from dataclasses import dataclass

import gevent

from loadgen.capacity.search import Search
from loadgen.load.recorder import Recorder
from loadgen.spec.workload import LoadSpec, StageSpec
from loadgen.store import Store


@dataclass(frozen=True)
class SearchJob:
    search: Search
    base: StageSpec  # the workload's stage whose load the trials vary
    over: str  # rate | concurrency

    @property
    def unit(self) -> str:
        """What a trial judges: requests, or agent tasks (each whole)."""
        return "requests" if self.base.tasks is None else "tasks"


def trial_stage(job: SearchJob, load: float, n: int) -> StageSpec:
    """Trial n: the base stage at `load` (requests/s, open loop; or users, closed loop), phase `search`."""
    base = job.base.load
    if job.over == "rate":
        arrival = base.arrival if base.arrival in ("constant", "poisson", "gamma") else "poisson"
        spec = LoadSpec(arrival=arrival, rate=load, burstiness=base.burstiness, concurrency=base.concurrency)
    else:
        spec = LoadSpec(arrival="closed", concurrency=int(load))
    return job.base.model_copy(update={"name": f"search-{n}", "phase": "search", "load": spec})


class Trials:
    def __init__(self, job: SearchJob, first: tuple[StageSpec, float], store: Store, run_id: str, recorder: Recorder):
        """`first`: the run's first stage, the first trial, and its load."""
        self.job, self.store, self.run_id, self.recorder = job, store, run_id, recorder
        self.stages = [first[0]]
        self.loads = [first[1]]
        self.con = store.con.cursor()  # used from the hub's thread pool only, never beside the writer's
        self.ended: dict[str, str] = {}  # the load's record of stages that ended early (StageWalker.ended)
        store.add_trial(run_id, first[0].name, job.over, first[1], job.search.target)

    def next_stage(self) -> StageSpec | None:
        """The stage walker asks between stages; the database calls run on a real thread, off the load's loop."""
        self.recorder.flush()
        pool = gevent.get_hub().threadpool
        stage, load = self.stages[-1], self.loads[-1]
        if (why := self.ended.get(stage.name)) is not None:
            pool.apply(self.store.end_stage, (self.run_id, stage.name, why, self.con))
        met, requests, invalid = pool.apply(self._result, (stage.name,))
        self.job.search.record(load, met, requests, invalid)
        following = self.job.search.next_load()
        if following is None:
            return None
        nxt = trial_stage(self.job, following, len(self.stages) + 1)
        pool.apply(self._add, (nxt, following))
        self.stages.append(nxt)
        self.loads.append(following)
        return nxt

    def _result(self, stage: str) -> tuple[int, int, bool]:
        """Requests meeting every SLO, requests, and whether the trial cannot pass (saturated or held back)."""
        row = self.con.execute(
            "SELECT slo_met, requests, saturated OR held_back FROM trial_stages WHERE run_id = ? AND stage = ?",
            [self.run_id, stage],
        ).fetchone()
        assert row is not None
        return int(row[0]), int(row[1]), bool(row[2])

    def _add(self, stage: StageSpec, load: float) -> None:
        self.store.add_stage(self.run_id, len(self.stages), stage, self.con)
        self.store.add_trial(self.run_id, stage.name, self.job.over, load, self.job.search.target, self.con)

    def close(self) -> None:
        self.con.close()
