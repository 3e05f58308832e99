"""Words for SD 3 and Flux (issue 23, step 3): the text side as diffusers' pipelines build it, the flow-matching
objective by diffusers' conventions, and training as on SD 1.x (every encoder's rows, T5's included, and nothing
else; exact resume with the plateau rule; packs; multi-vector words).

The tiny models read 256 (SD 3) and 512 (Flux) T5 tokens, as the pipelines do by default, so every step here is
a few of them at batch 1.
"""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from inversion.config import ConceptConfig, TrainConfig
from inversion.model.components import build_pipeline, load_components
from inversion.model.info import FAMILIES
from inversion.text.encoder import PromptEncoder
from inversion.training.checkpoint import CHECKPOINT_FILENAME, read_checkpoint
from inversion.training.flow import FlowSchedule, calculate_shift, latent_image_ids, pack_latents
from inversion.training.trainer import train_concept, train_concepts
from tests.conftest import write_shape_images

QUICK = dict(batch_size=1, lr=5e-2, device="cpu", resolution=32)
PLATEAU = dict(stop="plateau", stop_every=1, stop_patience=5, stop_min_steps=0, stop_samples=1)


@pytest.fixture(scope="module")
def models(sd3_tiny_model_dir, flux_tiny_model_dir):
    return {
        "sd3": load_components(sd3_tiny_model_dir, families=FAMILIES),
        "flux": load_components(flux_tiny_model_dir, families=FAMILIES),
    }


@pytest.fixture
def one_thread():
    """Bit-exact comparisons across runs: one thread reduces floats in one order (given back afterwards)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    return write_shape_images(tmp_path_factory.mktemp("flow-images"), count=2, size=40)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_prompts_are_encoded_as_the_pipeline_encodes_them(models, family):
    components = models[family]
    text = PromptEncoder(components)
    pipeline = build_pipeline(components, components.noise_scheduler)
    prompts = ["a photo of a red cat", "a dog"]
    with torch.no_grad():
        ours = text.encode(prompts)
        if family == "sd3":
            hidden, negative, pooled, negative_pooled = pipeline.encode_prompt(prompts, None, None)
            empty = text.encode(["", ""])  # the pipeline's negative, at its batch (CLIP's last bits depend on it)
            assert torch.equal(empty.hidden, negative) and torch.equal(empty.pooled, negative_pooled)
            assert hidden.shape == (2, 77 + 256, 96) and pooled.shape == (2, 32 + 32)
        else:
            hidden, pooled, _ = pipeline.encode_prompt(prompts, None)
            assert hidden.shape == (2, 512, 96) and pooled.shape == (2, 32)
    assert torch.equal(ours.hidden, hidden) and torch.equal(ours.pooled, pooled)
    kwargs = text.pipeline_kwargs(ours, text.negative())
    expected = {"prompt_embeds", "pooled_prompt_embeds"}
    if family == "sd3":
        expected |= {"negative_prompt_embeds", "negative_pooled_prompt_embeds"}
    assert set(kwargs) == expected, "Flux's distilled guidance takes no negative prompt"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_the_word_is_read_through_every_encoder_t5_included(models, family):
    text = PromptEncoder(models[family])
    placeholder = text.register("<sq>", 2)
    per_encoder = text.placeholders("<sq>")
    assert len(per_encoder) == len(text.widths) == (3 if family == "sd3" else 2)
    t5_ids = per_encoder[-1].ids
    assert t5_ids == (2000, 2001) and placeholder.ids != t5_ids, "T5's tokenizer gives the word ids of its own"
    vectors = torch.zeros(2, sum(text.widths))
    prompt = ["a photo of <sq> <sq>_1"]
    with torch.no_grad(), text.learned([placeholder], [vectors]):
        base = text.encode(prompt)
    start = 0
    for width in text.widths:  # moving one encoder's columns alone changes what the denoiser reads
        moved = vectors.clone()
        moved[:, start : start + width] = 1.0
        with torch.no_grad(), text.learned([placeholder], [moved]):
            changed = text.encode(prompt)
        assert not torch.equal(changed.hidden, base.hidden) or not torch.equal(changed.pooled, base.pooled)
        start += width


def test_flux_packing_ids_and_shift_are_diffusers_own():
    from diffusers import FlowMatchEulerDiscreteScheduler, FluxPipeline
    from diffusers.pipelines.flux.pipeline_flux import calculate_shift as diffusers_shift

    latents = torch.randn(2, 16, 8, 6)
    assert torch.equal(pack_latents(latents), FluxPipeline._pack_latents(latents, 2, 16, 8, 6))
    assert torch.equal(
        latent_image_ids(4, 3, torch.device("cpu"), torch.float32),
        FluxPipeline._prepare_latent_image_ids(2, 4, 3, torch.device("cpu"), torch.float32),
    )
    assert calculate_shift(1024, 256, 4096, 0.5, 1.15) == pytest.approx(diffusers_shift(1024, 256, 4096, 0.5, 1.15))
    sd3 = FlowMatchEulerDiscreteScheduler(shift=3.0)
    assert torch.allclose(FlowSchedule.for_model(sd3.config, 128).sigmas, sd3.sigmas)
    flux = FlowMatchEulerDiscreteScheduler(shift=3.0, use_dynamic_shifting=True)
    mu = calculate_shift(64 * 64, 256, 4096, 0.5, 1.15)
    unshifted = torch.linspace(1000, 1, 1000) / 1000
    schedule = FlowSchedule.for_model(flux.config, 128)
    assert torch.allclose(schedule.sigmas, flux.time_shift(mu, 1.0, unshifted))
    draws = schedule.draw(4000, torch.Generator().manual_seed(0))
    assert draws.min() > 0 and draws.max() <= 1 and 0.55 < float(draws.median()) < 0.85, "logit-normal, shifted up"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_only_the_words_rows_learn_in_every_encoder(models, images, tmp_path, family):
    components = models[family]
    before = {id(m): {k: v.clone() for k, v in m.state_dict().items()} for m in components.modules}
    sizes = [len(tokenizer) for tokenizer, _ in components.text_sides]
    concept = ConceptConfig("<sq>", "square", images, num_vectors=2)
    start = PromptEncoder(components).initial_vectors("square", 2)
    result = train_concept(components, concept, TrainConfig(steps=2, **QUICK), output_dir=tmp_path / "out")
    assert len(result.losses) == 2 and all(torch.isfinite(torch.tensor(result.losses)))
    assert result.embedding.family == family and result.embedding.widths == PromptEncoder(components).widths
    for index, (moved, first) in enumerate(zip(result.embedding.tables, start.split(result.embedding.widths, 1))):
        for vector in range(2):
            assert not torch.equal(moved[vector], first[vector]), f"encoder {index}'s vector {vector} did not move"
    for module in components.modules:
        for key, value in module.state_dict().items():
            assert torch.equal(value, before[id(module)][key]), f"{type(module).__name__}.{key} changed"
    assert [len(tokenizer) for tokenizer, _ in components.text_sides] == sizes, "the shared tokenizers gain no word"
    assert set(result.files) == ({"comfyui"} if family == "sd3" else {"comfyui", "diffusers"})


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_resume_with_the_plateau_rule_is_exact(models, images, tmp_path, family, one_thread):
    components = models[family]
    concept = ConceptConfig("<sq>", "square", images, num_vectors=2)
    config = TrainConfig(steps=3, checkpoint_every=1, **QUICK, **PLATEAU)
    whole = train_concept(components, concept, config, output_dir=tmp_path / "whole")
    train_concept(components, concept, replace(config, steps=1), output_dir=tmp_path / "split")
    assert read_checkpoint(tmp_path / "split" / CHECKPOINT_FILENAME).step == 1
    resumed = train_concept(components, concept, config, output_dir=tmp_path / "split", resume=True)
    assert resumed.resumed_from == 1 and resumed.steps == whole.steps == 3
    assert torch.equal(resumed.embedding.vectors, whole.embedding.vectors)
    assert resumed.losses == whole.losses
    assert resumed.held_out_losses == whole.held_out_losses and len(whole.held_out_losses) == 3
    again = train_concept(components, concept, replace(config, steps=1))
    assert again.held_out_losses[0] == whole.held_out_losses[0], "the held-out draw is fixed"


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_pack_of_two_trains_as_each_alone(models, tmp_path, family):
    components = models[family]
    red = write_shape_images(tmp_path / "red", count=2, size=40)
    blue = write_shape_images(tmp_path / "blue", count=2, size=40, color=(40, 40, 200), seed=1)
    concepts = [ConceptConfig("<red>", "square", red), ConceptConfig("<blue>", "circle", blue, seed=3)]
    config = TrainConfig(steps=1, **QUICK)
    packed = train_concepts(components, concepts, config)
    for concept, result in zip(concepts, packed):
        alone = train_concept(components, concept, config)
        torch.testing.assert_close(result.embedding.vectors, alone.embedding.vectors, rtol=1e-4, atol=1e-5)
        assert result.losses == pytest.approx(alone.losses, rel=1e-4)
