"""A real ``prefect server start`` and process workers, as a team runs them: for the deployment-mode tests.

The server listens on 127.0.0.1 with its own ``PREFECT_HOME`` and a database of its own on the tests'
PostgreSQL (:mod:`tests.flows.postgres`), and keeps concurrency leases in files under that home
(``PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE``), as ``deployments/README.md`` tells operators to, so a
restart forgets no held slot. :meth:`PrefectServer.restart` stops it with SIGKILL and starts it again
on the same port, home and database. Workers run in process groups of their own; the flow runs they
start do too (Prefect starts them with ``start_new_session=True``).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import urllib.request
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING
from uuid import UUID

from tests.conftest import REPO_ROOT
from tests.flows.postgres import free_port
from tests.waiting import wait_until

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

#: the flow runs' heartbeat period that the workers give their flow runs: Prefect's least (30 s)
HEARTBEAT_S = 30


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def stop_group(proc: subprocess.Popen, sig: int = signal.SIGTERM) -> None:
    """End ``proc``'s process group with ``sig`` (SIGKILL after 15 s) and reap ``proc``."""
    if proc.poll() is None:
        os.killpg(proc.pid, sig)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


class PrefectServer:
    """``prefect server start`` on ``url`` with the environment ``env`` that its clients and workers use."""

    def __init__(self, folder: Path, database_url: str | None) -> None:
        self.folder, self.port = folder, free_port()
        self.url = f"http://127.0.0.1:{self.port}/api"
        self.env = {
            **os.environ,
            "PREFECT_HOME": str(folder / "prefect-home"),
            "PREFECT_API_URL": self.url,
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "PREFECT_UI_ENABLED": "false",
            "PYTHONUNBUFFERED": "1",
            "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": "prefect.server.concurrency.lease_storage.filesystem",
            "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": str(HEARTBEAT_S),
        }
        if database_url:
            self.env["PREFECT_API_DATABASE_CONNECTION_URL"] = database_url
        self.log = folder / "server.log"
        self.proc: subprocess.Popen | None = None
        self.workers: list[subprocess.Popen] = []

    def start(self) -> None:
        """Start the server and wait until its health check answers (90 s at most)."""
        command = [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(self.port)]
        with self.log.open("ab") as log:
            proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=self.folder, start_new_session=True
            )
        self.proc = proc
        wait_until(
            lambda: _healthy(self.url),
            90,
            "prefect server health",
            abort=lambda: f"it exited: {self.log.read_text()[-2000:]}" if proc.poll() is not None else None,
        )

    def restart(self) -> None:
        """Kill the server (SIGKILL, as a crashed or preempted node) and start it again on the same port."""
        assert self.proc is not None
        stop_group(self.proc, signal.SIGKILL)
        self.start()

    def start_worker(self, pool: str, name: str) -> subprocess.Popen:
        """A process worker on ``pool`` running one flow run at a time, in the repository, logging to ``<name>.log``."""
        command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--limit", "1", "--name", name]
        with (self.folder / f"{name}.log").open("wb") as log:
            proc = subprocess.Popen(
                command, env=self.env, stdout=log, stderr=subprocess.STDOUT, cwd=REPO_ROOT, start_new_session=True
            )
        self.workers.append(proc)
        return proc

    def worker_log(self, name: str) -> str:
        return (self.folder / f"{name}.log").read_text(errors="replace")

    def stop(self) -> None:
        """Stop the workers and the server, after this process sent the server the logs and events it still
        holds (else they are retried against a closed port at interpreter exit, for a minute and more)."""
        from prefect.events.worker import EventsWorker
        from prefect.logging.handlers import APILogWorker

        APILogWorker.drain_all(timeout=15, at_exit=False)
        EventsWorker.drain_all(timeout=15, at_exit=False)
        for proc in self.workers:
            stop_group(proc)
        if self.proc is not None:
            stop_group(self.proc)

    def deploy_learn_concept(self, pool: str = "local-gpu") -> UUID:
        """Create the process work pool ``pool`` and deploy ``learn_concept`` to it from this repository."""
        return self.deploy("flows/learn.py:learn_concept", "learn-concept", pool)

    def deploy_learn_pack(self, pool: str = "local-gpu") -> UUID:
        """Create the process work pool ``pool`` and deploy ``learn_pack`` to it from this repository: what
        ``learn_catalog`` fans packs out to with ``deployment="learn-pack/learn-pack"``."""
        return self.deploy("flows/learn_pack.py:learn_pack", "learn-pack", pool)

    def deploy(self, entrypoint: str, name: str, pool: str) -> UUID:
        """Create the process work pool ``pool`` (unless it exists) and deploy the flow at ``entrypoint`` of this
        repository to it as ``name``."""
        from prefect import flow as prefect_flow
        from prefect.settings import PREFECT_API_URL, temporary_settings

        from flows.sync import sync_result

        create = [sys.executable, "-m", "prefect", "work-pool", "create", pool, "--type", "process"]
        subprocess.run(create, env=self.env, check=False, capture_output=True, cwd=self.folder)
        with temporary_settings(updates={PREFECT_API_URL: self.url}):
            source = sync_result(prefect_flow.from_source(source=str(REPO_ROOT), entrypoint=entrypoint))
            deployed = source.deploy(name=name, work_pool_name=pool, print_next_steps=False, build=False, push=False)
        return sync_result(deployed)

    def flow_runs(self, deployment_id: UUID) -> list[FlowRun]:
        """The flow runs of ``deployment_id``, oldest first."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId
        from prefect.client.schemas.sorting import FlowRunSort
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.url}), get_client(sync_client=True) as client:
            return client.read_flow_runs(
                deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            )

    def task_run_names(self, flow_run_id: UUID) -> Counter[str]:
        """The task runs of ``flow_run_id`` by task name (``invert-pack-3f2`` → ``invert-pack``)."""
        from prefect.client.orchestration import get_client
        from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
        from prefect.settings import PREFECT_API_URL, temporary_settings

        with temporary_settings(updates={PREFECT_API_URL: self.url}), get_client(sync_client=True) as client:
            runs = client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))
        return Counter(run.name.rsplit("-", 1)[0] for run in runs)


def _descendants(pid: int) -> set[int]:
    """The processes below ``pid``, from ``/proc`` (their parent ids)."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # the process ended meanwhile
            continue
        parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def kill_worker_and_its_flow_runs(worker: subprocess.Popen) -> list[int]:
    """``kill -9`` a worker's process group and then each process group below it (the flow runs it started,
    each in a session of its own): a node lost with everything on it. Returns the flow runs' group ids."""
    groups = set()
    for pid in _descendants(worker.pid):
        try:
            groups.add(os.getpgid(pid))
        except ProcessLookupError:
            continue
    below = groups - {worker.pid}
    os.killpg(worker.pid, signal.SIGKILL)
    for group in below:
        os.killpg(group, signal.SIGKILL)
    worker.wait()
    return sorted(below)


def write_catalog(catalog: Path, concepts: list[str]) -> None:
    """A catalog of shapes, one colour per concept, two images each."""
    from tests.conftest import write_shape_images

    colours = [(220, 40, 40), (40, 70, 220), (40, 180, 70), (230, 160, 30)]
    for concept_id, colour in zip(concepts, colours, strict=False):
        write_shape_images(catalog / concept_id, color=colour, count=2)
        (catalog / concept_id / "concept.json").write_text(json.dumps({"initializer": "square"}))
