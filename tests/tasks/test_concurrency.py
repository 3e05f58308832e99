"""tasks.concurrency: the GPU limit is created once and never changed by a run; a slot is held for exactly
the duration of a ``gpu_slot`` block; a killed holder's slot is freed by the next taker (once, however
many race for it), a live holder's never, and a wait ends at its cap with one line naming the holder —
against the session's Prefect test server, with holders in real processes killed by SIGKILL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tasks import concurrency, slot_holders, slots_here
from tasks.concurrency import SlotWaitTimeout, ensure_gpu_limit, gpu_slot
from tests.conftest import REPO_ROOT
from tests.waiting import wait_until

pytestmark = pytest.mark.usefixtures("prefect_harness")


def _limit(name: str):
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name(name)


@pytest.fixture(autouse=True)
def no_parking(monkeypatch) -> None:
    """Most tests here watch the server's count as a block ends: a slot left with no waiter goes back at once
    (the parking of a left slot for the process's next task has its own test, which sets PARK_S again)."""
    monkeypatch.setattr(slots_here, "PARK_S", 0.0)


@pytest.fixture
def name() -> str:
    return f"sstar-gpu-{uuid.uuid4().hex[:8]}"


def test_create_update_and_leave_alone(name: str) -> None:
    assert ensure_gpu_limit(name, 2) == "created"
    assert (_limit(name).limit, _limit(name).active) == (2, True)
    assert ensure_gpu_limit(name, 2) == "unchanged"
    assert ensure_gpu_limit(name, 3, update=False) == "unchanged"  # what flows call: an operator's value stays
    assert _limit(name).limit == 2
    assert ensure_gpu_limit(name, 3) == "updated"
    assert _limit(name).limit == 3


def test_a_limit_needs_a_slot(name: str) -> None:
    from prefect.exceptions import ObjectNotFound

    with pytest.raises(ValueError, match="at least 1 slot, got 0"):
        ensure_gpu_limit(name, 0)
    with pytest.raises(ObjectNotFound):
        _limit(name)


def test_a_slot_is_held_inside_the_block_then_parked_for_the_next_task_of_the_process(name: str, monkeypatch) -> None:
    """A run's next GPU task is submitted as one ends: the slot waits PARK_S for it (no server call), then
    goes back by itself."""
    monkeypatch.setattr(slots_here, "PARK_S", 2.0)
    ensure_gpu_limit(name, 2)
    with gpu_slot(name, wait_timeout=60):
        assert _limit(name).active_slots == 1
    tries: list[str] = []
    try_slot = concurrency._try_slot
    monkeypatch.setattr(concurrency, "_try_slot", lambda n: (tries.append(n), try_slot(n))[1])
    with gpu_slot(name, wait_timeout=60):  # the next task, within the grace
        assert _limit(name).active_slots == 1
    assert tries == []
    assert _limit(name).active_slots == 1  # parked again
    wait_until(lambda: _limit(name).active_slots == 0, slots_here.PARK_S + 10, "the parked slot to go back")
    assert not slot_holders.read_records(_limit(name).id)  # and its holder record with it


def test_a_second_holder_waits_for_the_only_slot(name: str) -> None:
    ensure_gpu_limit(name, 1)
    first_in, second_in, first_out = threading.Event(), threading.Event(), threading.Event()
    order: list[str] = []

    def second() -> None:
        first_in.wait(30)
        with gpu_slot(name, wait_timeout=60):
            order.append("second in")
            second_in.set()

    thread = threading.Thread(target=second)
    thread.start()
    try:
        with gpu_slot(name, wait_timeout=60):
            order.append("first in")
            first_in.set()
            # the second holder must not get in while the only slot is held; 3 s is ample for an
            # acquisition that is not blocked (a free slot is taken at once)
            overlapped = second_in.wait(3)
            order.append("first out")
            first_out.set()
    finally:
        thread.join(60)
    assert not overlapped
    assert order == ["first in", "first out", "second in"]
    assert _limit(name).active_slots == 0


def test_a_holder_hands_its_slot_to_a_waiter_of_its_process_without_the_server(name: str, monkeypatch) -> None:
    """Scoring and training of one run take turns on the slot: each take through the server is a write on its
    database (SQLite answered some with 503 'database is locked' on a first night), so a waiter whose own
    process holds every slot waits for it here, and the holder hands it over as it leaves."""
    ensure_gpu_limit(name, 1)
    tries: list[float] = []
    try_slot = concurrency._try_slot
    monkeypatch.setattr(concurrency, "_try_slot", lambda n: (tries.append(time.monotonic()), try_slot(n))[1])
    first_in, second_in = threading.Event(), threading.Event()
    left: list[float] = []
    got_in: list[float] = []

    def second() -> None:
        first_in.wait(30)
        with gpu_slot(name, wait_timeout=60):
            got_in.append(time.monotonic())
            second_in.set()
            assert _limit(name).active_slots == 1

    thread = threading.Thread(target=second)
    with gpu_slot(name, wait_timeout=60):
        tries.clear()  # the first holder's own try
        thread.start()
        first_in.set()
        assert not second_in.wait(4)
        left.append(time.monotonic())
    thread.join(30)
    assert second_in.is_set()
    assert tries == [], f"the waiter asked the server {len(tries)} times"  # one hold in the process: none needed
    assert got_in[0] - left[0] < 0.5  # handed over as the first left, not after a poll
    assert _limit(name).active_slots == 0  # and given back at the end


def test_a_slot_parked_by_a_flow_runs_last_task_goes_back_after_the_run(name: str, monkeypatch) -> None:
    """The run is over when the parked slot goes back: its own client is closed by then (a give-back made
    with it failed, and the slot stayed taken on a server with no lease repossessor)."""
    from prefect import flow, task

    monkeypatch.setattr(slots_here, "PARK_S", 1.0)
    ensure_gpu_limit(name, 1)

    @task
    def gpu_work() -> None:
        with gpu_slot(name, wait_timeout=60):
            pass

    @flow
    def one_gpu_task() -> None:
        gpu_work()

    one_gpu_task()
    wait_until(lambda: _limit(name).active_slots == 0, slots_here.PARK_S + 10, "the parked slot to go back")
    assert not slot_holders.read_records(_limit(name).id)


def test_a_run_that_ends_gives_back_the_slot_it_parked(name: str, monkeypatch) -> None:
    """A run gives back its parked slot as it ends (learn_locally, compose_catalog): at interpreter exit a
    give-back could start a new ephemeral Prefect server that outlives the process (sstar demo's did)."""
    monkeypatch.setattr(slots_here, "PARK_S", 60.0)
    ensure_gpu_limit(name, 1)
    with gpu_slot(name, wait_timeout=60):
        pass
    assert _limit(name).active_slots == 1  # parked for a next task
    concurrency.give_back_parked_slots()
    assert _limit(name).active_slots == 0
    assert not slot_holders.read_records(_limit(name).id)


@pytest.mark.parametrize("tasks", [1, 2])
def test_a_process_that_kept_the_slot_for_its_turn_lets_a_run_elsewhere_in(
    tasks: int, name: str, holders, tmp_path: Path, monkeypatch
) -> None:
    """Tasks of this process one after the other (one: the next comes 50 ms after and takes the parked slot;
    two: the next always waits and is handed it) would keep the slot from an overlapping run: at the end
    of a turn this process lets a run elsewhere, polling each second, ask first."""
    monkeypatch.setattr(slots_here, "FAIR_TURN_S", 2.0)
    monkeypatch.setattr(slots_here, "PARK_S", 2.0)
    ensure_gpu_limit(name, 1)
    grants: list[str] = []
    took = slots_here.HELD_HERE.took
    monkeypatch.setattr(slots_here.HELD_HERE, "took", lambda n, slot: (grants.append(n), took(n, slot))[1])
    stop = threading.Event()

    def busy() -> None:
        while not stop.is_set():
            with gpu_slot(name, wait_timeout=60):
                time.sleep(0.2)
            time.sleep(0.05)

    threads = [threading.Thread(target=busy) for _ in range(tasks)]
    log = tmp_path / "elsewhere.log"
    try:
        with gpu_slot(name, wait_timeout=60):  # held here (past its turn) while a run elsewhere starts polling
            with open(log, "w") as out:
                cmd = [sys.executable, "-c", _HOLDER, name]
                holders.append(subprocess.Popen(cmd, env=_env(), stdout=out, stderr=subprocess.STDOUT))
            wait_until(lambda: "asking" in log.read_text(), 120, "the run elsewhere to ask for the slot")
            time.sleep(2 * concurrency.SLOT_POLL_S)
            grants.clear()
            for thread in threads:
                thread.start()
        wait_until(lambda: "held " in log.read_text(), 60, "the run elsewhere to get the slot")
        assert len(grants) <= 1, f"this process took the slot {len(grants)} times before the run elsewhere got it"
        _kill(holders[-1])  # its slot is freed by the next taker here
    finally:
        stop.set()
        for thread in threads:
            thread.join(90)
    wait_until(lambda: _limit(name).active_slots == 0, slots_here.PARK_S + 10, "the last slot to go back")


def test_a_waiter_still_asks_the_server_now_and_then_while_its_process_holds_every_slot(name: str, monkeypatch) -> None:
    """An operator who raises the limit meanwhile is heard: the waiter asks again after HELD_HERE_WAIT_S."""
    monkeypatch.setattr(slots_here, "HELD_HERE_WAIT_S", 0.5)
    ensure_gpu_limit(name, 1)
    second_in = threading.Event()

    def second() -> None:
        with gpu_slot(name, wait_timeout=60):
            second_in.set()

    with gpu_slot(name, wait_timeout=60):
        thread = threading.Thread(target=second)
        thread.start()
        assert not second_in.wait(1.5)  # one slot, held here
        ensure_gpu_limit(name, 2)
        assert second_in.wait(10), "the waiter never asked again after the limit was raised"
    thread.join(30)
    assert _limit(name).active_slots == 0


def test_a_stop_request_ends_a_wait_and_gives_the_slot_back(name: str) -> None:
    """A signalled run (inversion.cancel) stops waiting for a slot within a poll, and the holder stopped
    inside its block gives its slot back on the way out."""
    from inversion.cancel import Cancelled, check_stop, clear_stop, request_stop

    ensure_gpu_limit(name, 1)
    waiting, raised = threading.Event(), []

    def waiter() -> None:
        waiting.set()
        try:
            with gpu_slot(name, wait_timeout=600):
                pass
        except BaseException as exc:  # noqa: BLE001 - the test looks at what it was
            raised.append(exc)

    thread = threading.Thread(target=waiter)
    try:
        with pytest.raises(Cancelled), gpu_slot(name, wait_timeout=60):
            thread.start()
            waiting.wait(30)
            request_stop("SIGTERM")
            thread.join(10)
            assert not thread.is_alive(), "the waiter kept waiting after the stop request"
            check_stop()  # the holder's own next check, inside its block
    finally:
        clear_stop()
        thread.join(10)
    assert [type(exc) for exc in raised] == [Cancelled]
    assert _limit(name).active_slots == 0


def test_sstar_slots_lists_the_holders_and_release_frees_every_slot(name: str, holders, tmp_path: Path, capsys) -> None:
    """``sstar slots`` names each holder and whether it lives; ``--release`` frees every slot through the
    holders' leases (and a count no lease explains), leaving no record; an unknown limit is one line."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate

    from flows.cli import main

    ensure_gpu_limit(name, 3)
    proc, flow_run_name = _hold(holders, name, tmp_path / "holder.log")
    with get_client(sync_client=True) as client:  # as if a server forgot the lease of a second holder
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active_slots=2))
    assert main(["slots"]) == 0
    listed = capsys.readouterr().out.splitlines()
    at = listed.index(f"{name}: 2 of 3 slots taken")
    assert listed[at + 1].startswith(f"  held by flow run '{flow_run_name}' (")
    assert listed[at + 1].endswith("(alive)") and f"pid {proc.pid} on host" in listed[at + 1]

    assert main(["slots", "--release", name]) == 0
    assert capsys.readouterr().out.startswith(f"{name}: every slot freed (held by flow run '{flow_run_name}'")
    assert _limit(name).active_slots == 0
    assert slot_holders.read_records(_limit(name).id) == []
    assert slot_holders.stored_leases(_limit(name).id) == []

    assert main(["slots", "--release", f"{name}-nope"]) == 2
    assert capsys.readouterr().err == (
        f"sstar: error: no Prefect global concurrency limit is named '{name}-nope' (sstar slots lists them)\n"
    )


#: a process that takes one slot of the limit argv[1] inside a flow run and holds it until killed;
#: it prints ``held <flow run name>`` once it has the slot
_HOLDER = """
import sys, time
from prefect import flow
from prefect.runtime import flow_run
from tasks.concurrency import gpu_slot

@flow(name="slot-holder")
def hold(name: str) -> None:
    print("asking", flush=True)
    with gpu_slot(name, wait_timeout=60):
        print("held", flow_run.name, flush=True)
        time.sleep(600)

hold(sys.argv[1])
"""


def _env() -> dict[str, str]:
    """This process's environment, the test server's API and the repository importable: the same server
    and the same ``PREFECT_HOME`` (holder records, lease files) as the test, as for real commands."""
    from prefect.settings import PREFECT_API_URL

    return {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONPATH": str(REPO_ROOT)}


@pytest.fixture
def holders(tmp_path: Path) -> Iterator[list[subprocess.Popen]]:
    """Started slot-holding processes (see :func:`_hold`); every one still alive is killed afterwards."""
    started: list[subprocess.Popen] = []
    yield started
    for proc in started:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def _hold(holders: list[subprocess.Popen], name: str, log: Path) -> tuple[subprocess.Popen, str]:
    """A new process holding a slot of ``name``, once it holds it; with its flow run's name."""
    with open(log, "w") as out:
        proc = subprocess.Popen([sys.executable, "-c", _HOLDER, name], env=_env(), stdout=out, stderr=subprocess.STDOUT)
    holders.append(proc)
    line = wait_until(
        lambda: next((x for x in log.read_text().splitlines() if x.startswith("held ")), None),
        120,
        "the holder to take its slot",
        abort=lambda: proc.poll() is not None and log.read_text()[-3000:],
    )
    return proc, line.split(" ", 1)[1]


def _kill(proc: subprocess.Popen) -> None:
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()


def test_a_killed_holders_slot_goes_to_the_next_taker(name: str, holders, tmp_path: Path) -> None:
    """SIGKILL leaves the slot taken (the test server runs no lease repossessor); the next taker frees it
    within seconds by itself — no ``release_all_slots`` — and leaves no record behind."""
    ensure_gpu_limit(name, 1)
    proc, _ = _hold(holders, name, tmp_path / "holder.log")
    _kill(proc)
    assert _limit(name).active_slots == 1  # nobody gave it back

    started = time.monotonic()
    with gpu_slot(name, wait_timeout=30):
        waited = time.monotonic() - started
        assert _limit(name).active_slots == 1
    assert waited < 10, f"the dead holder's slot took {waited:.1f} s to recover"
    assert _limit(name).active_slots == 0
    assert slot_holders.read_records(_limit(name).id) == []


def test_a_live_holders_slot_is_waited_for_then_the_wait_ends_in_one_line(
    name: str, holders, tmp_path: Path, monkeypatch, caplog
) -> None:
    """The slot of a live run is never taken: the waiter logs who holds it (flow run, pid, host) while it
    waits and, at its cap, fails with one line naming the limit, the holder and the command that frees it."""
    ensure_gpu_limit(name, 1)
    proc, flow_run_name = _hold(holders, name, tmp_path / "holder.log")
    monkeypatch.setattr(concurrency, "SLOT_LOG_EVERY_S", 1.0)
    monkeypatch.setattr(concurrency, "_logger", lambda: logging.getLogger("test-slot-wait"))
    holder = f"flow run '{flow_run_name}' ("
    where = f"pid {proc.pid} on host {socket.gethostname()}"

    with caplog.at_level(logging.INFO, logger="test-slot-wait"), pytest.raises(SlotWaitTimeout) as raised:
        with gpu_slot(name, wait_timeout=4):
            pytest.fail("took the slot of a live holder")
    message = str(raised.value)
    assert "\n" not in message
    assert message.startswith(f"waited 4 s (slot_wait_timeout) for a slot of Prefect concurrency limit '{name}'")
    assert holder in message and where in message, message
    assert message.endswith(f"stop that run, or free its slot with `sstar slots --release {name}`")
    waits = [r.getMessage() for r in caplog.records if r.getMessage().startswith("waited ")]
    assert len(waits) >= 2 and all(holder in w and where in w for w in waits), waits
    assert proc.poll() is None and _limit(name).active_slots == 1


def test_racing_waiters_recover_a_dead_holders_slot_once(name: str, holders, tmp_path: Path, monkeypatch) -> None:
    """One holder alive, one killed, three waiters started together: exactly one frees the dead holder's
    slot and exactly one gets it; the live holder keeps its own, so the count never drops below 1. Each
    release is slowed by 0.3 s, as over a slow server, so that all three see the dead holder at once."""
    ensure_gpu_limit(name, 2)
    alive, _ = _hold(holders, name, tmp_path / "alive.log")
    dead, _ = _hold(holders, name, tmp_path / "dead.log")
    _kill(dead)
    release = slot_holders.release_lease
    monkeypatch.setattr(slot_holders, "release_lease", lambda lease_id: (time.sleep(0.3), release(lease_id)))
    freed: list[str] = []
    monkeypatch.setattr(concurrency, "_logger", lambda: _Recorder(freed))
    start, losers_done = threading.Barrier(3), threading.Semaphore(0)
    outcomes: list[str] = []

    def waiter() -> None:
        start.wait()
        try:
            with gpu_slot(name, wait_timeout=6):
                outcomes.append("got")
                for _ in range(2):  # hold the slot until both others have given up
                    losers_done.acquire(timeout=60)
        except SlotWaitTimeout:
            outcomes.append("timeout")
            losers_done.release()

    threads = [threading.Thread(target=waiter) for _ in range(3)]
    for thread in threads:
        thread.start()
    lowest = 2
    while any(thread.is_alive() for thread in threads):
        lowest = min(lowest, _limit(name).active_slots)
    assert sorted(outcomes) == ["got", "timeout", "timeout"]
    assert len(freed) == 1, freed
    assert lowest >= 1, f"the count fell to {lowest} with a live holder"
    assert alive.poll() is None and _limit(name).active_slots == 1


class _Recorder(logging.LoggerAdapter):
    """A logger that keeps the messages of freed slots (``freed …``) in a list."""

    def __init__(self, freed: list[str]) -> None:
        super().__init__(logging.getLogger("test-slot-race"), {})
        self.freed = freed

    def warning(self, msg, *args, **kwargs) -> None:  # type: ignore[override]
        if str(msg).startswith("freed "):
            self.freed.append(msg % args)


def test_an_expired_lease_with_no_holder_record_is_freed(name: str) -> None:
    """A holder killed between taking its slot and writing its record leaves a lease nobody renews: once
    it expired, the next taker frees it (a live holder's lease is renewed, so never expires)."""
    import json

    from prefect.client.orchestration import get_client
    from prefect.settings import get_current_settings

    ensure_gpu_limit(name, 1)
    with get_client(sync_client=True) as client:  # a slot taken as gpu_slot takes it, and no record written
        granted = client.increment_concurrency_slots_with_lease(
            names=[name], slots=1, mode="concurrency", lease_duration=60
        ).json()
    lease_file = get_current_settings().home / "concurrency_leases" / f"{granted['lease_id']}.json"
    lease = json.loads(lease_file.read_text())
    lease["expiration"] = "2000-01-01T00:00:00+00:00"  # 60 s have passed without a renewal
    lease_file.write_text(json.dumps(lease))

    started = time.monotonic()
    with gpu_slot(name, wait_timeout=30):
        assert _limit(name).active_slots == 1
    assert time.monotonic() - started < 10
    assert _limit(name).active_slots == 0 and not lease_file.exists()
