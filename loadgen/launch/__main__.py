"""`python -m loadgen.launch ENDPOINT.yaml [HOST PORT]`: serve the endpoint a run starts (its emulator or its
llama.cpp engine) until SIGTERM or SIGINT; one line on stdout ends in the base URL once it listens.

It loads only what the server needs (not the command line's modules), so that a run's server is up sooner.
"""

import sys

from loadgen.children import one_blas_thread

one_blas_thread()

from loadgen.launch.engines import serve  # noqa: E402 (after the BLAS setting, which must precede numpy)
from loadgen.spec import load_endpoint  # noqa: E402

host, port = (sys.argv[2], int(sys.argv[3])) if len(sys.argv) > 3 else ("127.0.0.1", 0)
serve(load_endpoint(sys.argv[1]), host, port)
