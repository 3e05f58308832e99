"""One way for tests to wait on something another process or thread does: a predicate, a deadline.

Tests never sleep for a fixed time; where no event can be waited on directly (a server coming up,
a file another process writes, a state in the Prefect API), they call :func:`wait_until`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_until(
    predicate: Callable[[], T],
    timeout: float,
    what: str,
    *,
    interval: float = 0.05,
    abort: Callable[[], str | None] | None = None,
) -> T:
    """Return ``predicate()``'s first truthy value, checked every ``interval`` seconds.

    Raises :class:`AssertionError` naming ``what`` once ``timeout`` seconds pass, or as soon as
    ``abort()`` returns a reason (e.g. "the server exited: <log tail>") — so a waiter never hangs
    on something that can no longer happen.
    """
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        reason = abort() if abort is not None else None
        if reason:
            raise AssertionError(f"gave up waiting for {what}: {reason}")
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise AssertionError(f"{what}: not reached within {timeout:g} s")
        time.sleep(min(interval, remaining))  # the suite's only sleep: a poll step, never past the deadline
