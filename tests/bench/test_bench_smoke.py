"""Smoke test of the speed benchmark: 2 steps of each variant on the tiny model, table and CSV out."""

from __future__ import annotations

import csv

import pytest
import torch

from bench import speed
from bench.baseline import run_baseline


def test_benchmark_runs_two_steps_on_tiny_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = speed.main([
        "--models", "tiny", "--resolutions", "native", "--batch", "1", "--packs", "1,2",
        "--steps", "2", "--warmup", "0", "--device", "cpu", "--precision", "fp32",
        "--no-isolate", "--images", str(tmp_path / "images"), "--out", str(out),
    ])
    assert code == 0
    printed = capsys.readouterr().out
    for header in ("variant", "s/step", "concept-steps/s", "peak mem", "× baseline"):
        assert header in printed
    rows = list(csv.DictReader(out.open()))
    assert [(r["variant"], r["model"], r["concepts_per_batch"]) for r in rows] == [
        ("baseline", "tiny", "1"), ("sstar", "tiny", "1"), ("sstar-packed", "tiny", "2")]
    for row in rows:
        assert row["error"] == ""
        assert row["resolution"] == "64" and row["batch"] == "1"
        assert len(row["step_seconds"].split(";")) == 2
        assert float(row["s_per_step"]) > 0 and float(row["peak_memory_mb"]) > 0
        assert abs(float(row["concept_steps_per_s"]) * float(row["s_per_step"])
                   - int(row["concepts_per_batch"])) < 0.01
        assert row["variant"] in printed
    baseline, single = rows[0], rows[1]
    for row in rows:  # each ratio from the row's own throughput and its reference row's, as the CSV holds them
        speed_up = float(row["concept_steps_per_s"]) / float(baseline["concept_steps_per_s"])
        assert float(row["ratio_to_baseline"]) == pytest.approx(round(speed_up, 3), abs=1e-9), row["variant"]
        vs_single = float(row["concept_steps_per_s"]) / float(single["concept_steps_per_s"])
        assert float(row["ratio_to_single"]) == pytest.approx(round(vs_single, 3), abs=1e-9), row["variant"]
        cpu = float(baseline["cpu_s_per_step"]) * int(row["concepts_per_batch"]) / float(row["cpu_s_per_step"])
        assert float(row["cpu_ratio_to_baseline"]) == pytest.approx(round(cpu, 3), abs=1e-9), row["variant"]


def test_ratios_compare_throughput_with_the_same_models_baseline_and_single_run():
    def row(variant, k, steps_per_s, cpu_s, resolution=64):
        return dict(variant=variant, model="tiny", resolution=resolution, batch=1, device="cpu", concepts_per_batch=k,
                    concept_steps_per_s=steps_per_s, cpu_s_per_step=cpu_s)

    rows = [row("baseline", 1, 2.0, 0.5), row("sstar", 1, 3.0, 0.25), row("sstar-packed", 2, 5.0, 0.4),
            row("baseline", 1, 1.0, 1.0, resolution=128), row("sstar", 1, 4.0, 0.5, resolution=128)]
    speed.fill_ratios(rows)
    assert [r["ratio_to_baseline"] for r in rows] == [1.0, 1.5, 2.5, 1.0, 4.0]
    assert [r["ratio_to_single"] for r in rows] == [0.667, 1.0, 1.667, 0.25, 1.0]
    # CPU seconds per concept-step: baseline 0.5 s; sstar 0.25 s; packed 0.4 s for 2 concepts
    assert [r["cpu_ratio_to_baseline"] for r in rows] == [1.0, 2.0, 2.5, 1.0, 2.0]


def test_baseline_trains_only_the_placeholder_row_and_restores_the_model(tmp_path):
    components = speed.get_components("tiny")  # built once per process, shared with the test above
    speed.make_images(tmp_path, 1, 64)
    table = components.text_encoder.get_input_embeddings().weight.detach().clone()
    seen = []
    result = run_baseline(components, tmp_path / "concept-0", resolution=64, steps=2, device="cpu",
                          on_step=lambda step, seconds, loss: seen.append(step))
    assert seen == [1, 2] and len(result.step_seconds) == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))
    after = components.text_encoder.get_input_embeddings()
    assert after.weight.shape == table.shape and torch.equal(after.weight, table)
    assert not any(p.requires_grad for p in components.text_encoder.parameters())
    assert not components.text_encoder.training


def test_baseline_gpu_recipe_path_runs_on_cpu(tmp_path):
    """The recipe's GPU setting (fp16 weights, fp32 text encoder under autocast, gradient scaler) —
    exercised here so that bench/gpu.sh's baseline is not first run on a rented GPU."""
    components = speed.get_components("tiny")
    speed.make_images(tmp_path, 1, 64)
    result = run_baseline(components, tmp_path / "concept-0", resolution=64, steps=2, device="cpu",
                          mixed_precision="fp16")
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert components.unet.dtype == components.dtype and components.vae.dtype == components.dtype


def test_unet_pass_times_each_pass(capsys):
    from bench import unet_pass

    assert unet_pass.main(["--model", "tiny", "--resolution", "64", "--passes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith("tiny UNet, 64 px, fp32") and lines[1].split()[:2] == ["pass", "wall"]
    passes = [line.split() for line in lines[2:]]
    assert [p[0] for p in passes] == ["1", "2"] and all(float(p[1]) > 0 for p in passes)
