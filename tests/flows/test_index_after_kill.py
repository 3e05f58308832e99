"""Kill after the metrics, before the index (issue 20): the next run of the catalog, with nothing to learn,
puts the embeddings index right from the published results. Simulated on a copy of a finished output whose
index is set back to what it held before the first run's index update (here: the blue concept only); without
the reconcile the re-run merges only its own ``skipped`` rows and the red concept stays missing."""

from __future__ import annotations

import shutil

import pytest

pytestmark = pytest.mark.slow


def test_a_rerun_with_nothing_to_learn_restores_the_index(two_runs, prefect_harness, tiny_model_dir, tmp_path):
    import pyarrow as pa

    from flows.learn import learn_catalog
    from storage.metrics import INDEX_KEY, INDEX_SCHEMA, read_embeddings_index, read_metrics
    from storage.runfiles import to_parquet
    from storage.store.open import open_store
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    out = tmp_path / "out"
    shutil.copytree(two_runs.out, out)
    clean = {r["concept_id"]: r for r in read_embeddings_index(str(out)).to_pylist()}
    assert set(clean) == {"red-square", "blue-square"}
    behind = pa.Table.from_pylist([clean["blue-square"]], schema=INDEX_SCHEMA)
    open_store(str(out)).put(INDEX_KEY, to_parquet(behind))  # the killed run's index update never happened

    # the same settings as the two runs (tests/flows/conftest.py), so every concept is skipped
    root = two_runs.out.parent
    learn = LearnSettings(model=str(tiny_model_dir), steps=4, batch_size=2)
    evaluation = EvalSettings(
        prompts=["a photo of {}"],
        samples=2,
        render_steps=2,
        clip_arch="sstar-tiny-clip",
        clip_checkpoint=str(root / "tiny-clip.pt"),
    )
    run = RunSettings(device="cpu", checkpoint_every=0, workers=2, concepts_per_batch=2)
    learn_catalog(
        catalog=str(root / "catalog"),
        out=str(out),
        learn=learn,
        evaluation=evaluation,
        run=run,
        run_id="rerun-after-kill",
        return_state=True,
    )
    statuses = {
        r["concept_id"]: r["status"] for r in read_metrics(str(out)).to_pylist() if r["run_id"] == "rerun-after-kill"
    }
    assert statuses == {"red-square": "skipped", "blue-square": "skipped", "corrupt": "failed"}
    restored = {r["concept_id"]: r for r in read_embeddings_index(str(out)).to_pylist()}
    assert restored == clean, "the index is not the clean run's"
