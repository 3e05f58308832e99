"""Fast unit tests of the toy world's generator and oracle (bench/world, issue 6)."""

from __future__ import annotations

import numpy as np
import pytest

from bench.world import generate as G
from bench.world import oracle as O


def test_batch_has_the_requested_shapes_and_is_seeded():
    images, captions, info = G.make_batch(np.random.default_rng(3), 64, resolution=48)
    assert images.shape == (64, 48, 48, 3) and images.dtype == np.uint8
    assert len(captions) == len(info) == 64
    again, captions2, _ = G.make_batch(np.random.default_rng(3), 64, resolution=48)
    assert np.array_equal(images, again) and captions == captions2
    other, _, _ = G.make_batch(np.random.default_rng(4), 64, resolution=48)
    assert not np.array_equal(images, other)


def test_captions_follow_the_grammar():
    rng = np.random.default_rng(0)
    _, captions, info = G.make_batch(rng, 3000)
    empty = sum(not c for c in captions) / len(captions)
    assert 0.07 < empty < 0.13
    vocabulary = set(G.HUE_WORDS) | set(G.SHAPES) | set(G.BACKGROUNDS) | set(G.SIZE_WORDS)
    for caption, scene in zip(captions, info):
        if not caption:
            continue
        words = set(caption.split())
        assert scene["shape"] in words  # the shape is always named
        named = words & vocabulary
        assert named <= {scene["hue_word"], scene["shape"], scene["background"], scene["size_word"]}, caption
        if scene["background"] in words:
            assert f"on a {scene['background']} background" in caption
    assert any(c.startswith("a photo of") for c in captions) and any(
        c.split()[0] in G.SIZE_WORDS for c in captions if c
    )


def test_hue_words_bin_the_hue_and_are_single_clip_tokens():
    assert G.hue_word(0.0) == "red" and G.hue_word(359.0) == "red" and G.hue_word(44.0) == "orange"
    assert G.hue_word(22.5) == "orange"  # half-way goes to the upper bin
    assert G.hue_word(225.0) == "blue" and G.hue_word(315.0) == "pink"
    from inversion.model.vocab import clip_vocab

    vocab = clip_vocab()
    for word in (*G.HUE_WORDS, *G.SHAPES, *G.BACKGROUNDS, *G.SIZE_WORDS):
        assert word + "</w>" in vocab, word


def test_held_out_concepts_sit_half_way_between_bins_and_are_never_generated():
    assert len(G.HELD_OUT) >= 4
    for concept in G.HELD_OUT:
        assert G.circular_distance(concept.hue, np.array(G.HUE_CENTRES)).min() == pytest.approx(G.HUE_BIN_WIDTH / 2)
        assert concept.best_caption() == (
            f"a photo of a {concept.size_word} {concept.hue_word} {concept.shape} on a {concept.background} background"
        )
    attrs = G.sample_attributes(np.random.default_rng(1), 30_000)
    for concept in G.HELD_OUT:
        same = (attrs["shape"] == G.SHAPES.index(concept.shape)) & (
            attrs["background"] == G.BACKGROUNDS.index(concept.background)
        )
        assert same.sum() > 500
        assert G.circular_distance(attrs["hue"][same], concept.hue).min() > G.EXCLUSION_DEGREES
    # other shapes/backgrounds still get that hue
    near = G.circular_distance(attrs["hue"], G.HELD_OUT[0].hue) <= G.EXCLUSION_DEGREES
    assert near.sum() > 250


#: sha256 of ``concept_images(HELD_OUT[0], 4, seed=0)``, the demo's and the quality guard's first training set
ORIGINAL_FIRST_SET_SHA256 = "f7485bad2124c030b5272a95dc84d887ba0fa40ede00f801d1bc64a1a86b6f8e"


def test_the_original_held_out_images_are_unchanged():
    import hashlib

    images = G.concept_images(G.HELD_OUT[0], 4, seed=0)
    assert hashlib.sha256(images.tobytes()).hexdigest() == ORIGINAL_FIRST_SET_SHA256
    assert not any(c.varied for c in G.HELD_OUT)


def test_the_varied_set_keeps_hue_and_shape_and_varies_background_and_size():
    assert [(c.hue, c.shape) for c in G.HELD_OUT_VARIED] == [(c.hue, c.shape) for c in G.HELD_OUT]
    assert {c.name for c in G.HELD_OUT_VARIED}.isdisjoint(c.name for c in G.HELD_OUT)
    for i, concept in enumerate(G.HELD_OUT_VARIED):
        images = G.concept_images(concept, 4, seed=i)
        assert np.array_equal(images, G.concept_images(concept, 4, seed=i))
        m = O.measure(images)
        assert np.all(O.hue_error(m.hue, concept.hue) < 1.0)
        assert set(m.background_names) == set(G.BACKGROUNDS), concept.name
        assert set(O.size_words(m, concept.shape).tolist()) == {0, 1}, concept.name
        assert concept.best_caption() == f"a photo of a {concept.hue_word} {concept.shape}"


def test_concept_images_are_seeded_and_show_the_concept():
    concept = G.HELD_OUT[1]
    a = G.concept_images(concept, 8, seed=5)
    assert np.array_equal(a, G.concept_images(concept, 8, seed=5))
    assert not np.array_equal(a, G.concept_images(concept, 8, seed=6))
    m = O.measure(a)
    assert np.all(O.hue_error(m.hue, concept.hue) < 1.0)
    assert m.background_names == [concept.background] * 8


@pytest.mark.parametrize("seed", range(4))
def test_oracle_recovers_hue_background_and_size(seed):
    images, _, info = G.make_batch(np.random.default_rng(100 + seed), 256)
    m = O.measure(images)
    hues = np.array([s["hue"] for s in info])
    assert np.all(m.has_shape)
    assert np.max(O.hue_error(m.hue, hues)) < 2.0
    assert m.background_names == [s["background"] for s in info]
    large = np.array([s["size_word"] == "large" for s in info])
    assert m.size[large].mean() > 2 * m.size[~large].mean()
    assert (
        m.hue_words == [s["hue_word"] for s in info]
        or np.mean([w == s["hue_word"] for w, s in zip(m.hue_words, info)]) > 0.97
    )  # bin edges may round


def test_oracle_accepts_pil_images_and_finds_no_shape_in_a_blank_image():
    from PIL import Image

    blank = np.full((2, 32, 32, 3), 128, dtype=np.uint8)
    m = O.measure([Image.fromarray(x) for x in blank])
    assert not m.has_shape.any() and m.background_names == ["gray", "gray"]
    summary = O.summarise(m, 100.0, "gray")
    assert summary["median_hue_error"] == 180.0 and summary["background_accuracy"] == 1.0


def test_hue_error_is_circular():
    assert O.hue_error(350.0, 10.0) == pytest.approx(20.0)
    assert O.hue_error(10.0, 350.0) == pytest.approx(20.0)
    assert O.hue_error(0.0, 180.0) == pytest.approx(180.0)
    assert np.allclose(O.hue_error(np.array([1.0, 359.0]), 0.0), [1.0, 1.0])


def test_world_training_command_writes_a_loadable_model(tmp_path):
    """A few steps of every phase: the folder loads as our diffusion model and the CLIP as ours."""
    from bench.world.configs import WORLD_CLIP_ARCH
    from bench.world.train import main
    from inversion.config import ClipSpec
    from inversion.evaluation.clip import load_clip
    from inversion.model.components import load_components

    out = tmp_path / "world"
    assert (
        main(
            [
                "--out",
                str(out),
                "--device",
                "cpu",
                "--dataset-size",
                "256",
                "--vae-steps",
                "2",
                "--diffusion-steps",
                "2",
                "--clip-steps",
                "2",
                "--vae-batch",
                "8",
                "--diffusion-batch",
                "8",
                "--clip-batch",
                "8",
                "--eval-samples",
                "4",
                "--eval-steps",
                "2",
            ]
        )
        == 0
    )
    components = load_components(out)
    assert components.resolution == 32
    clip = load_clip(ClipSpec(WORLD_CLIP_ARCH, checkpoint=out / "clip" / f"{WORLD_CLIP_ARCH}.safetensors"), "cpu")
    assert clip.embed_texts(["a red circle"]).shape == (1, 128)
