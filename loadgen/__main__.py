"""`python -m loadgen`: the command line, as the `loadgen` script."""

from loadgen.cli.app import main

raise SystemExit(main())
