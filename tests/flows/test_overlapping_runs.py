"""Overlapping runs lose nothing (issue 20): two ``sstar learn`` commands on overlapping catalogs write one
output at the same time, locally and on S3 (moto). Both finish; the embeddings index and the dashboard state
hold every concept of both catalogs; a concept in both catalogs is trained by one run only (its claim), and
the other run counts its published result as a ``skipped`` row. Without the claims both runs train the shared
concepts (two ``ok`` rows, or a failed publish of different bytes)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections import Counter
from pathlib import Path

import pytest

from tests.conftest import BUCKET, write_shape_images
from tests.flows.sstar_cli import learn_argv

pytestmark = pytest.mark.slow

SHARED = ("shared-red", "shared-blue")
ONLY = {"a": "only-green", "b": "only-yellow"}
COLOURS = {"shared-red": (200, 40, 40), "shared-blue": (40, 40, 200), "only-green": (40, 200, 40)}
COLOURS["only-yellow"] = (200, 200, 40)


def _catalog(root: Path, concepts: tuple[str, ...]) -> Path:
    for concept in concepts:
        write_shape_images(root / concept, 2, COLOURS[concept], seed=sorted(COLOURS).index(concept))
        (root / concept / "concept.json").write_text(json.dumps({"initializer": "square"}))
    return root


def _start(argv: list[str], env: dict[str, str], log: Path) -> subprocess.Popen:
    with open(log, "wb") as out:
        return subprocess.Popen(
            [sys.executable, "-m", "flows.cli", *argv], env=env, stdout=out, stderr=subprocess.STDOUT
        )


@pytest.mark.parametrize("backend", ["local", "s3"])
def test_two_commands_on_one_output_lose_nothing(
    prefect_harness, tiny_model_dir, tmp_path, request, monkeypatch, backend
):
    from prefect.settings import PREFECT_API_URL

    from inversion.evaluation.clip import write_tiny_clip
    from reports.dashboard import STATE_KEY, DashboardState
    from storage.metrics import read_embeddings_index, read_metrics
    from storage.store.open import open_store
    from tasks.concurrency import ensure_gpu_limit

    clip = write_tiny_clip(tmp_path / "clip" / "tiny.pt")
    (clip.parent / "prompts.txt").write_text("a photo of {}\n")
    catalogs = {run: _catalog(tmp_path / f"catalog-{run}", (*SHARED, only)) for run, only in ONLY.items()}
    out: str = str(tmp_path / "out")
    if backend == "s3":
        request.getfixturevalue("s3_client")  # moto up, the bucket made, credentials in the environment
        monkeypatch.setenv("AWS_ENDPOINT_URL", request.getfixturevalue("moto_endpoint"))  # for both commands and us
        out = f"s3://{BUCKET}/overlap-{uuid.uuid4().hex[:8]}/out"
    env = {**os.environ, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}
    options = dict(steps=30, batch_size=1, samples=1, render_steps=2, device="cpu", workers=2, concepts_per_batch=3)
    options |= dict(prompts=clip.parent / "prompts.txt", checkpoint_every=0)

    # 1. both commands at once, on one output (and one Prefect server: the GPU limit made first, since two
    # commands creating it at once on a fresh server race in tasks.concurrency.ensure_gpu_limit)
    ensure_gpu_limit("sstar-gpu", 1, update=False)
    started = time.monotonic()
    procs = {
        run: _start(learn_argv(catalog, out, tiny_model_dir, tiny_clip=clip, **options), env, tmp_path / f"{run}.log")
        for run, catalog in catalogs.items()
    }
    codes = {run: proc.wait(timeout=900) for run, proc in procs.items()}
    logs = {run: (tmp_path / f"{run}.log").read_text() for run in procs}
    waited = sum("another run is training it now" in log for log in logs.values())
    print(f"two overlapping runs on {backend}: {time.monotonic() - started:.0f} s; a run waited on a claim: {waited}")
    assert codes == {"a": 0, "b": 0}, {run: logs[run][-3000:] for run in logs}

    # 2. every concept once: one ok row each, the other run's row of a shared concept is skipped
    rows = read_metrics(out).to_pylist()
    assert len({r["run_id"] for r in rows}) == 2
    ok = Counter(r["concept_id"] for r in rows if r["status"] == "ok")
    assert ok == Counter({c: 1 for c in (*SHARED, *ONLY.values())}), (ok, logs)
    assert Counter(r["concept_id"] for r in rows if r["status"] == "skipped") == Counter(SHARED)
    published = sum(log.count(" published to ") for log in logs.values())
    assert published == 4, "a shared concept was trained and published by both runs"

    # 3. the index and the dashboard state hold every concept; no claim is left behind
    everything = {*SHARED, *ONLY.values()}
    assert {r["concept_id"] for r in read_embeddings_index(out).to_pylist()} == everything
    store = open_store(out)
    state = DashboardState.from_parquet(store.get(STATE_KEY))
    assert set(state.latest) == everything and set(state.latest_ok) == everything
    assert len(state.runs) == 2
    assert list(store.list("claims/")) == []
