"""`python -m neurosql_pl fit --config …` runs the LightningCLI; `python -m neurosql_pl sample …` samples."""

import sys

from neurosql_pl.cli import console_main

if __name__ == "__main__":
    sys.exit(console_main())
