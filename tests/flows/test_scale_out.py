"""Scale-out on one machine: a real Prefect server on PostgreSQL, a process work pool with two workers, a
``learn-pack`` deployment from local source, and ``learn_catalog`` fanning packs of two concepts out as
flow runs of that deployment (issue 21: per pack, not per concept). Both workers must run work, and every
concept finish exactly once."""

from __future__ import annotations

import pytest

from tests.flows.prefect_server import PrefectServer, write_catalog

pytestmark = pytest.mark.slow

CONCEPTS = [f"shape-{i}" for i in range(4)]


def test_two_workers_share_the_catalog(prefect_server: PrefectServer, tiny_model_dir, tmp_path):
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from flows.learn import learn_catalog
    from inversion.evaluation.clip import write_tiny_clip
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_catalog(catalog, CONCEPTS)
    clip = write_tiny_clip(tmp_path / "tiny-clip.pt")
    deployment_id = prefect_server.deploy_learn_pack()
    for i in range(2):
        prefect_server.start_worker("local-gpu", f"worker-{i}")
    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}):
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
            run=RunSettings(
                device="cpu",
                workers=4,
                concepts_per_batch=2,
                max_concurrent_inversions=2,  # two packs in flight, as the nightly deployment runs them
                deployment="learn-pack/learn-pack",
            ),
            run_id="scale-out",
            return_state=True,
        )
    assert state.is_completed(), state.message

    from storage.metrics import read_metrics

    rows = [r for r in read_metrics(str(out)).to_pylist() if r["run_id"] == "scale-out"]
    assert sorted(r["concept_id"] for r in rows) == CONCEPTS, "every concept exactly once"
    assert {r["status"] for r in rows} == {"ok"}
    for concept_id in CONCEPTS:
        assert len(list((out / "embeddings" / concept_id).iterdir())) == 1
    # which worker ran each child flow run, from the API: the worker that wins a run (moves it to
    # Pending; a second worker trying the same run is refused) labels it with its name before running it
    from prefect.client.orchestration import get_client

    with temporary_settings(updates={PREFECT_API_URL: prefect_server.url}), get_client(sync_client=True) as client:
        registered = {w.name for w in client.read_workers_for_work_pool("local-gpu")}
    runs = prefect_server.flow_runs(deployment_id)
    assert registered == {"worker-0", "worker-1"}
    assert len(runs) == len(CONCEPTS) // 2, "one flow run per pack of two"
    assert sorted(sorted(r.parameters["concept_ids"]) for r in runs) == [CONCEPTS[:2], CONCEPTS[2:]]
    for run in runs:
        assert run.state is not None and run.state.is_completed(), (run.name, run.state)
        assert run.run_count == 1, f"{run.name} ran {run.run_count} times"
        # the pack is trained as one batch on its worker (max_concurrent_inversions split it in two before)
        kinds = prefect_server.task_run_names(run.id)
        assert (kinds["invert-pack"], kinds["score-outcomes"]) == (1, 1), (run.name, kinds)
    ran_on = {run.name: run.labels.get("prefect.worker.name") for run in runs}
    worker_logs = "\n".join(f"{name}: {prefect_server.worker_log(name)[-1500:]}" for name in sorted(registered))
    assert set(ran_on.values()) == registered, f"each worker must run work: {ran_on}\n{worker_logs}"
