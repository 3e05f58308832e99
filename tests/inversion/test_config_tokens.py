"""Placeholder tokens and configuration validation."""

from __future__ import annotations

import pytest
import torch

from inversion.config import ConceptConfig, EvalConfig, TrainConfig, clip_spec
from inversion.errors import ConfigError, TokenError
from inversion.model.components import load_components
from inversion.text.tokens import expand_token, initial_vectors, register_token, vector_names


@pytest.fixture(scope="module")
def components(tiny_model_dir):
    return load_components(tiny_model_dir)


def test_vector_names_follow_diffusers():
    assert vector_names("<cat>", 3) == ("<cat>", "<cat>_1", "<cat>_2")
    assert expand_token("a <cat>, by <cat>.", "<cat>", 2) == "a <cat> <cat>_1, by <cat> <cat>_1."
    assert expand_token("sks and asks", "sks", 2) == "sks sks_1 and asks"


def test_register_token_adds_single_ids(components):
    tokenizer = components.tokenizer.__class__.from_pretrained(components.source, subfolder="tokenizer")
    token = register_token(tokenizer, "<my-cat>", 2)
    assert token.ids == (49408, 49409)
    assert tokenizer("a <my-cat> <my-cat>_1", add_special_tokens=False).input_ids[-2:] == [49408, 49409]


def test_existing_word_is_rejected(components):
    tokenizer = components.tokenizer.__class__.from_pretrained(components.source, subfolder="tokenizer")
    with pytest.raises(TokenError, match="token cat is already in the vocabulary"):
        register_token(tokenizer, "cat", 1)


def test_initializer_that_tokenises_to_nothing_is_rejected(components):
    with pytest.raises(TokenError, match="tokenises to nothing"):
        initial_vectors(components.text_encoder, components.tokenizer, "   ", 1)


def test_initializer_vectors(components):
    table = components.text_encoder.get_input_embeddings().weight
    cat = components.tokenizer("cat", add_special_tokens=False).input_ids
    assert torch.equal(initial_vectors(components.text_encoder, components.tokenizer, "cat", 1)[0], table[cat[0]])
    ids = components.tokenizer("teddy bear", add_special_tokens=False).input_ids
    two = initial_vectors(components.text_encoder, components.tokenizer, "teddy bear", 3)
    assert torch.equal(two[2], table[ids[0]])
    one = initial_vectors(components.text_encoder, components.tokenizer, "teddy bear", 1)
    torch.testing.assert_close(one[0], table[ids].mean(0))


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(num_vectors=0), "num_vectors of <t> must be an integer >= 1"),
        (dict(property="painting"), "property of <t> must be one of object, style"),
        (dict(token="two words"), "token must be one word"),
        (dict(initializer=" "), "initializer of <t> must not be empty"),
    ],
)
def test_concept_config_errors(kwargs, message, tmp_path):
    base = dict(token="<t>", initializer="cat", images=tmp_path)
    with pytest.raises(ConfigError, match=message):
        ConceptConfig(**{**base, **kwargs})


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(steps=0), "steps must be >= 1"),
        (dict(lr=2.0), "lr must be in"),
        (dict(precision="fp8"), "precision must be one of"),
        (dict(resolution=100), "resolution must be a multiple of 8"),
        (dict(resolution=0), "resolution must be >= 8"),
        (dict(lr_schedule="linear"), "lr_schedule must be one of constant, cosine"),
        (dict(device="gpu"), "device must match"),
        (dict(checkpoint_every=-1), "checkpoint_every must be >= 0"),
        (dict(batch_size=2.0), "batch_size must be an integer"),
    ],
)
def test_train_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        TrainConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(samples=0), r"samples must be in \[1, 64\]"),
        (dict(render_steps=501), r"render_steps must be in \[1, 500\]"),
        (dict(guidance=-1.0), r"guidance must be in \[0, 50\]"),
        (dict(clip_checkpoint=3), "clip_checkpoint must be a string"),
    ],
)
def test_eval_config_errors(kwargs, message):
    with pytest.raises(ConfigError, match=message):
        EvalConfig(**kwargs)


def test_clip_spec_defaults_to_the_method_weights_only_without_a_checkpoint(tmp_path):
    assert clip_spec("ViT-B-32", None, None).pretrained == "openai"
    local = clip_spec("sstar-tiny-clip", str(tmp_path / "w.pt"), None)
    assert local.pretrained is None and local.checkpoint == tmp_path / "w.pt"


def test_scale_lr():
    assert TrainConfig(lr=1e-3, batch_size=4, grad_accum=2, scale_lr=True).effective_lr == pytest.approx(8e-3)
    assert TrainConfig(lr=1e-3, batch_size=4).effective_lr == 1e-3
