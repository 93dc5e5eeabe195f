"""The `neurosql` subcommands that run one function, and the one way their command lines are made.

    neurosql sample --ckpt runs/mnist/checkpoints/last.ckpt --n 1000     # sampling.sample_to_folder
    neurosql evaluate --ckpt runs/mnist/checkpoints/last.ckpt --n 1000   # evaluate.evaluate
    neurosql prepare celeba --data.data_dir /big/disk/data               # datamodules.prepare.prepare

Each option is a parameter of the function, with its help from the function's docstring
(jsonargparse), so `neurosql evaluate --help` lists them all; a wrong option is one 'error: …'
line (status 2). A module's ``command(argv) -> int`` parses its command line and runs it, and
`run_command` runs it as every `neurosql` subcommand is run: a `UserError` it raises is printed
as one 'error: …' message (status 1). The spellings of the argparse commands these replaced keep
working: ``--data-config`` for ``--data_config``, and on/off switches such as ``--no-cache``.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

from jsonargparse import ArgumentParser
from lightning.fabric.utilities.rank_zero import rank_zero_only

from .cli_errors import OneLineErrors, user_error_line
from .errors import UserError

__all__ = ["CommandParser", "function_parser", "parse_command_line", "run_command"]


class CommandParser(OneLineErrors, ArgumentParser):
    """A subcommand's parser: a wrong option is one 'error: …' line (status 2)."""


def function_parser(
    function: Callable[..., Any], prog: str, description: str, skip: Iterable[str] = (), positional: bool = False
) -> CommandParser:
    """A parser with one option per parameter of ``function`` but those in ``skip`` (Python
    callers only); ``positional``: its parameters without a default are positional arguments."""
    parser = CommandParser(prog=prog, description=description)
    parser.add_function_arguments(function, skip=set(skip), as_group=False, as_positional=positional)
    return parser


def parse_command_line(
    parser: ArgumentParser, argv: Sequence[str], switches: Mapping[str, str] | None = None
) -> dict[str, Any]:
    """The parsed options as a dict; ``--kid-subset-size 4`` is read as ``--kid_subset_size 4``
    and each of ``switches`` (an argparse on/off flag, e.g. ``--no-cache``) as what it maps to.
    A wrong command line exits with status 2."""
    return parser.parse_args([_underscored(arg, switches or {}) for arg in argv]).as_dict()


def _underscored(arg: str, switches: Mapping[str, str]) -> str:
    if arg in switches:
        return switches[arg]
    name, eq, value = arg.partition("=")
    if name.startswith("--") and "-" in name[2:]:
        return "--" + name[2:].replace("-", "_") + eq + value
    return arg


def run_command(command: Callable[[list[str]], int], argv: Sequence[str]) -> int:
    """``command(argv)``'s exit status; a UserError it raises, however deep, is printed as
    'error: …' on stderr without its traceback (status 1). Any other exception propagates."""
    try:
        return command(list(argv))
    except UserError as err:
        print(user_error_line(err, rank_zero_only.rank), file=sys.stderr)
        return 1
