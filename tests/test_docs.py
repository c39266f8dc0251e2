"""The README and docs/ as a user reads them: every `loadgen` command in a ```bash block parses with the command
line's own options, the workload and endpoint files it names are valid (as `loadgen validate` checks them, in this
process, sending nothing), the scripts and tests it names exist, and the project's contract can still be found,
in its own words, in the README or docs/. Nothing here sends a request or starts a server."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from loadgen.cli.app import UsageError, build_parser
from loadgen.spec.load import load_workload, resolve_endpoint
from loadgen.trace.readers import check_traces

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# Commands whose positional workload is a file, and the options that name endpoints.
WORKLOAD_COMMANDS = {"run", "ui", "master", "search", "study", "validate"}
# A placeholder is a word in capitals standing for what the user fills in (DB, FILE.yaml, MASTER_HOST:5557): a
# command with one is checked for its syntax, and the files it names are not looked for.
PLACEHOLDER = re.compile(r"^[A-Z][A-Z0-9_]*([.:,].*)?$")


def bash_commands(page: Path) -> list[tuple[str, list[str], list[list[str]]]]:
    """(where, command words, the block's earlier commands) for each command in the page's ```bash blocks:
    continuation lines joined, comments dropped, `a && b` split."""
    out = []
    text = page.read_text()
    for block in re.finditer(r"^```bash\n(.*?)^```", text, flags=re.M | re.S):
        line_no = text[: block.start()].count("\n") + 2
        earlier: list[list[str]] = []
        for line in block.group(1).replace("\\\n", " ").splitlines():
            for part in line.split("&&"):
                words = shlex.split(part, comments=True)
                if words:
                    out.append((f"{page.relative_to(ROOT)}:{line_no}", words, list(earlier)))
                    earlier.append(words)
            line_no += 1
    return out


COMMANDS = [c for page in PAGES for c in bash_commands(page)]


def test_the_docs_show_commands():
    loadgen = [w for _, w, _ in COMMANDS if w[0] == "loadgen"]
    assert len(loadgen) > 30  # the extraction finds them: README's tour and the pages' examples
    assert {w[1] for w in loadgen} >= {"run", "ui", "report", "query", "search", "study", "calibrate", "disagg"}


def written_by(earlier: list[list[str]]) -> set[str]:
    """Files an earlier command of the same block writes (`--out`, `--db`, `--figure`): not there beforehand."""
    made = set()
    for words in earlier:
        for i, w in enumerate(words[:-1]):
            if w in ("--out", "--db", "--figure"):
                made.add(words[i + 1])
    return made


@pytest.mark.parametrize(("where", "words", "earlier"), COMMANDS, ids=[f"{c[0]} {c[1][0]}" for c in COMMANDS])
def test_each_command_runs_as_shown(where: str, words: list[str], earlier: list[list[str]]):
    if words[0] in ("pip", "export", "chromium"):
        return  # installs and the shell: not loadgen's to check
    if words[0] in ("python", "pytest"):
        scripts = [w.split("::")[0] for w in words[1:] if w.endswith(".py") or ".py::" in w]
        missing = [s for s in scripts if not (ROOT / s).is_file()]
        assert not missing, f"{where}: {' '.join(words)} names files that do not exist: {missing}"
        return
    assert words[0] == "loadgen", f"{where}: a command this test does not know: {' '.join(words)}"
    check_loadgen(where, words, written_by(earlier))


def check_loadgen(where: str, words: list[str], made: set[str]) -> None:
    """The command parses as `loadgen` would parse it; the files it names are valid (unless placeholders)."""
    try:
        args = build_parser().parse_args(words[1:])
    except UsageError as e:
        pytest.fail(f"{where}: `{' '.join(words)}` does not parse: {e}")
    if any(PLACEHOLDER.match(w) for w in words[1:]):
        return  # its syntax is checked; its files are the user's
    if args.command == "serve":
        resolve_endpoint_file(where, args.endpoint)
    if args.command not in WORKLOAD_COMMANDS:
        return
    workload, path = load_workload(ROOT / args.workload, args.overrides)
    check_traces(workload)
    endpoints = [args.endpoint] if getattr(args, "endpoint", None) else []
    endpoints += getattr(args, "endpoints", None) or []
    for ref in endpoints:
        if ref in made:
            continue
        local = ref if ref.startswith(("http://", "https://")) else str(ROOT / ref)
        resolve_endpoint(workload, path, local)
    if not endpoints:
        resolve_endpoint(workload, path)


def inline_commands(page: Path) -> list[tuple[str, list[str]]]:
    """`loadgen ...` in the page's running text (code spans, outside code blocks) that is a whole command: one
    with an argument after the command's name (a file, a database) and no placeholder. The rest name a command or
    an option (`loadgen search`, `loadgen study --prefill-modes`), or are a synopsis (with `[`, `...`, `|` or a
    placeholder such as `WORKLOAD.yaml` or `N`)."""
    text = re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S)
    out = []
    for m in re.finditer(r"`(loadgen [^`]+)`", text):
        shown = " ".join(m.group(1).split()).split(" 2>&1")[0]  # a shell redirection and pipe: not loadgen's
        if any(s in shown for s in ("[", "...", "|")):
            continue
        words = shlex.split(shown)
        if any(PLACEHOLDER.match(w) for w in words[1:]):
            continue  # a synopsis (`loadgen ui WORKLOAD.yaml --workers N`): the commands table's, as `--help`'s
        if len(words) > 2 and not words[2].startswith("-"):
            out.append((f"{page.relative_to(ROOT)}: `{shown}`", words))
    return out


INLINE = [c for page in PAGES for c in inline_commands(page)]


def test_the_running_text_shows_commands_too():
    assert len(INLINE) > 15


@pytest.mark.parametrize(("where", "words"), INLINE, ids=[c[0].split(":")[0] for c in INLINE])
def test_each_command_in_the_text_runs_as_shown(where: str, words: list[str]):
    check_loadgen(where, words, set())


def resolve_endpoint_file(where: str, ref: str) -> None:
    from loadgen.spec.load import load_endpoint

    assert (ROOT / ref).is_file(), f"{where}: no endpoint file {ref}"
    load_endpoint(ROOT / ref)


# The contract's statements (the project's CONTRACT.md, outside this repository), each in its own words: each
# must be found in the README or a page of docs/, whitespace aside.
CONTRACT = [
    # commands
    "loadgen run WORKLOAD.yaml [--endpoint FILE.yaml\\|URL] [--db PATH] [--set KEY=VALUE ...]",
    "loadgen ui WORKLOAD.yaml [--endpoint ...] [--db PATH]",
    "loadgen serve ENDPOINT.yaml [--port N]",
    "loadgen validate WORKLOAD.yaml",
    'loadgen query DB "SQL"',
    "loadgen report DB [--out DIR]",
    "loadgen study WORKLOAD.yaml --endpoints E1.yaml E2.yaml ... [--db PATH]",
    "loadgen disagg DB --prefill A --decode B --link GBPS[,GBPS...]",
    "loadgen calibrate DB --endpoint NAME --out FILE.yaml",
    "checks the workload, its endpoint and its trace without sending a request",
    "prints what would be sent",
    "runs SQL over a results database",
    "writes an offline HTML report with figures into `reports/`",
    "writes every request and every streamed event to DuckDB",
    "which then has the views `prefill`, `decode` and `crossover`",
    "names as in `runs.endpoint`",
    "unless told otherwise",
    "--endpoint http://127.0.0.1:8000/v1",
    "--set load.rate=20 --set stop.requests=100",
    "`--db` default: `results/<workload name>.duckdb`",
    "A database holds any number of runs; a new run never alters earlier ones.",
    "Exit status: 0 the run completed (failed requests are data, not a failure of the run); 2 invalid input",
    "1 any other failure",
    # the workload file
    "names the run and the default database",
    "a file (relative to this one) or a base URL",
    "chat (/chat/completions) | completions (/completions)",
    "optional; default: the endpoint's model",
    "the same seed gives the same schedule and lengths",
    "closed | constant | poisson | gamma | trace",
    "requests/s (constant, poisson, gamma)",
    "gamma shape: 1 = poisson, < 1 burstier, > 1 smoother",
    "closed: users sending back to back; open arrivals: cap on requests in flight",
    "relative to the workload file",
    "2.0 replays twice as fast",
    "prompt_tokens: {dist: normal, mean: 512, std: 128, min: 16, max: 3968}",
    "a number is a fixed length",
    "slo: {ttft_ms: 500, tpot_ms: 50}",
    "optional; each stage overrides keys above and runs in turn",
    "- {name: c8, load: {arrival: closed, concurrency: 8}}",
    "`{dist: uniform, min, max}`, `{dist: normal, mean, std, min, max}`",
    "`{dist: lognormal, mean, std, min, max}`",
    "`{dist: choice, values: [...], weights: [...]}`",
    "with a trace, lengths come from the trace unless `requests` says otherwise",
    "Output lengths are enforced",
    # the endpoint file
    "api_key_env: OPENAI_API_KEY     # the key is read from this variable; never written anywhere",
    # the results database
    "`running`, `completed`, `interrupted`, `failed`",
    "role-only, empty and usage-only events do not count",
    "`usage.completion_tokens`",
    "`server_prefill_ms`",
    "`server_decode_ms`",
]
COLUMNS = {
    "runs": "run_id workload endpoint started_at finished_at status spec",
    "requests": "request_id stage scheduled_s sent_s first_token_s last_token_s end_s prompt_tokens max_tokens "
    "output_tokens lag_ms ttft_ms tpot_ms e2e_ms status error http_status timeout connect http_429 http_5xx "
    "stream_broken malformed",
    "events": "request_id idx t_s tokens",
    "summary": "requests errors ttft_p50_ms ttft_p90_ms ttft_p99_ms tpot_p50_ms tpot_p90_ms tpot_p99_ms e2e_p50_ms "
    "output_tokens_per_s requests_per_s goodput_rps",
}


def _all_pages() -> str:
    return " ".join(" ".join(p.read_text().split()) for p in PAGES)


def test_the_contract_is_found_in_its_own_words():
    text = _all_pages()
    assert [s for s in CONTRACT if " ".join(s.split()) not in text] == []


def test_the_database_pages_name_every_contract_column():
    page = (ROOT / "docs" / "metrics.md").read_text()
    missing = [f"{table}.{c}" for table, cols in COLUMNS.items() for c in cols.split() if f"`{c}`" not in page]
    assert missing == []


def anchors(page: Path) -> set[str]:
    """The page's headings as GitHub links to them: lower case, punctuation dropped, spaces as hyphens."""
    titles = re.findall(r"^#+ (.+)$", re.sub(r"^```.*?^```", "", page.read_text(), flags=re.M | re.S), flags=re.M)
    return {re.sub(r"[^\w\- ]", "", t.strip().lower()).replace(" ", "-") for t in titles}


def test_links_between_pages_lead_somewhere():
    broken = []
    for page in PAGES:
        for target, anchor in re.findall(r"\]\(([^)#\s]*)(?:#([^)\s]*))?\)", page.read_text()):
            if target.startswith(("http://", "https://")):
                continue
            linked = page.parent / target if target else page
            if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in anchors(linked)):
                broken.append(f"{page.relative_to(ROOT)}: {target}#{anchor}")
    assert broken == []


def test_the_readme_is_a_front_page():
    readme = (ROOT / "README.md").read_text()
    assert len(readme.splitlines()) < 250
    assert readme.startswith("# loadgen\n\n```bash\npip install . && loadgen run workloads/chat.yaml")
    # The set-up block's second line is the test command, which CI runs as written (.ci/run).
    setup = readme.split("```")[1].splitlines()
    tests = setup[2].split("#")[0].strip()
    assert "pytest" in tests
    assert tests in (ROOT / ".ci" / "run").read_text()
