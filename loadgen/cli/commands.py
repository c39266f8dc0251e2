"""The commands behind `loadgen`. Each returns an exit status or raises SpecError / Failure."""

from __future__ import annotations

import argparse
import ipaddress
import itertools
from collections.abc import Iterator
from contextlib import contextmanager, nullcontext
from pathlib import Path
from typing import TYPE_CHECKING

import duckdb
import yaml

from loadgen.cli import show
from loadgen.cli.failure import Failure
from loadgen.cli.options import numbers
from loadgen.launch.background import LaunchError
from loadgen.schedule.plan import plan_stage, preview
from loadgen.spec import SpecError, load_endpoint, load_workload, resolve_endpoint
from loadgen.spec.redact import redact_url
from loadgen.store import StoreError
from loadgen.store.read import reading
from loadgen.trace.readers import check_traces

if TYPE_CHECKING:
    from loadgen.cli.run import Scale


def cmd_study(args: argparse.Namespace) -> int:
    from loadgen.cli.study import study

    return study(args)


def cmd_search(args: argparse.Namespace) -> int:
    from loadgen.cli.search import search

    if args.endpoints and args.endpoint:
        raise SpecError("--endpoints", "give --endpoint or --endpoints, not both")
    if args.max_trials < 1:
        raise SpecError("--max-trials", f"expected 1 or more trials, got {args.max_trials}")
    try:
        return search(args)
    except (StoreError, LaunchError) as e:
        raise Failure(str(e)) from None


def cmd_run(args: argparse.Namespace, ui: tuple[str, int] | None = None) -> int:
    from loadgen.cli.run import Scale

    if getattr(args, "workers", 1) < 1:
        raise SpecError("--workers", f"expected 1 or more worker processes, got {args.workers}")
    workers = getattr(args, "workers", 1)
    return _execute(args, ui, Scale(expect=workers, spawn=workers) if workers > 1 else Scale())


def _execute(args: argparse.Namespace, ui: tuple[str, int] | None, scale: Scale) -> int:
    from loadgen.cli.run import execute

    try:
        if args.server_metrics < 0:
            raise SpecError("--server-metrics", f"expected seconds between samples (0: off), got {args.server_metrics}")
        return execute(args.workload, args.endpoint, args.db, args.overrides, ui, scale, args.server_metrics)
    except (StoreError, LaunchError) as e:
        raise Failure(str(e)) from None


def address(option: str, value: str) -> tuple[str, int]:
    """HOST:PORT ([::1]:PORT for IPv6) -> (host, port)."""
    host, sep, port = value.rpartition(":")
    host = host.strip("[]")
    if not sep or not host or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise SpecError(option, f"expected HOST:PORT (a port from 0 to 65535), got {value!r}")
    return host, int(port)


def cmd_master(args: argparse.Namespace) -> int:
    from loadgen.cli.run import Scale

    if args.expect_workers < 1:
        raise SpecError("--expect-workers", f"expected 1 or more workers, got {args.expect_workers}")
    bind = address("--bind", args.bind)
    beyond_loopback("--bind", bind[0], "the master's worker channel (Locust's, which carries the run)")
    return _execute(args, None, Scale(expect=args.expect_workers, bind=bind))


def cmd_worker(args: argparse.Namespace) -> int:
    from loadgen.load.worker import Worker, WorkerLate, WorkerRefused

    host, port = address("--master", args.master)
    try:
        worker = Worker(host, port)
    except ConnectionError:
        raise Failure(f"cannot reach the master at {args.master}") from None
    show.err.print(f"worker {worker.index}: connected to the master at {args.master}", highlight=False)
    try:
        return worker.serve()
    except WorkerRefused as e:
        raise SpecError("worker", str(e)) from None
    except WorkerLate as e:
        raise Failure(str(e)) from None


@contextmanager
def _reading(db: str) -> Iterator[duckdb.DuckDBPyConnection]:
    """The results database, to read with the current views; one that cannot be read: exit 1, one line."""
    try:
        with reading(db, lambda said: show.err.print(f"[yellow]note:[/] {said}")) as con:
            yield con
    except duckdb.Error as e:
        raise Failure(f"cannot read {db}: {str(e).splitlines()[0]}") from None


def cmd_report(args: argparse.Namespace) -> int:
    from loadgen.report.page import write_report

    out = Path(args.out) if args.out else Path("reports") / Path(args.db).stem
    with _reading(args.db) as con:
        try:
            page = write_report(con, Path(args.db).name, out)
        except ValueError as e:
            raise SpecError(args.db, str(e)) from None
    show.out.print(f"report: {page}", highlight=False)
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from loadgen.report.compare import NotComparable, compare_runs, tabulate

    b_db = args.b_db or args.db
    same = Path(b_db).absolute() == Path(args.db).absolute()
    table = args.format == "table"
    info = show.out if table else show.err  # CSV and JSON keep stdout for the data alone

    def note(said: str) -> None:
        info.print(f"[yellow]note:[/] {said}", highlight=False)

    with _reading(args.db) as con_a, nullcontext(con_a) if same else _reading(b_db) as con_b:
        try:
            rows = compare_runs(con_a, args.a, con_b, args.b, said=note)
        except NotComparable as e:
            raise SpecError(args.db if e.side == "a" else b_db, str(e)) from None
    where = "" if same else f" in {args.db}"
    info.print(
        f"A = {args.a}{where}, B = {args.b}{'' if same else f' in {b_db}'}; error = B/A - 1 (B against A: a twin's "
        "prediction against its measured server); 95% bootstrap intervals of B - A",
        highlight=False,
    )
    show.emit(*tabulate(rows, args.format), args.format)
    return 0


def cmd_calibrate(args: argparse.Namespace) -> int:
    from loadgen.calibrate.fit import NotEnough, fit
    from loadgen.calibrate.twin import twin_endpoint

    with _reading(args.db) as con:
        try:
            fitted, rows = fit(con, args.endpoint, str(args.db), args.slots)
        except NotEnough as e:
            raise SpecError(args.db, str(e)) from None
        data = twin_endpoint(con, args.endpoint, fitted)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(yaml.safe_dump(data, sort_keys=False, width=120))

    def pct(e: float | None) -> str:
        return "-" if e is None else f"{e:+.1%}"

    c = fitted.calibration
    assert c is not None
    table = [
        (
            r.stage.stage,
            r.stage.batch,
            round(r.stage.prompt),
            r.stage.ttft_ms,
            r.ttft_ms,
            pct(r.ttft_error),
            r.stage.tpot_ms if r.tpot_error is not None else None,
            r.tpot_ms if r.tpot_error is not None else None,
            pct(r.tpot_error),
        )
        for r in rows
    ]
    ttft = "TTFT p50 ms" if c.http_ms is None else "server TTFT p50 ms"
    cols = ["stage", "batch", "prompt", ttft, "twin", "error", "TPOT p50 ms", "twin", "error"]
    show.out.print(show.result_table(cols, table))
    f = fitted
    steps = ", ".join(f"{b}: {ms:g}" for b, ms in f.decode_step_ms.items())
    timings = f"the {c.timings}'s timings"
    if c.http_ms is not None:
        fixed, per_token = c.http_ms
        timings += (
            f" less {fixed:g} ms + {per_token:g} ms a prompt token of HTTP and tokenizing (the client's TTFT less "
            "the server's TTFT histogram)"
        )
    prefill = f"{f.prefill_step_ms:g} ms + {f.prefill_ms_per_token:g} ms x "
    prefill += f"max(prompt tokens, {f.prefill_floor_tokens})" if f.prefill_floor_tokens else "prompt tokens"
    if f.prefill_ms_per_pair:
        prefill += f" + {f.prefill_ms_per_pair:.3g} ms x causal pairs"
    show.out.print(
        f"step = decode(sequences) + {f.decode_ms_per_context_token:g} ms x context tokens decoded + {prefill} "
        f"(with prefill); decode ms at {steps} ({c.decode_form}); prefill: {c.prefill_form}; decode context: "
        f"{c.decode_context}; {f.request_ms:g} ms per request; an idle engine gathers arrivals for "
        f"{f.gather_ms:g} ms; {c.limits}; {c.policy}; fitted from {timings}; "
        f"prompt cache: {c.prompt_cache}",
        highlight=False,
    )
    show.out.print(f"twin: {out} (loadgen run WORKLOAD --endpoint {out})", highlight=False)
    return 0


def _endpoint_name(ref: str) -> str:
    return load_endpoint(ref).name if ref.endswith((".yaml", ".yml")) else ref


def cmd_disagg(args: argparse.Namespace) -> int:
    from loadgen.analysis.disagg import Link, Reuse, grid, predict, where_it_wins
    from loadgen.analysis.findings import pair_model
    from loadgen.analysis.phases import fit
    from loadgen.hardware.profiles import model_profile

    links = numbers("--link", args.link)
    loads = numbers("--load", args.load, int)
    if not 0 <= args.cached_share < 1:
        raise SpecError("--cached-share", f"expected a share from 0 up to (not including) 1, got {args.cached_share}")
    a_name, b_name = _endpoint_name(args.prefill), _endpoint_name(args.decode)
    try:
        model = model_profile(args.model) if args.model else None
    except KeyError:
        raise SpecError("--model", f"unknown model profile {args.model!r}") from None
    except TypeError as e:
        raise SpecError("--model", str(e)) from None
    with _reading(args.db) as con:
        if model is None:  # the model both sides served, as their runs stored it
            found = pair_model(con, (a_name, b_name))
            if isinstance(found, str):
                raise SpecError("--model", f"{found}: name a model profile with --model")
            model = found
        # A side keeps a prefix cache when its server reported cached tokens (vLLM, SGLang and the emulated GPUs
        # do; the emulated GroqRack does not).
        caches = {
            name: con.execute(
                "SELECT count(*) > 0 FROM requests r JOIN runs ru USING (run_id) "
                "WHERE ru.endpoint = ? AND r.cached_tokens IS NOT NULL",
                [name],
            ).fetchone()[0]
            for name in (a_name, b_name)
        }
        try:
            a, b = fit(con, a_name), fit(con, b_name)
        except KeyError as e:
            raise SpecError(
                args.db,
                f"no prefill and decode measurements for endpoint {e.args[0]!r} (run `loadgen study` on it first)",
            ) from None
    if args.workload:
        workload, _ = load_workload(args.workload)
        mix = sorted(
            {
                (p.prompt_tokens, p.output_tokens)
                for p in itertools.islice(plan_stage(workload.stages[0], workload.seed, 0), 200)
            }
        )
    else:
        mix = grid()
    table = args.format == "table"
    info = show.out if table else show.err  # CSV and JSON keep stdout for the data alone
    for m in (a, b):
        errs = [
            f"{name} {err:.1%}"
            for name, err in (("TTFT", m.ttft_fit_error), ("TPOT", m.tpot_fit_error))
            if err is not None
        ]
        info.print(
            f"{m.endpoint}: fitted to {len(m.prompts)} prompt lengths and {len(m.batches)} batches; "
            f"leave-one-out error {', '.join(errs) or 'n/a'}",
            highlight=False,
        )
    reuse = Reuse(args.cached_share, caches[a_name], caches[b_name])
    if reuse.share:
        keeps = {n: "keeps a prefix cache" if caches[n] else "keeps none (no cached tokens reported)" for n in caches}
        info.print(
            f"cached share {reuse.share:.0%}: {a_name} {keeps[a_name]}; {b_name} {keeps[b_name]}", highlight=False
        )
    preds = [
        predict(
            a,
            b,
            model,
            prompt,
            output,
            Link(gbps, args.latency_ms, args.handoff_ms, args.overlap == "layerwise"),
            load,
            reuse,
        )
        for gbps in links
        for load in loads
        for prompt, output in mix
    ]
    cols = [
        "link Gb/s",
        "load",
        "prompt",
        "output",
        f"E2E {a_name} ms",
        f"E2E {b_name} ms",
        "E2E A→B ms",
        "TTFT A→B ms",
        "gain",
        "break-even Gb/s",
        "wins from output",
    ]
    rows = [
        (
            p.gbps,
            p.load,
            p.prompt,
            p.output,
            p.e2e_a_ms,
            p.e2e_b_ms,
            p.e2e_ab_ms,
            p.ttft_ab_ms,
            f"{p.gain:+.1%}" if table else p.gain,  # CSV and JSON: the fraction, 0.2 = 20% less E2E
            p.break_even_gbps,
            p.break_even_output,
        )
        for p in preds
    ]
    if table:
        info.print(f"prefill on {a_name}, KV over the link, decode on {b_name} (A→B), against each alone")
    show.emit(cols, rows, args.format)
    if table:
        info.print("where A→B beats both alone:", style="bold")
        for gbps in links:
            for load in loads:
                these = [p for p in preds if p.gbps == gbps and p.load == load]
                info.print(f"  {gbps:g} Gb/s, load {load}: {where_it_wins(these, len(mix))}", highlight=False)
    if args.figure:
        from loadgen.report.gainmap import gain_map

        out = Path(args.figure)
        out.parent.mkdir(parents=True, exist_ok=True)
        gain_map(preds, f"prefill {a_name} → decode {b_name}", out)
        info.print(f"gain map: {out}", highlight=False)
    return 0


def _loopback(host: str) -> bool:
    """127.0.0.0/8, ::1 or the name localhost itself (not localhost.example.net)."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def beyond_loopback(option: str, host: str, what: str) -> None:
    """A bind address other than loopback is the user's explicit choice: allowed, and said on the terminal."""
    if not _loopback(host):
        show.err.print(
            f"[yellow]note:[/] {option} {host}: {what} listens beyond this machine's loopback, to anyone who can "
            "reach that address; it has no authentication or encryption: use a trusted network or a tunnel",
            highlight=False,
        )


def cmd_ui(args: argparse.Namespace) -> int:
    beyond_loopback("--web-host", args.web_host, "Locust's web UI (which starts and stops load on your endpoint)")
    return cmd_run(args, ui=(args.web_host, args.web_port))


def cmd_serve(args: argparse.Namespace) -> int:
    from loadgen.launch.engines import serve
    from loadgen.launch.needs import missing

    endpoint = load_endpoint(args.endpoint)
    if endpoint.url is not None:
        raise SpecError(args.endpoint, "this endpoint names a running server: it has no 'emulate' or 'launch' to serve")
    if not 0 <= args.port <= 65535:
        raise SpecError("--port", f"expected a port number from 0 to 65535, got {args.port}")
    beyond_loopback("--host", args.host, "the emulator" if endpoint.emulated else "the engine")
    if why := missing(endpoint):
        raise Failure(why)
    try:
        serve(endpoint, args.host, args.port)
    except OSError as e:
        raise Failure(f"cannot listen on {args.host}:{args.port}: {e.strerror or e}") from None
    return 0


def cmd_validate(args: argparse.Namespace) -> int:
    workload, path = load_workload(args.workload, args.overrides)
    endpoint = resolve_endpoint(workload, path, args.endpoint)
    checks = check_traces(workload)
    ep = endpoint.model_dump(mode="json", exclude_none=True)
    if endpoint.url:
        ep["url"] = redact_url(endpoint.url)
    resolved = {"workload": workload.model_dump(mode="json", exclude_none=True), "endpoint": ep}
    show.out.print(yaml.safe_dump(resolved, sort_keys=False), markup=False, highlight=False)
    show.out.print(show.preview_table([preview(s, workload.seed, i) for i, s in enumerate(workload.stages)]))
    for name, c in checks.items():
        skipped = f", {c.bad_rows} malformed rows skipped" if c.bad_rows else ""
        show.out.print(f"stage {name}: trace has {c.rows} rows to replay{skipped}", highlight=False)
    show.out.print(f"{path}: valid", markup=False, highlight=False)
    return 0


def cmd_query(args: argparse.Namespace) -> int:
    with _reading(args.db) as con:
        try:
            cur = con.execute(args.sql)
            rows = cur.fetchall() if cur.description else []
            cols = [c[0] for c in cur.description] if cur.description else []
        except duckdb.Error as e:
            raise SpecError("SQL", str(e).splitlines()[0]) from None
    show.emit(cols, rows, args.format, show.precise)
    return 0


def cmd_trace(args: argparse.Namespace) -> int:
    from loadgen.trace import fetch, info, synth

    if args.trace_command == "info":
        path = Path(args.file)
        show.out.print(show.trace_info(path, info.trace_info(path, args.format)))
        return 0
    if args.trace_command == "synth":
        if args.rows < 1 or args.rate <= 0 or args.burstiness <= 0:
            raise SpecError("trace synth", "--rows, --rate and --burstiness must be positive")
        if args.format == "azure":
            synth.azure_csv(Path(args.out), args.rows, args.rate, args.seed, args.burstiness)
        elif args.format == "bailian":
            if not 0 <= args.shared <= 1:
                raise SpecError("--shared", f"expected a share from 0 to 1, got {args.shared}")
            synth.bailian_jsonl(Path(args.out), args.rows, args.rate, args.seed, args.shared)
        else:
            synth.mooncake_jsonl(Path(args.out), args.rows, args.rate, args.seed)
        show.out.print(f"wrote {args.rows} requests to {args.out}", highlight=False)
        return 0
    try:
        path, fresh = fetch.fetch(args.name, Path(args.dir) if args.dir else None, args.mirror)
    except KeyError:
        raise SpecError("trace fetch", f"unknown trace {args.name!r} (have: {', '.join(fetch.PUBLIC)})") from None
    except fetch.FetchError as e:
        raise Failure(str(e)) from None
    show.out.print(f"{'downloaded' if fresh else 'already in the cache:'} {path}", highlight=False)
    return 0


COMMANDS = {
    "run": cmd_run,
    "ui": cmd_ui,
    "master": cmd_master,
    "worker": cmd_worker,
    "study": cmd_study,
    "search": cmd_search,
    "serve": cmd_serve,
    "validate": cmd_validate,
    "query": cmd_query,
    "report": cmd_report,
    "compare": cmd_compare,
    "disagg": cmd_disagg,
    "calibrate": cmd_calibrate,
    "trace": cmd_trace,
}


def dispatch(args: argparse.Namespace) -> int:
    return COMMANDS[args.command](args)
