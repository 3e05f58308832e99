"""The catalog flow on tiny Flux and SD 3 (issue 23): a pack of two concepts learned in every text encoder (T5
included) with flow matching, scored, published with the family's files, indexed by the file that stands for the
word (ComfyUI's ``<token-slug>.safetensors``: these families write no ``learned_embeds.safetensors``), and the
metrics rows naming the family. 1 step, 1 prompt, 1 sample, 2 render steps on the tiny models."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tests.conftest import write_shape_images

pytestmark = pytest.mark.slow

#: the family's published word files: ComfyUI's single file (the word's file), and for Flux diffusers' pair file
FILES = {"flux": ("{c}.safetensors", "{c}_emb.safetensors"), "sd3": ("{c}.safetensors",)}
#: the tiny models' text encoders' widths (CLIP-L, [CLIP-G,] T5)
WIDTHS = {"flux": (32, 96), "sd3": (32, 48, 96)}
CONCEPTS = ("blue-square", "red-square")


@pytest.mark.parametrize("family", ["flux", "sd3"])
def test_learn_catalog_on_a_flow_matching_family(prefect_harness, family, request, tmp_path):
    from flows.learn import learn_catalog
    from inversion.embeddings.formats import load_embedding
    from inversion.evaluation.clip import write_tiny_clip
    from storage.metrics import read_embeddings_index, read_metrics
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    model = request.getfixturevalue(f"{family}_tiny_model_dir")
    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_shape_images(catalog / "red-square", count=2, color=(220, 30, 30), size=48, seed=1)
    write_shape_images(catalog / "blue-square", count=2, color=(30, 30, 220), size=48, seed=2)
    learn = LearnSettings(model=str(model), steps=1, batch_size=1, resolution=32)
    evaluation = EvalSettings(
        prompts=["a photo of {}"],
        samples=1,
        render_steps=2,
        guidance=3.5,
        clip_arch="sstar-tiny-clip",
        clip_checkpoint=str(write_tiny_clip(tmp_path / "tiny-clip.pt")),
    )
    run = RunSettings(device="cpu", checkpoint_every=1, workers=1, concepts_per_batch=2)
    learn_catalog(
        catalog=str(catalog), out=str(out), learn=learn, evaluation=evaluation, run=run, run_id=f"{family}-run"
    )

    rows = {r["concept_id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert {c: (r["status"], r["model_family"]) for c, r in rows.items()} == dict.fromkeys(CONCEPTS, ("ok", family)), (
        rows
    )
    indexed = {r["concept_id"]: r for r in read_embeddings_index(str(out)).to_pylist()}
    assert sorted(indexed) == list(CONCEPTS), indexed
    for concept_id, row in rows.items():
        assert (indexed[concept_id]["digest"], indexed[concept_id]["run_id"]) == (row["digest"], f"{family}-run")
        result = out / "embeddings" / concept_id / row["digest"]
        names = {p.name for p in result.iterdir()}
        expected = {name.format(c=concept_id) for name in FILES[family]}
        assert expected | {"grid.png", "scores.json", "training.json", "_SUCCESS"} <= names, names
        assert "learned_embeds.safetensors" not in names
        for name in expected:
            word = load_embedding(result / name)
            assert (word.token, word.family, word.widths) == (f"<{concept_id}>", family, WIDTHS[family])
        word_file = result / f"{concept_id}.safetensors"
        assert row["embedding_uri"] == indexed[concept_id]["embedding_uri"]
        assert Path(row["embedding_uri"].removeprefix("file://")) == word_file, row["embedding_uri"]
    # a second run learns nothing: its skipped rows and the report link the same word files
    learn_catalog(
        catalog=str(catalog), out=str(out), learn=learn, evaluation=evaluation, run=run, run_id=f"{family}-again"
    )
    again = {r["concept_id"]: r for r in read_metrics(str(out)).to_pylist() if r["run_id"] == f"{family}-again"}
    assert {c: (r["status"], r["embedding_uri"]) for c, r in again.items()} == {
        c: ("skipped", r["embedding_uri"]) for c, r in rows.items()
    }
    page = (out / "reports" / "dashboard.html").read_text()
    data = json.loads(re.search(r"id='concept-data'>(.*?)</script>", page, re.S).group(1))  # type: ignore[union-attr]
    links = {r[0]: dict(zip(data["columns"], r))["embedding"] for r in data["rows"]}
    assert links == {c: f"{c}.safetensors" for c in CONCEPTS}
