"""Which failures are worth retrying: transient storage and network errors, never deterministic ones
(bad images, bad settings, a diverged loss), which become a ``failed`` metrics row instead."""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any, TypedDict, TypeVar

from prefect import Task, get_run_logger
from prefect.client.schemas import TaskRun
from prefect.states import State

from storage.errors import BackendError

T = TypeVar("T")

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (BackendError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException | None) -> bool:
    """Whether ``exc`` is a failure worth retrying (:data:`TRANSIENT_ERRORS`)."""
    return isinstance(exc, TRANSIENT_ERRORS)


def retry_transient(task: Task[..., Any], task_run: TaskRun, state: State[Any]) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on a transient error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_transient(exc)
    return False


class RetryOptions(TypedDict):
    """The retry keywords of :func:`prefect.task`, typed so that ``@task(**RETRY)`` type-checks."""

    retries: int
    retry_delay_seconds: list[float]
    retry_condition_fn: Callable[[Task[..., Any], TaskRun, State[Any]], bool]


#: retry policy shared by every task that touches storage
RETRY: RetryOptions = {"retries": 3, "retry_delay_seconds": [1, 4, 15], "retry_condition_fn": retry_transient}


def with_retries(call: Callable[[], T], delays: Sequence[float] = RETRY["retry_delay_seconds"]) -> T:
    """``call()``, called again after each of ``delays`` seconds while it raises a transient error
    (:func:`tasks.retry.is_transient`); a deterministic error, or the last transient one, is raised."""
    for delay in delays:
        try:
            return call()
        except Exception as exc:
            if not is_transient(exc):
                raise
            get_run_logger().warning("transient error, trying again in %g s: %s", delay, exc)
            time.sleep(delay)
    return call()
