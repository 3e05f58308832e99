"""Rendering and scoring words on SD 3 and Flux (issue 23, step 3): the renderer hands the pipelines prompt
embeddings built with the word's rows in every text encoder; Flux renders with its embedded guidance and no
negative; strengths weight every encoder's rows; diffusers' own pipelines, given the same rows by their own
means, draw the same images. Tiny random models, 32-64 px, 2 denoising steps: mechanics, not quality.
"""

from __future__ import annotations

import math
from dataclasses import replace

import numpy as np
import pytest
import torch
from safetensors.torch import load_file

from inversion.config import ClipSpec
from inversion.embeddings.formats import LearnedEmbedding, load_embedding, save_embedding_files
from inversion.evaluation.clip import TINY_ARCH, load_clip, write_tiny_clip
from inversion.evaluation.render import Renderer, RenderSettings
from inversion.evaluation.scoring import ScoreSettings, score_concept
from inversion.model.components import load_components
from inversion.model.info import FAMILIES
from inversion.text.encoder import PromptEncoder
from inversion.text.weighting import encode_weighted
from tests.conftest import write_shape_images

FAST = RenderSettings(steps=2, guidance=3.5, resolution=32, device="cpu", batch_size=4)
PROMPT = "a photo of <fw> on a table"


@pytest.fixture(scope="module")
def sd3(sd3_tiny_model_dir):
    return load_components(sd3_tiny_model_dir, families=FAMILIES)


@pytest.fixture(scope="module")
def flux(flux_tiny_model_dir):
    return load_components(flux_tiny_model_dir, families=FAMILIES)


@pytest.fixture(scope="module")
def models(sd3, flux):
    return {"sd3": sd3, "flux": flux}


def _word(components, token: str = "<fw>", vectors: int = 2, scale: float = 3.0, seed: int = 0) -> LearnedEmbedding:
    """A word of ``vectors`` rows per text encoder, each ``scale`` times its encoder's typical row."""
    generator = torch.Generator().manual_seed(seed)
    tables = []
    for _, encoder in components.text_sides:
        table = encoder.get_input_embeddings().weight
        rows = torch.randn(vectors, table.shape[1], generator=generator)
        tables.append(rows * scale * float(table.norm(dim=1).mean()) / rows.norm(dim=1, keepdim=True))
    return LearnedEmbedding.from_tables(token, tables, components.family)


def _pixels(image) -> np.ndarray:
    return np.asarray(image, dtype=np.float64) / 255.0


class _Recorder:
    """Stands in for the renderer's pipeline: records each call's keyword arguments, then calls it."""

    def __init__(self, pipeline) -> None:
        self.pipeline, self.calls = pipeline, []

    def __call__(self, **kwargs):
        self.calls.append(kwargs)
        return self.pipeline(**kwargs)

    def __getattr__(self, name):
        return getattr(self.pipeline, name)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_word_renders_through_the_family_pipeline(models, family):
    components = models[family]
    word = _word(components)
    renderer = Renderer(components, FAST)
    recorder = _Recorder(renderer._pipeline)
    renderer._pipeline = recorder
    rows = renderer.render([PROMPT, "a photo of a cat on a table"], [0], [word])
    assert [[image.size for image in row] for row in rows] == [[(32, 32)]] * 2
    assert all(np.isfinite(_pixels(image)).all() for row in rows for image in row)
    # the word makes its own picture; the same seed and prompt make the same one again
    assert np.abs(_pixels(rows[0][0]) - _pixels(rows[1][0])).mean() > 1e-3
    again = renderer.render([PROMPT], [0], [word])
    assert np.array_equal(_pixels(again[0][0]), _pixels(rows[0][0]))
    (call, *_) = recorder.calls
    assert call["guidance_scale"] == FAST.guidance and type(recorder.pipeline.scheduler).__name__ == (
        "FlowMatchEulerDiscreteScheduler"
    )
    assert call["pooled_prompt_embeds"] is not None and "prompt" not in call
    if family == "flux":  # distilled guidance: no negative, no second pass
        assert not any(key.startswith("negative") for key in call) and call.get("true_cfg_scale", 1.0) == 1.0
        assert call["latents"].shape == (2, (32 // 2 // 2) ** 2, 64)  # packed 2x2 patches of 16 channels
    else:
        assert call["negative_prompt_embeds"].shape == call["prompt_embeds"].shape
        assert call["latents"].shape == (2, 16, 16, 16)


def test_flux_guidance_is_the_embedded_guidance(flux):
    """--guidance reaches Flux's transformer as its guidance input: another value, another image."""
    word = _word(flux)
    first, second = (
        _pixels(Renderer(flux, replace(FAST, guidance=g)).render([PROMPT], [0], [word])[0][0]) for g in (1.0, 3.5)
    )
    assert np.abs(first - second).max() > 0


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_a_word_moves_the_conditioning_of_every_encoder_it_feeds(models, family):
    """With the word installed, each text encoder's rows at the word's positions are its own columns."""
    components = models[family]
    text = PromptEncoder(components)
    word = _word(components)
    placeholder = text.register(word.token, word.num_vectors)
    prompt = PROMPT.replace("<fw>", "<fw> <fw>_1")
    other = _word(components, seed=1)
    with torch.no_grad():
        with text.learned([placeholder], [word.vectors]):
            learned = text.encode([prompt])
        with text.learned([placeholder], [other.vectors]):
            moved = text.encode([prompt])
    assert not torch.equal(learned.hidden, moved.hidden)
    if family == "flux":  # CLIP-L's rows reach only the pooled vector, T5's only the sequence
        assert not torch.equal(learned.pooled, moved.pooled)
    else:
        clip_rows = learned.hidden[:, :77] - moved.hidden[:, :77]
        t5_rows = learned.hidden[:, 77:] - moved.hidden[:, 77:]
        widths = text.widths
        assert float(clip_rows[..., : widths[0]].abs().max()) > 0  # CLIP-L
        assert float(clip_rows[..., widths[0] : widths[0] + widths[1]].abs().max()) > 0  # CLIP-G
        assert float(t5_rows.abs().max()) > 0  # T5


def _row_ratios(weighted: torch.Tensor, reference: torch.Tensor) -> torch.Tensor:
    """Per token position, the factor ``r`` that best maps ``reference``'s row onto ``weighted``'s."""
    w, r = weighted[0].double(), reference[0].double()
    return (w * r).sum(-1) / (r * r).sum(-1)


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_strengths_weight_every_encoders_rows(models, family):
    """``(<fw>:1.5)`` against ``(<fw>:0.5)``: the same token ids, so in every encoder's rows (T5's included)
    the word's positions scale by 3 against the others, each encoder rescaled on its own; pooled as encoded."""
    components = models[family]
    text = PromptEncoder(components)
    word = _word(components, vectors=1)
    placeholder = text.register(word.token, 1)
    with torch.no_grad(), text.learned([placeholder], [word.vectors]):
        strong = encode_weighted(text, ["a photo of (<fw>:1.5) on a table"])
        weak = encode_weighted(text, ["a photo of (<fw>:0.5) on a table"])
        plain = text.encode(["a photo of <fw> on a table"])
    assert torch.equal(strong.pooled, weak.pooled) and torch.equal(strong.pooled, plain.pooled)
    clip_tokens = components.tokenizer.model_max_length
    # each encoder's rows in the joined conditioning: (token rows, columns, that encoder's tokenizer)
    if family == "sd3":
        wl, wg, _ = text.widths
        blocks = [
            (slice(0, clip_tokens), slice(0, wl), text.tokenizers[0]),
            (slice(0, clip_tokens), slice(wl, wl + wg), text.tokenizers[1]),
            (slice(clip_tokens, None), slice(None), text.tokenizers[2]),
        ]
    else:
        blocks = [(slice(None), slice(None), text.tokenizers[1])]
    for rows, columns, tokenizer in blocks:
        ratios = _row_ratios(strong.hidden[:, rows, columns], weak.hidden[:, rows, columns])
        at_word = torch.tensor(
            [i == tokenizer.convert_tokens_to_ids("<fw>") for i in _ids(text, tokenizer, "a photo of ", " on a table")]
        )
        assert int(at_word.sum()) == 1
        common = ratios[~at_word]
        assert torch.allclose(common, common[0].expand_as(common), rtol=1e-4), "one rescale per encoder"
        assert float(ratios[at_word][0] / common[0]) == pytest.approx(3.0, rel=1e-4)
    assert not torch.equal(strong.hidden, plain.hidden)


def _ids(text: PromptEncoder, tokenizer, before: str, after: str) -> list[int]:
    """The weighted layout's ids of ``before <fw> after`` for ``tokenizer`` (its parts tokenized on their own)."""
    from inversion.text.weighting import parse_weights, weighted_ids

    index = text.tokenizers.index(tokenizer)
    ids, _ = weighted_ids(tokenizer, parse_weights(f"{before}(<fw>:1.5){after}"), text.lengths[index])
    return ids


def _expanded(prompt: str) -> str:
    return prompt.replace("<fw>", "<fw> <fw>_1")


def test_diffusers_flux_pipeline_with_our_pair_draws_what_sstar_draws(flux, flux_tiny_model_dir, tmp_path):
    """The user's recipe (two load_textual_inversion calls on our diffusers file) and sstar's renderer, given the
    same starting noise, draw the same image: the renderer's prompt embeddings are the pipeline's own."""
    from diffusers import FluxPipeline

    word = _word(flux)
    files = save_embedding_files(word, tmp_path)
    state = load_file(files["diffusers"])
    pipe = FluxPipeline.from_pretrained(flux_tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    sides = ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
    for key, (tokenizer, encoder) in zip(("clip_l", "t5"), sides):
        pipe.load_textual_inversion(state[key], token="<fw>", text_encoder=encoder, tokenizer=tokenizer)
    renderer = Renderer(flux, FAST)
    ours = renderer.render([PROMPT], [3], [load_embedding(files["comfyui"])])[0][0]
    theirs = pipe(
        PROMPT,
        latents=renderer.initial_noise(3, 32),
        num_inference_steps=FAST.steps,
        guidance_scale=FAST.guidance,
        height=32,
        width=32,
    ).images[0]
    assert np.abs(_pixels(ours) - _pixels(theirs)).max() <= 1 / 255
    with torch.no_grad():  # the word's rows count: move T5's and the image moves
        pipe.text_encoder_2.get_input_embeddings().weight[pipe.tokenizer_2.convert_tokens_to_ids("<fw>")] *= -1
    moved = pipe(
        PROMPT,
        latents=renderer.initial_noise(3, 32),
        num_inference_steps=FAST.steps,
        guidance_scale=FAST.guidance,
        height=32,
        width=32,
    ).images[0]
    assert np.abs(_pixels(moved) - _pixels(theirs)).max() > 1 / 255


def test_sd3_pipeline_with_the_rows_installed_by_hand_draws_what_sstar_draws(sd3, sd3_tiny_model_dir):
    """SD 3 has no embedding loader: add the word's names to each tokenizer and its rows to each embedding
    table by hand, and diffusers' own StableDiffusion3Pipeline draws what sstar draws from prompt embeddings."""
    from diffusers import StableDiffusion3Pipeline

    word = _word(sd3)
    pipe = StableDiffusion3Pipeline.from_pretrained(sd3_tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    sides = (
        (pipe.tokenizer, pipe.text_encoder),
        (pipe.tokenizer_2, pipe.text_encoder_2),
        (pipe.tokenizer_3, pipe.text_encoder_3),
    )
    for (tokenizer, encoder), table in zip(sides, word.tables):
        tokenizer.add_tokens(["<fw>", "<fw>_1"])
        encoder.resize_token_embeddings(len(tokenizer))
        with torch.no_grad():
            encoder.get_input_embeddings().weight[tokenizer.convert_tokens_to_ids(["<fw>", "<fw>_1"])] = table
    renderer = Renderer(sd3, FAST)
    ours = renderer.render([PROMPT], [3], [word])[0][0]
    theirs = pipe(
        _expanded(PROMPT),
        latents=renderer.initial_noise(3, 32),
        num_inference_steps=FAST.steps,
        guidance_scale=FAST.guidance,
        height=32,
        width=32,
    ).images[0]
    assert np.abs(_pixels(ours) - _pixels(theirs)).max() <= 1 / 255


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    spec = ClipSpec(TINY_ARCH, checkpoint=write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny.safetensors"))
    return load_clip(spec, "cpu")


@pytest.mark.parametrize("family", ["sd3", "flux"])
def test_score_a_word_and_its_words_only_baseline(models, family, clip, tmp_path):
    """sstar score's library call on both families: the word and the caption baseline go through one renderer
    (Flux: its embedded guidance, no negative, for both), and the numbers are raw cosines."""
    components = models[family]
    from PIL import Image

    images = [Image.open(p) for p in sorted(write_shape_images(tmp_path / "img", count=2, size=48).iterdir())]
    renderer = Renderer(components, FAST)
    recorder = _Recorder(renderer._pipeline)
    renderer._pipeline = recorder
    settings = ScoreSettings(prompts=("a photo of {} on a table",), samples=1)
    scores = score_concept(renderer, clip, _word(components), images, "square", ["a red square"], settings=settings)
    for value in (scores.image_similarity, scores.text_similarity, scores.baseline_image_similarity):
        assert math.isfinite(value) and -1.0 <= value <= 1.0
    assert scores.baselines[0].per_prompt[0].prompt == "a photo of red square on a table"
    assert len(recorder.calls) == 2  # the word's batch, then the baseline's
    for call in recorder.calls:
        assert call["guidance_scale"] == FAST.guidance
        assert any(key.startswith("negative") for key in call) == (family == "sd3")
    assert scores.grid.size[0] > 0 and scores.baseline_grid.size[0] > 0


def test_sstar_render_and_score_take_the_files_of_both_families(
    sd3, flux, sd3_tiny_model_dir, flux_tiny_model_dir, tmp_path, capsys
):
    """The commands on the files users get: Flux's diffusers pair file rendered with a strength, SD 3's ComfyUI
    file scored (one prompt, one seed, 2 steps)."""
    import json

    from flows.cli import main
    from inversion.evaluation.clip import write_tiny_clip

    flux_files = save_embedding_files(_word(flux), tmp_path / "flux")
    grid = tmp_path / "grid.png"
    argv = ["render", "--model", flux_tiny_model_dir, "--embedding", flux_files["diffusers"], "--prompt", PROMPT]
    argv += ["--prompt", "a photo of (<fw>:1.3)", "--seeds", "0", "--steps", "2", "--guidance", "3.5"]
    argv += ["--resolution", "32", "--device", "cpu", "--out", grid]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    assert grid.is_file() and f"wrote {grid}" in out
    sd3_files = save_embedding_files(_word(sd3), tmp_path / "sd3")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of {} on a table\n")
    argv = ["score", "--model", sd3_tiny_model_dir, "--embedding", sd3_files["comfyui"], "--images"]
    argv += [write_shape_images(tmp_path / "img", count=2, size=48), "--class-word", "square", "--prompts", prompts]
    argv += ["--samples", "1", "--steps", "2", "--clip-arch", TINY_ARCH, "--clip-checkpoint"]
    argv += [write_tiny_clip(tmp_path / "clip.pt"), "--device", "cpu", "--out", tmp_path / "scores"]
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert code == 0, err
    scores = json.loads((tmp_path / "scores" / "scores.json").read_text())
    assert scores["token"] == "<fw>" and math.isfinite(scores["inversion_lift"])
    assert "raw CLIP cosines" in out
