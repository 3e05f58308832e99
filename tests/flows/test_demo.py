"""``sstar demo``: the toy world's held-out concepts learned on the world's model, through the real CLI on a
brand-new Prefect home — exit 0, and the learned word beats the best caption (lift > 0) on at least 3 of 4."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from flows.demo import prepare_demo
from inversion.errors import InputError

REPO = Path(__file__).resolve().parents[2]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_demo_shows_the_method_working(tmp_path) -> None:
    env = {**os.environ, "PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(REPO)}
    env.pop("PREFECT_API_URL", None)
    demo_dir = tmp_path / "demo"
    done = subprocess.run(
        [sys.executable, "-m", "flows.cli", "demo", "--dir", str(demo_dir)],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=1100,
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    from storage.metrics import read_metrics

    rows = read_metrics(str(demo_dir / "out")).to_pylist()
    lifts = {r["concept_id"]: r["inversion_lift"] for r in rows}
    assert len(lifts) == 4 and all(r["status"] == "ok" for r in rows), rows
    assert sum(lift > 0 for lift in lifts.values()) >= 3, lifts
    assert all(r["baseline_image_similarity"] is not None for r in rows)
    summary = json.loads(next((demo_dir / "out" / "runs").glob("*/summary.json")).read_text())
    assert summary["mean_inversion_lift"] > 0
    report = (demo_dir / "out" / "reports" / "latest.html").read_text(encoding="utf-8")
    assert "grid.thumb.jpg" in report and "baseline_grid.thumb.jpg" in report
    assert (demo_dir / "out" / "reports" / "dashboard.html").is_file()


def test_world_demo_catalog_and_settings(tmp_path) -> None:
    import toyworld
    from toyworld.scenes import HELD_OUT

    demo = prepare_demo(tmp_path)
    concepts = sorted(p.name for p in demo.catalog.iterdir())
    assert concepts == sorted(c.name for c in HELD_OUT)
    meta = json.loads((demo.catalog / HELD_OUT[0].name / "concept.json").read_text())
    assert meta == {
        "token": f"<{HELD_OUT[0].name}>",
        "initializer": HELD_OUT[0].shape,
        "class": HELD_OUT[0].shape,
        "captions": [HELD_OUT[0].best_caption()],
    }
    assert len(list((demo.catalog / HELD_OUT[0].name).glob("*.png"))) == 4
    assert demo.learn.model == str(toyworld.MODEL_DIR) and demo.evaluation.clip_arch == toyworld.CLIP_ARCH
    assert Path(demo.evaluation.clip_checkpoint).is_file()
    assert demo.run.concepts_per_batch == len(HELD_OUT)


def test_random_models_demo_keeps_the_plumbing_catalog(tmp_path) -> None:
    demo = prepare_demo(tmp_path, random_models=True, steps=3)
    assert sorted(p.name for p in demo.catalog.iterdir()) == ["blue-box", "green-tent", "red-ball", "stripes-style"]
    assert demo.learn.steps == 3 and demo.evaluation.clip_arch == "sstar-tiny-clip"
    with pytest.raises(InputError, match="holds another catalog"):
        prepare_demo(tmp_path)  # the world demo refuses the other demo's catalog
