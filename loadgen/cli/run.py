"""`loadgen run` and `loadgen ui`: resolve the specs, reach the endpoint, run the engine, store and summarise."""

from __future__ import annotations

import os
import tempfile
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import duckdb

from loadgen.cli import show
from loadgen.cli.failure import Failure
from loadgen.client import probe
from loadgen.client.tokenize import PromptTokenizer
from loadgen.emulator.launch import BackgroundEmulator, LaunchError
from loadgen.load.context import RunContext
from loadgen.load.engine import Engine, Outcome
from loadgen.load.recorder import Recorder
from loadgen.spec import EndpointSpec, SpecError, WorkloadSpec, load_workload, resolve_endpoint
from loadgen.spec.redact import redact_url, split_credentials
from loadgen.store import Store
from loadgen.trace.readers import check_traces


def _api_headers(endpoint: EndpointSpec, source: str) -> dict[str, str]:
    if endpoint.api_key_env is None:
        return {}
    key = os.environ.get(endpoint.api_key_env)
    if not key:
        raise SpecError(source, f"environment variable {endpoint.api_key_env} is not set", where="api_key_env")
    return {"Authorization": f"Bearer {key}"}


def _preflight(base_url: str, headers: dict[str, str]) -> None:
    """Reach the endpoint before anything is written: an unreachable endpoint is a failure, not a run."""
    req = urllib.request.Request(base_url.rstrip("/") + "/models", headers=headers)
    try:
        with urllib.request.urlopen(req, timeout=10):
            pass
    except urllib.error.HTTPError:
        pass  # it answered; whether /models exists does not matter
    except (urllib.error.URLError, OSError) as e:
        reason = getattr(e, "reason", e)
        raise Failure(f"cannot reach the endpoint at {redact_url(base_url)}: {reason}") from None


def default_db(workload: WorkloadSpec) -> Path:
    return Path("results") / f"{workload.name}.duckdb"


def _spec_record(workload: WorkloadSpec, endpoint: EndpointSpec, base_url: str) -> dict[str, Any]:
    ep = endpoint.model_dump(mode="json")
    ep["url"] = redact_url(endpoint.url) if endpoint.url else None
    return {"workload": workload.model_dump(mode="json"), "endpoint": ep, "base_url": redact_url(base_url)}


def print_summary(db: duckdb.DuckDBPyConnection, run_id: str) -> None:
    cur = db.execute("SELECT * FROM summary WHERE run_id = ? ORDER BY start_s", [run_id])
    cols = [c[0] for c in cur.description]
    rows = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    show.out.print(f"run {run_id}", highlight=False)
    show.out.print(show.summary_table("summary", rows))
    cur = db.execute("SELECT * FROM errors WHERE run_id = ? ORDER BY stage, requests DESC", [run_id])
    cols = [c[0] for c in cur.description]
    errs = [dict(zip(cols, r, strict=True)) for r in cur.fetchall()]
    if errs:
        show.out.print(show.errors_table(errs))


@dataclass
class Prompting:
    """How this run makes prompts for this endpoint, and what it found out doing so (for the run's note)."""

    text_only: bool = False
    calibration: dict[str, probe.TextCalibration] = field(default_factory=dict)
    tokenizers: dict[str, PromptTokenizer] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def _prompting(
    workload: WorkloadSpec, base_url: str, headers: dict[str, str], model: str, tokenizers: dict[str, PromptTokenizer]
) -> Prompting:
    """Probe the endpoint: token-ID prompts accepted? Text calibrated for every api sending untokenized text."""
    p = Prompting(tokenizers=tokenizers)
    if any(not s.text_prompts for s in workload.stages):
        refused = probe.token_prompts_refused(base_url, headers, model)
        if refused is not None:
            p.text_only = True
            p.notes.append(f"the server refused token-ID prompts ({refused}): text prompts were sent instead")
            show.err.print(f"[yellow]note:[/] {p.notes[-1]}")
    untokenized = [s for s in workload.stages if not s.requests.tokenizer and (s.text_prompts or p.text_only)]
    for api in sorted({s.api for s in untokenized}):
        cal = probe.calibrate_text(base_url, headers, model, api)
        if cal is None:
            p.notes.append(f"{api}: the server reports no prompt tokens, so text prompts are one word a token")
            continue
        p.calibration[api] = cal
        if (cal.overhead, cal.per_word) != (0.0, 1.0):
            p.notes.append(
                f"{api} prompts calibrated on the server: {cal.per_word:.3f} tokens a word + {cal.overhead:.0f}"
            )
    return p


def execute(
    workload_path: str,
    endpoint_ref: str | None,
    db_path: str | None,
    overrides: list[str],
    ui: tuple[str, int] | None = None,
) -> int:
    workload, wpath = load_workload(workload_path, overrides)
    endpoint = resolve_endpoint(workload, wpath, endpoint_ref)
    tokenizers = {p: PromptTokenizer(p) for p in {s.requests.tokenizer for s in workload.stages} if p}
    skipped = {name: c.bad_rows for name, c in check_traces(workload).items() if c.bad_rows}
    for name, bad in skipped.items():
        show.err.print(f"stage {name}: skipping {bad} malformed trace rows (on_bad_rows: skip)", highlight=False)
    headers = _api_headers(endpoint, endpoint_ref or str(wpath))
    db_file = Path(db_path) if db_path else default_db(workload)

    emulator: BackgroundEmulator | None = None
    with tempfile.TemporaryDirectory(prefix="loadgen-") as tmp:
        try:
            if endpoint.emulated:
                try:
                    emulator = BackgroundEmulator(endpoint, Path(tmp))
                except LaunchError as e:
                    raise Failure(str(e)) from None
                base_url = emulator.url
            else:
                assert endpoint.url is not None
                base_url, basic = split_credentials(endpoint.url)
                if basic is not None and "Authorization" not in headers:
                    headers["Authorization"] = basic
            _preflight(base_url, headers)
            prompting = _prompting(workload, base_url, headers, workload.model or endpoint.model, tokenizers)
            return _run(workload, endpoint, base_url, headers, db_file, ui, prompting)
        finally:
            if emulator is not None:
                emulator.stop()


def _run(
    workload: WorkloadSpec,
    endpoint: EndpointSpec,
    base_url: str,
    headers: dict[str, str],
    db_file: Path,
    ui: tuple[str, int] | None,
    prompting: Prompting,
) -> int:
    store = Store(db_file)
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S")
    run_id = f"{workload.name}-{stamp}-{uuid.uuid4().hex[:6]}"
    try:
        store.begin_run(
            run_id, workload.name, endpoint.name, _spec_record(workload, endpoint, base_url), workload.stages
        )
        recorder = Recorder(lambda batch: store.write(run_id, batch))
        ctx = RunContext(
            base_url=base_url,
            server=endpoint.server if not endpoint.emulated else "emulator",
            model=workload.model or endpoint.model,
            seed=workload.seed,
            headers=headers,
            timeouts=workload.timeouts,
            retry=workload.retry,
            recorder=recorder,
            text_only=prompting.text_only,
            calibration=prompting.calibration,
            tokenizers=prompting.tokenizers,
        )
        engine = Engine(ctx, workload.stages)

        def finish(outcome: Outcome) -> None:
            note = "; ".join([*prompting.notes, *([outcome.note] if outcome.note else [])]) or None
            try:
                store.finish_run(run_id, outcome.status, outcome.client_delay_p99_ms, note)
            except duckdb.Error as e:  # the disk filled up, say: what was committed before stays readable
                raise Failure(f"cannot finish the run in {db_file}: {str(e).splitlines()[0]}") from None
            print_summary(store.con, run_id)
            if outcome.note:
                show.err.print(f"[yellow]note:[/] {outcome.note}")
            show.err.print(f"results: {db_file} (run {run_id}, {outcome.status})")

        try:
            if ui is None:
                with show.ProgressView() as view:
                    engine.on_progress = view.update
                    outcome = engine.run_headless()
                finish(outcome)
            else:
                host, port = ui
                outcome = engine.run_ui(
                    host,
                    port,
                    lambda url: show.err.print(f"Locust web UI: {url} (press Start; Ctrl-C closes it)"),
                    finish,
                )
        except Failure:
            raise
        except BaseException:
            store.finish_run(run_id, "failed", None, "loadgen stopped on an unexpected error")
            raise
    finally:
        store.close()
    if outcome.status == "failed":
        raise Failure(outcome.note or "the run failed")
    if outcome.signum is not None:
        return 128 + outcome.signum
    return 0
