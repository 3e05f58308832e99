"""``sstar inspect``: every family's files, ours and other trainers', norms against the vocabulary."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from common.norms import BLOWN_UP_RATIO
from inversion.embeddings.formats import LearnedEmbedding, save_embedding_files
from inversion.embeddings.inspector import ModelVocabulary, inspect_file, inspect_files
from inversion.embeddings.norms import VocabNorms, norm_ratio, norms_metadata, vocab_norms


def _vectors(n: int, width: int, seed: int = 0, norm: float = 0.4) -> torch.Tensor:
    v = torch.randn(n, width, generator=torch.Generator().manual_seed(seed))
    return v / v.norm(dim=1, keepdim=True) * norm


def _lines(paths, model=None) -> tuple[int, str]:
    out: list[str] = []
    status = inspect_files([str(p) for p in paths], model, out.append, out.append)
    return status, "\n".join(out)


# -- files other trainers write, built the way each tool writes them --------------------------------------
def _a1111_zip(folder: Path) -> Path:
    """AUTOMATIC1111's own save: torch.save (zip) of its dict, the vector still requiring grad."""
    vec = _vectors(2, 768).requires_grad_()
    data = {
        "string_to_token": {"*": 265},
        "string_to_param": {"*": vec},
        "name": "my-style",
        "step": 3000,
        "sd_checkpoint": "abc123",
        "sd_checkpoint_name": "v1-5-pruned",
    }
    torch.save(data, folder / "my-style.pt")
    return folder / "my-style.pt"


def _diffusers_bin(folder: Path) -> Path:
    """diffusers' textual_inversion.py before safetensors: torch.save({token: tensor}), one 1-D vector."""
    torch.save({"<cat-toy>": _vectors(1, 768)[0]}, folder / "learned_embeds.bin")
    return folder / "learned_embeds.bin"


def _kohya_sd1(folder: Path) -> Path:
    """kohya sd-scripts, SD 1.x: {"emb_params": [N, 768]} with its ss_* training metadata, fp16."""
    save_file({"emb_params": _vectors(4, 768).half()}, str(folder / "kohya-word.safetensors"), {"ss_steps": "2000"})
    return folder / "kohya-word.safetensors"


def _kohya_sdxl(folder: Path) -> Path:
    """kohya / A1111 SDXL single file: {"clip_l": [N, 768], "clip_g": [N, 1280]}."""
    tensors = {"clip_g": _vectors(2, 1280, norm=0.6), "clip_l": _vectors(2, 768)}
    save_file(tensors, str(folder / "xl-word.safetensors"))
    return folder / "xl-word.safetensors"


def _diffusers_sdxl(folder: Path) -> Path:
    """diffusers' textual_inversion_sdxl.py: learned_embeds.safetensors + learned_embeds_2.safetensors."""
    save_file({"<xl>": _vectors(1, 768)}, str(folder / "learned_embeds.safetensors"))
    save_file({"<xl>": _vectors(1, 1280)}, str(folder / "learned_embeds_2.safetensors"))
    return folder / "learned_embeds.safetensors"


def _comfy_flux(folder: Path) -> Path:
    """A ComfyUI single file for Flux: per-encoder keys clip_l and t5xxl."""
    save_file({"clip_l": _vectors(1, 768), "t5xxl": _vectors(1, 4096)}, str(folder / "flux-word.safetensors"))
    return folder / "flux-word.safetensors"


@pytest.mark.parametrize(
    ("write", "fmt", "token", "family", "vectors"),
    [
        (_a1111_zip, "a1111", "<my-style>", "sd1", 2),
        (_diffusers_bin, "diffusers", "<cat-toy>", "sd1", 1),
        (_kohya_sd1, "emb_params", "<kohya-word>", "sd1", 4),
        (_kohya_sdxl, "per-encoder", "<xl-word>", "sdxl", 2),
        (_diffusers_sdxl, "diffusers", "<xl>", "sdxl", 1),
        (_comfy_flux, "per-encoder", "<flux-word>", "flux", 1),
    ],
)
def test_reads_other_trainers_files(tmp_path, write, fmt, token, family, vectors):
    found = inspect_file(write(tmp_path))
    assert (found.format, found.token, found.num_vectors) == (fmt, token, vectors)
    assert found.family.startswith(family)
    assert found.ratio is None  # no vocabulary statistics in other trainers' files
    for table in found.tables:
        assert table.norms == pytest.approx([table.vectors[i].norm().item() for i in range(vectors)])
    status, text = _lines([write(tmp_path)])
    assert status == 0 and "no vocabulary statistics" in text


def test_diffusers_sdxl_pair_shows_both_files_and_encoders(tmp_path):
    found = inspect_file(_diffusers_sdxl(tmp_path))
    assert found.sibling == tmp_path / "learned_embeds_2.safetensors"
    assert [t.name for t in found.tables] == ["text_encoder", "text_encoder_2"]
    assert found.widths == (768, 1280)


@pytest.mark.parametrize("widths", [(768,), (1024,), (768, 1280)])
def test_our_files_carry_the_vocabulary_and_flag_blown_up_words(tmp_path, widths):
    stats = [VocabNorms(0.4, 0.02, 0.6) for _ in widths]
    normal = torch.cat([_vectors(2, w, norm=0.5) for w in widths], dim=1)
    blown = torch.cat([_vectors(2, w, norm=0.4 * (BLOWN_UP_RATIO + 1)) for w in widths], dim=1)
    for name, vectors, verdict in [("normal", normal, "within range"), ("blown", blown, "BLOWN UP")]:
        files = save_embedding_files(
            LearnedEmbedding(f"<{name}>", vectors, widths), tmp_path / name, metadata=norms_metadata(stats)
        )
        for kind, path in files.items():
            if kind == "diffusers_2":
                continue
            found = inspect_file(path)
            assert found.ratio == pytest.approx(norm_ratio(LearnedEmbedding("t", vectors, widths), stats), rel=1e-5)
            status, text = _lines([path])
            assert status == 0 and verdict in text, (kind, text)


def test_no_embedding_gets_one_line_and_exit_2(tmp_path):
    (tmp_path / "notes.txt").write_text("hello")
    torch.save({"a": torch.zeros(2, 3), "b": torch.zeros(2, 3)}, tmp_path / "model.bin")
    (tmp_path / "broken.safetensors").write_bytes(b"\x00" * 20)
    good = _kohya_sd1(tmp_path)
    for bad in ["notes.txt", "model.bin", "broken.safetensors", "missing.pt"]:
        status, text = _lines([tmp_path / bad])
        assert status == 2 and len(text.splitlines()) == 1 and text.startswith("error: "), text
    status, text = _lines([tmp_path / "notes.txt", good])
    assert status == 2 and "<kohya-word>" in text  # the readable file is still reported


def test_model_gives_norms_and_nearest_words(tiny_model_dir, tmp_path):
    vocabulary = ModelVocabulary.load(str(tiny_model_dir))
    cat = vocabulary.words[0].index("cat")
    row = vocabulary.tables[0][cat]
    save_file({"<like-cat>": (row * 2).unsqueeze(0).contiguous()}, str(tmp_path / "learned_embeds.safetensors"))
    found = inspect_file(tmp_path / "learned_embeds.safetensors", vocabulary)
    assert found.tables[0].nearest[0][0] == "cat"
    expected = 2 * row.norm().item() / vocab_norms(vocabulary.tables[0]).mean
    assert found.ratio == pytest.approx(expected, rel=1e-5)
    status, text = _lines([tmp_path / "learned_embeds.safetensors"], str(tiny_model_dir))
    assert status == 0 and "nearest: cat" in text


def test_model_of_another_family_is_one_line(tiny_model_dir, tmp_path):
    status, text = _lines([_kohya_sdxl(tmp_path)], str(tiny_model_dir))
    assert status == 2 and "learned for another model" in text and len(text.splitlines()) == 1


def test_sdxl_model_reads_both_encoders(sdxl_tiny_model_dir, tmp_path):
    vocabulary = ModelVocabulary.load(str(sdxl_tiny_model_dir))
    widths = tuple(int(t.shape[1]) for t in vocabulary.tables)
    assert len(widths) == 2
    vectors = torch.cat([vocabulary.tables[0][320:321], vocabulary.tables[1][320:321]], dim=1)
    save_embedding_files(LearnedEmbedding("<w>", vectors, widths), tmp_path)
    found = inspect_file(tmp_path / "learned_embeds.safetensors", vocabulary)
    assert [t.nearest[0][0] for t in found.tables] == [words[320] for words in vocabulary.words]


def test_sstar_inspect_command(tmp_path, capsys):
    from flows.cli import main

    (tmp_path / "notes.txt").write_text("hello")
    assert main(["inspect", str(_kohya_sdxl(tmp_path))]) == 0
    assert "<xl-word>" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "notes.txt")]) == 2
    captured = capsys.readouterr()
    assert captured.out == "" and len(captured.err.strip().splitlines()) == 1
