"""Training: only the new vectors learn, the loss falls, resume and packing are exact."""

from __future__ import annotations

import hashlib
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inversion.config import ConceptConfig, TrainConfig
from inversion.errors import ConfigError, InputError, TrainingDivergedError
from inversion.model.components import load_components
from inversion.text.tokens import initial_vectors
from inversion.training.checkpoint import CHECKPOINT_FILENAME, read_checkpoint
from inversion.training.trainer import evaluation_loss, train_concept, train_concepts
from tests.conftest import write_shape_images


@pytest.fixture(scope="module")
def components(tiny_model_dir):
    return load_components(tiny_model_dir)


def _digest_tree(folder: Path) -> dict[str, str]:
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def test_loss_falls_and_only_new_vectors_change(tiny_model_dir, concept_images):
    files_before = _digest_tree(tiny_model_dir)
    components = load_components(tiny_model_dir)
    weights_before = {
        name: {k: v.clone() for k, v in m.state_dict().items()}
        for name, m in [("text", components.text_encoder), ("unet", components.unet), ("vae", components.vae)]
    }
    concept = ConceptConfig("<red-square>", "square", concept_images)
    start = initial_vectors(components.text_encoder, components.tokenizer, "square", 1)
    before = evaluation_loss(components, concept, start)
    result = train_concept(components, concept, TrainConfig(steps=40, batch_size=4, lr=5e-3))
    after = evaluation_loss(components, concept, result.embedding.vectors)
    assert after < before - 1e-3, (before, after)
    assert not torch.equal(result.embedding.vectors, start)
    for name, module in [("text", components.text_encoder), ("unet", components.unet), ("vae", components.vae)]:
        for key, value in module.state_dict().items():
            assert torch.equal(value, weights_before[name][key]), f"{name}.{key} changed"
    assert len(components.tokenizer) == 49408, "the shared tokenizer must not gain tokens"
    assert _digest_tree(tiny_model_dir) == files_before


def test_multi_vector_training_updates_every_vector(components, concept_images):
    concept = ConceptConfig("<red-square>", "red square", concept_images, num_vectors=3)
    start = initial_vectors(components.text_encoder, components.tokenizer, "red square", 3)
    result = train_concept(components, concept, TrainConfig(steps=5, batch_size=2))
    assert result.embedding.vectors.shape == start.shape
    for i in range(3):
        assert not torch.allclose(result.embedding.vectors[i], start[i]), f"vector {i} did not move"


def test_training_is_seed_deterministic_on_cpu(components, concept_images):
    concept = ConceptConfig("<red-square>", "square", concept_images, seed=7)
    config = TrainConfig(steps=4, batch_size=2)
    a = train_concept(components, concept, config)
    b = train_concept(components, concept, config)
    assert torch.equal(a.embedding.vectors, b.embedding.vectors)
    c = train_concept(components, ConceptConfig("<red-square>", "square", concept_images, seed=8), config)
    assert not torch.equal(a.embedding.vectors, c.embedding.vectors)


def test_resume_continues_exactly(components, concept_images, tmp_path):
    concept = ConceptConfig("<red-square>", "square", concept_images, num_vectors=2)
    whole = train_concept(
        components, concept, TrainConfig(steps=8, batch_size=2, checkpoint_every=4), output_dir=tmp_path / "whole"
    )
    half = train_concept(
        components, concept, TrainConfig(steps=4, batch_size=2, checkpoint_every=4), output_dir=tmp_path / "split"
    )
    assert (tmp_path / "split" / "learned_embeds.safetensors").is_file()
    saved = read_checkpoint(tmp_path / "split" / CHECKPOINT_FILENAME)
    assert (saved.token, saved.num_vectors, saved.step) == ("<red-square>", 2, 4)
    assert torch.equal(saved.vectors, half.embedding.vectors) and len(saved.state["losses"]) == 4
    resumed = train_concept(
        components,
        concept,
        TrainConfig(steps=8, batch_size=2, checkpoint_every=4),
        output_dir=tmp_path / "split",
        resume=True,
    )
    assert half.steps == 4 and resumed.steps == 8 and resumed.resumed_from == 4
    assert torch.equal(whole.embedding.vectors, resumed.embedding.vectors)
    assert whole.losses == resumed.losses


def test_read_checkpoint_rejects_other_files(tmp_path):
    (tmp_path / "junk.safetensors").write_bytes(b"not a checkpoint")
    with pytest.raises(InputError, match="cannot read checkpoint .*junk.safetensors"):
        read_checkpoint(tmp_path / "junk.safetensors")
    save_file({"vectors": torch.zeros(1, 4)}, str(tmp_path / "plain.safetensors"))
    with pytest.raises(InputError, match="plain.safetensors is not an sstar checkpoint"):
        read_checkpoint(tmp_path / "plain.safetensors")


def test_resume_refuses_changed_settings(components, concept_images, tmp_path):
    concept = ConceptConfig("<red-square>", "square", concept_images)
    train_concept(components, concept, TrainConfig(steps=2, batch_size=1), output_dir=tmp_path)
    with pytest.raises(ConfigError, match="lr was 0.005, now 0.001"):
        train_concept(
            components, concept, TrainConfig(steps=4, batch_size=1, lr=1e-3), output_dir=tmp_path, resume=True
        )


def test_packed_concepts_match_training_each_alone(components, tmp_path):
    red = ConceptConfig("<red>", "square", write_shape_images(tmp_path / "red"), seed=1)
    blue = ConceptConfig(
        "<blue>", "circle", write_shape_images(tmp_path / "blue", color=(30, 30, 220), seed=5), num_vectors=2, seed=2
    )
    config = TrainConfig(steps=6, batch_size=2, grad_accum=2)
    packed = train_concepts(components, [red, blue], config)
    alone = [train_concept(components, c, config) for c in (red, blue)]
    for p, a in zip(packed, alone):
        assert p.token == a.token
        torch.testing.assert_close(p.embedding.vectors, a.embedding.vectors, rtol=1e-4, atol=1e-5)
        assert p.losses == pytest.approx(a.losses, rel=1e-4)


#: a plateau rule that fires quickly on the tiny model: a check every 2 steps must beat the best by 50%
QUICK_PLATEAU = dict(
    stop="plateau", stop_every=2, stop_patience=2, stop_min_delta=0.5, stop_min_steps=0, stop_samples=4
)


def test_continuous_packing_with_plateau_stops_matches_training_each_alone(components, tmp_path):
    """Three concepts, two slots: each stops at its own plateau, the third takes a freed slot, and
    every concept's result (vectors, losses, stop step and reason) equals training it alone."""
    concepts = [
        ConceptConfig(f"<c{i}>", "square", write_shape_images(tmp_path / f"c{i}", color=color, seed=i), seed=i)
        for i, color in enumerate([(200, 40, 40), (30, 30, 220), (40, 200, 40)])
    ]
    config = TrainConfig(steps=12, batch_size=2, **QUICK_PLATEAU)
    reports = []
    packed = train_concepts(components, concepts, config, slots=2, callback=reports.append)
    alone = [train_concept(components, c, config) for c in concepts]
    for p, a in zip(packed, alone):
        assert (p.token, p.steps, p.stop_reason) == (a.token, a.steps, a.stop_reason)
        torch.testing.assert_close(p.embedding.vectors, a.embedding.vectors, rtol=1e-4, atol=1e-5)
        assert p.losses == pytest.approx(a.losses, rel=1e-4)
        assert [s for s, _ in p.held_out_losses] == list(range(2, p.steps + 1, 2))
    assert all(p.stop_reason == "plateau" and p.steps < config.steps for p in packed), "the rule must fire here"
    # two slots: at most two concepts per step, and the third trains only after one of the first two stopped
    assert max(len(r.losses) for r in reports) <= 2
    first_third = next(i for i, r in enumerate(reports) if "<c2>" in r.losses)
    assert any(r.stopped for r in reports[:first_third]), "the third concept took a freed slot"
    assert len(reports) < reports[0].total_steps == 24, "early stops shorten the queue's 2 × 12 pack steps"


def test_plateau_resume_continues_exactly(components, concept_images, tmp_path):
    """The stopping state goes into the checkpoint: interrupted at step 4 and resumed, a concept stops
    at the same step with the same vectors as an uninterrupted run."""
    concept = ConceptConfig("<red-square>", "square", concept_images)
    config = TrainConfig(steps=12, batch_size=2, checkpoint_every=4, **QUICK_PLATEAU)
    whole = train_concept(components, concept, config, output_dir=tmp_path / "whole")
    train_concept(components, concept, replace(config, steps=4), output_dir=tmp_path / "split")
    saved = read_checkpoint(tmp_path / "split" / CHECKPOINT_FILENAME)
    assert [s for s, _ in saved.state["stopping"]["history"]] == [2, 4]
    resumed = train_concept(components, concept, config, output_dir=tmp_path / "split", resume=True)
    assert whole.stop_reason == "plateau" and whole.steps < 12
    assert (resumed.steps, resumed.stop_reason, resumed.resumed_from) == (whole.steps, "plateau", 4)
    assert torch.equal(whole.embedding.vectors, resumed.embedding.vectors)
    assert resumed.held_out_losses == whole.held_out_losses


def test_diverging_loss_stops_with_a_clear_error(tiny_model_dir, concept_images, tmp_path):
    components = load_components(tiny_model_dir)
    with torch.no_grad():
        components.unet.conv_out.bias.fill_(float("nan"))
    concept = ConceptConfig("<red-square>", "square", concept_images)
    diverged = r"training of <red-square> diverged: loss is nan at step 1"
    with pytest.raises(TrainingDivergedError, match=diverged) as info:
        train_concept(components, concept, TrainConfig(steps=3, batch_size=1), output_dir=tmp_path / "out")
    assert (info.value.token, info.value.step) == ("<red-square>", 1), "the raised error keeps its fields"
    assert not (tmp_path / "out" / "learned_embeds.safetensors").exists()


def test_duplicate_tokens_in_a_pack_are_rejected(components, concept_images):
    c = ConceptConfig("<x>", "square", concept_images)
    with pytest.raises(ConfigError, match="token <x> appears more than once"):
        train_concepts(components, [c, c], TrainConfig(steps=1))


def test_bf16_trains_fp32_master_vectors(tiny_model_dir, concept_images):
    components = load_components(tiny_model_dir)
    concept = ConceptConfig("<red-square>", "square", concept_images)
    result = train_concept(components, concept, TrainConfig(steps=3, batch_size=2, precision="bf16"))
    assert next(components.unet.parameters()).dtype == torch.bfloat16
    assert result.embedding.vectors.dtype == torch.float32
    assert all(torch.isfinite(torch.tensor(result.losses)))
    start = initial_vectors(components.text_encoder, components.tokenizer, "square", 1).float()
    assert not torch.equal(result.embedding.vectors, start)


def _with_prediction(model_dir: Path, prediction_type: str):
    from diffusers import DDPMScheduler

    components = load_components(model_dir)
    components.noise_scheduler = DDPMScheduler.from_config(
        components.noise_scheduler.config, prediction_type=prediction_type
    )
    return components


def _first_step_against(components, concept_images, target_of) -> tuple[float, float]:
    """Train one step, recording what the scheduler noised and what the UNet predicted; returns
    (the trainer's loss, the MSE of the prediction against ``target_of(scheduler, latents, noise, t)``)."""
    seen = {}
    scheduler = components.noise_scheduler
    add_noise = scheduler.add_noise

    def recording_add_noise(latents, noise, timesteps):
        seen.update(latents=latents.clone(), noise=noise.clone(), timesteps=timesteps.clone())
        return add_noise(latents, noise, timesteps)

    scheduler.add_noise = recording_add_noise
    hook = components.unet.register_forward_hook(lambda m, a, out: seen.update(pred=out.sample.detach().clone()))
    try:
        result = train_concept(
            components, ConceptConfig("<red-square>", "square", concept_images), TrainConfig(steps=1, batch_size=2)
        )
    finally:
        hook.remove()
        del scheduler.add_noise
    target = target_of(scheduler, seen["latents"], seen["noise"], seen["timesteps"])
    return result.losses[0], float(torch.nn.functional.mse_loss(seen["pred"].float(), target.float()))


def test_v_prediction_models_train_against_the_velocity(tiny_model_dir, concept_images):
    components = _with_prediction(tiny_model_dir, "v_prediction")
    loss, against_velocity = _first_step_against(
        components, concept_images, lambda s, latents, noise, t: s.get_velocity(latents, noise, t)
    )
    assert loss == pytest.approx(against_velocity, rel=1e-5)
    _, against_noise = _first_step_against(
        _with_prediction(tiny_model_dir, "v_prediction"), concept_images, lambda s, latents, noise, t: noise
    )
    assert against_noise != pytest.approx(against_velocity, rel=1e-3), "velocity and noise must differ here"


def test_epsilon_models_train_against_the_noise(tiny_model_dir, concept_images):
    components = _with_prediction(tiny_model_dir, "epsilon")
    loss, against_noise = _first_step_against(components, concept_images, lambda s, latents, noise, t: noise)
    assert loss == pytest.approx(against_noise, rel=1e-5)


def test_an_unknown_prediction_type_is_refused(tiny_model_dir, concept_images, tmp_path):
    components = _with_prediction(tiny_model_dir, "sample")
    concept = ConceptConfig("<red-square>", "square", concept_images)
    with pytest.raises(ConfigError, match="unknown scheduler prediction_type 'sample'"):
        train_concept(components, concept, TrainConfig(steps=1, batch_size=1), output_dir=tmp_path / "out")
    assert not (tmp_path / "out").exists()
    start = initial_vectors(components.text_encoder, components.tokenizer, "square", 1)
    with pytest.raises(ConfigError, match="unknown scheduler prediction_type 'sample'"):
        evaluation_loss(components, concept, start)


def test_compiled_unet_trains_like_eager_and_resumes_across_the_switch(tiny_model_dir, concept_images, tmp_path):
    """``compile=True`` changes speed, not results: same vectors as eager (to float tolerance), and a
    compiled run's checkpoint resumes without compiling. Pays one CPU compile of the tiny UNet (~1 min)."""
    components = load_components(tiny_model_dir)  # its own copy: the compiled wrapper stays cached on it
    concept = ConceptConfig("<red-square>", "square", concept_images, seed=3)
    eager = train_concept(components, concept, TrainConfig(steps=4, batch_size=2))
    compiled_half = train_concept(
        components, concept, TrainConfig(steps=2, batch_size=2, checkpoint_every=2, compile=True), output_dir=tmp_path
    )
    assert components._compiled_unet is not None, "compile=True must train through the compiled UNet"
    resumed = train_concept(
        components, concept, TrainConfig(steps=4, batch_size=2, checkpoint_every=2), output_dir=tmp_path, resume=True
    )
    assert compiled_half.steps == 2 and resumed.resumed_from == 2
    torch.testing.assert_close(resumed.embedding.vectors, eager.embedding.vectors, rtol=1e-4, atol=1e-5)
    assert resumed.losses == pytest.approx(eager.losses, rel=1e-4)
