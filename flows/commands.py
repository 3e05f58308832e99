"""Workflow commands of the ``sstar`` CLI: ``demo``, ``learn``, ``serve`` (filled by the flows)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the workflow commands on the ``sstar`` parser."""
