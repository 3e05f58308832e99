"""Smoke tests of the speed benchmark: a few steps of each variant on the tiny SD 1.x, SDXL and Flux models,
table and CSV out, and the baseline recipes' set-up, conditioning and clean-up."""

from __future__ import annotations

import csv

import pytest
import torch

from bench import speed
from bench.baseline import encode_conditioning, encode_flux_prompt, recipe_precision, run_baseline
from inversion.text.encoder import PromptEncoder


def test_benchmark_runs_two_steps_on_tiny_and_prints_the_table(tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = speed.main(
        [
            "--models",
            "tiny",
            "--resolutions",
            "native",
            "--batch",
            "1",
            "--packs",
            "1,2",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--no-isolate",
            "--images",
            str(tmp_path / "images"),
            "--out",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    for header in ("variant", "s/step", "concept-steps/s", "peak mem", "× baseline"):
        assert header in printed
    rows = list(csv.DictReader(out.open()))
    assert [(r["variant"], r["model"], r["concepts_per_batch"]) for r in rows] == [
        ("baseline", "tiny", "1"),
        ("sstar", "tiny", "1"),
        ("sstar-packed", "tiny", "2"),
    ]
    for row in rows:
        assert row["error"] == ""
        assert row["resolution"] == "64" and row["batch"] == "1"
        assert len(row["step_seconds"].split(";")) == 2
        assert float(row["s_per_step"]) > 0 and float(row["peak_memory_mb"]) > 0
        assert abs(float(row["concept_steps_per_s"]) * float(row["s_per_step"]) - int(row["concepts_per_batch"])) < 0.01
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
        return dict(
            variant=variant,
            model="tiny",
            resolution=resolution,
            batch=1,
            device="cpu",
            concepts_per_batch=k,
            concept_steps_per_s=steps_per_s,
            cpu_s_per_step=cpu_s,
        )

    rows = [
        row("baseline", 1, 2.0, 0.5),
        row("sstar", 1, 3.0, 0.25),
        row("sstar-packed", 2, 5.0, 0.4),
        row("baseline", 1, 1.0, 1.0, resolution=128),
        row("sstar", 1, 4.0, 0.5, resolution=128),
    ]
    speed.fill_ratios(rows)
    assert [r["ratio_to_baseline"] for r in rows] == [1.0, 1.5, 2.5, 1.0, 4.0]
    assert [r["ratio_to_single"] for r in rows] == [0.667, 1.0, 1.667, 0.25, 1.0]
    # CPU seconds per concept-step: baseline 0.5 s; sstar 0.25 s; packed 0.4 s for 2 concepts
    assert [r["cpu_ratio_to_baseline"] for r in rows] == [1.0, 2.0, 2.5, 1.0, 2.0]


def test_sdxl_race_runs_on_sdxl_tiny_at_its_native_resolution(tmp_path, capsys):
    out = tmp_path / "results.csv"
    code = speed.main(
        [
            "--models",
            "sdxl-tiny",
            "--batch",
            "1",
            "--packs",
            "1",
            "--steps",
            "2",
            "--warmup",
            "0",
            "--device",
            "cpu",
            "--precision",
            "fp32",
            "--baseline-precision",
            "no",
            "--no-isolate",
            "--images",
            str(tmp_path / "images"),
            "--out",
            str(out),
        ]
    )  # fp32 both: one model build shared with the tests below (the recipe's bf16 runs in the restore test)
    assert code == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["variant"], r["model"]) for r in rows] == [("baseline", "sdxl-tiny"), ("sstar", "sdxl-tiny")]
    assert [r["precision"] for r in rows] == ["fp32", "fp32"]
    for row in rows:
        assert row["error"] == ""
        assert row["resolution"] == "64"  # no --resolutions: an SDXL model runs at its own size
        assert len(row["step_seconds"].split(";")) == 2 and float(row["s_per_step"]) > 0
    assert float(rows[1]["ratio_to_baseline"]) == pytest.approx(
        round(float(rows[1]["concept_steps_per_s"]) / float(rows[0]["concept_steps_per_s"]), 3), abs=1e-9
    )
    assert "sdxl-tiny" in capsys.readouterr().out


def test_recipe_precision_is_each_scripts_and_refuses_fp16_for_sdxl():
    assert recipe_precision("sd1", "cpu") == "no" and recipe_precision("sd1", "cuda") == "fp16"
    assert recipe_precision("sdxl", "cpu") == "bf16" and recipe_precision("sdxl", "cuda") == "bf16"
    assert recipe_precision("sdxl", "cpu", "no") == "no"
    with pytest.raises(ValueError, match="SDXL recipe cannot run in fp16"):
        recipe_precision("sdxl", "cuda", "fp16")
    with pytest.raises(ValueError, match="unknown mixed precision 'fp8'"):
        recipe_precision("sd1", "cpu", "fp8")


@pytest.mark.parametrize("model", ["tiny", "sdxl-tiny"])
def test_baseline_trains_only_the_placeholder_rows_and_restores_the_model(tmp_path, model):
    components = speed.get_components(model)  # built once per process, shared with the tests above
    speed.make_images(tmp_path, 1, 64)
    encoders = [e for e in (components.text_encoder, components.text_encoder_2) if e is not None]
    tables = [e.get_input_embeddings().weight.detach().clone() for e in encoders]
    initializer_rows = [table[components.tokenizer.encode("cat", add_special_tokens=False)[0]] for table in tables]
    seen = []

    def inspect(step, seconds, loss):  # mid-run: every table has one more row, and only that row moved
        seen.append(step)
        for encoder, table, start in zip(encoders, tables, initializer_rows):
            live = encoder.get_input_embeddings().weight.detach()
            assert live.shape[0] == table.shape[0] + 1
            assert torch.equal(live[:-1], table.to(live.dtype))
            assert not torch.equal(live[-1], start.to(live.dtype))

    result = run_baseline(components, tmp_path / "concept-0", resolution=64, steps=2, device="cpu", on_step=inspect)
    assert seen == [1, 2] and len(result.step_seconds) == 2
    assert all(torch.isfinite(torch.tensor(result.losses)))
    for encoder, table in zip(encoders, tables):
        after = encoder.get_input_embeddings()
        assert after.weight.shape == table.shape and torch.equal(after.weight, table)
        assert not any(p.requires_grad for p in encoder.parameters())
        assert not encoder.training and after.weight.dtype == torch.float32


def test_sdxl_baseline_conditions_the_unet_as_the_pipeline_does():
    """Both penultimate hidden states, the bigG pooled projection and the time ids: what our PromptEncoder
    (the diffusers pipeline's encoding, checked by the interop tests) gives for the same prompt."""
    components = speed.get_components("sdxl-tiny")
    encoder = PromptEncoder(components)
    prompt = "a photo of a cat on a beach"
    ids = [
        t(prompt, padding="max_length", truncation=True, max_length=t.model_max_length, return_tensors="pt").input_ids
        for t in encoder.tokenizers
    ]
    time_ids = torch.tensor([[80.0, 96.0, 0.0, 16.0, 64.0, 64.0]])
    kwargs = encode_conditioning("sdxl", encoder.encoders, ids, time_ids, torch.float32)
    expected = encoder.encode([prompt])
    assert torch.equal(kwargs["encoder_hidden_states"], expected.hidden)
    assert torch.equal(kwargs["added_cond_kwargs"]["text_embeds"], expected.pooled)
    assert torch.equal(kwargs["added_cond_kwargs"]["time_ids"], time_ids)


def test_baseline_gpu_recipe_path_runs_on_cpu(tmp_path):
    """The recipe's GPU setting (fp16 weights, fp32 text encoder under autocast, gradient scaler) —
    exercised here so that bench/gpu.sh's baseline is not first run on a rented GPU."""
    components = speed.get_components("tiny")
    speed.make_images(tmp_path, 1, 64)
    result = run_baseline(
        components, tmp_path / "concept-0", resolution=64, steps=2, device="cpu", mixed_precision="fp16"
    )
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert components.unet.dtype == components.dtype and components.vae.dtype == components.dtype


@pytest.mark.parametrize("model", ["tiny", "sdxl-tiny"])
def test_unet_pass_times_each_pass(capsys, model):
    from bench import unet_pass

    assert unet_pass.main(["--model", model, "--resolution", "64", "--passes", "2"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0].startswith(f"{model} UNet, 64 px, fp32") and lines[1].split()[:2] == ["pass", "wall"]
    passes = [line.split() for line in lines[2:]]
    assert [p[0] for p in passes] == ["1", "2"] and all(float(p[1]) > 0 for p in passes)


# -- Flux (issue 23): the advanced DreamBooth-LoRA script in pure textual-inversion mode -------------------


def test_flux_race_runs_on_flux_tiny_and_sd3_gets_no_baseline_row(tmp_path):
    out = tmp_path / "results.csv"
    args = ["--models", "flux-tiny", "--packs", "1", "--steps", "2", "--warmup", "0", "--device", "cpu"]
    args += ["--precision", "fp32", "--baseline-precision", "no", "--no-isolate", "--images", str(tmp_path / "i")]
    assert speed.main([*args, "--out", str(out)]) == 0
    rows = list(csv.DictReader(out.open()))
    assert [(r["variant"], r["model"], r["precision"]) for r in rows] == [
        ("baseline", "flux-tiny", "fp32"),
        ("sstar", "flux-tiny", "fp32"),
    ]
    for row in rows:
        assert row["error"] == "" and row["resolution"] == "64"  # the tiny Flux's own size
        assert len(row["step_seconds"].split(";")) == 2 and float(row["s_per_step"]) > 0
    # diffusers has no SD 3 textual-inversion recipe: its model gets our rows only
    cells = speed.plan(speed.parse_args(["--models", "sd3-tiny", "--packs", "1,2"]), "cpu", tmp_path)
    assert [(c.variant, c.concepts, c.resolution) for c in cells] == [("sstar", 1, 64), ("sstar-packed", 2, 64)]


def test_flux_recipe_precision_is_its_readmes_bf16_and_sd3_has_no_recipe():
    assert recipe_precision("flux", "cpu") == "bf16" and recipe_precision("flux", "cuda") == "bf16"
    assert recipe_precision("flux", "cpu", "no") == "no" and recipe_precision("flux", "cuda", "fp16") == "fp16"
    with pytest.raises(ValueError, match="no textual-inversion recipe for SD 3"):
        recipe_precision("sd3", "cpu")


@pytest.mark.parametrize("mixed_precision", ["no", "bf16"])
def test_flux_baseline_trains_only_the_new_rows_of_both_tables_and_restores_the_model(tmp_path, mixed_precision):
    components = speed.get_components("flux-tiny")
    speed.make_images(tmp_path, 1, 64)
    encoders = [components.text_encoder, components.text_encoder_2]
    tables = [e.get_input_embeddings().weight.detach().clone() for e in encoders]
    weights = {k: v.clone() for k, v in components.transformer.state_dict().items()}
    dtype = torch.float32 if mixed_precision == "no" else torch.bfloat16
    seen = []

    def inspect(step, seconds, loss):  # mid-run: one more row per table ("cat" is one piece in each)
        seen.append(step)
        for encoder, table in zip(encoders, tables):
            live = encoder.get_input_embeddings().weight.detach()
            assert live.shape[0] == table.shape[0] + 1 and live.dtype == dtype  # the tables train in bf16 too
            assert torch.equal(live[:-1], table.to(live.dtype))  # every other row restored after the step
        hooked = [m for m in components.transformer.modules() if m._forward_hooks]
        assert len(hooked) == 12 + 3  # the adapter: 12 layers of the double block, q/k/v of the single one

    result = run_baseline(
        components,
        tmp_path / "concept-0",
        resolution=64,
        steps=2,
        device="cpu",
        mixed_precision=mixed_precision,
        on_step=inspect,
    )
    assert seen == [1, 2] and all(torch.isfinite(torch.tensor(result.losses)))
    for encoder, table in zip(encoders, tables):
        after = encoder.get_input_embeddings()
        assert after.weight.shape == table.shape and torch.equal(after.weight, table)
        assert not any(p.requires_grad for p in encoder.parameters()) and not encoder.training
    transformer = components.transformer
    assert not any(m._forward_hooks for m in transformer.modules()) and not transformer.training
    assert all(torch.equal(v, weights[k]) for k, v in transformer.state_dict().items())  # bf16 cast undone


def test_flux_baseline_encodes_prompts_as_our_prompt_encoder():
    """T5's last hidden state and CLIP-L's pooled output: what our PromptEncoder (the pipeline's encoding,
    checked by the interop tests) gives for the same prompt."""
    components = speed.get_components("flux-tiny")
    encoder = PromptEncoder(components)
    prompt = "a photo of a cat on a beach"
    clip_ids, t5_ids = encoder.tokenize([prompt])
    hidden, pooled, text_ids = encode_flux_prompt(components.text_encoder, components.text_encoder_2, clip_ids, t5_ids)
    expected = encoder.encode([prompt])
    assert torch.equal(hidden, expected.hidden) and torch.equal(pooled, expected.pooled)
    assert text_ids.shape == (512, 3) and not text_ids.any()
