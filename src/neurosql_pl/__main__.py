"""`python -m neurosql_pl …` is the `neurosql` command: `fit --config …`, `sample …`, `evaluate …`, `prepare …`."""

import sys

from neurosql_pl.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
