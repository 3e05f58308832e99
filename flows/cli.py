"""The ``sstar`` command line: the ML commands of :mod:`inversion.cli` plus the workflow commands.

Every user error (bad input, bad settings, a storage failure) prints one line naming what is wrong
and exits with status 2; a catalog run where some concept failed exits with status 1.
"""

from __future__ import annotations

import argparse
import sys

from flows import commands as flow_commands
from flows.prefect_setup import EPHEMERAL_TIMEOUT, apply_cli_defaults, ephemeral_timeout_message
from inversion import cli as inversion_cli
from inversion.errors import SstarError
from storage.errors import StorageError


def build_parser() -> argparse.ArgumentParser:
    """The ``sstar`` parser with every command registered."""
    parser = argparse.ArgumentParser(
        prog="sstar",
        description="S*: learn a new word for a concept (Textual Inversion) and run it as a Prefect pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inversion_cli.add_commands(sub)
    flow_commands.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Run one ``sstar`` command; the exit status (0 ok, 1 some concept failed, 2 user error, 130 interrupted)."""
    args = build_parser().parse_args(argv)
    if args.command in flow_commands.PREFECT_COMMANDS:
        apply_cli_defaults()  # before anything imports prefect
    inversion_cli.quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except (SstarError, StorageError) as exc:
        print(f"sstar: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        if EPHEMERAL_TIMEOUT not in str(exc):
            raise
        print(f"sstar: error: {ephemeral_timeout_message()}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sstar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
