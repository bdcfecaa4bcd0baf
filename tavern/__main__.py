"""`python -m tavern` runs the same entry point as the `tavern` script."""

from tavern.cli import main

raise SystemExit(main())
