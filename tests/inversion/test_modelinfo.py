"""inversion.model.info: a model's family and its tokenizers' words, read from its JSON files alone."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from inversion.errors import InputError
from inversion.model.info import family_or_none, read_family, tokenizer_vocabulary


def _configs_only(model: Path, folder: Path) -> Path:
    """A model folder holding only the two configs the family is read from."""
    (folder / "text_encoder").mkdir(parents=True)
    shutil.copy(model / "model_index.json", folder / "model_index.json")
    shutil.copy(model / "text_encoder" / "config.json", folder / "text_encoder" / "config.json")
    return folder


def _transformers_words(model: Path, *folders: str) -> frozenset[str]:
    from transformers import CLIPTokenizer

    return frozenset(w for f in folders for w in CLIPTokenizer.from_pretrained(str(model), subfolder=f).get_vocab())


def test_the_words_are_those_the_tokenizer_knows(tiny_model_dir, sdxl_tiny_model_dir):
    assert tokenizer_vocabulary(tiny_model_dir) == _transformers_words(tiny_model_dir, "tokenizer")
    assert tokenizer_vocabulary(sdxl_tiny_model_dir) == _transformers_words(
        sdxl_tiny_model_dir, "tokenizer", "tokenizer_2"
    )


def test_a_model_without_a_tokenizer_is_named(tiny_model_dir, tmp_path):
    folder = _configs_only(tiny_model_dir, tmp_path / "no-tokenizer")
    with pytest.raises(InputError, match=r"cannot read the tokenizer of .*no-tokenizer: it has no tokenizer/"):
        tokenizer_vocabulary(folder)


def test_the_family_follows_the_configs_even_after_a_first_read(tiny_model_dir, tmp_path):
    folder = _configs_only(tiny_model_dir, tmp_path / "model")
    assert read_family(folder) == family_or_none(str(folder)) == "sd1"
    config = folder / "text_encoder" / "config.json"
    config.write_text(json.dumps({**json.loads(config.read_text()), "hidden_size": 1024}))  # now an OpenCLIP-H side
    assert family_or_none(str(folder)) == "sd2", "a replaced model is read again, not served from the cache"
    index = folder / "model_index.json"
    index.write_text(json.dumps({**json.loads(index.read_text()), "text_encoder_2": ["transformers", "X"]}))
    assert family_or_none(str(folder)) == "sdxl"
    config.unlink()
    index.unlink()
    assert family_or_none(str(folder)) is None
    with pytest.raises(InputError, match=r"cannot read the model family of .*model: it has no model_index.json"):
        read_family(folder)
