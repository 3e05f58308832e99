"""Embedding files: round trips, the formats other tools write, and diffusers loading ours."""

from __future__ import annotations

import pickle
import re
import zipfile
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from inversion.embeddings.formats import (
    LearnedEmbedding,
    load_embedding,
    save_a1111,
    save_diffusers,
    save_embedding_files,
)
from inversion.errors import EmbeddingFormatError


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


# AUTOMATIC1111's default safe-unpickle check (modules/safe.py), restated: a zip-format .pt passes
# only if every entry name matches this; a legacy-format .pt passes if its five leading pickles
# (magic, protocol, system info, the object, the storage keys) use only tensor-rebuilding globals.
A1111_ZIP_ENTRY = re.compile(r"^([^/]+)/((data/\d+)|version|byteorder|.data/serialization_id|(data\.pkl))$")
A1111_GLOBALS = {
    ("collections", "OrderedDict"),
    ("torch._utils", "_rebuild_tensor_v2"),
    ("torch._utils", "_rebuild_parameter"),
    ("torch", "FloatStorage"),
    ("torch", "HalfStorage"),
}


class _A1111Unpickler(pickle.Unpickler):
    """Refuses every global outside the allow-list; allowed ones become no-ops (only names are checked)."""

    def find_class(self, module, name):
        if (module, name) not in A1111_GLOBALS:
            raise pickle.UnpicklingError(f"global {module}.{name} refused")
        return lambda *args, **kwargs: None

    def persistent_load(self, saved_id):
        assert saved_id[0] == "storage"
        return None


def a1111_safe_check(path: Path) -> None:
    """Raise unless AUTOMATIC1111's default loader would accept ``path``."""
    if zipfile.is_zipfile(path):
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
        bad = [n for n in names if not A1111_ZIP_ENTRY.match(n)]
        assert not bad, f"entries A1111 refuses: {bad}"
        assert {n.split("/")[0] for n in names} == {path.stem}, "the archive folder must be named after the file"
        return
    with path.open("rb") as handle:
        unpickler = _A1111Unpickler(handle)
        for _ in range(5):
            unpickler.load()


def test_a1111_file_passes_the_webui_safe_unpickle_check(embedding, tmp_path):
    path = save_a1111(embedding, tmp_path / "my-tok.pt", step=3)
    a1111_safe_check(path)
    assert [p.name for p in tmp_path.iterdir()] == ["my-tok.pt"]
    raw = torch.load(path, map_location="cpu", weights_only=True)
    assert torch.equal(raw["string_to_param"]["*"], embedding.vectors) and raw["name"] == "my-tok"


def test_the_safe_check_refuses_torchs_default_zip_files(embedding, tmp_path):
    """The check above bites: what torch.save writes by default is what A1111 refused."""
    path = tmp_path / "zipped.pt"
    torch.save({"string_to_param": {"*": embedding.vectors}}, path)
    with pytest.raises(AssertionError, match=r"entries A1111 refuses: .*\.format_version"):
        a1111_safe_check(path)


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
        image = pipe(
            "a photo of <my-cat> on a beach",
            num_inference_steps=2,
            height=64,
            width=64,
            generator=torch.Generator().manual_seed(0),
        ).images[0]
        assert image.size == (64, 64)


def _sdxl_word(n: int = 2) -> LearnedEmbedding:
    vectors = torch.randn(n, 768 + 1280, generator=torch.Generator().manual_seed(1))
    return LearnedEmbedding("<xl-cat>", vectors, (768, 1280))


def test_sdxl_files_every_client_loads(tmp_path):
    from safetensors.torch import load_file

    embedding = _sdxl_word()
    files = save_embedding_files(embedding, tmp_path)
    assert {k: p.name for k, p in files.items()} == {
        "diffusers": "learned_embeds.safetensors",
        "diffusers_2": "learned_embeds_2.safetensors",
        "sdxl": "xl-cat.safetensors",
    }
    single = load_file(str(files["sdxl"]))  # a plain dict with both keys: what A1111 requires
    assert set(single) == {"clip_l", "clip_g"}
    assert single["clip_l"].shape == (2, 768) and single["clip_g"].shape == (2, 1280)
    assert load_file(str(files["diffusers"]))["<xl-cat>"].shape == (2, 768)
    assert load_file(str(files["diffusers_2"]))["<xl-cat>"].shape == (2, 1280)
    for path, token in ((files["sdxl"], "<xl-cat>"), (files["diffusers"], "<xl-cat>")):
        loaded = load_embedding(path)
        assert loaded.token == token and loaded.widths == (768, 1280)
        assert torch.equal(loaded.vectors, embedding.vectors)


def test_sdxl_file_names_never_clash_with_the_other_files():
    from common.filenames import sdxl_filename

    assert sdxl_filename("<checkpoint>") == "checkpoint-sdxl.safetensors"
    assert sdxl_filename("<learned_embeds_2>") == "learned_embeds_2-sdxl.safetensors"


def test_sd2_a1111_file_has_width_1024(tmp_path):
    embedding = LearnedEmbedding("<sd2-cat>", torch.randn(1, 1024))
    files = save_embedding_files(embedding, tmp_path)
    raw = torch.load(files["a1111"], weights_only=True)
    assert raw["string_to_param"]["*"].shape == (1, 1024)
    a1111_safe_check(files["a1111"])


def test_bad_sdxl_files(tmp_path):
    half = tmp_path / "half.safetensors"
    save_file({"clip_l": torch.zeros(1, 768)}, str(half))
    with pytest.raises(EmbeddingFormatError, match="half.safetensors: SDXL embedding lacks its clip_g tensor"):
        load_embedding(half)
    save_diffusers(LearnedEmbedding("<a>", torch.zeros(1, 768)), tmp_path / "learned_embeds.safetensors")
    save_diffusers(LearnedEmbedding("<b>", torch.zeros(1, 1280)), tmp_path / "learned_embeds_2.safetensors")
    with pytest.raises(EmbeddingFormatError, match=r"learned_embeds_2.safetensors: holds <b> .* holds <a>"):
        load_embedding(tmp_path / "learned_embeds.safetensors")
    with pytest.raises(EmbeddingFormatError, match="an A1111 .pt holds one"):
        save_a1111(_sdxl_word(), tmp_path / "xl.pt")
