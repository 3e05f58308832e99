"""Scale-out on one machine: a real Prefect server, a process work pool with two workers, a
``learn-concept`` deployment from local source, and ``learn_catalog`` fanning concepts out as
flow runs of that deployment. Both workers must run work, and every concept finish exactly once."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import REPO_ROOT, write_shape_images
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

COLOURS = [(220, 40, 40), (40, 70, 220), (40, 180, 70), (230, 160, 30)]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _healthy(url: str) -> bool:
    try:
        with urllib.request.urlopen(f"{url}/health", timeout=2) as response:
            return response.status == 200
    except OSError:
        return False


def _stop(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()


@pytest.fixture
def prefect_server(tmp_path):
    """A real ``prefect server start`` on 127.0.0.1 with its own SQLite database."""
    port = _free_port()
    url = f"http://127.0.0.1:{port}/api"
    env = {
        **os.environ,
        "PREFECT_HOME": str(tmp_path / "prefect-home"),
        "PREFECT_API_URL": url,
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_UI_ENABLED": "false",
        "PYTHONUNBUFFERED": "1",
    }
    log = tmp_path / "server.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "prefect", "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        cwd=tmp_path,
        start_new_session=True,
    )
    try:
        wait_until(
            lambda: _healthy(url),
            90,
            "prefect server health",
            abort=lambda: proc.poll() is not None and f"it exited: {log.read_text()[-2000:]}",
        )
        yield url, env
    finally:
        _stop(proc)


def test_two_workers_share_the_catalog(prefect_server, tiny_model_dir, tmp_path):
    from prefect import flow as prefect_flow
    from prefect.settings import PREFECT_API_URL, temporary_settings

    url, env = prefect_server
    catalog, out = tmp_path / "catalog", tmp_path / "out"
    concepts = [f"shape-{i}" for i in range(len(COLOURS))]
    for concept_id, colour in zip(concepts, COLOURS):
        write_shape_images(catalog / concept_id, color=colour, count=2)
        (catalog / concept_id / "concept.json").write_text(json.dumps({"initializer": "square"}))
    from inversion.evaluation.clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "tiny-clip.pt")

    subprocess.run(
        [sys.executable, "-m", "prefect", "work-pool", "create", "local-gpu", "--type", "process"],
        env=env,
        check=True,
        capture_output=True,
        cwd=tmp_path,
    )
    with temporary_settings(updates={PREFECT_API_URL: url}):
        deployment_id = prefect_flow.from_source(
            source=str(REPO_ROOT), entrypoint="flows/learn.py:learn_concept"
        ).deploy(name="learn-concept", work_pool_name="local-gpu", print_next_steps=False, build=False, push=False)
    assert deployment_id

    workers, logs = [], []
    for i in range(2):
        log = tmp_path / f"worker-{i}.log"
        logs.append(log)
        workers.append(
            subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "prefect",
                    "worker",
                    "start",
                    "--pool",
                    "local-gpu",
                    "--limit",
                    "1",
                    "--name",
                    f"worker-{i}",
                ],
                env=env,
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                cwd=REPO_ROOT,
                start_new_session=True,
            )
        )
    try:
        from flows.learn import learn_catalog
        from tasks.settings import EvalSettings, LearnSettings, RunSettings

        with temporary_settings(updates={PREFECT_API_URL: url}):
            state = learn_catalog(
                catalog=str(catalog),
                out=str(out),
                learn=LearnSettings(model=str(tiny_model_dir), steps=3, batch_size=1),
                evaluation=EvalSettings(
                    prompts=["a photo of {}"],
                    samples=1,
                    render_steps=2,
                    clip_arch="sstar-tiny-clip",
                    clip_checkpoint=str(clip),
                ),
                run=RunSettings(device="cpu", workers=4, deployment="learn-concept/learn-concept"),
                run_id="scale-out",
                return_state=True,
            )
        assert state.is_completed(), state.message
    finally:
        for proc in workers:
            _stop(proc)

    from storage.metrics import read_metrics

    rows = [r for r in read_metrics(str(out)).to_pylist() if r["run_id"] == "scale-out"]
    assert sorted(r["concept_id"] for r in rows) == concepts, "every concept exactly once"
    assert {r["status"] for r in rows} == {"ok"}
    for concept_id in concepts:
        assert len(list((out / "embeddings" / concept_id).iterdir())) == 1
    # which worker ran each child flow run, from the API: the worker that wins a run (moves it to
    # Pending; a second worker trying the same run is refused) labels it with its name before running it
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterId

    with temporary_settings(updates={PREFECT_API_URL: url}), get_client(sync_client=True) as client:
        runs = client.read_flow_runs(deployment_filter=DeploymentFilter(id=DeploymentFilterId(any_=[deployment_id])))
        registered = {w.name for w in client.read_workers_for_work_pool("local-gpu")}
    assert registered == {"worker-0", "worker-1"}
    assert len(runs) == len(concepts), "one flow run per concept"
    assert sorted(r.parameters["concept_id"] for r in runs) == concepts
    for run in runs:
        assert run.state is not None and run.state.is_completed(), (run.name, run.state)
        assert run.run_count == 1, f"{run.name} ran {run.run_count} times"
    ran_on = {run.name: run.labels.get("prefect.worker.name") for run in runs}
    worker_logs = "\n".join(f"{log.name}: {log.read_text()[-1500:]}" for log in logs)
    assert set(ran_on.values()) == registered, f"each worker must run work: {ran_on}\n{worker_logs}"
