"""The composition bench (bench/quality/compose.py, issue 15): its measures on known inputs, and a smoke run
of the whole code path on the world model at tiny settings (seconds; the numbers mean nothing)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from bench.quality import compose as C
from bench.world import generate as G
from bench.world import oracle as O


def test_size_words_name_the_size_of_generated_scenes_of_every_shape():
    attrs = G.sample_attributes(np.random.default_rng(3), 600)
    measurement = O.measure(G.render(attrs))
    for index, shape in enumerate(G.SHAPES):
        rows = attrs["shape"] == index
        sub = O.Measurement(
            measurement.hue[rows],
            measurement.hue_concentration[rows],
            measurement.background[rows],
            measurement.size[rows],
        )
        assert (O.size_words(sub, shape) == attrs["size_word"][rows]).all(), shape
    with pytest.raises(ValueError, match="hexagon"):
        O.size_words(measurement, "hexagon")


def test_prompts_follow_the_worlds_caption_grammar():
    concept = G.HELD_OUT[0]
    gray, small = (next(e for e in C.EDITS if e.name == name) for name in ("gray background", "small"))
    assert C.word_prompt("<t>", C.EDITS[0]) == "a photo of a <t>"
    assert C.word_prompt("<t>", gray) == "a photo of a <t> on a gray background"
    assert C.word_prompt("<t>", small) == "a photo of a small <t>"
    assert C.caption_prompt(concept, C.EDITS[0]) == concept.best_caption()
    assert C.caption_prompt(concept, gray) == "a photo of a large orange circle on a gray background"
    assert C.caption_prompt(concept, small) == "a photo of a small orange circle on a white background"
    varied = G.HELD_OUT_VARIED[0]  # its best caption names no background or size, so an edit adds one
    assert C.caption_prompt(varied, C.EDITS[0]) == varied.best_caption() == "a photo of a orange circle"
    assert C.caption_prompt(varied, gray) == "a photo of a orange circle on a gray background"
    assert C.caption_prompt(varied, small) == "a photo of a small orange circle"


def test_unwrap_on_arc_follows_the_short_arc_across_zero():
    arc = C.unwrap_on_arc(np.array([22.5, 0.0, 337.5, 292.5, np.nan]), 22.5, 292.5)
    assert arc[:4] == pytest.approx([22.5, 0.0, -22.5, -67.5])
    assert np.isnan(arc[4])
    assert C.unwrap_on_arc(np.array([100.0, 150.0]), 90.0, 160.0) == pytest.approx([100.0, 150.0])


def test_spearman_on_known_orders():
    w = [0, 0.25, 0.5, 0.75, 1]
    assert C.spearman(w, [5, 4, 3, 2, 1]) == pytest.approx(-1.0)
    assert C.spearman(w, [1, 3, 2, 4, 5]) == pytest.approx(0.9)  # one neighbouring swap
    assert C.spearman(w, [1, 1, 2, 3, 4]) == pytest.approx(np.corrcoef([0, 1, 2, 3, 4], [0.5, 0.5, 2, 3, 4])[0, 1])
    assert np.isnan(C.spearman(w, [2, 2, 2, 2, 2]))


def test_blend_path_measures_the_deviation_from_the_straight_line_between_the_ends():
    points = [{"w": w, "arc_hue": h} for w, h in [(0, 20.0), (0.5, -10.0), (1, -60.0)]]
    path = C.blend_path(points)
    assert path["spearman"] == pytest.approx(-1.0)
    assert path["max_deviation"] == pytest.approx(10.0)  # the line passes -20 at w = 0.5


def test_word_summary_takes_the_worst_edit_and_pools_the_accuracies():
    def row(edit, error, bg=1.0, size=1.0):
        return {
            "edit": edit.name,
            "median_hue_error": error,
            "hue_errors": [error] * 3,
            "background_accuracy": bg,
            "size_accuracy": size,
            "within_10": 1.0,
        }

    rows = [
        row(C.EDITS[0], 4.0),
        row(C.EDITS[1], 5.0, bg=0.8),
        row(C.EDITS[2], 7.0),
        row(C.EDITS[3], 5.0),
        row(C.EDITS[4], 5.0, size=0.9),
        row(C.EDITS[5], 5.0),
    ]
    summary = C.summarise_word(rows)
    assert summary["worst_edit"] == "gray background" and summary["worst_edit_ratio"] == pytest.approx(1.75)
    assert summary["background_accuracy"] == pytest.approx(2.8 / 3) and summary["background_accuracy_min"] == 0.8
    assert summary["size_accuracy"] == pytest.approx(0.95) and summary["edited_hue_error"] == 5.0
    assert not summary["targets_met"]
    rows[2] = row(C.EDITS[2], 6.0)
    rows[1] = row(C.EDITS[1], 5.0, bg=0.9)
    assert C.summarise_word(rows)["targets_met"]


def test_settings_refuse_a_blend_pair_outside_the_concepts():
    with pytest.raises(ValueError, match="blend_pair"):
        C.ComposeSettings(concepts=("held-red-orange-circle",))
    with pytest.raises(ValueError, match="held-blue"):
        C.ComposeSettings(concepts=("held-blue",))


@pytest.mark.timeout(300)
def test_fast_run_writes_every_part(tmp_path, capsys):
    out = tmp_path / "compose"
    assert (
        C.main(
            ["--fast", "--out", str(out), "--device", "cpu", "--samples", "1", "--steps", "2", "--render-steps", "2"]
        )
        == 0
    )
    printed = capsys.readouterr().out
    for title in ("1. editability", "2. blends", "3. strength", "4. vectors", "straighter path"):
        assert title in printed
    edits = list(csv.DictReader((out / "edits.csv").open()))
    concepts, words = C.FAST.concepts, [*(f"{v}v" for v in C.FAST.vectors), C.CAPTION]
    assert {(r["concept"], r["word"], r["edit"]) for r in edits} == {
        (c, w, e.name) for c in concepts for w in words for e in C.EDITS
    }
    blends = list(csv.DictReader((out / "blends.csv").open()))
    assert [(r["mode"], float(r["w"])) for r in blends] == [(m, w) for m in C.BLEND_MODES for w in C.FAST.blend_weights]
    result = json.loads((out / "compose.json").read_text())
    unedited = {r["concept"]: r for r in result["edits"] if r["word"] == "1v" and r["edit"] == "unedited"}
    # a blend at w = 0 is parent A and at w = 1 parent B (slerp to float precision); at strength 1 the
    # prompt encodes as the plain one
    for mode in result["blend_modes"]:
        assert mode["end_a_vs_parent"] < 0.5 and mode["end_b_vs_parent"] < 0.5, mode
    for row in result["strength"]:
        if row["strength"] == 1.0:
            assert row["median_hue_error"] == unedited[row["concept"]]["median_hue_error"]
    assert {w["word"] for w in result["words"]} == set(words)
    assert result["settings"]["samples"] == 1 and result["load_average_before"]
