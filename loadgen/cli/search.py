"""`loadgen search`: the highest load each endpoint carries while meeting the workload's SLO, and the capacity
table across endpoints (with the cost of a million output tokens where the endpoint file gives a price)."""

from __future__ import annotations

import argparse

from loadgen.capacity.search import Search
from loadgen.capacity.trials import SearchJob
from loadgen.cli import show
from loadgen.cli.run import default_db, execute
from loadgen.spec import SpecError, WorkloadSpec, load_workload
from loadgen.store.read import reading, rows


def _job(args: argparse.Namespace, workload: WorkloadSpec) -> SearchJob:
    # The workload's first stage, or its first of agent tasks (whose rate is of tasks, each judged whole): a
    # tasks workload's stage of lone requests before it only measures the idle endpoint.
    base = next((s for s in workload.stages if s.tasks is not None), workload.stages[0])
    if all(v is None for v in base.slo.model_dump().values()):
        raise SpecError(
            args.workload,
            "a search needs an SLO to meet: set slo (ttft_ms, answer_ttft_ms, tpot_ms, e2e_ms and/or task_s)",
        )
    if base.load.arrival == "trace" or base.sessions is not None:
        raise SpecError(args.workload, "a search varies a rate or a concurrency: a trace or sessions stage has none")
    if base.stop.requests is None and base.stop.duration_s is None:
        raise SpecError(args.workload, "each trial stops where the workload does: set stop.requests or duration_s")
    if not 0 < args.goodput <= 1:
        raise SpecError(
            "--goodput", f"expected a share (of requests, or tasks) above 0 and at most 1, got {args.goodput}"
        )
    if not 0 < args.precision < 1:
        raise SpecError("--precision", f"expected a fraction above 0 and below 1, got {args.precision}")
    over = args.over or ("concurrency" if base.load.arrival == "closed" else "rate")
    start = base.load.rate if over == "rate" else base.load.concurrency
    search = Search(
        start=float(start or 1.0),
        target=args.goodput,
        integer=over == "concurrency",
        precision=args.precision,
        max_trials=args.max_trials,
    )
    return SearchJob(search, base, over)


def search(args: argparse.Namespace) -> int:
    refs: list[str | None] = list(args.endpoints or [args.endpoint])
    workload, _ = load_workload(args.workload, args.overrides)
    db = args.db or str(default_db(workload))
    runs: list[tuple[str, str]] = []  # (run_id, verdict)
    for ref in refs:
        job = _job(args, workload)  # each endpoint searches afresh from the workload's load
        code = execute(args.workload, ref, db, args.overrides, scrape_s=args.server_metrics, search=job)
        with reading(db) as con:
            (run_id,) = con.execute("SELECT run_id FROM runs ORDER BY started_at DESC LIMIT 1").fetchone()
            trials = con.execute(
                "SELECT t.stage, t.load, t.requests, t.slo_share, l.passed, t.saturated, t.held_back "
                "FROM trial_stages t JOIN stages st USING (run_id, stage) "
                "JOIN trial_loads l ON l.run_id = t.run_id AND l.load = t.load "
                "WHERE t.run_id = ? ORDER BY st.idx",
                [run_id],
            ).fetchall()
        show.out.print(show.trials_table(run_id, job.over, args.goodput, trials, job.search.verdict, job.unit))
        if job.search.unmeasured:
            show.err.print(
                f"note: the trial at {job.search.unmeasured[0]:g} measured nothing outside warm-up, so the search "
                "stopped there: give trials more time (stop.duration_s) or less warm-up (warmup.requests)",
                highlight=False,
            )
        runs.append((run_id, job.search.verdict))
        if code != 0:
            return code
    with reading(db) as con:
        ids = [r for r, _ in runs]
        capacity = rows(
            con,
            "SELECT * FROM capacity WHERE run_id IN (SELECT unnest(?::VARCHAR[])) ORDER BY highest_passing DESC",
            [ids],
        )
    verdicts = dict(runs)
    show.out.print(show.capacity_table(capacity, verdicts, args.goodput, job.unit))
    return 0
