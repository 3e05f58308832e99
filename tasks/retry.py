"""Which failures are worth retrying: transient storage and network errors, never deterministic ones
(bad images, bad settings, a diverged loss), which become a ``failed`` metrics row instead."""

from __future__ import annotations

from storage.errors import BackendError

TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (BackendError, ConnectionError, TimeoutError)


def is_transient(exc: BaseException | None) -> bool:
    return isinstance(exc, TRANSIENT_ERRORS)


def retry_transient(task, task_run, state) -> bool:
    """Prefect ``retry_condition_fn``: retry only when the task failed on a transient error."""
    try:
        state.result()
    except Exception as exc:  # noqa: BLE001 - we classify whatever the task raised
        return is_transient(exc)
    return False


#: retry policy shared by every task that touches storage
RETRY = dict(retries=3, retry_delay_seconds=[1, 4, 15], retry_condition_fn=retry_transient)
