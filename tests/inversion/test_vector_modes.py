"""``init_mode`` (word | cross) and ``norm_mode`` (free | vocab): where the vectors start, how long they stay,
and that a run resumes exactly in each mode."""

from __future__ import annotations

import pytest
import torch

from inversion.config import ConceptConfig, TrainConfig
from inversion.embeddings.inspector import inspect_file
from inversion.embeddings.norms import norm_ratio, vocab_norms
from inversion.errors import ConfigError
from inversion.model.components import load_components
from inversion.text.encoder import PromptEncoder
from inversion.training.checkpoint import CHECKPOINT_FILENAME, read_checkpoint
from inversion.training.trainer import train_concept


@pytest.fixture(scope="module")
def sd1(tiny_model_dir):
    return load_components(tiny_model_dir)


@pytest.fixture(scope="module")
def sdxl(sdxl_tiny_model_dir):
    return load_components(sdxl_tiny_model_dir)


def _encoder_outputs(components, initializer: str) -> torch.Tensor:
    """Each text encoder's last_hidden_state at the initializer's positions of the padded 77-token prompt,
    averaged over its tokens, side by side (the pipeline's own tokenization, not the trainer's)."""
    parts = []
    for tokenizer, encoder in [
        (components.tokenizer, components.text_encoder),
        (components.tokenizer_2, components.text_encoder_2),
    ]:
        if encoder is None:
            continue
        ids = tokenizer(initializer, padding="max_length", max_length=77, return_tensors="pt").input_ids
        count = len(tokenizer(initializer, add_special_tokens=False).input_ids)
        with torch.no_grad():
            hidden = encoder(ids).last_hidden_state[0, 1 : 1 + count]
        parts.append(hidden.float().mean(dim=0, keepdim=True))
    return torch.cat(parts, dim=1)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
def test_cross_start_is_the_encoder_output(request, concept_images, tmp_path, family):
    components = request.getfixturevalue(family)
    expected = _encoder_outputs(components, "red square")
    text = PromptEncoder(components)
    assert torch.allclose(text.initial_vectors("red square", 1, cross=True), expected, atol=1e-5)
    assert not torch.allclose(text.initial_vectors("red square", 1), expected, atol=1e-3)
    concept = ConceptConfig("<red-square>", "red square", concept_images)
    config = TrainConfig(steps=2, batch_size=1, init_mode="cross", checkpoint_every=1)
    train_concept(components, concept, config, output_dir=tmp_path)
    anchor = read_checkpoint(tmp_path / CHECKPOINT_FILENAME).tensors["anchor"]  # the vectors at step 0
    assert torch.allclose(anchor, expected, atol=1e-5)


@pytest.mark.parametrize("family", ["sd1", "sdxl"])
@pytest.mark.parametrize("init_mode", ["word", "cross"])
def test_vocab_mode_holds_every_norm_at_the_vocabulary_mean(request, concept_images, tmp_path, family, init_mode):
    components = request.getfixturevalue(family)
    concept = ConceptConfig("<red-square>", "square", concept_images, num_vectors=2)
    config = TrainConfig(steps=6, batch_size=2, lr=5e-2, norm_mode="vocab", init_mode=init_mode)
    result = train_concept(components, concept, config, output_dir=tmp_path)
    encoders = [e for e in (components.text_encoder, components.text_encoder_2) if e is not None]
    targets = [vocab_norms(e.get_input_embeddings().weight).mean for e in encoders]
    start = PromptEncoder(components).initial_vectors("square", 2, cross=init_mode == "cross")
    for table, begun, target in zip(result.embedding.tables, start.split(result.embedding.widths, dim=1), targets):
        norms = table.norm(dim=1)
        assert torch.allclose(norms, torch.full_like(norms, target), rtol=1e-4, atol=0), (norms, target)
        cosine = torch.nn.functional.cosine_similarity(table, begun, dim=1)
        assert (cosine < 1 - 1e-4).all(), "the direction must be learned"
    assert norm_ratio(result.embedding, PromptEncoder(components).vocab_norms()) == pytest.approx(1.0, rel=1e-4)
    assert inspect_file(result.files["diffusers"]).ratio == pytest.approx(1.0, rel=1e-4)


def test_free_norms_grow_and_the_files_record_the_vocabulary(sd1, concept_images, tmp_path):
    concept = ConceptConfig("<red-square>", "square", concept_images)
    result = train_concept(sd1, concept, TrainConfig(steps=6, batch_size=2, lr=5e-2), output_dir=tmp_path)
    expected = norm_ratio(result.embedding, PromptEncoder(sd1).vocab_norms())
    assert result.norm_ratio == pytest.approx(expected)
    for kind in ("diffusers", "a1111"):
        assert inspect_file(result.files[kind]).ratio == pytest.approx(expected, rel=1e-6)
    assert set(read_checkpoint(tmp_path / CHECKPOINT_FILENAME).tensors) == {
        "vectors",
        "exp_avg",
        "exp_avg_sq",
        "rng_state",
    }, "the default modes add nothing to the checkpoint"


@pytest.mark.parametrize(("init_mode", "norm_mode"), [("cross", "free"), ("word", "vocab"), ("cross", "vocab")])
def test_resume_is_exact_in_each_mode(sd1, concept_images, tmp_path, init_mode, norm_mode):
    concept = ConceptConfig("<red-square>", "square", concept_images, num_vectors=2)

    def config(steps: int) -> TrainConfig:
        return TrainConfig(steps=steps, batch_size=2, checkpoint_every=3, init_mode=init_mode, norm_mode=norm_mode)

    whole = train_concept(sd1, concept, config(6), output_dir=tmp_path / "whole")
    train_concept(sd1, concept, config(3), output_dir=tmp_path / "split")
    saved = read_checkpoint(tmp_path / "split" / CHECKPOINT_FILENAME)
    assert "anchor" in saved.tensors and ("norm_target" in saved.tensors) == (norm_mode == "vocab")
    resumed = train_concept(sd1, concept, config(6), output_dir=tmp_path / "split", resume=True)
    assert resumed.resumed_from == 3
    assert torch.equal(whole.embedding.vectors, resumed.embedding.vectors)
    assert whole.losses == resumed.losses


def test_resume_refuses_another_mode(sd1, concept_images, tmp_path):
    concept = ConceptConfig("<red-square>", "square", concept_images)
    train_concept(sd1, concept, TrainConfig(steps=2, batch_size=1), output_dir=tmp_path)
    with pytest.raises(ConfigError, match="norm_mode was 'free', now 'vocab'"):
        train_concept(
            sd1, concept, TrainConfig(steps=4, batch_size=1, norm_mode="vocab"), output_dir=tmp_path, resume=True
        )
