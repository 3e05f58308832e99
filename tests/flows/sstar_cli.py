"""How the flow tests run ``sstar learn`` and fresh interpreters: one argument builder, one subprocess runner."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.conftest import REPO_ROOT


def learn_argv(catalog: Path, out: Path, model: Path, *, tiny_clip: Path | None = None, **options: object) -> list[str]:
    """The arguments of ``sstar learn`` over ``catalog`` into ``out`` with ``model``: with ``tiny_clip``, the
    tiny CLIP checkpoint scores; each of ``options`` becomes ``--name value`` (``_`` in the name as ``-``)."""
    argv = ["learn", "--catalog", str(catalog), "--out", str(out), "--model", str(model)]
    if tiny_clip is not None:
        argv += ["--clip-arch", "sstar-tiny-clip", "--clip-checkpoint", str(tiny_clip)]
    for name, value in options.items():
        argv += [f"--{name.replace('_', '-')}", str(value)]
    return argv


def run_python(
    code: str, *args: str, env: dict[str, str], cwd: Path = REPO_ROOT, timeout: float = 600
) -> subprocess.CompletedProcess[str]:
    """``python -c code args…`` in a fresh interpreter with exactly ``env`` (the repository importable); its
    result with stdout and stderr as text. Never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        env={**env, "PYTHONPATH": str(REPO_ROOT)},
        timeout=timeout,
        check=False,
    )
