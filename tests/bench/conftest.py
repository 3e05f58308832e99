"""The benchmarks' ``main`` functions run in the test process and set environment variables for the processes
they start (``OMP_NUM_THREADS``, ``HF_HUB_OFFLINE``); each bench test gives the environment back, so no later test
runs its subprocesses under a benchmark's settings (left at one thread, a killed run's subprocess trained on one
thread against an in-process reference on two, and the resume test's vectors differed in the last bits)."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest


@pytest.fixture(autouse=True)
def _environment_given_back() -> Iterator[None]:
    saved = dict(os.environ)
    yield
    os.environ.clear()
    os.environ.update(saved)
