"""The processes a test's run starts (its server, its local workers), forked from a process that has done their
imports.

A run starts its endpoint's server (the emulator, a llama.cpp engine) as `python -m loadgen.launch SPEC`
(`loadgen.launch.background.LAUNCH`) and `--workers N` as `python -m loadgen worker` (`loadgen.load.spawn.WORKER`):
each spends 0.4 to 1 s of CPU on Python and its imports before it serves; the suite starts some ninety. The zygote
(tests/zygote.py) forks a launcher for each, and points those commands at this file's client:
`python -I -S tests/launcher.py NAME ARGS...` (NAME: the launcher's socket, in Linux's abstract namespace).

The client is what the run starts, waits on and signals, as it would the real command: it hands the launcher its
stdin, stdout and stderr, directory, environment and CPUs over the socket; the launcher forks a child that takes
them and runs the command's own code with ARGS. The client passes SIGTERM and SIGINT on to the child and exits with
its status (128 + SIGTERM where a signal ended it); a client killed outright takes the child with it.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn


def start(name: str, run: Callable[[list[str]], int], prepare: Callable[[], None] = lambda: None, fork=os.fork) -> str:
    """Fork a launcher (which dies with this process) that forks `run(args)` for each client; returns its socket's
    name. `prepare` runs in the launcher first (its imports); a gevent-patched caller passes a `fork` that
    reinitialises gevent in the child. Call before any thread starts."""
    name = f"loadgen-{name}-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(_abstract(name))
    listener.listen(16)
    if fork() == 0:
        _launcher(listener, run, prepare, fork)
    listener.close()
    return name


def _abstract(name: str) -> str:
    """Linux's abstract namespace: a socket that leaves no file behind."""
    return "\0" + name


def _launcher(listener: socket.socket, run: Callable[[list[str]], int], prepare: Callable[[], None], fork) -> None:
    from loadgen.children import die_with_parent

    die_with_parent()
    prepare()
    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps what it forks
    while True:
        conn, _ = listener.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if fork() == 0:
            listener.close()
            _child(conn, json.loads(msg), fds, run)
        conn.close()
        for fd in fds:
            os.close(fd)


def _child(conn: socket.socket, job: dict, fds: list[int], run: Callable[[list[str]], int]) -> None:
    """In the forked child: the client's files, directory, environment and CPUs, then `run` with its arguments."""

    def body() -> int:
        conn.sendall(f"{os.getpid()}\n".encode())
        os.setsid()  # as the real command's own session
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, signal.SIG_DFL)
        for target, fd in enumerate(fds):
            os.dup2(fd, target)
            os.close(fd)
        os.chdir(job["cwd"])
        os.environ.clear()
        os.environ.update(job["env"])
        os.sched_setaffinity(0, job["cores"])
        _stop_with(conn)
        return run(job["args"])

    exit_after(body, lambda code: conn.sendall(f"{code}\n".encode()))


def servers() -> str:
    """The launcher of `python -m loadgen.launch SPEC [HOST PORT]`: the servers a run starts."""

    def imports() -> None:
        import loadgen.emulator.server  # noqa: F401  (what a server needs, imported once)
        import loadgen.launch.engines  # noqa: F401
        import loadgen.spec  # noqa: F401

    def launch(args: list[str]) -> int:
        import runpy

        sys.argv = ["loadgen.launch", *args]
        runpy.run_module("loadgen.launch", run_name="__main__", alter_sys=True)
        return 0

    return start("servers", launch, imports)


def exit_after(body: Callable[[], int], report: Callable[[int], None]) -> NoReturn:
    """In a forked child: run `body`, report its exit status (a `SystemExit`'s, 1 for an exception, whose
    traceback goes to stderr) and leave at once, running none of the parent's exit handlers."""
    code = 70
    try:
        code = body()
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 0
    except BaseException:
        import traceback

        traceback.print_exc()
        code = 1
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:
                pass
        try:
            report(code)
        finally:
            os._exit(code)


def _stop_with(conn: socket.socket) -> None:
    """Once the client's end of `conn` closes, this process is killed, as the client was (its signals it passes on;
    it closes only when it dies without passing one, as a SIGKILL or a test's kill ends it)."""
    import threading

    def watch() -> None:
        while conn.recv(1):
            pass
        os.kill(os.getpid(), signal.SIGKILL)

    threading.Thread(target=watch, daemon=True).start()


def client(name: str, args: list[str]) -> int:
    """The command a run starts: the server, forked by the launcher, as if this process were it."""
    conn = socket.socket(socket.AF_UNIX)
    conn.connect(_abstract(name))
    job = {"args": args, "cwd": os.getcwd(), "env": dict(os.environ), "cores": sorted(os.sched_getaffinity(0))}
    socket.send_fds(conn, [json.dumps(job).encode()], [0, 1, 2])
    reader = conn.makefile("rb")
    pid = int(reader.readline())
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda s, _: os.kill(pid, s))
    line = reader.readline()  # the server's status as it exits; nothing where a signal ended it
    return int(line) if line.strip() else 128 + signal.SIGTERM


if __name__ == "__main__":
    sys.exit(client(sys.argv[1], sys.argv[2:]))
