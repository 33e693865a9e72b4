"""`python -m exalate_tui.cli`: the `exalate-tui` command (tests and benchmarks run it so)."""

from exalate_tui.cli import main

raise SystemExit(main())
