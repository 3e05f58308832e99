"""Embedding files: round trips, the formats other tools write, and diffusers loading ours."""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import save_file

from inversion.errors import EmbeddingFormatError
from inversion.formats import LearnedEmbedding, load_embedding, save_a1111, save_diffusers, save_embedding_files


@pytest.fixture
def embedding():
    return LearnedEmbedding("<my-cat>", torch.randn(3, 32, generator=torch.Generator().manual_seed(0)))


def test_diffusers_round_trip(embedding, tmp_path):
    path = save_diffusers(embedding, tmp_path / "learned_embeds.safetensors")
    loaded = load_embedding(path)
    assert loaded.token == "<my-cat>"
    assert torch.equal(loaded.vectors, embedding.vectors)


def test_a1111_round_trip_uses_file_stem_as_token(embedding, tmp_path):
    path = save_a1111(embedding, tmp_path / "my-cat.pt", step=12)
    raw = torch.load(path, weights_only=True)
    assert set(raw) >= {"string_to_token", "string_to_param", "name"} and raw["step"] == 12
    loaded = load_embedding(path)
    assert loaded.token == "<my-cat>"
    assert torch.equal(loaded.vectors, embedding.vectors)
    assert load_embedding(path, token="sks").token == "sks"


def test_kohya_safetensors(embedding, tmp_path):
    path = tmp_path / "style.safetensors"
    save_file({"emb_params": embedding.vectors}, str(path))
    loaded = load_embedding(path)
    assert loaded.token == "<style>" and torch.equal(loaded.vectors, embedding.vectors)


def test_reading_never_unpickles_objects(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pt"
    torch.save({"string_to_param": {"*": torch.zeros(1, 4)}, "payload": Evil()}, path)
    with pytest.raises(EmbeddingFormatError, match="evil.pt: not a readable embedding file"):
        load_embedding(path)


@pytest.mark.parametrize(
    "tensors, message",
    [
        ({"a": torch.zeros(1, 4), "b": torch.zeros(1, 4)}, "expected one token"),
        ({"a": torch.full((1, 4), float("nan"))}, "NaN or infinite"),
        ({"a": torch.zeros(2, 2, 2)}, r"must be a float tensor \[N, dim\]"),
    ],
)
def test_bad_files(tensors, message, tmp_path):
    path = tmp_path / "bad.safetensors"
    save_file(tensors, str(path))
    with pytest.raises(EmbeddingFormatError, match=message):
        load_embedding(path)
    with pytest.raises(EmbeddingFormatError, match="not found"):
        load_embedding(tmp_path / "missing.safetensors")


def test_diffusers_pipeline_loads_both_files_we_write(tiny_model_dir, embedding, tmp_path):
    from diffusers import StableDiffusionPipeline

    files = save_embedding_files(embedding, tmp_path)
    for kind in ("diffusers", "a1111"):
        pipe = StableDiffusionPipeline.from_pretrained(tiny_model_dir, safety_checker=None)
        pipe.set_progress_bar_config(disable=True)
        pipe.load_textual_inversion(str(files[kind]), token="<my-cat>")
        ids = pipe.tokenizer.convert_tokens_to_ids(["<my-cat>", "<my-cat>_1", "<my-cat>_2"])
        table = pipe.text_encoder.get_input_embeddings().weight
        torch.testing.assert_close(table[ids], embedding.vectors)
        image = pipe("a photo of <my-cat> on a beach", num_inference_steps=2, height=64, width=64,
                     generator=torch.Generator().manual_seed(0)).images[0]
        assert image.size == (64, 64)
