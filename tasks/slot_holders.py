"""Who holds a slot of a Prefect global concurrency limit, and whether that holder is still alive.

Prefect's local ephemeral server (what ``sstar learn`` and ``sstar demo`` start) runs no lease
repossessor (PrefectHQ/prefect#17415): a slot held by a killed process is never given back, and the
next run would wait for it forever. So every holder writes a record when it gets a slot —
``$PREFECT_HOME/sstar-slot-holders/<limit id>/<lease id>.json``: its pid, that process's start time
(a reused pid has another), its host, flow run and task run — and removes it when it lets go. A
waiter frees the slot of a holder that is dead: on this host, with its pid gone or reused. A lease
with no record (its holder was killed between taking the slot and writing the record) is dead once
the lease expired, since Prefect renews a live holder's lease; those leases are read from the
filesystem lease storage the CLI sets (``flows.prefect_setup``). A holder on another host is never
judged: its server's repossessor (``prefect server start``) frees its slot when its lease expires.

Slots are freed through Prefect's API (``decrement-with-lease``: decrement the limit by the lease's
slots, then forget the lease), never by setting a count, so a live holder's slot is never taken.
Two waiters never free one lease twice: they recover under an exclusive ``fcntl`` lock and re-check
each holder inside it. Records are keyed by the limit's id, so two Prefect databases sharing one
home (test servers) never see each other's holders.
"""

from __future__ import annotations

import fcntl
import json
import os
import socket
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from uuid import UUID

#: the folder of sstar's holder records under ``PREFECT_HOME``
HOLDERS_FOLDER = "sstar-slot-holders"


@dataclass(frozen=True)
class Holder:
    """One recorded holder of a slot: the lease Prefect gave it and the process and run that hold it."""

    lease_id: str
    pid: int
    host: str
    started: int | None  # the process's start time (clock ticks after boot), None where /proc is missing
    flow_run_id: str | None
    flow_run_name: str | None
    task_run_id: str | None
    task_run_name: str | None
    since: str

    def describe(self) -> str:
        """``flow run 'name' (id), pid N on host H`` — what a waiting user needs to find the holder."""
        run = f"flow run {self.flow_run_name!r} ({self.flow_run_id})" if self.flow_run_id else "no flow run"
        return f"{run}, pid {self.pid} on host {self.host}"

    def is_dead(self) -> bool:
        """Whether the holding process is gone: only a holder on this host can be judged (else alive)."""
        if self.host != socket.gethostname():
            return False
        if not pid_exists(self.pid):
            return True
        started = process_start_time(self.pid)
        return self.started is not None and started is not None and started != self.started


def pid_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process: it exists
        return True
    return True


def process_start_time(pid: int) -> int | None:
    """The start time of process ``pid`` in clock ticks after boot (``/proc/<pid>/stat`` field 22), or None."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return int(stat.rsplit(")", 1)[1].split()[19])  # the fields after the command name start at field 3


def holders_dir(limit_id: UUID) -> Path:
    from prefect.settings import get_current_settings

    return get_current_settings().home / HOLDERS_FOLDER / str(limit_id)


def write_record(limit_id: UUID, lease_id: UUID) -> Path:
    """Record this process (and its flow and task run, if any) as the holder of ``lease_id``; the path."""
    from prefect.context import FlowRunContext, TaskRunContext

    flow_context, task_context = FlowRunContext.get(), TaskRunContext.get()
    flow_run = flow_context.flow_run if flow_context else None
    task_run = task_context.task_run if task_context else None
    holder = Holder(
        lease_id=str(lease_id),
        pid=os.getpid(),
        host=socket.gethostname(),
        started=process_start_time(os.getpid()),
        flow_run_id=str(flow_run.id) if flow_run else (str(task_run.flow_run_id) if task_run else None),
        flow_run_name=flow_run.name if flow_run else None,
        task_run_id=str(task_run.id) if task_run else None,
        task_run_name=task_run.name if task_run else None,
        since=datetime.now(timezone.utc).isoformat(timespec="seconds"),
    )
    folder = holders_dir(limit_id)
    folder.mkdir(parents=True, exist_ok=True)
    fd, temp = tempfile.mkstemp(dir=folder, prefix=".holder-", suffix=".tmp")
    with os.fdopen(fd, "w") as f:
        json.dump(asdict(holder), f)
    path = folder / f"{lease_id}.json"
    os.replace(temp, path)  # a reader sees the whole record or none
    return path


def read_records(limit_id: UUID) -> list[Holder]:
    """Every recorded holder of the limit, oldest first (a record half-removed or unreadable is skipped)."""
    holders = []
    for path in sorted(holders_dir(limit_id).glob("*.json")):
        try:
            holders.append(Holder(**json.loads(path.read_text())))
        except (OSError, ValueError, TypeError):
            continue
    return sorted(holders, key=lambda h: h.since)


def remove_record(limit_id: UUID, lease_id: UUID | str) -> None:
    (holders_dir(limit_id) / f"{lease_id}.json").unlink(missing_ok=True)


def _stored_leases(limit_id: UUID) -> dict[UUID, datetime]:
    """Leases of the limit in the filesystem lease storage under ``PREFECT_HOME``, with their expirations."""
    from prefect.settings import get_current_settings

    leases = {}
    for path in (get_current_settings().home / "concurrency_leases").glob("*-*.json"):
        try:
            lease = json.loads(path.read_text())
            if str(limit_id) in lease["resource_ids"]:
                leases[UUID(lease["id"])] = datetime.fromisoformat(lease["expiration"])
        except (OSError, ValueError, KeyError, TypeError):  # revoked while read, or not a lease
            continue
    return leases


def stored_leases(limit_id: UUID) -> list[UUID]:
    return list(_stored_leases(limit_id))


def expired_unrecorded_leases(limit_id: UUID) -> list[UUID]:
    """Leases of the limit that expired and have no holder record: their holders died before recording."""
    recorded = {h.lease_id for h in read_records(limit_id)}
    now = datetime.now(timezone.utc)
    return [i for i, expires in _stored_leases(limit_id).items() if expires < now and str(i) not in recorded]


@contextmanager
def recovery_lock(limit_id: UUID) -> Iterator[None]:
    """Exclusive, across processes on this host, while a limit's dead holders are recovered."""
    folder = holders_dir(limit_id)
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / ".recovery.lock", "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def release_lease(lease_id: UUID | str) -> None:
    """Give back the slots of ``lease_id`` through Prefect's API (a lease already gone frees nothing)."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        client.release_concurrency_slots_with_lease(UUID(str(lease_id)))


def recover_dead_holders(limit_id: UUID) -> list[str]:
    """Free every slot of the limit whose holder is dead; what was freed, described. Never a live holder's."""
    if not any(h.is_dead() for h in read_records(limit_id)) and not expired_unrecorded_leases(limit_id):
        return []  # the common case: no lock taken
    freed = []
    with recovery_lock(limit_id):
        for holder in read_records(limit_id):  # re-read inside the lock: another waiter may have freed it
            if holder.is_dead():
                release_lease(holder.lease_id)
                remove_record(limit_id, holder.lease_id)
                freed.append(holder.describe())
        for lease_id in expired_unrecorded_leases(limit_id):
            release_lease(lease_id)
            freed.append(f"an expired lease {lease_id} with no holder record")
    return freed
