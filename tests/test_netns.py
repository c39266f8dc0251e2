"""Master and workers on different "machines": four network namespaces on this one, joined by veth pairs to a
bridge in a fifth. Needs root and `ip netns`; skipped, with the reason, elsewhere. Only the private addresses
made here (10.213.0.0/24, inside the namespaces) are ever contacted."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import duckdb
import pytest

from conftest import COMMAND, FAST_ENDPOINT, ROOT

pytestmark = pytest.mark.netns

NET = "10.213.0"
HOSTS = {"master": 1, "w1": 2, "w2": 3, "emu": 4}


def _ip(*args: str) -> None:
    subprocess.run(["ip", *args], check=True, capture_output=True, text=True, timeout=10)


def _can_make_namespaces() -> str | None:
    if os.geteuid() != 0:
        return "needs root to create network namespaces"
    if shutil.which("ip") is None:
        return "needs the `ip` command (iproute2)"
    probe = f"lgprobe{uuid.uuid4().hex[:6]}"
    try:
        _ip("netns", "add", probe)
    except (subprocess.CalledProcessError, OSError) as e:
        return f"cannot create a network namespace here: {getattr(e, 'stderr', '') or e}".strip()
    _ip("netns", "del", probe)
    return None


@pytest.fixture
def namespaces():
    why = _can_make_namespaces()
    if why:
        pytest.skip(why)
    tag = uuid.uuid4().hex[:5]
    hub = f"lg{tag}hub"
    names = {role: f"lg{tag}{role}" for role in HOSTS}
    _ip("netns", "add", hub)
    try:
        _ip("-n", hub, "link", "add", "br0", "type", "bridge")
        _ip("-n", hub, "link", "set", "br0", "up")
        for role, ns in names.items():
            _ip("netns", "add", ns)
            _ip("-n", ns, "link", "set", "lo", "up")
            # One veth pair per namespace: "eth0" inside, its peer on the hub's bridge.
            _ip("link", "add", f"v{tag}{role}", "netns", hub, "type", "veth", "peer", "name", "eth0", "netns", ns)
            _ip("-n", hub, "link", "set", f"v{tag}{role}", "master", "br0", "up")
            _ip("-n", ns, "addr", "add", f"{NET}.{HOSTS[role]}/24", "dev", "eth0")
            _ip("-n", ns, "link", "set", "eth0", "up")
        yield names
    finally:
        for ns in [*names.values(), hub]:
            pids = subprocess.run(["ip", "netns", "pids", ns], capture_output=True, text=True).stdout.split()
            for pid in pids:
                subprocess.run(["kill", "-9", pid], capture_output=True)
            subprocess.run(["ip", "netns", "del", ns], capture_output=True)


def _in(ns: str, *args: str, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, *COMMAND, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        **kw,
    )


@pytest.mark.slow
def test_master_and_two_workers_in_their_own_namespaces_fill_one_database(namespaces, write, tmp_path):
    ep = write("ep.yaml", FAST_ENDPOINT)
    w = write(
        "w.yaml",
        "name: netns\nendpoint: ep.yaml\nload: {arrival: poisson, rate: 20, concurrency: 4}\n"
        "requests: {prompt_tokens: 64, output_tokens: 8}\nstop: {requests: 60}\n",
    )
    db = tmp_path / "netns.duckdb"
    emu = _in(namespaces["emu"], "serve", str(ep), "--host", f"{NET}.4", "--port", "8000")
    procs = [emu]
    try:
        assert emu.stdout is not None and "serving" in emu.stdout.readline()
        master = _in(
            namespaces["master"],
            "master",
            str(w),
            "--endpoint",
            f"http://{NET}.4:8000/v1",
            "--expect-workers",
            "2",
            "--bind",
            f"{NET}.1:5557",
            "--db",
            str(db),
        )
        procs.append(master)
        workers = [_in(namespaces[role], "worker", "--master", f"{NET}.1:5557") for role in ("w1", "w2")]
        procs += workers
        out, err = master.communicate(timeout=120)
        assert master.returncode == 0, err
        assert "listens beyond this machine's loopback" in err  # the master's bind is not loopback, and says so
        for p in workers:
            assert p.wait(timeout=60) == 0, p.stderr.read() if p.stderr else ""
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
            p.wait()
    con = duckdb.connect(str(db), read_only=True)
    assert con.execute("SELECT status FROM runs").fetchall() == [("completed",)]
    by_worker = dict(con.execute("SELECT worker, count(*) FROM requests WHERE status = 'ok' GROUP BY 1").fetchall())
    assert sorted(by_worker) == [0, 1] and sum(by_worker.values()) == 60
    ids = [r[0] for r in con.execute("SELECT request_id FROM requests ORDER BY 1").fetchall()]
    assert ids == list(range(60))
    # The namespaces share this machine's clock: each estimated offset is within its own bound of zero, and the
    # bound (half a round trip over the veth pairs) is well under a millisecond.
    for offset, uncertainty in con.execute("SELECT clock_offset_ms, clock_uncertainty_ms FROM workers").fetchall():
        assert abs(offset) <= uncertainty + 0.01 and uncertainty < 1.0
