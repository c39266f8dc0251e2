"""`loadgen run` and `loadgen ui`: resolve the specs, reach the endpoint, run the engine, store and summarise."""

from __future__ import annotations

import contextlib
import socket
import tempfile
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from loadgen.calibrate.bounds import beyond
from loadgen.capacity.trials import SearchJob, Trials, trial_stage
from loadgen.cli import show
from loadgen.cli.failure import Failure
from loadgen.cli.panel import LivePanel
from loadgen.launch.background import BackgroundServer, LaunchError
from loadgen.live.feed import LiveFeed
from loadgen.live.webtab import add_llm_tab
from loadgen.load import drive
from loadgen.load.description import RunDescription, api_key_headers
from loadgen.load.drive import Outcome
from loadgen.load.engine import Engine
from loadgen.load.master import Master, MasterError
from loadgen.load.recorder import Recorder
from loadgen.load.spawn import LocalWorkers
from loadgen.load.state import Clock
from loadgen.results import WorkerReport
from loadgen.server_metrics.scrape import INTERVAL_S, Sampler, metrics_url
from loadgen.spec import EndpointSpec, SpecError, WorkloadSpec, load_workload, resolve_endpoint
from loadgen.spec.redact import redact_url, split_credentials
from loadgen.spec.workload import StageSpec
from loadgen.store import Store
from loadgen.store.read import rows
from loadgen.target import probe
from loadgen.target.bodies import thinking_asked
from loadgen.target.check import WrongEndpoint, check_endpoint
from loadgen.target.identify import ASSUMED_SERVER, Identity, Unidentified, identify
from loadgen.target.tokenize import tokenizer
from loadgen.trace.readers import check_traces

SPAWN_TIMEOUT_S = 60.0  # local worker processes connect within this


def _api_headers(endpoint: EndpointSpec, source: str) -> dict[str, str]:
    try:
        return api_key_headers(endpoint.api_key_env)
    except KeyError:
        raise SpecError(
            source, f"environment variable {endpoint.api_key_env} is not set", where="api_key_env"
        ) from None


def default_db(workload: WorkloadSpec) -> Path:
    return Path("results") / f"{workload.name}.duckdb"


def _spec_record(workload: WorkloadSpec, endpoint: EndpointSpec, base_url: str, identity: Identity) -> dict[str, Any]:
    """The run's specs as resolved: the endpoint with the server family and model it was run against, what of
    them was detected (`detected`: which, and from where), and the limits the server said (`limits`)."""
    ep = endpoint.model_dump(mode="json")
    ep["url"] = redact_url(endpoint.url) if endpoint.url else None
    ep["server"], ep["model"], ep["detected"] = identity.server, identity.model, identity.detected
    if identity.limits:
        ep["limits"] = identity.limits
    return {"workload": workload.model_dump(mode="json"), "endpoint": ep, "base_url": redact_url(base_url)}


def print_summary(db: duckdb.DuckDBPyConnection, run_id: str) -> None:
    show.out.print(f"run {run_id}", highlight=False)
    stages = rows(db, "SELECT * FROM summary WHERE run_id = ? ORDER BY start_s", [run_id])
    show.out.print(show.summary_table("summary", stages))
    tasks = rows(
        db,
        "SELECT t.* FROM task_summary t JOIN stages s USING (run_id, stage) WHERE t.run_id = ? ORDER BY s.idx",
        [run_id],
    )
    if tasks:
        show.out.print(show.tasks_table(tasks))
    errs = rows(db, "SELECT * FROM errors WHERE run_id = ? ORDER BY stage, requests DESC", [run_id])
    if errs:
        show.out.print(show.errors_table(errs))


@dataclass(frozen=True)
class Scale:
    """Where the load comes from: this process alone (expect 0), or a master with `expect` workers, `spawn` of
    them started here as local processes, listening at `bind`."""

    expect: int = 0
    spawn: int = 0
    bind: tuple[str, int] = ("127.0.0.1", 0)


def execute(
    workload_path: str,
    endpoint_ref: str | None,
    db_path: str | None,
    overrides: list[str],
    ui: tuple[str, int] | None = None,
    scale: Scale = Scale(),
    scrape_s: float = INTERVAL_S,
    search: SearchJob | None = None,
) -> int:
    """Run a workload; with `search`, its stages are a capacity search's trials, decided as it goes."""
    workload, wpath = load_workload(workload_path, overrides)
    first: tuple[StageSpec, float] | None = None
    if search is not None:
        load = search.search.next_load()
        assert load is not None
        first = (trial_stage(search, load, 1), load)
        workload = workload.model_copy(update={"stages": [first[0]]})
    endpoint = resolve_endpoint(workload, wpath, endpoint_ref)
    for path in {s.requests.tokenizer for s in workload.stages} - {None}:
        tokenizer(path)  # a missing or bad tokenizer file is an input error before anything runs
    skipped = {name: c.bad_rows for name, c in check_traces(workload).items() if c.bad_rows}
    notes = [f"stage {name}: skipped {bad} malformed trace rows (on_bad_rows: skip)" for name, bad in skipped.items()]
    notes += beyond(workload.stages, endpoint)
    for note in notes:
        show.err.print(note, highlight=False)
    if scale.expect and any(s.stop.on_saturation for s in workload.stages):
        raise SpecError("--workers", "stop.on_saturation is judged in one process for now: run it without workers")
    headers = _api_headers(endpoint, endpoint_ref or str(wpath))
    db_file = Path(db_path) if db_path else default_db(workload)

    started: BackgroundServer | None = None
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        try:
            if endpoint.started:
                try:
                    started = BackgroundServer(endpoint, Path(tmp))
                except LaunchError as e:
                    raise Failure(str(e)) from None
                base_url = started.url
            else:
                assert endpoint.url is not None
                base_url, basic = split_credentials(endpoint.url)
                if basic is not None and scale.expect:
                    raise SpecError(
                        endpoint_ref or str(wpath),
                        "credentials in the URL do not go to workers (their channel is not encrypted): "
                        "give the key through api_key_env, which each worker reads from its own environment",
                        where="url",
                    )
                if basic is not None and "Authorization" not in headers:
                    headers["Authorization"] = basic
            model = workload.model or endpoint.model or (endpoint.emulate.model if endpoint.emulate else None)
            target = probe.Endpoint(base_url=base_url, headers=headers, server=ASSUMED_SERVER, model=model or "")
            try:  # before anything is written: a wrong endpoint is a failure, not a run of failed requests
                identity = identify(target, endpoint.known_server, model)
                target = target.model_copy(update={"server": identity.server, "model": identity.model})
                check_endpoint(target, sorted({s.api for s in workload.stages}))
            except (WrongEndpoint, Unidentified) as e:
                raise Failure(str(e)) from None
            server, model = identity.server, identity.model
            for stage in workload.stages:  # a family that cannot be asked for the thinking asked: before any load
                try:
                    thinking_asked(server, stage)
                except ValueError as e:
                    raise SpecError(str(wpath), str(e), where=f"stage {stage.name}: requests.thinking") from None
            for note in identity.notes:
                show.err.print(f"[yellow]note:[/] {note}", highlight=False)
            notes += identity.notes
            setup = probe.prepare(target, workload.stages)
            if setup.text_only:  # said at once: the run measures something other than what was asked
                show.err.print(f"[yellow]note:[/] {setup.notes[0]}")
            description = RunDescription(
                base_url=base_url,
                api_key_env=endpoint.api_key_env,
                server=server,
                model=model,
                seed=workload.seed,
                timeouts=workload.timeouts,
                retry=workload.retry,
                stages=tuple(workload.stages),
                prompts=setup,
            )
            searching = None if search is None or first is None else (search, first)
            record = _spec_record(workload, endpoint, base_url, identity)
            return _run(
                workload,
                (endpoint.name, record),
                description,
                headers,
                db_file,
                ui,
                notes,
                scale,
                Path(tmp),
                scrape_s,
                searching,
            )
        finally:
            if started is not None:
                started.stop()


def _run(
    workload: WorkloadSpec,
    endpoint: tuple[str, dict[str, Any]],
    description: RunDescription,
    headers: dict[str, str],
    db_file: Path,
    ui: tuple[str, int] | None,
    notes: list[str],
    scale: Scale,
    tmp: Path,
    scrape_s: float,
    searching: tuple[SearchJob, tuple[StageSpec, float]] | None = None,
) -> int:
    store = Store(db_file)
    trials: Trials | None = None
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_id = f"{workload.name}-{stamp}-{uuid.uuid4().hex[:6]}"
    try:
        store.begin_run(
            run_id,
            workload.name,
            *endpoint,
            workload.stages,
        )
        recorder = Recorder(lambda batch: store.write(run_id, batch))
        tasks = any(st.tasks is not None for st in workload.stages)
        feed = LiveFeed(store.con, run_id, tasks)  # the live view (terminal panel, web UI's LLM tab)
        recorder.listeners.append(feed.windows.add)
        if searching is not None:
            trials = Trials(searching[0], searching[1], store, run_id, recorder)
        samplers: list[Sampler] = []

        def sample(clock: Clock) -> None:
            """The server's metrics, on the run's clock, beside the load (docs/metrics.md). Called once the
            pre-run probes are done and before the first request: its baseline scrape holds what they cost."""
            if scrape_s > 0:
                samplers.append(
                    Sampler(
                        metrics_url(description.base_url),
                        headers,
                        lambda: clock.elapsed_s() if clock.t0 is not None else None,
                        lambda samples: store.write_server_metrics(run_id, samples),
                        scrape_s,
                    )
                )
                samplers[-1].start()

        def stop_sampling() -> None:
            """After the last request has ended: each sampler's final scrape holds all the run's tokens."""
            for sampler in samplers:
                sampler.stop()
                if sampler.note:
                    notes.append(sampler.note)
                    show.err.print(f"[yellow]note:[/] {sampler.note}", highlight=False)
            samplers.clear()

        ended: dict[str, str] = {}  # stages that ended before their plan did, and why

        def finish(outcome: Outcome, workers: list[WorkerReport]) -> None:
            stop_sampling()
            said = [*notes, *description.prompts.notes, *([outcome.note] if outcome.note else [])]
            said += [f"stage {stage}: {why}" for stage, why in ended.items()]
            note = "; ".join(said) or None
            try:
                for stage, why in ended.items():
                    store.end_stage(run_id, stage, why)
                store.add_workers(run_id, workers)
                store.finish_run(run_id, outcome.status, outcome.client_delay_p99_ms, note)
            except duckdb.Error as e:  # the disk filled up, say: what was committed before stays readable
                raise Failure(f"cannot finish the run in {db_file}: {str(e).splitlines()[0]}") from None
            feed.final()  # the live view ends on the figures as stored
            if trials is None:  # a search's trials are summarised by the search
                print_summary(store.con, run_id)
            if outcome.note:
                show.err.print(f"[yellow]note:[/] {outcome.note}")
            show.err.print(f"results: {db_file} (run {run_id}, {outcome.status})")

        def alone(outcome: Outcome) -> list[WorkerReport]:
            users = workload.stages[-1].load.users
            return [WorkerReport(0, socket.gethostname(), users, 0.0, 0.0, outcome.client_delay_p99_ms)]

        def started() -> None:
            store.mark_started(run_id)

        try:
            if scale.expect:
                outcome = _run_master(description, recorder, scale, tmp, ui, finish, started, sample, feed)
            elif ui is None:
                engine = Engine(description, recorder, headers, more=trials.next_stage if trials else None)
                ended = engine.walker.ended
                if trials is not None:
                    trials.ended = ended
                sample(engine.ctx.clock)
                outcome = _headless(engine, feed)
                finish(outcome, alone(outcome))
            else:
                engine = Engine(description, recorder, headers)
                ended = engine.walker.ended
                sample(engine.ctx.clock)
                outcome = _web_ui(engine, ui, feed, lambda outcome: finish(outcome, alone(outcome)), started)
        except Failure as e:
            with contextlib.suppress(duckdb.Error):  # a database that cannot finish the run keeps what it had
                store.finish_run(run_id, "failed", None, str(e))
            raise
        except KeyboardInterrupt:
            store.finish_run(run_id, "interrupted", None, "interrupted before the load started")
            raise
        except BaseException:
            store.finish_run(run_id, "failed", None, "loadgen stopped on an unexpected error")
            raise
        finally:
            stop_sampling()
            feed.stop()
    finally:
        if trials is not None:
            trials.close()
        store.close()
    if outcome.status == "failed":
        raise Failure(outcome.note or "the run failed")
    if outcome.signum is not None:
        return 128 + outcome.signum
    return 0


def _headless(load: drive.Load, feed: LiveFeed) -> Outcome:
    """Run to the end, the live panel on the terminal."""
    with LivePanel(feed) as panel:
        load.on_progress = panel.update
        feed.start()
        return drive.run_headless(load)


def _web_ui(
    load: drive.Load,
    ui: tuple[str, int],
    feed: LiveFeed,
    finish: Callable[[Outcome], None],
    on_started: Callable[[], None],
) -> Outcome:
    """Run from Locust's web UI, with the LLM tab."""
    load.on_progress = feed.update

    def started() -> None:
        on_started()
        feed.start()

    return drive.run_ui(
        load,
        *ui,
        lambda url: show.err.print(f"Locust web UI: {url} (press Start; Ctrl-C closes it)"),
        finish,
        started,
        lambda web: add_llm_tab(web, feed),
    )


def _run_master(
    description: RunDescription,
    recorder: Recorder,
    scale: Scale,
    tmp: Path,
    ui: tuple[str, int] | None,
    finish: Callable[[Outcome, list[WorkerReport]], None],
    on_started: Callable[[], None],
    sample: Callable[[Clock], None],
    feed: LiveFeed,
) -> Outcome:
    """The load on workers: `spawn` local processes, or workers that connect from other machines."""
    host, port = scale.bind
    try:
        master = Master(description, recorder, scale.bind)
    except MasterError as e:
        raise Failure(str(e)) from None
    where = f"{host}:{master.runner.server.port}"
    spawned = LocalWorkers(scale.spawn, where, tmp) if scale.spawn else None
    try:
        if spawned is None:
            show.err.print(f"master: waiting for {scale.expect} workers at {where} (loadgen worker --master {where})")

        def waiting(connected: int) -> None:
            if spawned is not None and (why := spawned.failed()):
                raise MasterError(f"a worker process failed: {why}")
            if spawned is None and connected:
                done = ": starting" if connected >= scale.expect else ""
                show.err.print(f"master: {connected} of {scale.expect} workers connected{done}", highlight=False)

        master.wait_for_workers(scale.expect, SPAWN_TIMEOUT_S if spawned else None, waiting)
        master.join()
        sample(master.clock)
        if ui is not None:
            return _web_ui(master, ui, feed, lambda outcome: finish(outcome, master.workers()), on_started)
        outcome = _headless(master, feed)
    except MasterError as e:
        master.runner.quit()  # workers that connected leave at once
        raise Failure(str(e)) from None
    except KeyboardInterrupt:  # before the load started
        master.runner.quit()
        raise
    finally:
        if spawned is not None:
            spawned.stop()
    finish(outcome, master.workers())
    return outcome
