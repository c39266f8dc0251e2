"""`python -m loadgen.emulator ENDPOINT.yaml`: the background emulator a run starts, on a free loopback port.

It loads only the emulator (not the command line's modules), so that a run's emulator is up sooner; users
serve an emulator with `loadgen serve`.
"""

import sys

from loadgen.emulator.server import serve
from loadgen.spec import load_endpoint

serve(load_endpoint(sys.argv[1]), "127.0.0.1", 0)
