"""Entry point: parses options, dispatches to a command, and turns failures into exit statuses.

0: the run completed (failed requests are data); 2: invalid input, with the place and what was expected;
1: any other failure, with a one-line reason; 128 + signal number: interrupted.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from loadgen import __version__
from loadgen.children import one_blas_thread

LOAD_COMMANDS = (
    "run",
    "ui",
    "study",
    "master",
    "worker",
    "search",
)  # these send load: loadgen.load.runtime.prepare() runs first


class UsageError(Exception):
    pass


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> None:  # type: ignore[override]
        raise UsageError(message)


def build_parser() -> argparse.ArgumentParser:
    # Imported here, not at the top: the commands that send load set the process up before anything loads.
    from loadgen.cli.show import FORMATS
    from loadgen.store.schema import names

    p = Parser(prog="loadgen", description="Phase-aware load generator for LLM serving endpoints.")
    p.add_argument("--version", action="version", version=f"loadgen {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    def load_opts(sp: argparse.ArgumentParser) -> None:
        sp.add_argument("workload", help="workload YAML file")
        sp.add_argument("--endpoint", help="endpoint YAML file or OpenAI-compatible base URL (overrides the workload)")
        sp.add_argument("--db", help="results database (default: results/<workload name>.duckdb)")
        sp.add_argument(
            "--set",
            dest="overrides",
            action="append",
            default=[],
            metavar="KEY=VALUE",
            help="override one workload key by its dotted path, e.g. load.rate=20 (repeatable)",
        )
        sp.add_argument(
            "--server-metrics",
            type=float,
            default=0.25,
            metavar="SECONDS",
            help="sample the server's Prometheus /metrics every SECONDS during the run (default 0.25; 0: off)",
        )

    def workers_opt(sp: argparse.ArgumentParser) -> None:
        sp.add_argument(
            "--workers",
            type=int,
            default=1,
            metavar="N",
            help="load-generating processes on this machine: 1 (default) runs in this process; more start a "
            "Locust master here and N worker processes",
        )

    rn = sub.add_parser("run", help="run a workload headless and summarise it")
    load_opts(rn)
    workers_opt(rn)
    ui = sub.add_parser("ui", help="run a workload from Locust's web UI")
    load_opts(ui)
    workers_opt(ui)
    ui.add_argument("--web-host", default="127.0.0.1", help="address for the web UI (default 127.0.0.1)")
    ui.add_argument("--web-port", type=int, default=8089, help="port for the web UI (default 8089)")

    ms = sub.add_parser("master", help="run a workload headless on workers that connect (loadgen worker)")
    load_opts(ms)
    ms.add_argument("--expect-workers", type=int, required=True, metavar="N", help="start once N workers connected")
    ms.add_argument(
        "--bind",
        default="127.0.0.1:5557",
        metavar="HOST:PORT",
        help="where workers connect (default 127.0.0.1:5557); another address than loopback is your choice to "
        "open the unauthenticated worker channel beyond this machine",
    )
    wk = sub.add_parser("worker", help="generate load for a master (loadgen master, or run/ui --workers)")
    wk.add_argument("--master", required=True, metavar="HOST:PORT", help="the master's address")

    st = sub.add_parser("study", help="run a workload's stages on each endpoint into one database")
    st.add_argument("workload", help="workload YAML file (its stages mark phase: prefill or decode)")
    st.add_argument("--endpoints", nargs="+", required=True, help="endpoint YAML files or base URLs")
    st.add_argument("--db", help="results database (default: results/<workload name>.duckdb)")
    st.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    st.add_argument(
        "--pair",
        nargs=2,
        metavar=("PREFILL", "DECODE"),
        help="endpoints (names in runs.endpoint) for the disaggregation finding; default: the TTFT and TPOT winners",
    )
    st.add_argument("--link", default="100", help="link speeds in Gb/s for the disaggregation finding (default 100)")
    st.add_argument(
        "--prefill-modes",
        help="run each emulated GroqRack once per prefill mode (token-serial,pipelined,padded), named "
        "<endpoint>@<mode>, and show how each finding depends on the mode",
    )

    se = sub.add_parser("search", help="find the highest load that meets the workload's SLO, per endpoint")
    load_opts(se)
    se.add_argument("--endpoints", nargs="+", help="search each of these endpoints in turn (the capacity table)")
    se.add_argument(
        "--over", choices=["rate", "concurrency"], help="vary the request rate or the users (default: the workload's)"
    )
    se.add_argument(
        "--goodput",
        type=float,
        default=0.95,
        help="share of requests that must meet every SLO (default 0.95)",
    )
    se.add_argument(
        "--precision",
        type=float,
        default=0.05,
        help="stop once the lowest failing load is within this fraction of the highest passing (default 0.05)",
    )
    se.add_argument("--max-trials", type=int, default=16, help="trials per endpoint at most (default 16)")

    sv = sub.add_parser("serve", help="serve an endpoint's emulator or llama.cpp engine (OpenAI-compatible, streaming)")
    sv.add_argument("endpoint", help="endpoint YAML file with an 'emulate' or a 'launch' section")
    sv.add_argument("--port", type=int, default=8000, help="port (0 picks a free one; default 8000)")
    sv.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1)")

    va = sub.add_parser("validate", help="check a workload and its endpoint without sending a request")
    va.add_argument("workload")
    va.add_argument("--endpoint")
    va.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    tr = sub.add_parser("trace", help="look at, make or download request traces")
    tsub = tr.add_subparsers(dest="trace_command", required=True, parser_class=Parser)
    ti = tsub.add_parser("info", help="rows, span, rate over time and length percentiles of a trace")
    ti.add_argument("file")
    ti.add_argument("--format", choices=["azure", "mooncake", "bailian", "burstgpt"], help="default: from the file")
    ts = tsub.add_parser(
        "synth", help="write a synthetic trace (Azure CSV, or Mooncake / Bailian JSONL with shared prefixes)"
    )
    ts.add_argument("out")
    ts.add_argument("--format", choices=["azure", "mooncake", "bailian"], default="azure")
    ts.add_argument(
        "--shared",
        type=float,
        default=0.0,
        help="bailian: share of each 2048-token prompt that all requests open with (default 0)",
    )
    ts.add_argument("--rows", type=int, default=2000)
    ts.add_argument("--rate", type=float, default=2.0, help="requests/s (default 2)")
    ts.add_argument("--burstiness", type=float, default=1.0, help="gamma shape of the gaps: 1 = Poisson")
    ts.add_argument("--seed", type=int, default=1)
    tf = tsub.add_parser("fetch", help="download a public trace into the cache (needs internet)")
    tf.add_argument(
        "name",
        help="one of: azure-2023-conv, azure-2023-code, azure-2024-conv, azure-2024-code, "
        "mooncake-conversation, mooncake-toolagent, burstgpt",
    )
    tf.add_argument("--dir", help="where to put it (default: ~/.cache/loadgen/traces)")
    tf.add_argument("--mirror", help="a base URL to download from instead of the dataset's own")

    rp = sub.add_parser("report", help="write an offline HTML report with figures")
    rp.add_argument("db", help="results database")
    rp.add_argument("--out", help="folder (default: reports/<database name>/)")

    cp = sub.add_parser(
        "compare",
        help="compare two runs or endpoints (a measured run and its twin's): p50/p90 per stage, the error B/A - 1 "
        "and bootstrap intervals",
    )
    cp.add_argument("db", help="results database (A's, and B's unless --b-db)")
    cp.add_argument("a", help="run ID or endpoint name (e.g. the measured server's run)")
    cp.add_argument("b", help="run ID or endpoint name (e.g. its twin's run of the same workload)")
    cp.add_argument("--b-db", metavar="DB", help="look B up in this results database (default: DB)")
    cp.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")

    dg = sub.add_parser("disagg", help="predict prefill on A with decode on B over a link, against A or B alone")
    dg.add_argument("db", help="results database with prefill and decode measurements of both endpoints")
    dg.add_argument("--prefill", required=True, help="endpoint A (its name in runs.endpoint, or its file)")
    dg.add_argument("--decode", required=True, help="endpoint B (its name in runs.endpoint, or its file)")
    dg.add_argument("--link", required=True, help="link speeds in Gb/s, comma-separated: 25,100,400")
    dg.add_argument("--latency-ms", type=float, default=0.01, help="one-way link latency (default 0.01)")
    dg.add_argument("--handoff-ms", type=float, default=0.0, help="per-request hand-off cost (default 0)")
    dg.add_argument("--overlap", choices=["none", "layerwise"], default="none", help="KV sent whole or by layer")
    dg.add_argument("--load", default="1", help="concurrent requests, comma-separated (default 1)")
    dg.add_argument("--workload", help="use this workload's length mix instead of a grid of lengths")
    dg.add_argument(
        "--model", help="model profile for KV bytes per token (default: the model both endpoints' runs served)"
    )
    dg.add_argument(
        "--cached-share",
        type=float,
        default=0.0,
        metavar="S",
        help="share of each prompt already in the prefix caches (a conversation's earlier turns; e.g. a run's "
        "summary cached_share): a side that keeps a cache prefills only the rest, and only the rest of the KV "
        "cache crosses the link when the decode side keeps one (default 0)",
    )
    dg.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    dg.add_argument(
        "--figure",
        help="write the gain map (PNG) here; `loadgen report` shows it if it is reports/<db>/disagg_gain.png",
    )

    cb = sub.add_parser("calibrate", help="fit a twin of a measured server from a study database: an endpoint file")
    cb.add_argument("db", help="results database with the endpoint's prefill and decode stages (loadgen study)")
    cb.add_argument("--endpoint", required=True, help="the measured endpoint (its name in runs.endpoint)")
    cb.add_argument("--out", required=True, help="the twin's endpoint file to write (YAML)")
    cb.add_argument("--slots", type=int, help="requests the server serves together, where its stored spec does not say")

    q = sub.add_parser("query", help="run SQL over a results database and print a table")
    q.add_argument("db", help="results database")

    tables, views = ", ".join(names("TABLE")), ", ".join(names("VIEW"))
    q.add_argument("sql", help=f"SQL to run (tables: {tables}; views: {views})")
    q.add_argument("--format", choices=FORMATS, default="table", help="table (default), csv or json")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    one_blas_thread()
    if argv and argv[0] in LOAD_COMMANDS:
        from loadgen.load.runtime import prepare

        prepare()

    from loadgen.cli import commands, show
    from loadgen.spec import SpecError

    if not argv:  # bare `loadgen`: what it can do
        build_parser().print_help()
        return 0
    try:
        args = build_parser().parse_args(argv)
        return commands.dispatch(args)
    except UsageError as e:
        show.err.print(f"loadgen: invalid option: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except SpecError as e:
        show.err.print(f"loadgen: {e}", markup=False, highlight=False, soft_wrap=True)
        return 2
    except commands.Failure as e:
        show.err.print(f"loadgen: {e}", markup=False, highlight=False, soft_wrap=True)
        return 1
    except KeyboardInterrupt:
        show.err.print("loadgen: interrupted")
        return 130
    except Exception as e:  # a bug: one line, and the traceback only when asked for
        if os.environ.get("LOADGEN_DEBUG"):
            raise
        show.err.print(
            f"loadgen: internal error: {type(e).__name__}: {e} (set LOADGEN_DEBUG=1 for a traceback)",
            markup=False,
            highlight=False,
            soft_wrap=True,
        )
        return 1
