"""`loadgen study`: a workload on each endpoint into one database, then the phase views and the study's findings."""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import yaml

from loadgen.analysis.findings import TOPIC, Finding, by_prefill_mode, verdict
from loadgen.cli import show
from loadgen.cli.failure import Failure
from loadgen.cli.options import numbers
from loadgen.cli.run import default_db, execute
from loadgen.hardware.profiles import PREFILL_MODES
from loadgen.launch.background import LaunchError
from loadgen.spec import EndpointSpec, SpecError, load_endpoint, load_workload
from loadgen.spec.redact import redact_url
from loadgen.store import StoreError
from loadgen.store.read import reading

VIEWS = (
    ("prefill", "endpoint, prompt_tokens, batch"),
    ("decode", "endpoint, batch"),
    ("crossover", "endpoint, versus"),
)


def _modes(text: str | None) -> list[str]:
    if text is None:
        return []
    modes = [m.strip() for m in text.split(",") if m.strip()]
    bad = [m for m in modes if m not in PREFILL_MODES]
    if bad or not modes:
        raise SpecError("--prefill-modes", f"expected modes from {', '.join(PREFILL_MODES)}, got {text!r}")
    return modes


def _endpoints(refs: list[str], modes: list[str], tmp: Path) -> list[tuple[str, str]]:
    """(reference, name) of every run, each file checked before anything runs: an emulated GroqRack once per
    prefill mode, as `<name>@<mode>` (an endpoint file written to `tmp`)."""
    out = []
    for ref in refs:
        if ref.startswith(("http://", "https://")):
            out.append((ref, redact_url(ref)))
            continue
        ep = load_endpoint(ref)
        if not modes or ep.emulate is None or ep.emulate.engine != "groq":
            out.append((ref, ep.name))
            continue
        for mode in modes:
            data = ep.model_dump(mode="json", exclude_none=True)
            data["name"] = f"{ep.name}@{mode}"
            data["emulate"]["hardware_overrides"] = {**ep.emulate.hardware_overrides, "prefill_mode": mode}
            EndpointSpec.model_validate(data)
            path = tmp / f"{ep.name}@{mode}.yaml"
            path.write_text(yaml.safe_dump(data, sort_keys=False))
            out.append((str(path), data["name"]))
    return out


def study(args: argparse.Namespace) -> int:
    workload, _ = load_workload(args.workload, args.overrides)
    links = numbers("--link", args.link)
    modes = _modes(args.prefill_modes)
    if args.pair and args.pair[0] == args.pair[1]:
        raise SpecError("--pair", f"expected two different endpoints, got {args.pair[0]!r} twice")
    db = args.db or str(default_db(workload))
    with tempfile.TemporaryDirectory(prefix="loadgen-study-") as tmp:
        runs = _endpoints(args.endpoints, modes, Path(tmp))
        for i, (ref, name) in enumerate(runs, start=1):
            show.err.rule(f"study {workload.name}: endpoint {i}/{len(runs)}: {name}")
            try:
                code = execute(args.workload, ref, db, args.overrides)
            except (StoreError, LaunchError) as e:
                raise Failure(str(e)) from None
            if code != 0:
                return code
    with reading(db) as con:
        for view, order in VIEWS:
            cur = con.execute(f"SELECT * FROM {view} ORDER BY {order}")
            show.out.print(view, style="bold")
            show.out.print(show.result_table([c[0] for c in cur.description], cur.fetchall()))
        pair = (args.pair[0], args.pair[1]) if args.pair else None
        per_mode = by_prefill_mode(con, pair, links)
    if None in per_mode:
        print_findings(per_mode[None])
        return 0
    first = next(iter(per_mode))
    show.out.print(f"the study's findings, with the GroqRack's prefill {first}", style="bold")
    print_findings(per_mode[first], heading=False)
    print_robustness(per_mode)
    return 0


def print_findings(found: list[Finding], heading: bool = True) -> None:
    """The study's findings with their verdicts; where none can be judged (the study compares GPUs with a
    GroqRack, and these endpoints are not both), only what was measured, under headings that claim nothing."""
    judged = any(f.holds is not None for f in found)
    if heading:
        title = (
            "the study's findings, measured" if judged else "measured (no GPU and GroqRack pair to judge the study by)"
        )
        show.out.print(title, style="bold")
    for f in found:
        line = f"({f.n}) {f.study}: {verdict(f.holds)}" if judged else f"({f.n}) {TOPIC[f.n]}"
        show.out.print(line, style="bold", highlight=False)
        show.out.print(f"    {f.measured}", highlight=False)


def print_robustness(per_mode: dict[str, list[Finding]]) -> None:
    """Each finding under each prefill mode, and whether its verdict survives the choice."""
    show.out.print("how the findings depend on the GroqRack's prefill mode", style="bold")
    for i, first in enumerate(next(iter(per_mode.values()))):
        cells = {mode: found[i] for mode, found in per_mode.items()}
        robust = len({c.holds for c in cells.values()}) == 1
        show.out.print(f"({first.n}) {'robust' if robust else 'depends on the mode'}", style="bold", highlight=False)
        for mode, c in cells.items():
            show.out.print(f"    {mode}: {verdict(c.holds)} ({c.short})", highlight=False)
