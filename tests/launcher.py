"""Servers for the tests' runs, forked from a process that has done their imports.

A run starts its endpoint's server (the emulator, a llama.cpp engine) as `python -m loadgen.launch SPEC`
(`loadgen.launch.background.LAUNCH`), which spends about 0.4 s of CPU and of wall time on Python and its imports
before it listens; the suite starts some seventy. The zygote (tests/zygote.py) forks this launcher before gevent's
patching, and points `LAUNCH` at this file's client: `python -I -S tests/launcher.py NAME SPEC [HOST PORT]`
(NAME: the launcher's socket, in Linux's abstract namespace).

The client is what the run starts, waits on and signals, as it would the real command: it hands the launcher its
stdin, stdout and stderr, directory, environment and CPUs over a Unix socket; the launcher forks a server that takes
them and runs `python -m loadgen.launch`'s own code. The client passes SIGTERM and SIGINT on to the server and exits
with its status; the server stops when the client dies (so a run that dies takes its server with it, as
`die_with_parent` does for the real command).
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import NoReturn


def start() -> str:
    """Fork the launcher (which dies with this process); returns its socket's name. Call before any thread starts."""
    name = f"loadgen-launcher-{os.getpid()}"
    listener = socket.socket(socket.AF_UNIX)
    listener.bind(_abstract(name))
    listener.listen(16)
    if os.fork() == 0:
        _launcher(listener)
    listener.close()
    return name


def _abstract(name: str) -> str:
    """Linux's abstract namespace: a socket that leaves no file behind."""
    return "\0" + name


def _launcher(listener: socket.socket) -> None:
    from loadgen.children import die_with_parent

    die_with_parent()
    import runpy

    import loadgen.emulator.server  # noqa: F401  (the imports a server needs, done once)
    import loadgen.launch.engines  # noqa: F401
    import loadgen.spec  # noqa: F401

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)  # the kernel reaps the servers
    while True:
        conn, _ = listener.accept()
        msg, fds, _, _ = socket.recv_fds(conn, 1 << 20, 3)
        if os.fork() == 0:
            listener.close()
            _server(conn, json.loads(msg), fds, runpy)
        conn.close()
        for fd in fds:
            os.close(fd)


def _server(conn: socket.socket, job: dict, fds: list[int], runpy) -> None:
    """In the forked server: the client's files, directory, environment and CPUs, then `python -m loadgen.launch`."""

    def launch() -> int:
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
        sys.argv = ["loadgen.launch", *job["args"]]
        runpy.run_module("loadgen.launch", run_name="__main__", alter_sys=True)
        return 0

    exit_after(launch, lambda code: conn.sendall(f"{code}\n".encode()))


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
    """SIGTERM to this server once the client's end of `conn` closes (the client died without passing a signal)."""
    import threading

    def watch() -> None:
        while conn.recv(1):
            pass
        os.kill(os.getpid(), signal.SIGTERM)

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
