"""The ``sstar`` command line: the ML commands of :mod:`inversion.cli` plus the workflow commands.

Every user error (bad input, bad settings, a storage failure) prints one line naming what is wrong
and exits with status 2; a catalog run where some concept failed exits with status 1; SIGINT (Ctrl-C) and
SIGTERM stop ``learn`` and ``demo`` at their next step with status 130 and 143 (:mod:`flows.stopping`).
"""

from __future__ import annotations

import argparse
import sys
from contextlib import nullcontext

from flows import commands as flow_commands
from flows.prefect_setup import EPHEMERAL_TIMEOUT, apply_cli_defaults, ephemeral_timeout_message
from flows.stopping import StopOnSignals, stop_exit_status
from inversion import cli as inversion_cli
from inversion.cancel import stop_requested
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
    """Run one ``sstar`` command; the exit status (0 ok, 1 some concept failed, 2 user error, 130 interrupted,
    143 terminated: :mod:`flows.stopping`)."""
    args = build_parser().parse_args(argv)
    if args.command in flow_commands.PREFECT_COMMANDS:
        apply_cli_defaults()  # before anything imports prefect
    inversion_cli.quiet_libraries()
    with StopOnSignals() if args.command in flow_commands.RUN_COMMANDS else nullcontext():
        try:
            status = int(args.func(args) or 0)
        except BaseException as exc:  # noqa: BLE001 - each kind gets its status; the rest is re-raised
            return _exit_status(exc)
        return stop_exit_status() or status  # a signal that came as the run was ending still says so


def _exit_status(exc: BaseException) -> int:
    """The exit status for ``exc`` raised by a command, with its one line on stderr; re-raises the unexpected."""
    if (stopped := stop_exit_status()) is not None:  # whatever the signal interrupted raised on the way out
        print(f"sstar: stopped on {stop_requested()}", file=sys.stderr)
        return stopped
    if isinstance(exc, (SstarError, StorageError)):
        print(f"sstar: error: {exc}", file=sys.stderr)
        return 2
    if isinstance(exc, RuntimeError) and EPHEMERAL_TIMEOUT in str(exc):
        print(f"sstar: error: {ephemeral_timeout_message()}", file=sys.stderr)
        return 2
    if isinstance(exc, KeyboardInterrupt):
        print("sstar: interrupted", file=sys.stderr)
        return 130
    raise exc


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
