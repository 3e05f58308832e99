"""Preflight (issue 11, defect 2): ``sstar learn`` checks what the run needs before any training, and
on failure exits 2 with one line naming the option to fix, having written nothing under ``--out``."""

from __future__ import annotations

import contextlib
import io
import time

import pytest

from tests.conftest import write_shape_images
from tests.flows.sstar_cli import learn_argv


@pytest.fixture(scope="module")
def clip_checkpoint(tmp_path_factory):
    from inversion.evaluation.clip import write_tiny_clip

    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny-clip.pt")


def _learn(catalog, out, model, *extra: str) -> tuple[int, str, float]:
    """``sstar learn`` in this process (under the session's Prefect harness): exit code, stderr, seconds.
    stderr is redirected only around the call: Prefect's log handler keeps the stream it started with."""
    from flows.cli import main

    err = io.StringIO()
    started = time.monotonic()
    with contextlib.redirect_stderr(err):
        code = main([*learn_argv(catalog, out, model, steps=1, samples=1, render_steps=1, device="cpu"), *extra])
    return code, err.getvalue(), time.monotonic() - started


@pytest.mark.parametrize("case", ["default-clip-offline", "clip-file", "model", "catalog", "out"])
def test_learn_fails_fast_naming_the_option(
    case, prefect_harness, monkeypatch, tmp_path, tiny_model_dir, clip_checkpoint
):
    import huggingface_hub.constants

    catalog = tmp_path / "catalog"
    write_shape_images(catalog / "red", 2)
    out = tmp_path / "out"
    model = tiny_model_dir
    clip = ["--clip-arch", "sstar-tiny-clip", "--clip-checkpoint", str(clip_checkpoint)]
    if case == "default-clip-offline":  # the reported defect: ViT-B-32/openai needs a download
        monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
        clip, option = [], "--clip-checkpoint"
    elif case == "clip-file":
        clip, option = (
            ["--clip-arch", "sstar-tiny-clip", "--clip-checkpoint", str(tmp_path / "no-such.pt")],
            "--clip-checkpoint",
        )
    elif case == "model":
        model, option = tmp_path / "no-model", "--model"
    elif case == "catalog":
        catalog, option = tmp_path / "no-catalog", "--catalog"
    else:
        (tmp_path / "a-file").write_bytes(b"in the way")
        out, option = tmp_path / "a-file" / "out", "--out"

    code, err, seconds = _learn(catalog, out, model, *clip)
    assert code == 2, err
    lines = [line for line in err.splitlines() if line.startswith("sstar: error:")]
    assert len(lines) == 1 and lines[0].startswith(f"sstar: error: {option}:"), err
    assert not out.exists(), "a failed preflight writes nothing under --out"
    assert seconds < 60, f"preflight took {seconds:.0f} s"


def test_preflight_passes_and_leaves_no_probe(tmp_path, tiny_model_dir, clip_checkpoint):
    from tasks.preflight import preflight
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    catalog = write_shape_images(tmp_path / "catalog" / "red", 2).parent
    out = tmp_path / "out"
    preflight(
        str(catalog),
        str(out),
        LearnSettings(model=str(tiny_model_dir)),
        EvalSettings(clip_arch="sstar-tiny-clip", clip_checkpoint=str(clip_checkpoint)),
        RunSettings(device="cpu"),
    )
    assert out.is_dir() and list(out.iterdir()) == []
