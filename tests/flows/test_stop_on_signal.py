"""SIGTERM and Ctrl-C end ``sstar learn`` within 30 s (issue 20), as an operator or a scheduler sends them:
to the command's whole process group, while it trains or while it scores. The command exits 143 or 130,
its flow run ends Crashed or Cancelled (read back through the Prefect API), its GPU slot is free, a
concept published before the signal stays published with its metrics row (written as its chunk is
published, issue 21), an unfinished one keeps its checkpoints and gets no row. One command runs on the
session's test server; the other starts its own local server (on the same database, so the test can read
what it recorded), which must outlive the signal long enough for the flow run to record its end, then go
with the command."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT, write_shape_images
from tests.flows.sstar_cli import learn_argv
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

#: the issue's bound on how long a signalled command may take to end
STOP_WITHIN_S = 30


@pytest.fixture(scope="module")
def clip(tmp_path_factory) -> Path:
    """The tiny CLIP checkpoint, with a one-prompt evaluation file beside it (``prompts.txt``)."""
    from inversion.evaluation.clip import write_tiny_clip

    path = write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny.pt")
    (path.parent / "prompts.txt").write_text("a photo of {}\n")
    return path


#: the runs' settings besides their steps and scoring: the tiny model on the CPU, a checkpoint every 3 steps
_OPTIONS = dict(stop="fixed", batch_size=1, checkpoint_every=3, device="cpu", workers=3)


def _catalog(root: Path, *concepts: str) -> Path:
    for i, concept_id in enumerate(concepts):
        write_shape_images(root / concept_id, color=(200, 40 + 60 * i, 40), seed=i)
        (root / concept_id / "concept.json").write_text('{"initializer": "square"}')
    return root


def _signalled(argv: list[str], env: dict[str, str], log: Path, ready: Callable[[], object], sig: int) -> float:
    """Start ``sstar argv`` in a process group of its own, send ``sig`` to the group once ``ready()``; the
    seconds it took to exit after that (the exit status is checked by the caller through the log)."""
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *argv],
            cwd=REPO_ROOT,
            env=env,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(ready, 300, "the moment to signal", abort=lambda: _tail(log) if proc.poll() is not None else None)
        sent = time.monotonic()
        os.killpg(proc.pid, sig)
        try:
            proc.wait(STOP_WITHIN_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"sstar learn still ran {STOP_WITHIN_S} s after {signal.Signals(sig).name}: {_tail(log)}")
        took = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert proc.returncode == 128 + sig, f"exit status {proc.returncode}: {_tail(log)}"
    return took


def _tail(log: Path) -> str:
    return log.read_text(errors="replace")[-4000:]


def _recorded(catalog: Path, limit: str) -> tuple[str, list[str], int]:
    """From the Prefect API: the state of the learn-catalog flow run over ``catalog``, its task runs' states,
    and the GPU limit's taken slots."""
    from prefect.client.orchestration import get_client

    with get_client(sync_client=True) as client:
        (run,) = [r for r in client.read_flow_runs() if r.parameters.get("catalog") == str(catalog)]
        tasks = [t for t in client.read_task_runs() if t.flow_run_id == run.id]
        taken = client.read_global_concurrency_limit_by_name(limit).active_slots
    return (
        str(run.state_type and run.state_type.value),
        sorted({t.state_type.value for t in tasks if t.state_type}),
        taken,
    )


def _published(out: Path) -> set[str]:
    """The concepts with a complete result in ``out``."""
    from storage.results import ResultStore

    return set(ResultStore.open(str(out)).completed()) if out.is_dir() else set()


def _checkpointed(out: Path, concept_id: str) -> bool:
    return bool(list((out / "checkpoints" / concept_id).rglob("checkpoint.safetensors")))


def _check_stopped(out: Path, catalog: Path, limit: str, learning: set[str], finished: set[str] = frozenset()) -> None:
    """What a stopped run leaves: its flow run and task runs ended, the slot free, each concept of ``learning``
    with its checkpoints and no result, and no metrics row but the ``ok`` rows of the ``finished`` concepts."""
    from storage.metrics import read_metrics

    state, task_states, taken = _recorded(catalog, limit)
    assert state in {"CRASHED", "CANCELLED"}, state
    assert not set(task_states) & {"RUNNING", "PENDING", "SCHEDULED"}, task_states
    assert taken == 0, f"{taken} slot(s) of {limit} still taken"
    for concept_id in learning:
        assert _checkpointed(out, concept_id), f"{concept_id} lost its checkpoints"
        assert concept_id not in _published(out)
    rows = read_metrics(str(out)).to_pylist() if out.is_dir() else []
    assert sorted((r["concept_id"], r["status"]) for r in rows) == sorted((c, "ok") for c in finished), rows
    assert not list(out.glob("runs/*/summary.json"))


def test_sigterm_while_training(prefect_harness, tiny_model_dir, clip, tmp_path) -> None:
    from prefect.settings import PREFECT_API_URL

    catalog, out, limit = _catalog(tmp_path / "catalog", "red-square"), tmp_path / "out", f"gpu-{uuid.uuid4().hex[:8]}"
    argv = learn_argv(
        catalog,
        out,
        tiny_model_dir,
        tiny_clip=clip,
        steps=100_000,
        **_OPTIONS,
        gpu_limit_name=limit,
        prompts=clip.parent / "prompts.txt",
    )
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}

    took = _signalled(argv, env, tmp_path / "log", lambda: _checkpointed(out, "red-square"), signal.SIGTERM)

    assert took < STOP_WITHIN_S
    _check_stopped(out, catalog, limit, {"red-square"})


def test_ctrl_c_while_scoring_with_its_own_local_server(prefect_harness, tiny_model_dir, clip, tmp_path) -> None:
    from prefect.settings import PREFECT_SERVER_DATABASE_CONNECTION_URL

    catalog = _catalog(tmp_path / "catalog", "red-square", "green-square")
    out, limit, home = tmp_path / "out", f"gpu-{uuid.uuid4().hex[:8]}", tmp_path / "prefect-home"
    # chunks of one concept in packs of one, each published as it is scored: the signal comes once the first is
    # published and the second has a checkpoint (it trains, or renders after training, on the one GPU slot)
    argv = learn_argv(
        catalog,
        out,
        tiny_model_dir,
        tiny_clip=clip,
        steps=12,
        samples=2,
        render_steps=60,
        chunk_size=1,
        **_OPTIONS,
        gpu_limit_name=limit,
        prompts=clip.parent / "prompts.txt",
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")} | {
        "PREFECT_HOME": str(home),
        "PREFECT_SERVER_DATABASE_CONNECTION_URL": str(PREFECT_SERVER_DATABASE_CONNECTION_URL.value()),
        "PYTHONUNBUFFERED": "1",
    }

    def ready() -> bool:
        return len(_published(out)) == 1 and any(_checkpointed(out, c) for c in ("red-square", "green-square"))

    took = _signalled(argv, env, tmp_path / "log", ready, signal.SIGINT)

    assert took < STOP_WITHIN_S
    (finished,) = _published(out)
    (unfinished,) = {"red-square", "green-square"} - {finished}
    _check_stopped(out, catalog, limit, {unfinished}, {finished})
    assert not _servers_of(home), "the command's local Prefect server outlived it"


def _servers_of(home: Path) -> list[int]:
    """Processes whose environment holds ``PREFECT_HOME=home`` (the command's local server)."""
    marker = f"PREFECT_HOME={home}".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes().split(b"\0"):
                found.append(int(environ.parent.name))
        except OSError:
            continue
    return found
