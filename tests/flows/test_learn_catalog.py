"""End to end: learn_catalog on a real S3 endpoint (moto server) under a Prefect test harness.

A catalog of real DreamBooth photo concepts plus broken ones → embeddings, grids, metrics rows
(ok and failed with reasons) and the report; a second run skips everything learned; changing one
concept's images re-learns only that one.
"""

from __future__ import annotations

import json
import uuid

import pytest

pytestmark = pytest.mark.slow

REAL_CONCEPTS = {"can": "can", "candle": "candle"}


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    from inversion.evaluation.clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip.pt")


@pytest.fixture
def s3_catalog(s3_client, moto_endpoint, monkeypatch, dreambooth_dir):
    """Upload two real concepts (3 photos each) and three broken ones; returns (catalog, out) URIs."""
    from tests.conftest import BUCKET

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    prefix = f"e2e-{uuid.uuid4().hex[:8]}"
    for concept_id, class_name in REAL_CONCEPTS.items():
        photos = sorted((dreambooth_dir / concept_id).glob("*.jpg"))[:3]
        for photo in photos:
            s3_client.put_object(
                Bucket=BUCKET, Key=f"{prefix}/catalog/{concept_id}/{photo.name}", Body=photo.read_bytes()
            )
        meta = {"initializer": class_name, "class": class_name}
        s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/{concept_id}/concept.json", Body=json.dumps(meta))
    s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/corrupt/00.jpg", Body=b"\xff\xd8\xff not really a jpeg")
    s3_client.put_object(
        Bucket=BUCKET, Key=f"{prefix}/catalog/bad-meta/00.jpg", Body=(dreambooth_dir / "can" / "00.jpg").read_bytes()
    )
    s3_client.put_object(
        Bucket=BUCKET, Key=f"{prefix}/catalog/bad-meta/concept.json", Body=b'{"property": "sculpture"}'
    )
    s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/no-images/notes.txt", Body=b"nothing to learn")
    return f"s3://{BUCKET}/{prefix}/catalog", f"s3://{BUCKET}/{prefix}/out"


def _run(catalog, out, model, clip, run_id):
    from flows.learn import learn_catalog
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    learn = LearnSettings(model=str(model), steps=4, batch_size=2)
    evaluation = EvalSettings(
        prompts=["a photo of {}", "a watercolor of {} on a beach"],
        samples=1,
        render_steps=2,
        clip_arch="sstar-tiny-clip",
        clip_checkpoint=str(clip),
    )
    run = RunSettings(device="cpu", checkpoint_every=2, workers=2, concepts_per_batch=2)
    return learn_catalog(
        catalog=catalog, out=out, learn=learn, evaluation=evaluation, run=run, run_id=run_id, return_state=True
    )


def _rows(out, run_id):
    from storage.metrics import read_metrics

    table = read_metrics(out).to_pylist()
    return {r["concept_id"]: r for r in table if r["run_id"] == run_id}


def test_catalog_runs_skip_and_relearn(
    prefect_harness, s3_catalog, dreambooth_dir, s3_client, tiny_model_dir, clip_checkpoint
):
    from storage.metrics import read_embeddings_index
    from storage.results import ResultStore
    from storage.store.open import open_store
    from tests.conftest import BUCKET

    catalog, out = s3_catalog
    first = _run(catalog, out, tiny_model_dir, clip_checkpoint, "run-1")
    assert first.is_failed(), "broken concepts must make the run's final state Failed"
    assert "3 concept(s) failed" in first.message or "3 concept(s) failed" in str(first.result(raise_on_failure=False))
    rows = _rows(out, "run-1")
    assert {cid: r["status"] for cid, r in rows.items()} == {
        "can": "ok",
        "candle": "ok",
        "corrupt": "failed",
        "bad-meta": "failed",
        "no-images": "failed",
    }
    assert "property must be one of object, style" in rows["bad-meta"]["error"]
    assert "corrupt/00.jpg" in rows["corrupt"]["error"]
    assert "no-images" in rows["no-images"]["error"] or "no image" in rows["no-images"]["error"]
    store = open_store(out)
    results = ResultStore(store)
    for cid in REAL_CONCEPTS:
        row = rows[cid]
        assert row["token"] == f"<{cid}>" and row["steps"] == 4
        for column in ("image_similarity", "text_similarity", "baseline_image_similarity", "inversion_lift"):
            assert row[column] is not None and -1.0 <= row[column] <= 1.0
        assert row["inversion_lift"] == pytest.approx(row["image_similarity"] - row["baseline_image_similarity"])
        assert results.is_complete(cid, row["digest"])
        assert results.verify(cid, row["digest"]) == []
        assert row["embedding_uri"].startswith(f"s3://{BUCKET}/") and row["embedding_uri"].endswith(
            "learned_embeds.safetensors"
        )
        names = set(results.read_manifest(cid, row["digest"]).files)
        assert {"learned_embeds.safetensors", f"{cid}.pt", "grid.png", "baseline_grid.png", "scores.json"} <= names
        assert not results.list_checkpoints(cid, row["digest"]), "checkpoints are cleared once published"
    report = store.get("reports/run-1.html").decode()
    assert "can" in report and "corrupt" in report
    assert set(read_embeddings_index(out).column("concept_id").to_pylist()) == set(REAL_CONCEPTS)

    second = _run(catalog, out, tiny_model_dir, clip_checkpoint, "run-2")
    rows2 = _rows(out, "run-2")
    assert {cid: rows2[cid]["status"] for cid in REAL_CONCEPTS} == {"can": "skipped", "candle": "skipped"}
    assert not [r for r in rows2.values() if r["status"] == "ok"]
    assert rows2["can"]["image_similarity"] == rows["can"]["image_similarity"]
    assert second.is_failed()  # the broken concepts are still broken

    key = f"{catalog.split('/', 3)[3]}/candle/" + sorted((dreambooth_dir / "candle").glob("*.jpg"))[0].name
    s3_client.put_object(Bucket=BUCKET, Key=key, Body=(dreambooth_dir / "candle" / "04.jpg").read_bytes())
    _run(catalog, out, tiny_model_dir, clip_checkpoint, "run-3")
    rows3 = _rows(out, "run-3")
    assert rows3["candle"]["status"] == "ok" and rows3["can"]["status"] == "skipped"
    assert rows3["candle"]["digest"] != rows["candle"]["digest"]
    assert sorted(results.completed_digests("candle")) == sorted([rows["candle"]["digest"], rows3["candle"]["digest"]])


def _task_names(flow_run_id) -> list[str]:
    import asyncio

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_run_id])))

    return [run.name.rsplit("-", 1)[0] for run in asyncio.run(read())]


def test_learn_one_concept_ad_hoc(prefect_harness, s3_catalog, tiny_model_dir, clip_checkpoint):
    from flows.learn import learn_concept
    from storage.metrics import read_metrics
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    catalog, out = s3_catalog
    learn = LearnSettings(model=str(tiny_model_dir), steps=2, batch_size=1)
    evaluation = EvalSettings(
        prompts=["a photo of {}"],
        samples=1,
        render_steps=2,
        clip_arch="sstar-tiny-clip",
        clip_checkpoint=str(clip_checkpoint),
    )
    run = RunSettings(device="cpu", workers=1)

    def learn_one(concept_id):
        return learn_concept(
            catalog=catalog,
            concept_id=concept_id,
            out=out,
            learn=learn,
            evaluation=evaluation,
            run=run,
            return_state=True,
        )

    state = learn_one("can")
    row = state.result()
    assert row["concept_id"] == "can" and row["status"] == "ok" and row["steps"] == 2
    assert {"scan-catalog", "stage-chunk", "invert-pack", "score-outcomes", "publish-chunk"} <= set(
        _task_names(state.state_details.flow_run_id)
    ), "tasks run on the run's own runner still belong to the flow run"
    bad = learn_one("bad-meta")
    assert bad.is_failed() and "property must be one of object, style" in str(bad.result(raise_on_failure=False))
    missing = learn_one("nope")
    assert missing.is_failed() and "no concept 'nope'" in str(missing.result(raise_on_failure=False))
    table = read_metrics(out).to_pylist()
    assert sorted((r["concept_id"], r["status"]) for r in table) == [
        ("bad-meta", "failed"),
        ("can", "ok"),
        ("nope", "failed"),
    ]


def test_fan_out_threads_follow_the_run_settings():
    from flows.learn import fan_out_threads
    from tasks.settings import RunSettings

    assert fan_out_threads(RunSettings(workers=3)) == 3
    assert fan_out_threads(RunSettings(workers=2, max_concurrent_inversions=8)) == 2  # local: GPU work is gated anyway
    fanned = RunSettings(workers=2, max_concurrent_inversions=8, deployment="learn-pack/learn-pack")
    assert fan_out_threads(fanned) == 8  # one waiting thread per child flow run the GPU slots allow
    assert fan_out_threads(fanned.model_copy(update={"workers": 16})) == 16
