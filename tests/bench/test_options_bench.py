"""The options table runner (bench/quality/options.py, issue 22): its rule parsing and option pass-through, and a
smoke run of one cell on the world model at tiny settings that a second run skips (the numbers mean nothing)."""

from __future__ import annotations

import csv
import dataclasses

import pytest

from bench.quality import options as B


def test_rule_and_names_are_checked():
    assert B.plateau_rule("10/3/20") == {"stop_every": 10, "stop_patience": 3, "stop_min_steps": 20}
    with pytest.raises(ValueError, match="every/patience/min_steps"):
        B.plateau_rule("10/3")
    with pytest.raises(ValueError, match="'blue'"):
        B.OptionsSettings(sets=("blue",))
    with pytest.raises(ValueError, match="'cross-cross'"):
        B.OptionsSettings(combos=("cross-cross",))


def test_train_config_passes_the_options_through_once_the_trainer_has_them():
    from inversion.config import TrainConfig

    config = B.train_config(B.OptionsSettings(rule="10/3/20", curve_every=10), "word-free", 32)
    assert (config.stop, config.stop_every, config.stop_patience, config.stop_min_steps) == ("plateau", 10, 3, 20)
    assert config.checkpoint_every == 10 and config.steps == TrainConfig().steps
    if {"init_mode", "norm_mode"} <= {f.name for f in dataclasses.fields(TrainConfig)}:
        cross = B.train_config(B.OptionsSettings(), "cross-vocab", 32)
        assert (cross.init_mode, cross.norm_mode) == ("cross", "vocab")  # type: ignore[attr-defined]
    else:
        with pytest.raises(SystemExit, match="only word-free"):
            B.train_config(B.OptionsSettings(), "cross-vocab", 32)


@pytest.mark.timeout(120)
def test_fast_run_writes_one_cell_and_a_second_run_skips_it(tmp_path, capsys):
    out = tmp_path / "options"
    assert B.main(["--fast", "--out", str(out), "--device", "cpu"]) == 0
    (cell,) = list(csv.DictReader((out / B.CELLS_FILE).open()))
    assert (cell["set"], cell["combo"], cell["rule"], cell["concept"]) == (
        "varied",
        "word-free",
        B.FAST.rule,
        "varied-red-orange-circle",
    )
    assert int(cell["steps_to_quality"]) <= int(cell["steps_to_plateau"]) <= B.FAST.steps
    (caption,) = list(csv.DictReader((out / B.CAPTIONS_FILE).open()))
    assert caption["caption"] == "a photo of a orange circle"
    assert "| varied | word-free | 2/1/2 | 1 |" in (out / B.TABLE_FILE).read_text()
    capsys.readouterr()
    assert B.main(["--fast", "--out", str(out), "--device", "cpu"]) == 0
    assert "0 cells measured" in capsys.readouterr().out
    assert len(list(csv.DictReader((out / B.CELLS_FILE).open()))) == 1


def test_steps_to_settle_waits_for_the_curve_to_stay_near_its_end():
    curve = "[[10, 19.0], [20, 5.0], [30, 13.0], [40, 5.5], [50, 5.2], [60, 5.0]]"
    assert B.steps_to_settle(curve) == 40  # 20 is within 10 % of the end too, but 30 is not
    assert B.steps_to_settle("[[10, 3.0]]") == 10


def test_appended_rows_follow_the_files_header(tmp_path):
    path = tmp_path / "cells.csv"
    B.append_rows(path, [{"a": 1, "b": 2}])
    B.append_rows(path, [{"b": 4, "a": 3, "c": 5}])
    assert B.read_rows(path) == [{"a": "1", "b": "2"}, {"a": "3", "b": "4"}]
