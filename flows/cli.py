"""The ``sstar`` command line: the ML commands of :mod:`inversion.cli` plus the workflow commands.

Every user error (bad input, bad settings, a storage failure) prints one line naming what is wrong
and exits with status 2; a catalog run where some concept failed exits with status 1.
"""

from __future__ import annotations

import argparse
import os
import sys

from inversion import cli as inversion_cli
from inversion.errors import SstarError


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="sstar",
        description="S*: learn a new word for a concept (Textual Inversion) and run it as a Prefect pipeline.",
    )
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    inversion_cli.add_commands(sub)
    try:
        from flows import commands as flow_commands
    except ImportError as exc:  # pragma: no cover - the flows are part of the package
        raise SystemExit(f"sstar: broken installation: {exc}") from exc
    flow_commands.add_commands(sub)
    return parser


def _user_errors() -> tuple[type[BaseException], ...]:
    from storage.errors import StorageError

    return (SstarError, StorageError)


def main(argv: list[str] | None = None) -> int:
    os.environ.setdefault("DO_NOT_TRACK", "1")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    args = build_parser().parse_args(argv)
    inversion_cli.quiet_libraries()
    try:
        return int(args.func(args) or 0)
    except _user_errors() as exc:
        print(f"sstar: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("sstar: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
