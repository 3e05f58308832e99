"""The rules of waiting on child flow runs (flows/child_runs.py), in seconds, on the session's test server:
a deployment no worker serves, whose flow runs the test moves by hand as a worker and a dead process would.
The real thing (workers, kill -9, heartbeats, a server restart) is tests/flows/test_deployment_faults.py."""

from __future__ import annotations

import threading
import uuid
from uuid import UUID

import pytest

from tests.waiting import wait_until


@pytest.fixture
def deployment(prefect_harness) -> str:
    """``noop/<new name>``: a deployment of a flow that never runs (no work pool, no worker)."""
    from prefect import flow
    from prefect.client.orchestration import get_client

    @flow(name="noop")
    def noop(x: int = 0) -> int:
        return x

    with get_client(sync_client=True) as client:
        flow_id = client.create_flow(noop)
        name = f"child-rules-{uuid.uuid4().hex[:8]}"
        client.create_deployment(flow_id=flow_id, name=name)
    return f"noop/{name}"


def _in_a_flow(call):
    """``call()`` inside a flow run (run_child logs to the run's logger and links its children to it)."""
    from prefect import flow

    @flow(name="child-rules-parent")
    def parent():
        return call()

    return parent()


def _runs_of(deployment_name: str) -> list:
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
    from prefect.client.schemas.sorting import FlowRunSort

    with get_client(sync_client=True) as client:
        deployment_id = client.read_deployment_by_name(deployment_name).id
        return client.read_flow_runs(
            deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
        )


def test_a_child_no_worker_takes_is_given_up_with_one_line(deployment, monkeypatch):
    from flows import child_runs

    monkeypatch.setattr(child_runs, "POLL_S", 0.1)
    rules = child_runs.ChildRules(heartbeat_timeout=60, wait_timeout=1)
    with pytest.raises(child_runs.ChildWaitTimeout) as raised:
        _in_a_flow(lambda: child_runs.run_child(deployment, {}, rules, "concept red-mug"))
    message = str(raised.value)
    assert "\n" not in message
    (run,) = _runs_of(deployment)
    assert message.startswith("waited 1 s (child_wait_timeout) on concept red-mug: flow run ")
    assert f"is still Scheduled; stop it with `prefect flow-run cancel {run.id}`" in message


def test_a_silent_running_child_is_marked_crashed_and_run_again_three_times_at_most(deployment, monkeypatch):
    """Each flow run is set Running (a worker took it) and then never heard of again (it died with its node)."""
    from prefect.client.orchestration import get_client
    from prefect.states import Running

    from flows import child_runs

    monkeypatch.setattr(child_runs, "POLL_S", 0.1)
    started: set[UUID] = set()
    done = threading.Event()

    def play_a_worker_that_dies() -> None:
        while not done.is_set():
            for run in _runs_of(deployment):
                if run.id not in started and run.state is not None and run.state.is_scheduled():
                    with get_client(sync_client=True) as client:
                        client.set_flow_run_state(run.id, Running(), force=True)
                    started.add(run.id)
            done.wait(0.1)

    worker = threading.Thread(target=play_a_worker_that_dies, daemon=True)
    worker.start()
    rules = child_runs.ChildRules(heartbeat_timeout=1, wait_timeout=120)
    try:
        last = _in_a_flow(lambda: child_runs.run_child(deployment, {}, rules, "concept red-mug"))
    finally:
        done.set()
        worker.join(5)
    runs = _runs_of(deployment)
    assert len(runs) == child_runs.CHILD_RUNS
    assert [r.state_name for r in runs] == ["Crashed"] * child_runs.CHILD_RUNS
    assert last.id == runs[-1].id
    assert all("was Running with no heartbeat for" in (r.state.message or "") for r in runs if r.state)


def test_a_dead_child_that_left_its_result_is_not_run_again(deployment, monkeypatch):
    from prefect.client.orchestration import get_client
    from prefect.states import Crashed

    from flows import child_runs

    monkeypatch.setattr(child_runs, "POLL_S", 0.1)

    def crash_the_first_run() -> None:
        (run,) = wait_until(lambda: _runs_of(deployment), 30, "the child flow run")
        with get_client(sync_client=True) as client:
            client.set_flow_run_state(run.id, Crashed(message="its process died"), force=True)

    crasher = threading.Thread(target=crash_the_first_run, daemon=True)
    crasher.start()
    rules = child_runs.ChildRules(heartbeat_timeout=60, wait_timeout=60)
    last = _in_a_flow(lambda: child_runs.run_child(deployment, {}, rules, "concept red-mug", lambda: True))
    crasher.join(5)
    assert last.state_name == "Crashed"
    assert len(_runs_of(deployment)) == 1


def test_a_stop_asked_of_the_coordinator_ends_the_wait_within_a_poll(deployment, monkeypatch):
    """SIGTERM or Ctrl-C of ``sstar learn`` (flows.stopping asks inversion.cancel to stop) ends the wait on a
    child at once; before, the waiting thread polled on until child_wait_timeout (12 h by default)."""
    import time

    from flows import child_runs
    from inversion.cancel import Cancelled, clear_stop, request_stop

    monkeypatch.setattr(child_runs, "POLL_S", 0.1)
    rules = child_runs.ChildRules(heartbeat_timeout=600, wait_timeout=600)
    raised: list[BaseException] = []

    def wait() -> None:
        try:
            child_runs.run_child(deployment, {}, rules, "concept red-mug")
        except BaseException as exc:  # noqa: BLE001 - the test looks at what ended the wait
            raised.append(exc)

    clear_stop()
    try:
        waiter = threading.Thread(target=lambda: _in_a_flow(wait), daemon=True)
        waiter.start()
        wait_until(lambda: bool(_runs_of(deployment)), 60, "the child flow run to be created")
        asked = time.monotonic()
        request_stop("SIGTERM")
        waiter.join(30)
        assert not waiter.is_alive(), "the wait went on after the stop request"
        assert time.monotonic() - asked < 30
    finally:
        clear_stop()
    assert len(raised) == 1 and isinstance(raised[0], Cancelled), raised
    (run,) = _runs_of(deployment)
    assert not run.state.is_final(), "the child is left to run (its result is the next attempt's)"
