"""Compositions end to end on a real S3 endpoint (moto server): after the concepts are learned, each entry of
``_compositions.json`` is rendered and scored, written as rows beside the metrics and shown in the report; a
composition naming a failed or missing concept is a failed row naming it; an unchanged composition is not
rendered again, one whose concept changed is."""

from __future__ import annotations

import io
import json
import uuid

import numpy as np
import pytest
from PIL import Image

pytestmark = pytest.mark.slow

COMPOSITIONS = [
    {"id": "mug-in-brand", "prompt": "a photo of {mug} in the style of ({brand}:0.8)"},
    {"id": "mug-alone", "prompt": "a photo of a {mug}"},
    {"id": "with-broken", "prompt": "a {mug} next to {broken}"},
    {"id": "with-ghost", "prompt": "a {mug} next to {ghost}"},
]


def _png(color, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    pixels = np.full((64, 64, 3), 128, dtype=np.uint8)
    x, y = rng.integers(0, 32, size=2)
    pixels[y : y + 32, x : x + 32] = color
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    from inversion.evaluation.clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip.pt")


@pytest.fixture
def s3_catalog(s3_client, moto_endpoint, monkeypatch):
    from tests.conftest import BUCKET

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_endpoint)
    prefix = f"compose-{uuid.uuid4().hex[:8]}"
    for concept_id, color, class_name in (("mug", (200, 40, 40), "mug"), ("brand", (40, 40, 200), "painting")):
        for i in range(2):
            s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/{concept_id}/{i:02d}.png", Body=_png(color, i))
        s3_client.put_object(
            Bucket=BUCKET,
            Key=f"{prefix}/catalog/{concept_id}/concept.json",
            Body=json.dumps({"initializer": class_name, "class": class_name}),
        )
    s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/broken/00.jpg", Body=b"\xff\xd8\xff not a jpeg")
    s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/_compositions.json", Body=json.dumps(COMPOSITIONS))
    return prefix, f"s3://{BUCKET}/{prefix}/catalog", f"s3://{BUCKET}/{prefix}/out"


def _run(catalog, out, model, clip, run_id):
    from flows.learn import learn_catalog
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    learn = LearnSettings(model=str(model), steps=2, batch_size=2)
    evaluation = EvalSettings(
        prompts=["a photo of {}"], samples=2, render_steps=2, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
    )
    run = RunSettings(device="cpu", workers=1, concepts_per_batch=2)
    return learn_catalog(
        catalog=catalog, out=out, learn=learn, evaluation=evaluation, run=run, run_id=run_id, return_state=True
    )


def _rows(out, run_id):
    from storage.compositions import read_composition_rows

    return {r["composition_id"]: r for r in read_composition_rows(out).to_pylist() if r["run_id"] == run_id}


def test_compositions_are_rendered_scored_reported_and_reused(
    prefect_harness, s3_catalog, s3_client, tiny_model_dir, clip_checkpoint
):
    from storage.compositions import composition_prefix
    from storage.metrics import read_metrics
    from tests.conftest import BUCKET

    prefix, catalog, out = s3_catalog
    first = _run(catalog, out, tiny_model_dir, clip_checkpoint, "run-1")
    assert first.is_failed()  # the broken concept
    rows = _rows(out, "run-1")
    assert {cid: r["status"] for cid, r in rows.items()} == {
        "mug-in-brand": "ok",
        "mug-alone": "ok",
        "with-broken": "failed",
        "with-ghost": "failed",
    }
    assert rows["with-broken"]["error"].startswith("concept broken failed: ")
    assert rows["with-ghost"]["error"] == "concept ghost is not a usable concept of the catalog"
    blend = rows["mug-in-brand"]
    assert blend["concepts"] == ["mug", "brand"] and len(blend["image_similarities"]) == 2
    concept_rows = {r["concept_id"]: r for r in read_metrics(out).to_pylist() if r["run_id"] == "run-1"}
    assert blend["digests"] == [concept_rows["mug"]["digest"], concept_rows["brand"]["digest"]]
    assert all(-1 <= v <= 1 for v in blend["image_similarities"]) and -1 <= blend["text_similarity"] <= 1
    assert blend["min_image_similarity"] == pytest.approx(min(blend["image_similarities"]))
    result = f"{prefix}/out/{composition_prefix('mug-in-brand', blend['key'])}"
    scores = json.loads(s3_client.get_object(Bucket=BUCKET, Key=f"{result}/scores.json")["Body"].read())
    assert scores["prompt"] == "a photo of <mug> in the style of (<brand>:0.8)"
    assert scores["text_prompt"] == "a photo of mug in the style of painting"
    grid = Image.open(io.BytesIO(s3_client.get_object(Bucket=BUCKET, Key=f"{result}/grid.png")["Body"].read()))
    assert grid.width >= 2 * 32
    report = s3_client.get_object(Bucket=BUCKET, Key=f"{prefix}/out/reports/run-1.html")["Body"].read().decode()
    assert "Compositions (4)" in report and f"../compositions/mug-in-brand/{blend['key']}/grid.thumb.jpg" in report
    assert "concept ghost is not a usable concept of the catalog" in report

    # nothing changed: the compositions are reused, not rendered again
    _run(catalog, out, tiny_model_dir, clip_checkpoint, "run-2")
    again = _rows(out, "run-2")
    assert again["mug-in-brand"]["status"] == "skipped" and again["mug-in-brand"]["key"] == blend["key"]
    assert again["mug-in-brand"]["image_similarities"] == blend["image_similarities"]

    # one concept's images change: the composition naming it is rendered again, the other is not
    s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/catalog/brand/01.png", Body=_png((40, 200, 40), 7))
    _run(catalog, out, tiny_model_dir, clip_checkpoint, "run-3")
    third = _rows(out, "run-3")
    assert third["mug-in-brand"]["status"] == "ok" and third["mug-in-brand"]["key"] != blend["key"]
    assert third["mug-alone"]["status"] == "skipped" and third["mug-alone"]["key"] == rows["mug-alone"]["key"]
