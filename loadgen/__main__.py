from loadgen.cli.app import main

raise SystemExit(main())
