"""Deployment mode under process faults, on a real ``prefect server start`` backed by PostgreSQL with a
process work pool of two workers (``tests/flows/prefect_server.py``).

* A node lost while a concept trains: ``kill -9`` of one worker *and* the flow run it started (Prefect
  starts it in a session of its own, so it outlives its worker otherwise). The flow run (a ``learn-pack``
  of one concept here) stays Running on the server; the coordinator sees its heartbeats stop, marks it
  Crashed and runs the pack again as a new flow run, which the other worker picks up and resumes from the
  checkpoint in the output store.
* The server restarted (SIGKILL, then started again) while concepts train: the catalog run ends, all ok
  or failed with a message, never hanging, and no slot of the GPU limit stays taken (the server keeps its
  leases in files under its home, as deployments/README.md says).

The coordinator runs in this process; a background thread strikes once the first checkpoint is uploaded.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.flows.prefect_server import HEARTBEAT_S, PrefectServer, kill_worker_and_its_flow_runs, write_catalog
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

CONCEPTS = ["shape-0", "shape-1"]
STEPS = 100
CHECKPOINT_EVERY = 5
WORKERS = ("worker-0", "worker-1")
#: a child silent this long is dead: two heartbeat periods and a margin for a loaded machine
CHILD_HEARTBEAT_TIMEOUT = 2 * HEARTBEAT_S + 15
#: the coordinator gives up on a child after this long (so a wait that never ends fails the test in time)
CHILD_WAIT_TIMEOUT = 420


def _run_catalog(server: PrefectServer, tmp_path: Path, model: Path) -> Any:
    """``learn_catalog`` over :data:`CONCEPTS` in deployment mode against ``server``; its final state."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.learn import learn_catalog
    from inversion.evaluation.clip import write_tiny_clip
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    clip = write_tiny_clip(tmp_path / "tiny-clip.pt")
    evaluation = EvalSettings(
        prompts=["a photo of {}"], samples=1, render_steps=2, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
    )
    run = RunSettings(
        device="cpu",
        checkpoint_every=CHECKPOINT_EVERY,
        stop="fixed",
        workers=2,
        max_concurrent_inversions=2,
        deployment="learn-pack/learn-pack",
        child_heartbeat_timeout=CHILD_HEARTBEAT_TIMEOUT,
        child_wait_timeout=CHILD_WAIT_TIMEOUT,
    )
    with temporary_settings(updates={PREFECT_API_URL: server.url}):
        return learn_catalog(
            catalog=str(tmp_path / "catalog"),
            out=str(tmp_path / "out"),
            learn=LearnSettings(model=str(model), steps=STEPS, batch_size=1),
            evaluation=evaluation,
            run=run,
            run_id="faults",
            return_state=True,
        )


def _strike_at_first_checkpoint(out: Path, strike: Callable[[str], Any]) -> tuple[threading.Thread, dict]:
    """A thread that waits for the first uploaded checkpoint and calls ``strike(concept_id)``; what it
    returned (``done``) or raised (``error``) lands in the returned dict."""
    outcome: dict[str, Any] = {}

    def wait_and_strike() -> None:
        try:
            found = wait_until(lambda: list(out.glob("checkpoints/*/*/checkpoint.safetensors")), 300, "a checkpoint")
            outcome["done"] = strike(found[0].parent.parent.name)
        except BaseException as exc:  # noqa: BLE001 - reported by the test in the main thread
            outcome["error"] = exc

    thread = threading.Thread(target=wait_and_strike, name="strike", daemon=True)
    thread.start()
    return thread, outcome


def _slots_taken(server: PrefectServer) -> int:
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: server.url}), get_client(sync_client=True) as client:
        return client.read_global_concurrency_limit_by_name("sstar-gpu").active_slots


def _rows(out: Path) -> dict[str, str]:
    from storage.metrics import read_metrics

    return {r["concept_id"]: r["status"] for r in read_metrics(str(out)).to_pylist() if r["run_id"] == "faults"}


def test_a_lost_node_is_run_again_on_the_other_worker(prefect_server: PrefectServer, tiny_model_dir, tmp_path):
    out = tmp_path / "out"
    write_catalog(tmp_path / "catalog", CONCEPTS)
    deployment_id = prefect_server.deploy_learn_pack()
    workers = {name: prefect_server.start_worker("local-gpu", name) for name in WORKERS}

    def kill_the_node(concept_id: str) -> tuple[str, str]:
        # the worker that won the concept's flow run labels it with its name
        runs = prefect_server.flow_runs(deployment_id)
        (run,) = [r for r in runs if concept_id in r.parameters["concept_ids"]]
        worker = str(run.labels["prefect.worker.name"])
        assert kill_worker_and_its_flow_runs(workers[worker]), "the flow run must have a process of its own"
        return concept_id, worker

    striker, struck = _strike_at_first_checkpoint(out, kill_the_node)
    state = _run_catalog(prefect_server, tmp_path, tiny_model_dir)
    striker.join(5)
    assert "error" not in struck, struck.get("error")
    concept_id, dead_worker = struck["done"]

    assert state.is_completed(), state.message
    assert _rows(out) == {c: "ok" for c in CONCEPTS}
    runs = [r for r in prefect_server.flow_runs(deployment_id) if concept_id in r.parameters["concept_ids"]]
    assert [r.state_name for r in runs] == ["Crashed", "Completed"], [(r.name, r.state) for r in runs]
    assert runs[0].state is not None and "no heartbeat" in (runs[0].state.message or "")
    (survivor,) = set(WORKERS) - {dead_worker}
    assert runs[1].labels["prefect.worker.name"] == survivor
    (digest_dir,) = (out / "embeddings" / concept_id).iterdir()
    training = json.loads((digest_dir / "training.json").read_text())
    assert CHECKPOINT_EVERY <= training["resumed_from"] < STEPS, training["resumed_from"]
    assert training["steps"] == STEPS
    wait_until(lambda: _slots_taken(prefect_server) == 0, 90, "the dead flow run's GPU slot given back", interval=1)


def test_a_server_restart_ends_the_run_and_leaves_no_slot_taken(
    prefect_server: PrefectServer, tiny_model_dir, tmp_path
):
    out = tmp_path / "out"
    write_catalog(tmp_path / "catalog", CONCEPTS)
    deployment_id = prefect_server.deploy_learn_pack()
    for name in WORKERS:
        prefect_server.start_worker("local-gpu", name)

    striker, struck = _strike_at_first_checkpoint(out, lambda concept_id: prefect_server.restart())
    state = _run_catalog(prefect_server, tmp_path, tiny_model_dir)
    striker.join(120)
    assert "error" not in struck, struck.get("error")

    rows = _rows(out)
    if state.is_completed():
        assert rows == {c: "ok" for c in CONCEPTS}
    else:  # fails loudly: a final state with the reason, each concept's row written
        assert state.is_failed() and state.message, state
        assert sorted(rows) == CONCEPTS
    runs = prefect_server.flow_runs(deployment_id)
    assert all(r.state is not None and r.state.is_final() for r in runs), [(r.name, r.state_name) for r in runs]
    wait_until(lambda: _slots_taken(prefect_server) == 0, 90, "every GPU slot given back", interval=1)
