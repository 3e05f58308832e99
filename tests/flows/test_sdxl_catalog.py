"""The catalog flow on a tiny SDXL model: a pack of two concepts learned in both text encoders, every
SDXL file published, and the metrics rows naming the family."""

from __future__ import annotations

from pathlib import Path

from tests.conftest import write_shape_images


def test_learn_catalog_on_sdxl(prefect_harness, sdxl_tiny_model_dir, tmp_path):
    from flows.learn import learn_catalog
    from inversion.embeddings.formats import load_embedding
    from inversion.evaluation.clip import write_tiny_clip
    from storage.metrics import read_metrics
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_shape_images(catalog / "red-square", color=(220, 30, 30), seed=1)
    write_shape_images(catalog / "blue-square", color=(30, 30, 220), seed=2)
    learn = LearnSettings(model=str(sdxl_tiny_model_dir), steps=2, batch_size=1)
    evaluation = EvalSettings(
        prompts=["a photo of {}"],
        samples=1,
        render_steps=2,
        clip_arch="sstar-tiny-clip",
        clip_checkpoint=str(write_tiny_clip(tmp_path / "tiny-clip.pt")),
    )
    run = RunSettings(device="cpu", checkpoint_every=1, workers=1, concepts_per_batch=2)
    learn_catalog(
        catalog=str(catalog),
        out=str(out),
        learn=learn,
        evaluation=evaluation,
        run=run,
        run_id="xl-run",
        return_state=True,
    )

    rows = {r["concept_id"]: r for r in read_metrics(str(out)).to_pylist()}
    assert {c: (r["status"], r["model_family"]) for c, r in rows.items()} == {
        "red-square": ("ok", "sdxl"),
        "blue-square": ("ok", "sdxl"),
    }, rows
    for concept_id in rows:
        (result,) = (out / "embeddings" / concept_id).iterdir()
        names = {p.name for p in result.iterdir()}
        assert {
            "learned_embeds.safetensors",
            "learned_embeds_2.safetensors",
            f"{concept_id}.safetensors",
            "grid.png",
            "_SUCCESS",
        } <= names, names
        for name in ("learned_embeds.safetensors", f"{concept_id}.safetensors"):
            word = load_embedding(Path(result / name), token=f"<{concept_id}>")
            assert word.token == f"<{concept_id}>" and word.widths == (32, 48)
