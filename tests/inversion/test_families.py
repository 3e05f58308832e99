"""SD 2.x and SDXL: the family read from the folder, training in both SDXL text encoders, packing and
exact resume, rendering, and diffusers' own pipelines loading our files with the conditioning we trained with."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from safetensors.torch import load_file

from inversion.config import ConceptConfig, TrainConfig
from inversion.embeddings.formats import load_embedding
from inversion.errors import EmbeddingFormatError
from inversion.evaluation.render import Renderer, RenderSettings
from inversion.model.components import load_components
from inversion.model.info import read_family
from inversion.text.encoder import PromptEncoder, crop_conditioning
from inversion.text.tokens import expand_token
from inversion.training.trainer import train_concept, train_concepts
from tests.conftest import write_shape_images

FAMILY_DIRS = {"sd1": "tiny_model_dir", "sd2": "sd2_tiny_model_dir", "sdxl": "sdxl_tiny_model_dir"}
CONFIG = TrainConfig(steps=2, batch_size=2, lr=5e-2, device="cpu")


@pytest.fixture(scope="module")
def sdxl(sdxl_tiny_model_dir):
    return load_components(sdxl_tiny_model_dir)


def test_family_is_read_from_the_folder(tiny_model_dir, sd2_tiny_model_dir, sdxl_tiny_model_dir):
    index = json.loads((sdxl_tiny_model_dir / "model_index.json").read_text())
    assert index["_class_name"] == "StableDiffusionXLPipeline"
    assert [read_family(d) for d in (tiny_model_dir, sd2_tiny_model_dir, sdxl_tiny_model_dir)] == ["sd1", "sd2", "sdxl"]
    sd2 = load_components(sd2_tiny_model_dir)
    assert sd2.family == "sd2" and sd2.prediction_type == "v_prediction" and sd2.tokenizer.pad_token == "!"


def test_sdxl_components_read_the_vae_scaling_factor_from_its_config(sdxl):
    assert sdxl.family == "sdxl" and sdxl.tokenizer_2.pad_token == "!"
    assert sdxl.latent_scaling == pytest.approx(0.13025)
    assert PromptEncoder(sdxl).widths == (32, 48)


def test_crop_conditioning_of_a_wide_image():
    # 200 x 100 at 64 px: resized to 128 x 64, the centre crop starts 32 px from the left (and from the right)
    image = Image.new("RGB", (200, 100))
    assert crop_conditioning(image, 64) == (100, 200, 0, 32)
    assert crop_conditioning(Image.new("RGB", (200, 100)), 64, flipped=True) == (100, 200, 0, 32)
    assert crop_conditioning(Image.new("RGB", (100, 300)), 64) == (300, 100, 64, 0)


def test_sdxl_word_is_trained_in_both_text_encoders(sdxl, tmp_path):
    images = write_shape_images(tmp_path / "images")
    concept = ConceptConfig("<xl-sq>", "square", images, num_vectors=2)
    result = train_concept(sdxl, concept, CONFIG, output_dir=tmp_path / "out")
    clip_l, clip_g = result.embedding.tables
    assert clip_l.shape == (2, 32) and clip_g.shape == (2, 48)
    square = sdxl.tokenizer("square", add_special_tokens=False).input_ids[0]
    for table, encoder in ((clip_l, sdxl.text_encoder), (clip_g, sdxl.text_encoder_2)):
        start = encoder.get_input_embeddings().weight[square]
        assert not torch.allclose(table[0], start), "both encoders' vectors must move"
    assert set(result.files) == {"diffusers", "diffusers_2", "sdxl"}
    single = load_file(str(result.files["sdxl"]))
    assert result.files["sdxl"].name == "xl-sq.safetensors" and set(single) == {"clip_l", "clip_g"}
    torch.testing.assert_close(single["clip_l"], clip_l)
    torch.testing.assert_close(single["clip_g"], clip_g)
    from_diffusers = load_embedding(result.files["diffusers"])  # picks up learned_embeds_2.safetensors
    assert from_diffusers.token == "<xl-sq>" and from_diffusers.widths == (32, 48)
    torch.testing.assert_close(from_diffusers.vectors, result.embedding.vectors)


def test_sdxl_pack_matches_alone_and_resume_is_exact(sdxl, tmp_path):
    red = write_shape_images(tmp_path / "red", color=(200, 40, 40))
    blue = write_shape_images(tmp_path / "blue", color=(40, 40, 200), seed=1)
    concepts = [ConceptConfig("<xl-red>", "square", red), ConceptConfig("<xl-blue>", "circle", blue, seed=3)]
    packed = train_concepts(sdxl, concepts, CONFIG)
    for concept, result in zip(concepts, packed):
        alone = train_concept(sdxl, concept, CONFIG)
        torch.testing.assert_close(result.embedding.vectors, alone.embedding.vectors, rtol=1e-4, atol=1e-5)

    config = TrainConfig(steps=4, batch_size=2, lr=5e-2, device="cpu")
    whole = train_concept(sdxl, concepts[0], config)
    train_concept(
        sdxl, concepts[0], TrainConfig(steps=2, batch_size=2, lr=5e-2, device="cpu"), output_dir=tmp_path / "r"
    )
    resumed = train_concept(sdxl, concepts[0], config, output_dir=tmp_path / "r", resume=True)
    assert resumed.resumed_from == 2
    torch.testing.assert_close(resumed.embedding.vectors, whole.embedding.vectors)


def test_sdxl_render_uses_the_word_and_refuses_a_one_encoder_embedding(sdxl, tmp_path):
    from inversion.embeddings.formats import LearnedEmbedding

    renderer = Renderer(sdxl, RenderSettings(steps=2, guidance=2.0, device="cpu"))
    word = LearnedEmbedding("<xl-w>", torch.randn(1, 80, generator=torch.Generator().manual_seed(0)) * 3, (32, 48))
    [[with_word]], [[plain]] = (
        renderer.render([p], [0], e) for p, e in (("a photo of <xl-w>", [word]), ("a photo of <xl-w>", []))
    )
    assert with_word.size == (64, 64)
    assert with_word.tobytes() != plain.tobytes(), "the learned vectors must reach the image"
    sd1_word = LearnedEmbedding("<sd1-w>", torch.zeros(1, 32))
    with pytest.raises(EmbeddingFormatError, match=r"width 32, but this sdxl model's text encoders take 32\+48"):
        renderer.render(["a photo of <sd1-w>"], [0], [sd1_word])


def _trained(family_dir, tmp_path, token):
    components = load_components(family_dir)
    concept = ConceptConfig(token, "square", write_shape_images(tmp_path / "images"), num_vectors=2)
    return components, train_concept(components, concept, CONFIG, output_dir=tmp_path / "out")


def _ours(components, embedding, prompt):
    """The conditioning the trainer computes for ``prompt`` with ``embedding`` installed (its code path)."""
    text = PromptEncoder(components)
    placeholder = text.register(embedding.token, embedding.num_vectors)
    with text.learned([placeholder], [embedding.vectors]), torch.no_grad():
        return text.encode([expand_token(prompt, embedding.token, embedding.num_vectors)])


@pytest.mark.parametrize("family", ["sd1", "sd2"])
def test_diffusers_loads_our_sd_files_with_the_conditioning_we_trained(family, request, tmp_path):
    from diffusers import StableDiffusionPipeline

    model_dir = request.getfixturevalue(FAMILY_DIRS[family])
    components, result = _trained(model_dir, tmp_path, "<fam-sq>")
    prompt = "a photo of <fam-sq> on a beach"
    ours = _ours(components, result.embedding, prompt)
    for kind in ("diffusers", "a1111"):
        pipe = StableDiffusionPipeline.from_pretrained(model_dir, safety_checker=None)
        pipe.load_textual_inversion(str(result.files[kind]), token="<fam-sq>")
        theirs, _ = pipe.encode_prompt(prompt, "cpu", 1, False)
        torch.testing.assert_close(theirs, ours.hidden)


def test_diffusers_sdxl_pipeline_loads_our_files_with_the_conditioning_we_trained(sdxl_tiny_model_dir, tmp_path):
    from diffusers import StableDiffusionXLPipeline

    components, result = _trained(sdxl_tiny_model_dir, tmp_path, "<xl-cat>")
    prompt = "a photo of <xl-cat> on a beach"
    ours = _ours(components, result.embedding, prompt)
    single = load_file(str(result.files["sdxl"]))
    sources = {  # the two-file diffusers layout, and the clip_l/clip_g file A1111/ComfyUI/kohya load
        "diffusers": (str(result.files["diffusers"]), str(result.files["diffusers_2"])),
        "sdxl": (single["clip_l"], single["clip_g"]),
    }
    for first, second in sources.values():
        pipe = StableDiffusionXLPipeline.from_pretrained(sdxl_tiny_model_dir)
        pipe.load_textual_inversion(first, token="<xl-cat>", text_encoder=pipe.text_encoder, tokenizer=pipe.tokenizer)
        pipe.load_textual_inversion(
            second, token="<xl-cat>", text_encoder=pipe.text_encoder_2, tokenizer=pipe.tokenizer_2
        )
        hidden, _, pooled, _ = pipe.encode_prompt(
            prompt, device="cpu", num_images_per_prompt=1, do_classifier_free_guidance=False
        )
        torch.testing.assert_close(hidden, ours.hidden)
        torch.testing.assert_close(pooled, ours.pooled)
