"""Word strengths (inversion.text.weighting): A1111's attention syntax, and its rule checked by hand against the
unweighted encoder output; several words in one prompt; colliding tokens refused."""

from __future__ import annotations

import pytest
import torch

from flows.cli import main
from inversion.embeddings.formats import LearnedEmbedding, load_embeddings, save_a1111, save_diffusers
from inversion.errors import EmbeddingFormatError, InputError
from inversion.evaluation.render import Renderer, RenderSettings
from inversion.model.components import load_components
from inversion.text.encoder import PromptEncoder
from inversion.text.tokens import expand_token
from inversion.text.weighting import encode_weighted, is_weighted, parse_weights, plain_text

FAST = RenderSettings(steps=2, guidance=15.0, device="cpu", batch_size=4)  # strong guidance: the text shows


@pytest.fixture(scope="module")
def components(tiny_model_dir):
    """The tiny model, its final layer norm given a bias: at random initialisation (weight 1, bias 0) every
    output row has mean ~0, which makes A1111's mean restoration a ratio of rounding errors."""
    loaded = load_components(tiny_model_dir)
    norm = loaded.text_encoder.final_layer_norm
    with torch.no_grad():
        norm.bias.copy_(0.2 + 0.1 * torch.randn(norm.bias.shape, generator=torch.Generator().manual_seed(3)))
    return loaded


def _word(token: str, components, vectors: int = 1, seed: int = 0) -> LearnedEmbedding:
    width = int(components.text_encoder.get_input_embeddings().weight.shape[1])
    return LearnedEmbedding(token, torch.randn(vectors, width, generator=torch.Generator().manual_seed(seed)))


# --- the syntax ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "prompt, expected",
    [
        ("a photo of (<mug>:0.7) here", [("a photo of ", 1.0), ("<mug>", 0.7), (" here", 1.0)]),
        ("(a)", [("a", 1.1)]),
        ("[a]", [("a", 1 / 1.1)]),
        ("((a)) b", [("a", 1.1 * 1.1), (" b", 1.0)]),
        ("(a (b:2) c:0.5)", [("a ", 0.5), ("b", 1.0), (" c", 0.5)]),
        (r"\(a\) \[b\] c\\d", [("(a) [b] c\\d", 1.0)]),
        ("a) b] c: d", [("a) b] c: d", 1.0)]),
        ("a (b", [("a ", 1.0), ("b", 1.1)]),
        ("", [("", 1.0)]),
    ],
)
def test_parse_follows_a1111_attention_syntax(prompt, expected):
    segments = parse_weights(prompt)
    assert [s.text for s in segments] == [text for text, _ in expected]
    assert [s.weight for s in segments] == pytest.approx([w for _, w in expected])


def test_plain_text_and_is_weighted():
    assert plain_text("a photo of (<mug>:1.5) in \\(brackets\\)") == "a photo of <mug> in (brackets)"
    assert is_weighted("a (b:0.9)") and is_weighted("a (b)") and not is_weighted("a (b:1.0) c")


def test_a_weight_that_is_not_a_number_is_one_line_naming_it():
    with pytest.raises(InputError, match=r"strength '1\.2\.3' in prompt 'a \(b:1\.2\.3\)' is not a number"):
        parse_weights("a (b:1.2.3)")


# --- the rule, by hand -----------------------------------------------------------------------------------


@pytest.mark.parametrize("strength", [0.7, 1.5])
def test_single_weighted_word_matches_the_rule_computed_by_hand(components, strength):
    word = _word("<mug>", components)
    text = PromptEncoder(components)
    placeholder = text.register(word.token, word.num_vectors)
    with text.learned([placeholder], [word.vectors]), torch.no_grad():
        plain = text.encode(["a photo of <mug> on a table"]).hidden[0]
        weighted = encode_weighted(text, [f"a photo of (<mug>:{strength}) on a table"]).hidden[0]
    ids = text.tokenizer("a photo of <mug> on a table").input_ids
    position = ids.index(placeholder.ids[0])
    # A1111: multiply the encoder's output row of the word by its strength, then restore the original mean
    expected = plain.clone()
    expected[position] *= strength
    expected *= plain.mean() / expected.mean()
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(weighted, plain, atol=1e-4)
    assert weighted.mean().item() == pytest.approx(plain.mean().item(), rel=1e-5)


def test_every_vector_of_a_multi_vector_word_carries_its_strength(components):
    word = _word("<mug>", components, vectors=3)
    text = PromptEncoder(components)
    placeholder = text.register(word.token, word.num_vectors)
    prompt = expand_token("a (<mug>:0.5) on a table", word.token, 3)
    with text.learned([placeholder], [word.vectors]), torch.no_grad():
        plain = text.encode([plain_text(prompt)]).hidden[0]
        weighted = encode_weighted(text, [prompt]).hidden[0]
    ids = text.tokenizer(plain_text(prompt)).input_ids
    multipliers = torch.tensor(
        [0.5 if i in placeholder.ids else 1.0 for i in ids] + [1.0] * (plain.shape[0] - len(ids))
    )
    assert int((multipliers == 0.5).sum()) == 3
    expected = plain * multipliers[:, None]
    expected *= plain.mean() / expected.mean()
    torch.testing.assert_close(weighted, expected, rtol=1e-5, atol=1e-6)


def test_sdxl_weights_each_text_encoder_on_its_own_and_keeps_the_pooled_embedding(sdxl_tiny_model_dir):
    components = load_components(sdxl_tiny_model_dir)
    text = PromptEncoder(components)
    with torch.no_grad():
        plain = text.encode(["a photo of a cat"])
        weighted = encode_weighted(text, ["a photo of a (cat:1.8)"])
    torch.testing.assert_close(weighted.pooled, plain.pooled)
    position = text.tokenizer("a photo of a cat").input_ids.index(
        text.tokenizer("cat", add_special_tokens=False).input_ids[0]
    )
    start = 0
    for width in text.widths:
        part = plain.hidden[0, :, start : start + width]
        expected = part.clone()
        expected[position] *= 1.8
        expected *= part.mean() / expected.mean()
        torch.testing.assert_close(weighted.hidden[0, :, start : start + width], expected, rtol=1e-5, atol=1e-6)
        start += width


# --- rendering -----------------------------------------------------------------------------------------


def test_renderer_applies_strengths(components):
    words = [_word("<mug>", components, seed=1), _word("<brand>", components, vectors=2, seed=2)]
    renderer = Renderer(components, FAST)
    prompts = [
        "a photo of <mug> in the style of <brand>",
        "a photo of (<mug>:1.0) in the style of <brand>",
        "a photo of (<mug>:0.3) in the style of (<brand>:1.6)",
    ]
    rows = renderer.render(prompts, [0], words)
    pixels = [torch.tensor(list(row[0].getdata()), dtype=torch.float32) for row in rows]
    # strength 1 is no strength (the syntax is not read as literal brackets); up to batch rounding
    assert (pixels[0] - pixels[1]).abs().mean() < 0.01
    assert (pixels[0] - pixels[2]).abs().mean() > 0.2


# --- several files -------------------------------------------------------------------------------------


def test_two_files_with_the_same_token_are_refused_naming_both(components, tmp_path, tiny_model_dir, capsys):
    first = save_diffusers(_word("<mug>", components), tmp_path / "a" / "learned_embeds.safetensors")
    second = save_a1111(_word("<x>", components), tmp_path / "b" / "mug.pt")  # A1111: the file stem is the token
    with pytest.raises(EmbeddingFormatError) as caught:
        load_embeddings([first, second])
    message = str(caught.value)
    assert str(first) in message and str(second) in message and "<mug>" in message and "\n" not in message
    code = main(
        [
            "render",
            "--model",
            str(tiny_model_dir),
            "--embedding",
            str(first),
            "--embedding",
            str(second),
            "--prompt",
            "a <mug>",
            "--out",
            str(tmp_path / "grid.png"),
        ]
    )
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(second) in err
    assert not (tmp_path / "grid.png").exists()


def test_words_of_different_families_are_refused(components, tmp_path):
    first = save_diffusers(_word("<a>", components), tmp_path / "a.safetensors")
    second = save_diffusers(LearnedEmbedding("<b>", torch.zeros(1, 64)), tmp_path / "b.safetensors")
    with pytest.raises(EmbeddingFormatError, match="different model families"):
        load_embeddings([first, second])


def test_render_command_takes_several_words_and_strengths(components, tmp_path, tiny_model_dir, capsys):
    first = save_diffusers(_word("<mug>", components), tmp_path / "a" / "learned_embeds.safetensors")
    second = save_a1111(_word("<x>", components, vectors=2), tmp_path / "b" / "brand.pt")
    grid = tmp_path / "grid.png"
    code = main(
        [
            "render",
            "--model",
            str(tiny_model_dir),
            "--embedding",
            str(first),
            str(second),
            "--prompt",
            "a (<mug>:0.7) in the style of (<brand>:1.2)",
            "--seeds",
            "0",
            "--steps",
            "1",
            "--out",
            str(grid),
        ]
    )
    assert code == 0, capsys.readouterr().err
    assert grid.is_file() and f"wrote {grid}" in capsys.readouterr().out


def test_score_command_installs_more_words_for_its_prompts(components, tmp_path, tiny_model_dir):
    import json

    from inversion.config import ClipSpec
    from inversion.evaluation.clip import TINY_ARCH, write_tiny_clip
    from inversion.evaluation.score_files import score_embedding_file
    from tests.conftest import write_shape_images

    clip = ClipSpec(TINY_ARCH, checkpoint=write_tiny_clip(tmp_path / "clip.safetensors"))
    mug = save_diffusers(_word("<mug>", components), tmp_path / "mug" / "learned_embeds.safetensors")
    brand = save_a1111(_word("<x>", components, vectors=2), tmp_path / "brand" / "brand.pt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of a {} in the style of (<brand>:0.8)\n")
    images = write_shape_images(tmp_path / "images", count=2)
    result = score_embedding_file(
        tiny_model_dir,
        mug,
        images,
        tmp_path / "out",
        clip,
        "mug",
        prompts_file=prompts,
        samples=1,
        words=[brand],
        render=FAST,
        clip_device="cpu",
    )
    saved = json.loads((tmp_path / "out" / "scores.json").read_text())
    assert saved["token"] == "<mug>" and result["image_similarity"] == saved["image_similarity"]
    assert saved["learned"]["per_prompt"][0]["prompt"] == "a photo of a <mug> in the style of (<brand>:0.8)"
    # CLIP reads the class word and the prompt without its weight syntax
    assert saved["learned"]["per_prompt"][0]["text_prompt"] == "a photo of a mug in the style of <brand>"
    with pytest.raises(EmbeddingFormatError, match="both hold the token <mug>"):
        score_embedding_file(tiny_model_dir, mug, images, tmp_path / "out2", clip, "mug", words=[mug])
