"""Terminal output: tables keep every value whole, in a terminal or piped."""

from __future__ import annotations

import io

from loadgen.cli import show


def _wide() -> tuple[list[str], list[tuple]]:
    cols = ["stage", *(f"a_rather_long_column_{i}" for i in range(6))]
    return cols, [("concurrency=128,prompt_tokens=3968", *(1234567.891 + i for i in range(6)))]


def test_piped_tables_widen_to_their_content():
    cols, rows = _wide()
    buf = io.StringIO()
    show.Output(file=buf, width=80).print(show.result_table(cols, rows))
    text = buf.getvalue()
    assert "…" not in text and "concurrency=128,prompt_tokens=3968" in text and "1,234,572.89" in text
    assert all(c in text for c in cols)
    assert max(len(line) for line in text.splitlines()) > 80


def test_terminal_tables_fold_rather_than_cut():
    cols, rows = _wide()
    buf = io.StringIO()
    show.Output(file=buf, width=80, force_terminal=True, color_system=None).print(show.result_table(cols, rows))
    text = buf.getvalue()
    assert "…" not in text and max(len(line) for line in text.splitlines()) <= 80  # wrapped, nothing cut
