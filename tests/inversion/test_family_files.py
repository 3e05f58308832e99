"""SD 3 and Flux words as files (issue 23, step 2): what the writer writes, what the readers read back, what
``sstar inspect`` reports, and diffusers' FluxPipeline loading the Flux pair and rendering with the word.

No trainer yet: the words are random tensors of each text encoder's width.
"""

from __future__ import annotations

import pytest
import torch
from safetensors.torch import load_file, save_file

from inversion.embeddings.families import ENCODER_WIDTHS
from inversion.embeddings.formats import (
    LearnedEmbedding,
    load_embedding,
    load_embeddings,
    read_metadata,
    save_embedding_files,
)
from inversion.embeddings.inspector import inspect_file, inspect_files
from inversion.embeddings.merge import merge_files
from inversion.embeddings.norms import VocabNorms, norms_metadata
from inversion.errors import EmbeddingFormatError

SD3_TINY = (32, 48, 96)  # CLIP-L, CLIP-G, T5 of sstar model sd3-tiny
FLUX_TINY = (32, 96)  # CLIP-L, T5 of sstar model flux-tiny


def _tables(widths, vectors: int = 2, seed: int = 0) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return [torch.randn(vectors, width, generator=generator) * 0.02 for width in widths]


def test_sd3_word_gets_one_comfyui_file(tmp_path):
    tables = _tables(SD3_TINY)
    files = save_embedding_files(LearnedEmbedding.from_tables("<sd3-cat>", tables, "sd3"), tmp_path)
    assert {kind: path.name for kind, path in files.items()} == {"comfyui": "sd3-cat.safetensors"}
    raw = load_file(files["comfyui"])
    assert set(raw) == {"clip_l", "clip_g", "t5xxl"}
    for key, table in zip(("clip_l", "clip_g", "t5xxl"), tables):
        assert torch.equal(raw[key], table) and raw[key].dtype == torch.float32
    assert read_metadata(files["comfyui"]) == {"sstar.family": "sd3", "sstar.token": "<sd3-cat>", "sstar.vectors": "2"}


def test_flux_word_gets_the_comfyui_file_and_diffusers_pair(tmp_path):
    tables = _tables(FLUX_TINY, vectors=3)
    stats = norms_metadata([VocabNorms(0.4, 0.02, 0.6), VocabNorms(1.0, 0.1, 2.0)])
    word = LearnedEmbedding.from_tables("<flux-cat>", tables, "flux")
    files = save_embedding_files(word, tmp_path, metadata=stats)
    names = {kind: path.name for kind, path in files.items()}
    assert names == {"comfyui": "flux-cat.safetensors", "diffusers": "flux-cat_emb.safetensors"}
    assert set(load_file(files["comfyui"])) == {"clip_l", "t5xxl"}
    assert set(load_file(files["diffusers"])) == {"clip_l", "t5"}
    for path in files.values():
        metadata = read_metadata(path)
        assert metadata["sstar.family"] == "flux" and metadata["sstar.token"] == "<flux-cat>"
        assert metadata["sstar.vectors"] == "3" and metadata["sstar.vocab_norms"] == stats["sstar.vocab_norms"]
        loaded = load_embedding(path)
        assert (loaded.token, loaded.family, loaded.widths, loaded.num_vectors) == ("<flux-cat>", "flux", FLUX_TINY, 3)
        assert all(torch.equal(a, b) for a, b in zip(loaded.tables, tables))
        assert load_embedding(path, token="<other>").token == "<other>"


def test_other_trainers_flux_and_sd3_files_are_read_by_their_keys(tmp_path):
    """Without sstar's metadata: the token is the file stem (ComfyUI's ``embedding:`` name)."""
    save_file({"clip_l": torch.ones(2, 768), "t5": torch.ones(2, 4096)}, str(tmp_path / "icon_emb.safetensors"))
    save_file(
        {k: torch.ones(1, w) for k, w in zip(("clip_l", "clip_g", "t5xxl"), ENCODER_WIDTHS["sd3"])},
        str(tmp_path / "s.safetensors"),
    )
    flux = load_embedding(tmp_path / "icon_emb.safetensors")
    assert (flux.token, flux.family, flux.widths) == ("<icon_emb>", "flux", (768, 4096))
    sd3 = load_embedding(tmp_path / "s.safetensors")
    assert (sd3.token, sd3.family, sd3.widths) == ("<s>", "sd3", (768, 1280, 4096))


def test_sd1_and_sdxl_files_are_as_before(tmp_path):
    """No family metadata and the same kinds: their bytes are pinned by the golden run."""
    sd1 = save_embedding_files(LearnedEmbedding("<a>", torch.ones(1, 32)), tmp_path / "sd1")
    sdxl = save_embedding_files(LearnedEmbedding.from_tables("<b>", _tables((32, 48))), tmp_path / "sdxl")
    assert list(sd1) == ["diffusers", "a1111"] and list(sdxl) == ["diffusers", "diffusers_2", "sdxl"]
    for path in [*sd1.values(), *sdxl.values()]:
        assert read_metadata(path) == {}
    assert load_embedding(sdxl["sdxl"]).family == "sdxl" and load_embedding(sd1["diffusers"]).family is None


def test_a_word_of_the_wrong_shape_is_refused_in_one_line(tmp_path):
    with pytest.raises(EmbeddingFormatError, match=r"2 table\(s\), but a sd3 model has 3 text encoder"):
        LearnedEmbedding.from_tables("<w>", _tables(FLUX_TINY), "sd3")
    with pytest.raises(
        EmbeddingFormatError, match=r"one \[N, width\] table per text encoder, got \(2, 32\), \(1, 96\)"
    ):
        LearnedEmbedding.from_tables("<w>", [torch.zeros(2, 32), torch.zeros(1, 96)], "flux")
    save_file({"clip_l": torch.zeros(2, 32), "t5xxl": torch.zeros(1, 96)}, str(tmp_path / "uneven.safetensors"))
    with pytest.raises(EmbeddingFormatError, match="uneven.safetensors: clip_l has 2 vectors but t5xxl 1"):
        load_embedding(tmp_path / "uneven.safetensors")
    save_file({"clip_g": torch.zeros(1, 48), "t5xxl": torch.zeros(1, 96)}, str(tmp_path / "odd.safetensors"))
    with pytest.raises(EmbeddingFormatError, match=r"odd.safetensors: holds clip_g, t5xxl; a word's single file"):
        load_embedding(tmp_path / "odd.safetensors")


def test_words_of_different_families_are_not_used_together(tmp_path):
    """A Flux word and an SDXL word can have the same widths (tiny models): the family tells them apart."""
    flux = save_embedding_files(LearnedEmbedding.from_tables("<f>", _tables((32, 48)), "flux"), tmp_path / "f")
    sdxl = save_embedding_files(LearnedEmbedding.from_tables("<x>", _tables((32, 48))), tmp_path / "x")
    with pytest.raises(EmbeddingFormatError, match="were learned for different model families"):
        load_embeddings([flux["comfyui"], sdxl["sdxl"]])
    with pytest.raises(EmbeddingFormatError, match="were learned for different model families"):
        merge_files([(flux["comfyui"], 0.5), (sdxl["sdxl"], 0.5)], "<fx>", tmp_path / "m")


def test_merged_flux_words_keep_the_family(tmp_path):
    a = save_embedding_files(LearnedEmbedding.from_tables("<a>", _tables(FLUX_TINY, seed=1), "flux"), tmp_path / "a")
    b = save_embedding_files(LearnedEmbedding.from_tables("<b>", _tables(FLUX_TINY, seed=2), "flux"), tmp_path / "b")
    merged = merge_files([(a["comfyui"], 0.5), (b["diffusers"], 0.5)], "<ab>", tmp_path / "ab")
    assert set(merged) == {"comfyui", "diffusers"}
    word = load_embedding(merged["diffusers"])
    assert (word.token, word.family) == ("<ab>", "flux")
    expected = 0.5 * load_embedding(a["comfyui"]).vectors + 0.5 * load_embedding(b["comfyui"]).vectors
    assert torch.allclose(word.vectors, expected)


@pytest.mark.parametrize(("family", "widths"), [("sd3", SD3_TINY), ("flux", FLUX_TINY)])
def test_sstar_inspect_reads_the_files(tmp_path, family, widths):
    tables = _tables(widths, vectors=2)
    stats = [VocabNorms(0.02, 0.001, 0.05) for _ in widths]
    word = LearnedEmbedding.from_tables("<ins>", tables, family)
    files = save_embedding_files(word, tmp_path, metadata=norms_metadata(stats))
    keys = {"sd3": ["clip_l", "clip_g", "t5xxl"], "flux": ["clip_l", "t5xxl"]}[family]
    for kind, path in files.items():
        found = inspect_file(path)
        assert found.token == "<ins>" and found.family.startswith(family) and found.num_vectors == 2
        assert found.format == ("diffusers-flux" if kind == "diffusers" else "per-encoder")
        assert [t.name for t in found.tables] == (["clip_l", "t5"] if kind == "diffusers" else keys)
        for table, expected in zip(found.tables, tables):
            assert table.norms == pytest.approx(expected.norm(dim=1).tolist())
        assert found.ratio == pytest.approx(max(float(t.norm(dim=1).max()) / 0.02 for t in tables), rel=1e-5)
        out: list[str] = []
        assert inspect_files([path], out=out.append, err=out.append) == 0
        assert f"token <ins>; {family} (" in out[0] and "vector 1: norm" in out[0], out[0]


def test_diffusers_flux_pipeline_loads_the_pair_and_renders(flux_tiny_model_dir, tmp_path):
    """The advanced Flux script's recipe: one load_textual_inversion per key, T5's on text_encoder_2."""
    from diffusers import FluxPipeline

    pipe = FluxPipeline.from_pretrained(flux_tiny_model_dir)
    pipe.set_progress_bar_config(disable=True)
    sides = ((pipe.tokenizer, pipe.text_encoder), (pipe.tokenizer_2, pipe.text_encoder_2))
    widths = [int(encoder.get_input_embeddings().weight.shape[1]) for _, encoder in sides]
    assert tuple(widths) == FLUX_TINY
    tables = [table * 20 for table in _tables(widths)]
    files = save_embedding_files(LearnedEmbedding.from_tables("<flux-w>", tables, "flux"), tmp_path)
    state = load_file(files["diffusers"])
    for key, (tokenizer, encoder) in zip(("clip_l", "t5"), sides):
        pipe.load_textual_inversion(state[key], token="<flux-w>", text_encoder=encoder, tokenizer=tokenizer)
    prompt = "a photo of <flux-w>"
    for (tokenizer, encoder), table in zip(sides, tables):
        ids = tokenizer.convert_tokens_to_ids(["<flux-w>", "<flux-w>_1"])
        assert torch.equal(encoder.get_input_embeddings().weight[ids].detach(), table)
        converted = pipe.maybe_convert_prompt(prompt, tokenizer)
        assert set(ids) <= set(tokenizer(converted).input_ids)  # both vectors reach the encoder
    image = pipe(
        prompt,
        num_inference_steps=2,
        height=64,
        width=64,
        guidance_scale=3.5,
        max_sequence_length=32,
        generator=torch.Generator().manual_seed(0),
        output_type="np",
    ).images[0]
    assert image.shape == (64, 64, 3) and bool(torch.isfinite(torch.from_numpy(image)).all())
    # T5's rows make the sequence the transformer attends to, CLIP-L's the pooled vector
    sequence, pooled, _ = pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=32)
    for index, (tokenizer, encoder) in enumerate(sides):
        ids = tokenizer.convert_tokens_to_ids(["<flux-w>", "<flux-w>_1"])
        with torch.no_grad():
            encoder.get_input_embeddings().weight[ids] *= 2
        moved_sequence, moved_pooled, _ = pipe.encode_prompt(prompt, prompt_2=None, max_sequence_length=32)
        with torch.no_grad():
            encoder.get_input_embeddings().weight[ids] /= 2
        assert torch.equal(moved_sequence, sequence) == (index == 0)  # CLIP-L's rows leave the sequence alone
        assert torch.equal(moved_pooled, pooled) == (index == 1)  # T5's rows leave the pooled vector alone
