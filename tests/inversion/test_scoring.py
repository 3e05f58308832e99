"""CLIP scoring (inversion.evaluation.scoring, inversion.evaluation.prompts): tiny diffusion model + tiny random CLIP,
no downloads."""

from __future__ import annotations

import json
import math

import pytest
import torch
import torch.nn.functional as F

from inversion.config import ClipSpec
from inversion.embeddings.formats import LearnedEmbedding, save_diffusers
from inversion.errors import ConfigError, EmbeddingFormatError, InputError
from inversion.evaluation import scoring
from inversion.evaluation.clip import TINY_ARCH, load_clip, write_tiny_clip
from inversion.evaluation.prompts import (
    OBJECT_PROMPTS,
    STYLE_PROMPTS,
    caption_phrase,
    default_captions,
    default_prompts,
    load_prompts,
)
from inversion.evaluation.render import Renderer, RenderSettings
from inversion.evaluation.score_files import score_embedding_file
from inversion.evaluation.scoring import ScoreSettings, image_similarity, score_concept, text_similarity
from inversion.images import list_images, open_rgb
from inversion.model.components import load_components
from inversion.text.tokens import initial_vectors
from tests.conftest import write_shape_images

TEMPLATES = ("a photo of a {} on the beach", "an oil painting of a {}")
FAST = RenderSettings(steps=3, guidance=7.5, device="cpu", batch_size=8)


@pytest.fixture(scope="module")
def components(tiny_model_dir):
    return load_components(tiny_model_dir)


@pytest.fixture(scope="module")
def renderer(components):
    return Renderer(components, FAST)


@pytest.fixture(scope="module")
def clip_spec(tmp_path_factory):
    return ClipSpec(TINY_ARCH, checkpoint=write_tiny_clip(tmp_path_factory.mktemp("clip") / "tiny.safetensors"))


@pytest.fixture(scope="module")
def clip(clip_spec):
    return load_clip(clip_spec, "cpu")


@pytest.fixture(scope="module")
def reference_images(tmp_path_factory):
    folder = write_shape_images(tmp_path_factory.mktemp("concept") / "red-square", count=3)
    return [open_rgb(p) for p in list_images(folder)]


def _vector(components, word: str) -> torch.Tensor:
    return initial_vectors(components.text_encoder, components.tokenizer, word, 1)


# --- the two similarity functions -------------------------------------------------------------------------


def test_identical_images_score_one(clip, reference_images):
    one = clip.embed_images(reference_images[:1])
    assert image_similarity(one, one) == pytest.approx(1.0, abs=1e-6)
    copies = clip.embed_images(reference_images[:1] * 3)
    assert image_similarity(copies, one) == pytest.approx(1.0, abs=1e-6)
    # DreamBench's CLIP-I is a mean over all pairs: a set of *different* images against itself is below 1
    several = clip.embed_images(reference_images)
    assert image_similarity(several, several) < 1.0 - 1e-4


def test_image_similarity_is_symmetric_permutation_and_scale_invariant():
    g = torch.Generator().manual_seed(0)
    a, b = torch.randn(5, 16, generator=g), torch.randn(3, 16, generator=g)
    score = image_similarity(a, b)
    assert image_similarity(b, a) == pytest.approx(score, abs=1e-6)
    assert image_similarity(a[torch.randperm(5, generator=g)], b) == pytest.approx(score, abs=1e-6)
    assert image_similarity(a, b[torch.tensor([2, 0, 1])]) == pytest.approx(score, abs=1e-6)
    assert image_similarity(a * 7.0, b * 0.1) == pytest.approx(score, abs=1e-6)  # cosines, not dot products
    direct = torch.stack([F.cosine_similarity(x, y, dim=0) for x in a for y in b]).mean()
    assert score == pytest.approx(float(direct), abs=1e-6)


def test_text_similarity_matches_a_direct_computation():
    g = torch.Generator().manual_seed(1)
    images, texts = torch.randn(6, 16, generator=g), torch.randn(3, 16, generator=g)
    index = [0, 0, 1, 1, 2, 2]
    direct = sum(float(F.cosine_similarity(images[i], texts[p], dim=0)) for i, p in enumerate(index)) / 6
    assert text_similarity(images, texts, index) == pytest.approx(direct, abs=1e-6)
    # each image is compared with its *own* prompt: a different assignment changes the score
    assert text_similarity(images, texts, [2, 2, 0, 0, 1, 1]) != pytest.approx(direct, abs=1e-4)
    # order of (image, prompt) pairs does not matter
    perm = [5, 3, 1, 0, 2, 4]
    assert text_similarity(images[perm], texts, [index[i] for i in perm]) == pytest.approx(direct, abs=1e-6)


def test_similarity_input_errors():
    with pytest.raises(InputError, match="generated image embeddings is empty"):
        image_similarity(torch.empty(0, 8), torch.ones(2, 8))
    with pytest.raises(InputError, match="reference image embeddings is empty"):
        image_similarity(torch.ones(2, 8), torch.empty(0, 8))
    with pytest.raises(InputError, match="embedding sizes differ"):
        image_similarity(torch.ones(2, 8), torch.ones(2, 4))
    with pytest.raises(InputError, match="prompt_index has 1 entries for 2 images"):
        text_similarity(torch.ones(2, 8), torch.ones(1, 8), [0])
    with pytest.raises(InputError, match=r"prompt_index must lie in \[0, 1\)"):
        text_similarity(torch.ones(2, 8), torch.ones(1, 8), [0, 1])


# --- scoring a concept ---------------------------------------------------------------------------------------


def test_learned_word_equal_to_its_initializer_scores_like_the_words_only_baseline(
    renderer, clip, components, reference_images
):
    """The honest check of "same code path": a learned vector that *is* the word "cat" must give the
    baseline's images and scores exactly; a different vector must not."""
    settings = ScoreSettings(prompts=TEMPLATES, samples=2)
    same = LearnedEmbedding("<probe>", _vector(components, "cat"))
    scores = score_concept(renderer, clip, same, reference_images, "cat", None, "object", settings)
    (baseline,) = scores.baselines
    assert baseline.phrase == "cat"
    assert [p.prompt for p in baseline.per_prompt] == ["a photo of a cat on the beach", "an oil painting of a cat"]
    assert [p.prompt for p in scores.learned.per_prompt] == [t.replace("{}", "<probe>") for t in TEMPLATES]
    torch.testing.assert_close(scores.learned.image_embeds, baseline.image_embeds, atol=1e-6, rtol=0)
    assert scores.image_similarity == pytest.approx(scores.baseline_image_similarity, abs=1e-6)
    assert scores.text_similarity == pytest.approx(scores.baseline_text_similarity, abs=1e-6)
    assert scores.inversion_lift == pytest.approx(0.0, abs=1e-6)

    other = LearnedEmbedding("<probe>", _vector(components, "car"))
    changed = score_concept(renderer, clip, other, reference_images, "cat", None, "object", settings)
    assert not torch.allclose(changed.learned.image_embeds, changed.baselines[0].image_embeds, atol=1e-4)
    # the baseline does not depend on the learned vector
    torch.testing.assert_close(changed.baselines[0].image_embeds, baseline.image_embeds, atol=1e-6, rtol=0)


def test_learned_and_baseline_run_through_the_same_function(renderer, clip, components, reference_images, monkeypatch):
    calls = []
    real = scoring._score_images

    def spy(**kwargs):
        calls.append(kwargs)
        return real(**kwargs)

    monkeypatch.setattr(scoring, "_score_images", spy)
    embedding = LearnedEmbedding("<thing>", _vector(components, "dog"))
    captions = ["a photo of a fluffy ginger cat", "a small striped cat"]
    scores = score_concept(
        renderer,
        clip,
        embedding,
        reference_images,
        "cat",
        captions,
        "object",
        ScoreSettings(prompts=TEMPLATES[:1], seeds=(3, 5)),
    )
    assert [c["phrase"] for c in calls] == ["<thing>", "fluffy ginger cat", "small striped cat"]
    first = calls[0]
    for call in calls[1:]:
        assert set(call) == set(first)
        for key in first:
            if key not in ("phrase", "images"):
                assert call[key] is first[key], key  # the very same CLIP, templates, references…
    assert [len(call["images"][0]) for call in calls] == [2, 2, 2]  # one image per seed
    assert first["text_prompts"] == ["a photo of a cat on the beach"]  # text similarity uses the class word
    assert len(scores.baselines) == 2
    assert scores.baseline_image_similarity == pytest.approx(
        (scores.baselines[0].image_similarity + scores.baselines[1].image_similarity) / 2
    )


def test_scores_match_a_recomputation_from_the_images(renderer, clip, components, reference_images):
    embedding = LearnedEmbedding("<thing>", _vector(components, "dog"))
    settings = ScoreSettings(prompts=TEMPLATES, samples=2)
    reference = clip.embed_images(reference_images)
    scores = score_concept(renderer, clip, embedding, [], "cat", None, "object", settings, reference_embeds=reference)
    learned = scores.learned
    assert len(learned.images) == 2 and all(len(row) == 2 for row in learned.images)
    generated = clip.embed_images([im for row in learned.images for im in row])
    assert scores.image_similarity == pytest.approx(float((generated @ reference.T).mean()), abs=1e-5)
    texts = clip.embed_texts(["a photo of a cat on the beach", "an oil painting of a cat"])
    direct = float(((generated[:2] @ texts[0]).sum() + (generated[2:] @ texts[1]).sum()) / 4)
    assert scores.text_similarity == pytest.approx(direct, abs=1e-5)
    per_prompt = [p.image_similarity for p in learned.per_prompt]
    assert scores.image_similarity == pytest.approx(sum(per_prompt) / 2, abs=1e-6)
    assert scores.inversion_lift == pytest.approx(scores.image_similarity - scores.baseline_image_similarity)
    data = scores.to_json()
    assert data["scale"].startswith("raw cosine")
    assert json.loads(json.dumps(data))["inversion_lift"] == pytest.approx(scores.inversion_lift)
    assert scores.grid.size[1] > 2 * 64 and scores.baseline_grid.size == scores.grid.size


def test_score_concept_input_errors(renderer, clip, components, reference_images):
    embedding = LearnedEmbedding("<thing>", _vector(components, "dog"))
    settings = ScoreSettings(prompts=TEMPLATES[:1], samples=1)
    with pytest.raises(InputError, match="no reference"):
        score_concept(renderer, clip, embedding, [], "cat", None, "object", settings)
    with pytest.raises(InputError, match="class word"):
        score_concept(renderer, clip, embedding, reference_images, " ", None, "object", settings)
    with pytest.raises(InputError, match="contains the learned token <thing>"):
        score_concept(renderer, clip, embedding, reference_images, "cat", ["a photo of a <thing>"], "object", settings)
    with pytest.raises(EmbeddingFormatError, match=r"width 768, but this sd1 model's text encoders take 32"):
        score_concept(
            renderer,
            clip,
            LearnedEmbedding("<big>", torch.zeros(1, 768)),
            reference_images,
            "cat",
            None,
            "object",
            settings,
        )
    with pytest.raises(ConfigError, match="property"):
        score_concept(renderer, clip, embedding, reference_images, "cat", None, "sculpture", settings)


def test_score_settings_validation():
    with pytest.raises(InputError, match=r"prompt 2 'a photo' lacks \{\}"):
        ScoreSettings(prompts=("a photo of {}", "a photo"))
    with pytest.raises(ConfigError, match="samples"):
        ScoreSettings(samples=0)
    with pytest.raises(ConfigError, match="distinct"):
        ScoreSettings(seeds=(1, 1))
    assert ScoreSettings(samples=3).seed_list == (0, 1, 2)
    assert ScoreSettings(samples=3, seeds=(7,)).seed_list == (7,)
    assert ScoreSettings().prompts_for("style") == STYLE_PROMPTS


# --- the command ---------------------------------------------------------------------------------------------


def test_score_embedding_file_writes_grids_and_scores(tmp_path, tiny_model_dir, clip_spec, components):
    images = write_shape_images(tmp_path / "images", count=2)
    embedding_path = save_diffusers(
        LearnedEmbedding("<sq>", _vector(components, "square")), tmp_path / "emb" / "learned_embeds.safetensors"
    )
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("# two prompts\na photo of a {} in the snow\n\na red {}\n")
    out = tmp_path / "out"
    result = score_embedding_file(
        tiny_model_dir,
        embedding_path,
        images,
        out,
        clip_spec,
        "square",
        prompts_file=prompts,
        samples=1,
        render=FAST,
        clip_device="cpu",
    )
    assert (out / "grid.png").is_file() and (out / "baseline_grid.png").is_file()
    saved = json.loads((out / "scores.json").read_text())
    assert saved["token"] == "<sq>" and saved["class_word"] == "square"
    assert saved["prompts"] == ["a photo of a {} in the snow", "a red {}"]
    assert saved["baselines"][0]["per_prompt"][1]["prompt"] == "a red square"
    assert saved["clip"].startswith(f"{TINY_ARCH}@")
    similarities = ("image_similarity", "text_similarity", "baseline_image_similarity", "baseline_text_similarity")
    for key in similarities:
        assert math.isfinite(saved[key]) and -1.0 <= saved[key] <= 1.0, key  # raw cosines
        assert result[key] == pytest.approx(saved[key])
    for variant in (saved["learned"], *saved["baselines"]):
        for prompt in variant["per_prompt"]:
            assert -1.0 <= prompt["image_similarity"] <= 1.0 and -1.0 <= prompt["text_similarity"] <= 1.0
    assert saved["inversion_lift"] == pytest.approx(saved["image_similarity"] - saved["baseline_image_similarity"])
    # what the command wrote is what the scoring functions compute from the same inputs: no rescaling
    direct = score_concept(
        Renderer(components, FAST),
        load_clip(clip_spec, "cpu"),
        LearnedEmbedding("<sq>", _vector(components, "square")),
        [open_rgb(p) for p in list_images(images)],
        "square",
        None,
        "object",
        ScoreSettings(prompts=("a photo of a {} in the snow", "a red {}"), samples=1),
    )
    for key in (*similarities, "inversion_lift"):
        assert saved[key] == pytest.approx(getattr(direct, key), abs=1e-5), key
    assert result["files"]["scores"] == str(out / "scores.json")


def test_score_embedding_file_refuses_an_empty_image_folder(tmp_path, tiny_model_dir, clip_spec):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no images .* in .*empty"):
        score_embedding_file(
            tiny_model_dir, tmp_path / "missing.safetensors", tmp_path / "empty", tmp_path / "out", clip_spec, "cat"
        )
    assert not (tmp_path / "out").exists()


# --- prompts -------------------------------------------------------------------------------------------------


def test_default_prompt_sets():
    for prompts in (OBJECT_PROMPTS, STYLE_PROMPTS):
        assert 8 <= len(prompts) <= 12 and len(set(prompts)) == len(prompts)
        assert all(p.count("{}") == 1 for p in prompts)
    assert default_prompts("object") == OBJECT_PROMPTS and default_prompts("style") == STYLE_PROMPTS
    assert all(p.endswith("in the style of {}") for p in STYLE_PROMPTS)


def test_prompts_file_without_placeholder_names_file_and_line(tmp_path):
    path = tmp_path / "mine.txt"
    path.write_text("a photo of {} at sea\n# a comment\n\na photo of a harbour\n")
    with pytest.raises(InputError) as err:
        load_prompts(path)
    assert str(path) in str(err.value) and "line 4" in str(err.value) and "a photo of a harbour" in str(err.value)
    path.write_text("# nothing\n\n")
    with pytest.raises(InputError, match="holds no prompts"):
        load_prompts(path)
    with pytest.raises(InputError, match="prompts file not found"):
        load_prompts(tmp_path / "absent.txt")
    path.write_text("a photo of {} at sea\n  an oil painting of {}  \n")
    assert load_prompts(path) == ("a photo of {} at sea", "an oil painting of {}")


def test_captions_and_their_phrases():
    assert default_captions("cat") == ["a photo of a cat"]
    assert default_captions("van gogh", "style") == ["a painting in the style of van gogh"]
    assert caption_phrase("a photo of a cat") == "cat"
    assert caption_phrase("A photo of an old teddy bear.") == "old teddy bear"
    assert caption_phrase("a fluffy ginger cat") == "fluffy ginger cat"
    assert caption_phrase("a painting in the style of van gogh", "style") == "van gogh"
    assert caption_phrase("ukiyo-e woodblock prints", "style") == "ukiyo-e woodblock prints"
    with pytest.raises(InputError, match="leaves no words"):
        caption_phrase("a photo of ")


# --- batched scoring and the words-only baseline cache ----------------------------------------------------------


class _DictCache:
    """The smallest :class:`inversion.evaluation.scoring.BaselineCache`: a dict, counting what it serves and keeps."""

    scope = "tiny-model"

    def __init__(self) -> None:
        self.kept: dict[str, list] = {}
        self.hits = 0

    def get(self, key):
        if key in self.kept:
            self.hits += 1
        return self.kept.get(key)

    def put(self, key, images):
        self.kept[key] = images


def test_a_pack_scores_as_each_word_alone_and_the_baseline_is_rendered_once(
    renderer, clip, components, reference_images, monkeypatch
):
    from inversion.evaluation.scoring import ScoreRequest, score_concepts

    settings = ScoreSettings(prompts=TEMPLATES, seeds=(1, 2))
    words = [LearnedEmbedding("<a>", _vector(components, "dog")), LearnedEmbedding("<b>", _vector(components, "cup"))]
    alone = [
        score_concept(renderer, clip, w, reference_images, "cat", ["a red square"], "object", settings) for w in words
    ]
    rendered: list[list[str]] = []
    real_render = renderer.render
    monkeypatch.setattr(
        renderer, "render", lambda prompts, *a, **k: rendered.append(list(prompts)) or real_render(prompts, *a, **k)
    )
    cache = _DictCache()
    requests = [ScoreRequest(w, "cat", reference_images, ["a red square"]) for w in words]
    packed = score_concepts(renderer, clip, requests, settings, cache)
    # one call renders both learned words, one the shared caption's baseline (once, though two concepts use it)
    assert rendered == [
        [t.format(w) for w in ("<a>", "<b>") for t in TEMPLATES],
        [t.format("red square") for t in TEMPLATES],
    ]
    for p, a in zip(packed, alone):
        assert p.image_similarity == pytest.approx(a.image_similarity, abs=1e-5)
        assert p.inversion_lift == pytest.approx(a.inversion_lift, abs=1e-5)
    # scoring again (a re-learned word) renders only the learned word: the baseline comes from the cache
    rendered.clear()
    again = score_concepts(renderer, clip, requests[:1], settings, cache)[0]
    assert rendered == [[t.format("<a>") for t in TEMPLATES]] and cache.hits == 1
    assert again.baseline_image_similarity == pytest.approx(packed[0].baseline_image_similarity, abs=1e-6)
    # another sampler setting is another rendering: a different key
    from inversion.evaluation.scoring import baseline_key

    prompts = [t.format("red square") for t in TEMPLATES]
    assert baseline_key("m", prompts, (1, 2), FAST, 64) != baseline_key(
        "m", prompts, (1, 2), RenderSettings(steps=3, sampler="dpm"), 64
    )
    assert baseline_key("m", prompts, (1, 2), FAST, 64) != baseline_key("other", prompts, (1, 2), FAST, 64)
