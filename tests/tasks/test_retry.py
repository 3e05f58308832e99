"""tasks.retry: transient storage errors are retried (by Prefect, per the shared policy), deterministic
ones are not — checked on a real task run against the session's Prefect test server."""

from __future__ import annotations

from pathlib import Path

import pytest

import tasks.ingest
from inversion.errors import ConfigError, TrainingDivergedError
from storage.errors import AlreadyExists, BackendError, InvalidImage, InvalidURI, NotFound
from tasks.ingest import scan_catalog
from tasks.retry import RETRY, is_transient

TRANSIENT = [BackendError("s3 said 503 SlowDown"), ConnectionError("reset by peer"), TimeoutError("read timed out")]
DETERMINISTIC = [
    InvalidImage("cut.jpg is truncated"),
    InvalidURI("gs://x"),
    AlreadyExists("different bytes"),
    NotFound("no such object"),
    ConfigError("lr must be > 0"),
    TrainingDivergedError("<t>", 3, float("nan")),
    ValueError("bad"),
    KeyError("k"),
]


@pytest.mark.parametrize("exc", TRANSIENT, ids=lambda e: type(e).__name__)
def test_transient_errors(exc: BaseException) -> None:
    assert is_transient(exc)


@pytest.mark.parametrize("exc", DETERMINISTIC, ids=lambda e: type(e).__name__)
def test_deterministic_errors(exc: BaseException) -> None:
    assert not is_transient(exc)


def test_policy_backs_off() -> None:
    delays = RETRY["retry_delay_seconds"]
    assert RETRY["retries"] == len(delays) >= 1 and list(delays) == sorted(delays) and delays[0] < delays[-1]


@pytest.fixture
def flaky_discovery(monkeypatch):
    """Makes ``scan_catalog``'s catalog read fail with the given errors, in order, before it works."""
    calls: list[int] = []
    real = tasks.ingest.discover_catalog

    def install(*errors: BaseException) -> list[int]:
        def discover(*args, **kwargs):
            calls.append(1)
            if len(calls) <= len(errors):
                raise errors[len(calls) - 1]
            return real(*args, **kwargs)

        monkeypatch.setattr(tasks.ingest, "discover_catalog", discover)
        return calls

    return install


@pytest.fixture
def scan_now():
    """``scan_catalog`` with the shared policy but no waiting between attempts."""
    return scan_catalog.with_options(retry_delay_seconds=0)


def test_transient_storage_errors_are_retried_until_the_task_succeeds(
    prefect_harness, flaky_discovery, scan_now, run_count, catalog: Path, learn
) -> None:
    calls = flaky_discovery(BackendError("503 SlowDown"), ConnectionError("reset"))
    state = scan_now(str(catalog), learn, return_state=True)
    assert state.is_completed(), state.message
    assert [r.concept_id for r in state.result().records] == ["broken", "half", "red-square"]
    assert len(calls) == 3 and run_count(state) == 3


def test_a_deterministic_error_fails_at_once(
    prefect_harness, flaky_discovery, scan_now, run_count, catalog: Path, learn
) -> None:
    calls = flaky_discovery(InvalidImage("cut.jpg is truncated"))
    state = scan_now(str(catalog), learn, return_state=True)
    assert state.is_failed()
    with pytest.raises(InvalidImage, match="cut.jpg"):
        state.result()
    assert len(calls) == 1 and run_count(state) == 1


def test_retries_stop_after_the_policy_is_spent(
    prefect_harness, flaky_discovery, scan_now, run_count, catalog: Path, learn
) -> None:
    calls = flaky_discovery(*[BackendError(f"503 number {i}") for i in range(10)])
    state = scan_now(str(catalog), learn, return_state=True)
    assert state.is_failed()
    with pytest.raises(BackendError, match="503 number 3"):
        state.result()
    assert len(calls) == RETRY["retries"] + 1 == run_count(state)
