"""What a catalog run reads, counted at the HTTP level on a real S3 endpoint (moto behind a counting proxy).

A first run reads each image once; a run where nothing changed reads listings and a few objects of
ours, no image and nothing per concept; after one image changes, only that concept's images are read.
Tokens such as ``<café-猫>`` are learned and published; tokens the pipeline cannot carry fail at scan
time, before their images are read.
"""

from __future__ import annotations

import json
import uuid

import pytest

from tests.conftest import BUCKET, write_shape_images
from tests.storage.counting_proxy import CountingProxy, by_kind, keys_read

pytestmark = pytest.mark.slow

IMAGES = (".png",)


@pytest.fixture
def proxy(moto_endpoint, s3_client, monkeypatch):
    proxy = CountingProxy(moto_endpoint).start()
    monkeypatch.setenv("AWS_ENDPOINT_URL", proxy.endpoint)
    yield proxy
    proxy.stop()


def _upload_concept(s3_client, prefix: str, concept_id: str, folder, meta: dict | None = None) -> list[str]:
    keys = []
    for path in sorted(folder.glob("*.png")):
        key = f"{prefix}/{concept_id}/{path.name}"
        s3_client.put_object(Bucket=BUCKET, Key=key, Body=path.read_bytes())
        keys.append(key)
    if meta is not None:
        s3_client.put_object(Bucket=BUCKET, Key=f"{prefix}/{concept_id}/concept.json", Body=json.dumps(meta))
    return keys


def _run(catalog, out, model, clip, run_id):
    from flows.learn import learn_catalog
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    learn = LearnSettings(model=str(model), steps=1, batch_size=1)
    evaluation = EvalSettings(
        prompts=["a photo of {}"], samples=1, render_steps=1, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
    )
    run = RunSettings(device="cpu", checkpoint_every=0, workers=2, concepts_per_batch=2)
    return learn_catalog(
        catalog=catalog, out=out, learn=learn, evaluation=evaluation, run=run, run_id=run_id, return_state=True
    )


def _statuses(out, run_id):
    from storage.metrics import read_metrics

    return {r["concept_id"]: r["status"] for r in read_metrics(out).to_pylist() if r["run_id"] == run_id}


def test_nightly_runs_read_what_changed(prefect_harness, proxy, s3_client, tiny_model_dir, tmp_path):
    from inversion.embeddings.formats import a1111_filename
    from inversion.evaluation.clip import write_tiny_clip
    from storage.results import ResultStore

    clip = write_tiny_clip(tmp_path / "clip.pt")
    root = f"scale-{uuid.uuid4().hex[:8]}"
    prefix = f"{root}/catalog"
    images = {
        "red": _upload_concept(s3_client, prefix, "red", write_shape_images(tmp_path / "red", 2, (200, 40, 40))),
        "blue": _upload_concept(
            s3_client,
            prefix,
            "blue",
            write_shape_images(tmp_path / "blue", 2, (40, 40, 200), seed=1),
            {"token": "<café-猫>", "class": "square"},
        ),
        "green": _upload_concept(
            s3_client, prefix, "green", write_shape_images(tmp_path / "green", 2, (40, 200, 40), seed=2)
        ),
    }
    spaced = _upload_concept(
        s3_client, prefix, "spaced", write_shape_images(tmp_path / "spaced", 2, seed=3), {"token": "<two words>"}
    )
    catalog, out = f"s3://{BUCKET}/{prefix}", f"s3://{BUCKET}/{root}/out"

    # first run: every usable concept's images are read once, by its own staging
    first = _run(catalog, out, tiny_model_dir, clip, "run-1")
    requests = proxy.reset()
    assert _statuses(out, "run-1") == {"red": "ok", "blue": "ok", "green": "ok", "spaced": "failed"}
    assert first.is_failed()  # "spaced" cannot be learned
    assert sorted(keys_read(requests, prefix + "/", IMAGES)) == sorted(k for keys in images.values() for k in keys)
    assert not set(spaced) & set(keys_read(requests, prefix + "/")), "a refused token's images are never read"
    blue = ResultStore.open(out)
    digest = blue.completed_digests("blue")[0]
    assert a1111_filename("<café-猫>") in blue.read_manifest("blue", digest).files

    # nothing changed: listings and a constant number of our own objects; no image, nothing per concept
    proxy.reset()
    _run(catalog, out, tiny_model_dir, clip, "run-2")
    requests = proxy.reset()
    assert _statuses(out, "run-2") == {"red": "skipped", "blue": "skipped", "green": "skipped", "spaced": "failed"}
    catalog_reads = keys_read(requests, prefix + "/")
    # the catalog's one optional file of its own (compositions, README "Compositions") is read once per run
    assert catalog_reads in ([], [f"{prefix}/_compositions.json"]), "not even a concept.json is read again"
    per_concept = [r for r in requests if r.kind in ("GET", "HEAD") and r.key.startswith(f"{root}/out/embeddings/")]
    assert per_concept == [], "the skip check is one listing, not a request per concept"
    read = {
        r.key.removeprefix(f"{root}/out/")
        for r in requests
        if r.kind in ("GET", "HEAD") and r.key.startswith(f"{root}/out/")
    }
    assert {k for k in read if not k.startswith("reports/")} == {
        "state/catalog-scan.json.gz",
        "embeddings_index/index.parquet",
    }, read
    assert by_kind(requests)["LIST"] <= 4, "preflight, the catalog, embeddings/ (one page each here)"

    # one image of one concept changes: only that concept's images are read, once each
    s3_client.put_object(
        Bucket=BUCKET,
        Key=images["green"][0],
        Body=(write_shape_images(tmp_path / "green2", 1, (10, 90, 10), seed=7) / "00.png").read_bytes(),
    )
    _run(catalog, out, tiny_model_dir, clip, "run-3")
    requests = proxy.reset()
    assert _statuses(out, "run-3") == {"red": "skipped", "blue": "skipped", "green": "ok", "spaced": "failed"}
    assert sorted(keys_read(requests, prefix + "/", IMAGES)) == sorted(images["green"])
