"""Prefect's dual sync/async functions, called from synchronous code.

Functions such as ``Flow.to_deployment``, ``run_deployment`` and ``create_progress_artifact`` are
typed as returning ``T | Coroutine[..., T]``: they return the coroutine only when called from
async code. :func:`sync_result` states that a call was synchronous and narrows the type.

:func:`passed_whole` wraps a large task argument in Prefect's ``quote`` (so Prefect does not walk it
to resolve futures and record inputs) while keeping the argument's own type for the type checker.
"""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar, cast

from prefect.utilities.annotations import quote

T = TypeVar("T")


def sync_result(value: T | Coroutine[Any, Any, T]) -> T:
    """``value``, the result of a Prefect dual sync/async call made from synchronous code.

    Raises :class:`TypeError` (and closes the coroutine) if the call was dispatched as async.
    """
    if isinstance(value, Coroutine):
        value.close()
        raise TypeError(f"expected the result of a synchronous Prefect call, got {value!r}")
    return value


def passed_whole(value: T) -> T:
    """``value`` quoted for a task call: Prefect hands the task the value itself, unwalked. Typed as ``T``
    because that is what the task receives (``quote`` is unwrapped before the task body runs)."""
    return cast(T, quote(value))
