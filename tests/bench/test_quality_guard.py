"""Regression guard of Textual Inversion quality in the toy world (issue 6).

Learns held-out concepts with our trainer's defaults (TrainConfig(), 600 steps; in one pack, which
gives each concept exactly its own gradient, to share the UNet passes) on the committed world model and
asserts that the learned word's median hue error is below 0.7 × the best caption's; and the same with
``--stop plateau``, the catalog default, which must also stop early.

The weights are committed (``toyworld/weights/``, trained once by ``python -m bench.world.train``);
the test never retrains them.
"""

from __future__ import annotations

import pytest

from toyworld import MODEL_DIR as WEIGHTS


@pytest.fixture(autouse=True)
def one_torch_thread():
    """The world's tensors are tiny: one intra-op thread, as the demo runs (flows/demo.py). On the shared
    2-core machine (load 8-15) two threads spin-waited for a preempted partner: the plateau guard ran past
    its 900 s limit with two threads and took 266 s with one."""
    from inversion.device import torch_threads

    with torch_threads(1):
        yield


# With the H200-trained weights the learned word's median hue error was 3-7° against the best caption's
# 23-28° (ratio 0.12-0.26) on all 4 held-out concepts: far from the 0.7 bar, but a broken trainer starts
# from the shape word, which says nothing about hue (~90° error). The fixed-step guard trains the first 2
# of them (a packed concept's result equals training it alone, so they are the same words as in the
# 4-concept tables): 600 pack steps of 4 concepts took 172 s of a 14-minute suite, of 2 concepts 87 s.


@pytest.mark.timeout(900)
def test_learned_word_beats_the_best_caption_on_hue():
    from bench.quality.run import QualitySettings, format_table, run_quality

    settings = QualitySettings(
        concepts=2, samples=16, render_steps=20, guidance=3.0, recipe_curve=False, clip=False, pack=True, device="cpu"
    )
    rows = run_quality(WEIGHTS, None, settings, log=lambda message: None)
    table = format_table(rows)
    assert [r["train_steps"] for r in rows] == [600, 600], table
    wins = [r["concept"] for r in rows if r["learned_median_hue_error"] < 0.7 * r["caption_median_hue_error"]]
    assert len(wins) == 2, table


@pytest.mark.timeout(900)
def test_plateau_stops_early_without_losing_quality():
    """``--stop plateau`` (the catalog default): every concept stops on its own well before the 600-step cap
    (bench/quality measured 100-200 steps), and the learned word still beats the best caption as the
    fixed-step guard demands (one pack; ~40 s on 2 quiet cores)."""
    from bench.quality.run import QualitySettings, format_table, run_quality

    settings = QualitySettings(
        concepts=4,
        samples=16,
        render_steps=20,
        guidance=3.0,
        recipe_curve=False,
        clip=False,
        pack=True,
        device="cpu",
        stop="plateau",
    )
    rows = run_quality(WEIGHTS, None, settings, log=lambda message: None)
    table = format_table(rows)
    assert all(r["stop_reason"] == "plateau" and r["train_steps"] <= 200 for r in rows), table
    wins = [r["concept"] for r in rows if r["learned_median_hue_error"] < 0.7 * r["caption_median_hue_error"]]
    assert len(wins) >= 3, table
    assert sorted(r["learned_median_hue_error"] for r in rows)[2] < 10.0, table  # 3 of 4 within 10° of the hue


def test_fast_mode_measures_the_curve_at_each_checkpoint():
    """The time-to-quality curve (read back from the trainer's checkpoints), in the --fast settings."""
    from dataclasses import replace

    from bench.quality.run import FAST, run_quality

    settings = replace(FAST, concepts=1, clip=False, recipe_curve=False, device="cpu")
    (row,) = run_quality(WEIGHTS, None, settings, log=lambda message: None)
    assert [point["step"] for point in row["curve_defaults"]] == [0, 3, 6]
    assert row["train_steps"] == 6 and row["time_to_quality_defaults"]["steps"] in (0, 3, 6)
    assert all(0 <= point["median_hue_error"] <= 180 for point in row["curve_defaults"])
