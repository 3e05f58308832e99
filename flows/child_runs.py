"""Flow runs of a deployment that the coordinator waits on: with a deadline, and never on the dead.

A worker starts each flow run in a session of its own (Prefect's ``start_new_session=True``), so a
killed worker leaves its flow run alive, and a node that dies takes both: then the flow run stays
Pending or Running on the server for ever, and a plain ``run_deployment(..., timeout=None)`` waits on
it for ever. :func:`run_child` instead watches the flow run's signs of life: its state changes and the
``prefect.flow-run.heartbeat`` events its engine sends every ``PREFECT_FLOWS_HEARTBEAT_FREQUENCY``
seconds (180 by default). A Pending or Running flow run silent for ``heartbeat_timeout`` seconds is
dead: it is marked Crashed and the work is run again as a new flow run of the deployment, which any
worker picks up (a concept resumes from its checkpoint in the output store). So is a flow run that
ended Crashed (its process died under a live worker). At most :data:`CHILD_RUNS` flow runs are
started for one piece of work.

Waiting logs a line every minute naming the flow run, its state and worker; ``wait_timeout`` ends
the wait with one line (:class:`ChildWaitTimeout`) naming the flow run and how to stop it. A server
that does not answer is asked again; silent for longer than ``heartbeat_timeout`` it ends the wait
too (:class:`ChildWaitError`), so a lost server fails the run loudly rather than hanging it. A stop
asked of this process (SIGTERM, Ctrl-C) ends the wait within a poll, leaving the child running.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import TYPE_CHECKING, Any
from uuid import UUID

from prefect import get_run_logger
from prefect.client.orchestration import get_client

from flows.sync import sync_result
from inversion.cancel import Cancelled, check_stop
from inversion.errors import SstarError

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

#: flow runs started at most for one piece of work (the first and two re-runs of a dead one)
CHILD_RUNS = 3

#: seconds between two reads of a waited-on flow run's state
POLL_S = 5.0

#: seconds between two reads of its heartbeat events, while its state alone does not show it alive
HEARTBEAT_READ_S = 15.0

#: seconds between two log lines of a wait
LOG_EVERY_S = 60.0

HEARTBEAT_EVENT = "prefect.flow-run.heartbeat"

#: the worker that won a flow run labels it with its name
WORKER_LABEL = "prefect.worker.name"


class ChildWaitError(SstarError):
    """The coordinator could not follow a child flow run (the Prefect server stopped answering)."""


class ChildWaitTimeout(ChildWaitError, TimeoutError):
    """A child flow run was waited on for the whole ``wait_timeout``."""


@dataclass(frozen=True)
class ChildRules:
    """How long a child flow run may stay silent before it counts as dead, and how long it is waited on
    at most (re-runs included)."""

    heartbeat_timeout: float
    wait_timeout: float


def run_child(
    deployment: str,
    parameters: dict[str, Any],
    rules: ChildRules,
    what: str,
    left_result: Callable[[], bool] = lambda: False,
) -> FlowRun:
    """Run ``parameters`` as a flow run of ``deployment`` (as a subflow of the calling task) until it ends;
    a flow run that died is run again, unless ``left_result()`` says it had left its result already.

    Returns the last flow run (Completed, Failed, Cancelled, or Crashed after :data:`CHILD_RUNS` runs).
    ``what`` names the work in log lines and errors (e.g. ``concept red-mug``).
    """
    from prefect.deployments import run_deployment

    started = time.monotonic()
    for attempt in range(1, CHILD_RUNS + 1):
        child = sync_result(run_deployment(name=deployment, parameters=parameters, timeout=0, as_subflow=True))
        ended, why = _watch(child, rules, started, what)
        if not (ended.state is not None and ended.state.is_crashed()) or left_result():
            return ended
        if attempt < CHILD_RUNS:
            get_run_logger().warning(
                "flow run %s of %s %s; running it again (run %d of %d)", ended.name, what, why, attempt + 1, CHILD_RUNS
            )
    return ended


def _watch(child: FlowRun, rules: ChildRules, started: float, what: str) -> tuple[FlowRun, str]:
    """Wait until ``child`` ends or dies (then marked Crashed); the flow run as last read, and why it ended."""
    life = _Life(child.id)
    last_log = time.monotonic()
    while True:
        run = life.read()
        now = time.monotonic()
        if run is not None and run.state is not None and run.state.is_final():
            return run, f"ended {run.state.name}: {run.state.message or 'no message'}"
        if run is not None and (silent := life.silence(run)) > rules.heartbeat_timeout:
            why = f"was {run.state_name} with no heartbeat for {silent:.0f} s (its worker and process are gone)"
            return _mark_crashed(run, why), why
        if life.unanswered() > rules.heartbeat_timeout:
            raise ChildWaitError(
                f"the Prefect server did not answer for {life.unanswered():.0f} s while {what} ran as flow run "
                f"{child.name} ({child.id})"
            )
        if now - started >= rules.wait_timeout:
            raise ChildWaitTimeout(_gave_up(run or child, rules.wait_timeout, what))
        _stop_if_asked(run or child, what)
        if now - last_log >= LOG_EVERY_S:
            last_log = now
            get_run_logger().info("waited %.0f s on %s: %s", now - started, what, _describe(run or child, life))
        time.sleep(POLL_S)


def _stop_if_asked(run: FlowRun, what: str) -> None:
    """End the wait within a poll once this process was asked to stop (:mod:`flows.stopping`). The child
    flow run is left running: what it publishes is this run's next attempt's (its claim makes the next
    run wait for it rather than train the work twice)."""
    try:
        check_stop()
    except Cancelled:
        get_run_logger().warning(
            "stopped waiting on %s; flow run %s (%s) goes on (cancel it with `prefect flow-run cancel %s`)",
            what,
            run.name,
            run.id,
            run.id,
        )
        raise


class _Life:
    """One flow run's signs of life as read from the server: its state's timestamp and its heartbeats."""

    def __init__(self, flow_run_id: UUID) -> None:
        self.flow_run_id = flow_run_id
        self.heartbeat: datetime | None = None  # the latest heartbeat seen
        self.heartbeat_read = float("-inf")  # monotonic time of the last read of heartbeats
        self.answered = time.monotonic()  # monotonic time of the server's last answer

    def read(self) -> FlowRun | None:
        """The flow run now; None when the server does not answer (it is asked again at the next poll)."""
        import httpx

        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(self.flow_run_id)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            get_run_logger().warning("could not read flow run %s: %s", self.flow_run_id, exc)
            return None
        self.answered = time.monotonic()
        return run

    def unanswered(self) -> float:
        return time.monotonic() - self.answered

    def silence(self, run: FlowRun) -> float:
        """Seconds since ``run``'s last sign of life while it is Pending or Running (else 0: it waits for a worker)."""
        if run.state is None or not (run.state.is_pending() or run.state.is_running()):
            return 0.0
        now = datetime.now(timezone.utc)
        since_state = (now - run.state.timestamp).total_seconds()
        if since_state <= HEARTBEAT_READ_S:
            return since_state
        if time.monotonic() - self.heartbeat_read >= HEARTBEAT_READ_S:
            self.heartbeat = self._last_heartbeat() or self.heartbeat
        since_heartbeat = (now - self.heartbeat).total_seconds() if self.heartbeat else since_state
        return min(since_state, since_heartbeat)

    def _last_heartbeat(self) -> datetime | None:
        """When the flow run's latest heartbeat event occurred (None: none, or the server did not answer)."""
        import httpx
        from prefect.events.filters import EventFilter, EventNameFilter, EventResourceFilter

        self.heartbeat_read = time.monotonic()
        wanted = EventFilter(
            event=EventNameFilter(name=[HEARTBEAT_EVENT]),
            resource=EventResourceFilter(id=[f"prefect.flow-run.{self.flow_run_id}"]),
        )
        try:
            with get_client(sync_client=True) as client:
                page = client.read_events(filter=wanted, limit=1)
        except (httpx.TransportError, httpx.HTTPStatusError) as exc:
            get_run_logger().warning("could not read the heartbeats of flow run %s: %s", self.flow_run_id, exc)
            return None
        return page.events[0].occurred if page.events else None


def _mark_crashed(run: FlowRun, why: str) -> FlowRun:
    """Set ``run`` Crashed (forced: no engine is left to report it); the flow run as it is then."""
    from prefect.states import Crashed

    with get_client(sync_client=True) as client:
        client.set_flow_run_state(run.id, Crashed(message=f"sstar: the flow run {why}"), force=True)
        return client.read_flow_run(run.id)


def _describe(run: FlowRun, life: _Life) -> str:
    worker = run.labels.get(WORKER_LABEL, "no worker yet") if run.labels else "no worker yet"
    beat = f", last heartbeat {life.heartbeat.isoformat(timespec='seconds')}" if life.heartbeat else ""
    return f"flow run {run.name} ({run.id}) is {run.state_name} on {worker}{beat}"


def _gave_up(run: FlowRun, wait_timeout: float, what: str) -> str:
    """The one line for a child waited on for the whole ``wait_timeout`` (the setting, not the poll-rounded time)."""
    return (
        f"waited {wait_timeout:g} s (child_wait_timeout) on {what}: flow run {run.name} ({run.id}) is still "
        f"{run.state_name}; stop it with `prefect flow-run cancel {run.id}`"
    )
