"""Why a concept is learned again, end to end: three learn_catalog runs over a two-concept catalog on the tiny
model (1 step, one prompt, one sample). The first learns both as ``new``; after one concept's image changes,
the second learns that one (``images changed``) and skips the other; after a model upgrade (the same weights
with one more file in the scheduler folder: another fingerprint), the third learns both again
(``model changed``). Each reason is checked in the metrics rows and in the run's report."""

from __future__ import annotations

import gzip
import json
import shutil

import pytest

from tests.conftest import write_shape_images

pytestmark = pytest.mark.slow


def _learn(catalog, out, model, clip, run_id: str) -> None:
    from flows.learn import learn_catalog
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    learn_catalog(
        catalog=str(catalog),
        out=str(out),
        learn=LearnSettings(model=str(model), steps=1, batch_size=1),
        evaluation=EvalSettings(
            prompts=["a photo of {}"], samples=1, render_steps=1, clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip)
        ),
        run=RunSettings(device="cpu", checkpoint_every=0, workers=2, concepts_per_batch=2),
        run_id=run_id,
        return_state=True,
    )


def _reasons(out, run_id: str) -> dict[str, tuple[str, str | None]]:
    from storage.metrics import read_metrics

    return {
        r["concept_id"]: (r["status"], r["relearn_reason"])
        for r in read_metrics(str(out)).to_pylist()
        if r["run_id"] == run_id
    }


def test_each_run_says_why_it_learned_each_concept(prefect_harness, tiny_model_dir, tmp_path) -> None:
    from inversion.evaluation.clip import write_tiny_clip

    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_shape_images(catalog / "red-square", count=2, color=(220, 30, 30), seed=1)
    write_shape_images(catalog / "blue-square", count=2, color=(30, 30, 220), seed=2)
    clip = write_tiny_clip(tmp_path / "tiny-clip.pt")

    _learn(catalog, out, tiny_model_dir, clip, "why-1")
    assert _reasons(out, "why-1") == {"red-square": ("ok", "new"), "blue-square": ("ok", "new")}
    report = (out / "reports" / "why-1.html").read_text()
    assert "Learned in this run because: <b>2 new</b>" in report
    assert report.count("why learned: <b>new</b>") == 2

    write_shape_images(catalog / "red-square", count=1, color=(250, 120, 0), seed=3)  # 00.png is another image
    _learn(catalog, out, tiny_model_dir, clip, "why-2")
    assert _reasons(out, "why-2") == {"red-square": ("ok", "images changed"), "blue-square": ("skipped", None)}
    report = (out / "reports" / "why-2.html").read_text()
    assert "Learned in this run because: <b>1 images changed</b>." in report
    assert report.count("why learned: <b>images changed</b>") == 1 and "model changed" not in report

    upgraded = tmp_path / "upgraded-model"
    shutil.copytree(tiny_model_dir, upgraded)
    (upgraded / "scheduler" / "UPGRADE-NOTES.txt").write_text("new weights\n")  # read by the fingerprint only
    _learn(catalog, out, upgraded, clip, "why-3")
    assert _reasons(out, "why-3") == {"red-square": ("ok", "model changed"), "blue-square": ("ok", "model changed")}
    report = (out / "reports" / "why-3.html").read_text()
    assert "Learned in this run because: <b>2 model changed</b>." in report
    assert "the whole catalog is learned again" in report
    assert report.count("why learned: <b>model changed</b>") == 2

    state = json.loads(gzip.decompress((out / "state" / "catalog-scan.json.gz").read_bytes()))
    assert set(state["learned"]) == {"red-square", "blue-square"}
    models = {model for model, _settings, _digest in state["setups"].values()}
    assert len(models) == 2, "the old model's setup is kept while a concept's complete result still refers to it"
