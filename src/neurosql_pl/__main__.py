"""`python -m neurosql_pl fit --config …` runs the LightningCLI."""

from neurosql_pl.cli import main

if __name__ == "__main__":
    main()
