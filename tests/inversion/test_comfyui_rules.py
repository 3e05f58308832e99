"""Our single files for SDXL, SD 3 and Flux, held to what ComfyUI's embedding loader needs of them.

The rules, as ComfyUI's public source reads a word (``comfy/sd1_clip.py``: ``load_embed`` and the tokenizer
that calls it; ``comfy/sdxl_clip.py``, ``comfy/text_encoders/sd3_clip.py`` and ``flux.py`` give each
tokenizer its key and width), restated here in our words:

* A prompt names the word as ``embedding:<name>``; the name is looked up as ``<name>.safetensors`` (or
  ``.pt``/``.bin``) in the embeddings folder. The name ends at whitespace and before the first ``<`` or
  ``[``, and trailing commas are stripped, so a file stem holding those characters cannot be named.
* A ``.safetensors`` file is read whole, on the CPU, as a flat mapping of tensors.
* Every text encoder's tokenizer asks the file for its own key: ``clip_l`` (768 wide in the real models),
  ``clip_g`` (1280), ``t5xxl`` (4096); SDXL's tokenizers ask for the first two, SD 3's for all three,
  Flux's for ``clip_l`` and ``t5xxl``. When its key is missing, the loader falls back to the file's first
  tensor: that encoder would get another encoder's rows (or drop them), so every key must be there.
* The tensor is one vector (rank 1) or vectors as rows (rank 2, ``[N, width]``); each vector is spliced
  into the prompt only when its length equals the width of that encoder's token embeddings, else it is
  dropped with a "shape mismatch" warning.
* The rows are cast to float32 before they are spliced in, so any float dtype loads; ours are float32,
  which makes that cast exact.

Stricter than ComfyUI, for our own files: rank 2 with at least one row, the same number of rows under
every key (one word), finite values and no keys besides the family's. A word fits a model when each key's
width is that text encoder's hidden size (CLIP's ``hidden_size``, T5's ``d_model``): the tiny test models
have their own widths, and a separate test checks that the real models' configs give 768 / 1280 / 4096.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from inversion.embeddings.families import ENCODER_WIDTHS, KEYED_FILES
from inversion.embeddings.formats import LearnedEmbedding, save_embedding_files
from inversion.model.components import load_components
from inversion.model.info import FAMILIES
from inversion.model.zoo import ARCHITECTURES

#: the key and width each of ComfyUI's tokenizers reads (its ``embedding_key`` / ``embedding_size``)
COMFYUI_KEY_WIDTHS = {"clip_l": 768, "clip_g": 1280, "t5xxl": 4096}
#: the keys each family's ComfyUI tokenizers ask for, in text-encoder order
COMFYUI_FAMILY_KEYS = {"sdxl": ("clip_l", "clip_g"), "sd3": ("clip_l", "clip_g", "t5xxl"), "flux": ("clip_l", "t5xxl")}
#: the public config of T5 v1.1 XXL (google/t5-v1_1-xxl), the T5 of SD 3 and Flux: its width only matters here
T5_XXL_CONFIG = dict(d_model=4096, d_ff=10240, d_kv=64, num_heads=64, num_layers=24, vocab_size=32128)


def hidden_size(config) -> int:
    """The width of a text encoder's token embeddings: CLIP's ``hidden_size``, T5's ``d_model``."""
    config = config if isinstance(config, Mapping) else config.to_dict()
    return int(config["d_model"] if "d_model" in config else config["hidden_size"])


def comfyui_problems(path: Path, widths: Mapping[str, int]) -> list[str]:
    """Why ComfyUI would not take the file at ``path`` as a word for text encoders whose keys and widths are
    ``widths`` (the module docstring's rules); empty when it would."""
    problems = []
    if path.suffix != ".safetensors":
        problems.append(f"{path.name}: not a .safetensors file")
    if not path.stem or re.search(r"[\s<\[]", path.stem) or path.stem.endswith(","):
        problems.append(f"{path.name}: embedding:{path.stem} cannot name it in a prompt")
    with safe_open(str(path), framework="pt", device="cpu") as handle:
        tensors = {key: handle.get_tensor(key) for key in handle.keys()}
    problems += [
        f"no {key} tensor (ComfyUI would take the first tensor instead)" for key in widths if key not in tensors
    ]
    problems += [f"{key}: a key no {'/'.join(widths)} tokenizer reads" for key in tensors if key not in widths]
    rows = set()
    for key, tensor in tensors.items():
        if key not in widths:
            continue
        if tensor.ndim != 2 or tensor.shape[0] < 1:
            problems.append(f"{key}: shape {tuple(tensor.shape)} is not [N, width]")
        elif tensor.shape[-1] != widths[key]:
            problems.append(f"{key}: width {tensor.shape[-1]}, but that text encoder takes {widths[key]}")
        if not tensor.is_floating_point():
            problems.append(f"{key}: dtype {tensor.dtype} is no float")
        elif tensor.dtype != torch.float32 or not bool(torch.isfinite(tensor).all()):
            problems.append(f"{key}: {tensor.dtype}, finite: {bool(torch.isfinite(tensor).all())}")
        rows.add(int(tensor.shape[0]) if tensor.ndim else 0)
    if len(rows) > 1:
        problems.append(f"the keys hold different numbers of vectors ({sorted(rows)})")
    return problems


def _word(family: str, widths, vectors: int = 2, token: str = "<my-word>", seed: int = 0) -> LearnedEmbedding:
    generator = torch.Generator().manual_seed(seed)
    tables = [torch.randn(vectors, width, generator=generator) * 0.02 for width in widths]
    return LearnedEmbedding.from_tables(token, tables, family)  # type: ignore[arg-type]


def _comfyui_file(files: dict[str, Path]) -> Path:
    return files["sdxl"] if "sdxl" in files else files["comfyui"]


@pytest.fixture(scope="module")
def models(sdxl_tiny_model_dir, sd3_tiny_model_dir, flux_tiny_model_dir):
    folders = {"sdxl": sdxl_tiny_model_dir, "sd3": sd3_tiny_model_dir, "flux": flux_tiny_model_dir}
    return {family: load_components(folder, families=FAMILIES) for family, folder in folders.items()}


def _encoder_widths(components) -> dict[str, int]:
    """Each ComfyUI key of the model's family → that text encoder's hidden size, checked against the width of
    its token embeddings."""
    keys = COMFYUI_FAMILY_KEYS[components.family]
    encoders = [encoder for _, encoder in components.text_sides]
    assert len(keys) == len(encoders)
    for encoder in encoders:
        assert encoder.get_input_embeddings().weight.shape[1] == hidden_size(encoder.config)
    return {key: hidden_size(encoder.config) for key, encoder in zip(keys, encoders)}


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
@pytest.mark.parametrize("vectors", [1, 3])
def test_our_file_follows_comfyuis_rules_for_the_tiny_model(models, tmp_path, family, vectors):
    widths = _encoder_widths(models[family])
    files = save_embedding_files(_word(family, widths.values(), vectors), tmp_path)
    path = _comfyui_file(files)
    assert comfyui_problems(path, widths) == []
    assert path.name == "my-word.safetensors"  # embedding:my-word
    assert tuple(widths) == next(f.keys for f in KEYED_FILES[family] if f.kind in ("sdxl", "comfyui"))


@pytest.mark.parametrize("family", ["sdxl", "sd3", "flux"])
def test_the_real_models_configs_give_comfyuis_widths(tmp_path, family):
    clip_l, clip_g = ARCHITECTURES["sdxl"]["text_encoder"], ARCHITECTURES["sdxl"]["text_encoder_2"]
    configs = {"clip_l": clip_l, "clip_g": clip_g, "t5xxl": T5_XXL_CONFIG}
    widths = {key: hidden_size(configs[key]) for key in COMFYUI_FAMILY_KEYS[family]}
    assert widths == {key: COMFYUI_KEY_WIDTHS[key] for key in COMFYUI_FAMILY_KEYS[family]}
    assert tuple(widths.values()) == ENCODER_WIDTHS[family]  # type: ignore[index]
    files = save_embedding_files(_word(family, widths.values()), tmp_path)
    assert comfyui_problems(_comfyui_file(files), widths) == []


def _write(tmp_path: Path, name: str, tensors: dict[str, torch.Tensor]) -> Path:
    save_file(tensors, str(tmp_path / name))
    return tmp_path / name


FLUX_TINY = {"clip_l": 32, "t5xxl": 96}


@pytest.mark.parametrize(
    ("name", "tensors", "problem"),
    [
        ("w.safetensors", {"clip_l": torch.zeros(1, 32)}, "no t5xxl tensor"),
        ("w.safetensors", {"clip_l": torch.zeros(1, 32), "t5": torch.zeros(1, 96)}, "no t5xxl tensor"),
        ("w.safetensors", {"clip_l": torch.zeros(1, 32), "t5xxl": torch.zeros(1, 95)}, "t5xxl: width 95"),
        ("w.safetensors", {"clip_l": torch.zeros(1, 1, 32), "t5xxl": torch.zeros(1, 96)}, "is not [N, width]"),
        ("w.safetensors", {"clip_l": torch.zeros(1, 32, dtype=torch.int32), "t5xxl": torch.zeros(1, 96)}, "no float"),
        ("w.safetensors", {"clip_l": torch.zeros(1, 32).half(), "t5xxl": torch.zeros(1, 96)}, "torch.float16"),
        ("w.safetensors", {"clip_l": torch.zeros(2, 32), "t5xxl": torch.zeros(1, 96)}, "different numbers"),
        ("<w>.safetensors", {"clip_l": torch.zeros(1, 32), "t5xxl": torch.zeros(1, 96)}, "cannot name it"),
    ],
)
def test_the_rules_catch_a_broken_file(tmp_path, name, tensors, problem):
    problems = comfyui_problems(_write(tmp_path, name, tensors), FLUX_TINY)
    assert any(problem in line for line in problems), problems


def test_the_flux_diffusers_file_is_not_a_comfyui_file(models, tmp_path):
    """diffusers' Flux file names T5's rows ``t5``: ComfyUI's T5 tokenizer would not find them there."""
    widths = _encoder_widths(models["flux"])
    files = save_embedding_files(_word("flux", widths.values()), tmp_path)
    assert comfyui_problems(files["comfyui"], widths) == []
    assert "no t5xxl tensor (ComfyUI would take the first tensor instead)" in comfyui_problems(
        files["diffusers"], widths
    )
