"""The terminal's live view while a run goes: the current stage's figures from the live feed (the same rows as
Locust's LLM tab and the database's `summary`), on stderr. In a terminal, a panel redrawn in place; when stdout
or stderr is not one (a CI log, a pipe, a file) one plain line every PLAIN_EVERY_S and at each new stage, so
logs stay readable."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.text import Text

from loadgen.cli import show
from loadgen.live.feed import LiveFeed, Snapshot
from loadgen.results import Progress

PLAIN_EVERY_S = 10.0


def _ms(v: float | None) -> str:
    """A figure as the LLM tab writes it: one decimal, '-' for none."""
    return "-" if v is None else f"{v:,.1f}"


def _pcts(row: dict[str, Any], name: str) -> str:
    return " / ".join(_ms(row.get(f"{name}_p{q}_ms")) for q in (50, 90, 99))


def figures(p: Progress, s: Snapshot, stage: str) -> list[str]:
    """A stage's figures, as lines: the whole run's progress (requests done of all it plans), then what the
    database holds of the stage so far (its requests outside warm-up, as the summary counts them)."""
    done = f"{p.done}" + (f"/{p.planned}" if p.planned else "")
    head = f"{stage or '-'}: run {done} done, {p.in_flight} in flight, {p.elapsed_s:,.0f} s"
    row = s.stage(stage) or {}
    errors = s.errors.get(stage, {})
    by_class = ", ".join(f"{k} {n}" for k, n in sorted(errors.items()))
    thought = row.get("reasoning_share")
    cancelled = row.get("cancelled") or 0
    return [
        head,
        f"TTFT p50/p90/p99 {_pcts(row, 'ttft')} ms   TPOT {_pcts(row, 'tpot')} ms   ITL {_pcts(row, 'itl')} ms",
        *(
            [
                f"answer TTFT p50/p90 {_ms(row.get('answer_ttft_p50_ms'))}/{_ms(row.get('answer_ttft_p90_ms'))} ms   "
                f"thinking {thought:.0%} of output tokens"
            ]
            if thought is not None
            else []
        ),  # fmt: skip
        f"E2E p50 {_ms(row.get('e2e_p50_ms'))} ms   out tok/s {_ms(row.get('output_tokens_per_s'))}   "
        f"req/s {_ms(row.get('requests_per_s'))}   goodput {_ms(row.get('goodput_rps'))} req/s   "
        f"lag p99 {_ms(row.get('lag_p99_ms'))} ms   timing bound {_ms(s.timing_bound_ms)} ms",
        f"stage stored: requests {row.get('requests', 0)} (warm-up left out)   errors {row.get('errors', 0)}   "
        f"not sent {row.get('not_sent', 0)}"
        + (f"   cancelled {cancelled}" if cancelled else "")
        + (f"   by class: {by_class}" if by_class else ""),
        *([_tasks(s.tasks[stage])] if stage in s.tasks else []),
    ]


def _tasks(row: dict[str, Any]) -> str:
    """A stage of agent tasks (its task_summary row): tasks whose every call has answered, and their figures."""
    slowdown = row.get("slowdown_p50")
    within = row.get("slo_share")
    return (
        f"agent tasks: {row['complete']} complete of {row['tasks']} begun   latency p50/p90 "
        f"{_ms(row.get('task_latency_p50_ms'))} / {_ms(row.get('task_latency_p90_ms'))} ms   slowdown p50 "
        + ("-" if slowdown is None else f"{slowdown:.2f}")
        + ("" if within is None else f"   within SLO {within:.0%}")
    )


class LivePanel:
    def __init__(self, feed: LiveFeed, console: Console = show.err, interactive: bool | None = None):
        """`interactive`: redraw a panel in place; by default where both stdout and `console` are terminals (a
        run whose output goes to a file or a pipe is being logged: it gets plain lines)."""
        self.feed = feed
        self.console = console
        if interactive is None:
            interactive = console.is_terminal and show.out.is_terminal
        # Transient: the summary table follows the run, with the same figures for good.
        self.live = Live(console=console, auto_refresh=False, transient=True) if interactive else None
        self._printed_at = float("-inf")
        self._stage: str | None = None

    def __enter__(self) -> LivePanel:
        if self.live is not None:
            self.live.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.live is not None:
            self.live.__exit__(*exc)

    def update(self, p: Progress) -> None:
        """The load's on_progress: feed the live view, and show it. Between stages and after the last, the
        stage shown is the last one that ran."""
        self.feed.update(p)
        new_stage = bool(p.stage) and p.stage != self._stage
        self._stage = p.stage or self._stage
        if self._stage is None:
            return  # nothing has started yet
        lines = figures(p, self.feed.snapshot, self._stage)
        if self.live is not None:
            parts: list[Any] = [Text(lines[0], style="bold cyan"), *(Text(line) for line in lines[1:])]
            if p.planned:
                parts.insert(0, ProgressBar(total=p.planned, completed=p.done, width=40))
            self.live.update(Group(*parts), refresh=True)
            return
        now = time.perf_counter()
        if p.stage and (new_stage or now - self._printed_at >= PLAIN_EVERY_S):
            self._printed_at = now
            self.console.print(" | ".join(lines), highlight=False, soft_wrap=True)
