"""CLIP loading and embedding (inversion.evaluation.clip): tiny random architecture, no downloads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from inversion.config import ClipSpec
from inversion.errors import ConfigError, InputError
from inversion.evaluation import clip as clip_mod
from inversion.evaluation.clip import TINY_ARCH, load_clip, open_clip_module, write_tiny_clip


@pytest.fixture(autouse=True)
def no_downloads(monkeypatch):
    """Any attempt by open_clip to fetch weights fails the test."""
    import open_clip.factory
    import open_clip.pretrained

    def refuse(*args, **kwargs):
        raise AssertionError(f"open_clip tried to download: {args} {kwargs}")

    for module in (open_clip.pretrained, open_clip.factory):
        for name in ("download_pretrained", "download_pretrained_from_hf", "download_pretrained_from_url"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)


@pytest.fixture(scope="module")
def tiny_ckpt(tmp_path_factory):
    return write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny.safetensors")


@pytest.fixture(scope="module")
def tiny(tiny_ckpt):
    return load_clip(ClipSpec(TINY_ARCH, checkpoint=tiny_ckpt), "cpu")


def _images(n: int, seed: int = 0) -> list[Image.Image]:
    rng = np.random.default_rng(seed)
    return [Image.fromarray(rng.integers(0, 256, (48 + 8 * i, 64, 3), dtype=np.uint8)) for i in range(n)]


def test_tiny_architecture_is_registered():
    assert TINY_ARCH in open_clip_module().list_models()


def test_embeddings_are_normalised_and_shaped(tiny):
    images = tiny.embed_images(_images(3))
    texts = tiny.embed_texts(["a photo of a cat", "a dog", "an oil painting of a harbour"])
    assert images.shape == (3, 64) and texts.shape == (3, 64)
    assert images.dtype == torch.float32 and images.device.type == "cpu"
    torch.testing.assert_close(images.norm(dim=-1), torch.ones(3))
    torch.testing.assert_close(texts.norm(dim=-1), torch.ones(3))
    assert not torch.allclose(images[0], images[1])  # different images, different embeddings
    assert not torch.allclose(texts[0], texts[1])


def test_batching_does_not_change_embeddings(tiny):
    images = _images(5, seed=1)
    torch.testing.assert_close(
        tiny.embed_images(images, batch_size=2), tiny.embed_images(images, batch_size=32), atol=1e-5, rtol=1e-5
    )
    texts = ["a", "a photo of a cat", "b c d"]
    torch.testing.assert_close(tiny.embed_texts(texts, batch_size=1), tiny.embed_texts(texts), atol=1e-5, rtol=1e-5)


def test_empty_input_gives_empty_embeddings(tiny):
    assert tiny.embed_images([]).shape == (0, 64)
    assert tiny.embed_texts([]).shape == (0, 64)


def test_loaded_once_per_spec_and_device(tmp_path, monkeypatch):
    checkpoint = write_tiny_clip(tmp_path / "own.safetensors")  # a spec no other test has loaded
    calls = []
    real = clip_mod._create
    monkeypatch.setattr(clip_mod, "_create", lambda *a: calls.append(a) or real(*a))
    first = load_clip(ClipSpec(TINY_ARCH, checkpoint=checkpoint), "cpu")
    # equal specs (the path given as str or Path) share the cached model
    assert load_clip(ClipSpec(TINY_ARCH, checkpoint=str(checkpoint)), "cpu") is first
    assert load_clip(ClipSpec(TINY_ARCH, checkpoint=checkpoint), torch.device("cpu")) is first
    assert len(calls) == 1


def test_same_weights_give_same_embeddings_after_reload(tiny, tiny_ckpt, tmp_path):
    other = write_tiny_clip(tmp_path / "again.pt")  # same seed, torch.save format
    reloaded = load_clip(ClipSpec(TINY_ARCH, checkpoint=other), "cpu")
    assert reloaded is not tiny
    images = _images(2)
    torch.testing.assert_close(reloaded.embed_images(images), tiny.embed_images(images))
    different = load_clip(ClipSpec(TINY_ARCH, checkpoint=write_tiny_clip(tmp_path / "s1.pt", seed=1)), "cpu")
    assert not torch.allclose(different.embed_images(images), tiny.embed_images(images))


def test_unknown_architecture_lists_known_ones(tiny_ckpt):
    with pytest.raises(InputError) as err:
        load_clip(ClipSpec("ViT-Q-99", checkpoint=tiny_ckpt), "cpu")
    message = str(err.value)
    assert "ViT-Q-99" in message and "ViT-B-32" in message and TINY_ARCH in message
    assert "\n" not in message


def test_checkpoint_of_another_architecture_is_refused(tmp_path):
    import open_clip

    config = open_clip.get_model_config(TINY_ARCH)
    config["vision_cfg"]["width"] = 96  # a different, incompatible tiny CLIP
    torch.manual_seed(0)
    path = tmp_path / "wide.pt"
    torch.save(open_clip.CLIP(**config).state_dict(), path)
    with pytest.raises(InputError) as err:
        load_clip(ClipSpec(TINY_ARCH, checkpoint=path), "cpu")
    message = str(err.value)
    assert str(path) in message and TINY_ARCH in message and "does not match" in message
    assert "\n" not in message


def test_unreadable_checkpoint_is_refused(tmp_path):
    path = tmp_path / "junk.pt"
    path.write_bytes(b"not a checkpoint")
    with pytest.raises(
        InputError, match="cannot load CLIP checkpoint .*junk.pt as architecture sstar-tiny-clip: not a state-dict"
    ):
        load_clip(ClipSpec(TINY_ARCH, checkpoint=path), "cpu")


def test_missing_checkpoint_is_refused(tmp_path):
    with pytest.raises(InputError, match="CLIP checkpoint not found: .*nothing.pt"):
        load_clip(ClipSpec(TINY_ARCH, checkpoint=tmp_path / "nothing.pt"), "cpu")


def test_unknown_pretrained_tag_is_refused_without_download():
    with pytest.raises(InputError, match="unknown pretrained tag 'no-such-tag' for CLIP ViT-B-32; known: openai"):
        load_clip(ClipSpec("ViT-B-32", pretrained="no-such-tag"), "cpu")


def test_openai_tag_switches_on_quick_gelu(monkeypatch):
    import open_clip

    seen = {}

    def fake_create(arch, pretrained=None, **kwargs):
        seen.update(arch=arch, pretrained=pretrained, **kwargs)
        raise RuntimeError("offline")

    monkeypatch.setattr(open_clip, "create_model_and_transforms", fake_create)
    with pytest.raises(InputError, match="ViT-B-32 with pretrained weights 'openai'.*offline"):
        load_clip(ClipSpec.default(), "cpu")
    assert seen["arch"] == "ViT-B-32" and seen["pretrained"] == "openai" and seen["force_quick_gelu"] is True


def test_spec_validation(tmp_path):
    with pytest.raises(ConfigError, match="not both"):
        ClipSpec(TINY_ARCH, checkpoint=tmp_path / "a.pt", pretrained="openai")
    with pytest.raises(ConfigError, match="needs weights"):
        ClipSpec(TINY_ARCH)
    with pytest.raises(ConfigError, match="non-empty"):
        ClipSpec("  ", pretrained="openai")
    assert ClipSpec(TINY_ARCH, checkpoint="x.pt").checkpoint.is_absolute()
    assert ClipSpec.default().describe() == "ViT-B-32/openai"
