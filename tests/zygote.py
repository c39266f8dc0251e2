"""A `loadgen` started once and imported once, from which the tests' load commands fork.

A load command (run, study, search, ui) patches the standard library for gevent, so it cannot run in the test
process; started as a child process it first spends about a second on Python and its imports (Locust, gevent,
DuckDB, pydantic, rich). Forked from this process, which has done both, it starts in milliseconds and is
otherwise the child a user's shell would start: its own process (and process group), its own stdout and stderr,
the real `main()` with the real arguments. The servers and local workers its commands start fork in turn from
launchers (tests/launcher.py).

The test process writes one job a line (JSON: args, cwd, env, out, err, code files) to this process's stdin and reads
the forked command's pid back; the command writes its exit status to the code file as it exits.
"""

from __future__ import annotations

import json
import os
import signal
import sys

import launcher as tests_launcher  # tests/launcher.py, beside this file


def _child(job: dict) -> None:
    """In the forked process: the command's own process group, files and directory, then `main()`; never returns."""

    def command() -> int:
        os.setpgrp()  # a timeout kills the command and what it started (its emulator, its workers)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)  # the command waits for its own children
        files = ((0, os.devnull, os.O_RDONLY), (1, job["out"], os.O_WRONLY), (2, job["err"], os.O_WRONLY))
        for fd, path, flags in files:
            target = os.open(path, flags)
            os.dup2(target, fd)
            os.close(target)
        os.chdir(job["cwd"])
        if job.get("env") is not None:  # the test's environment, as a shell would give it
            os.environ.clear()
            os.environ.update(job["env"])
        from loadgen.cli.app import main

        return main(job["args"])

    def report(code: int) -> None:
        with open(job["code"], "w") as f:
            f.write(str(code))

    tests_launcher.exit_after(command, report)


def serve() -> None:
    from loadgen.children import one_blas_thread
    from loadgen.load.runtime import prepare

    one_blas_thread()  # as `main()` does first, before numpy's import below
    servers = tests_launcher.servers()  # before gevent's patching, which the servers run without
    prepare()  # Locust's import: gevent's patching, as `main()` does for a load command
    import gevent
    from gevent import monkey

    import loadgen.cli.commands  # noqa: F401  (the commands' own imports, done once)
    import loadgen.cli.run  # noqa: F401
    from loadgen.cli.app import main
    from loadgen.launch import background
    from loadgen.load import spawn

    # The plain fork, not gevent's (which watches the child from a hub this loop never runs, leaving it a zombie
    # the tests would wait on): the kernel reaps the children, and each child starts its own hub.
    plain_fork = monkey.get_original("os", "fork")

    def fork() -> int:
        pid = plain_fork()
        if pid == 0:
            gevent.reinit()
        return pid

    workers = tests_launcher.start("workers", main, fork=fork)
    client = (sys.executable, "-I", "-S", tests_launcher.__file__)
    background.LAUNCH = (*client, servers)
    spawn.WORKER = (*client, workers, "worker")

    signal.signal(signal.SIGCHLD, signal.SIG_IGN)
    for line in sys.stdin:
        job = json.loads(line)
        sys.stdout.flush()
        pid = fork()
        if pid == 0:
            _child(job)
        print(pid, flush=True)


if __name__ == "__main__":
    serve()
