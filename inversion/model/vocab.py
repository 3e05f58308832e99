"""The real CLIP BPE vocabulary, built offline from the copy shipped inside open_clip_torch.

Stable Diffusion 1.x uses OpenAI CLIP's tokenizer. open_clip ships its BPE merges as
``bpe_simple_vocab_16e6.txt.gz``; from it we write the ``vocab.json`` / ``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads. Token ids match open_clip's (``<|startoftext|>`` = 49406,
``<|endoftext|>`` = 49407), so tiny test models tokenise text exactly like real checkpoints.
"""

from __future__ import annotations

import gzip
import json
from functools import lru_cache
from pathlib import Path

BOS_TOKEN_ID = 49406
EOS_TOKEN_ID = 49407
VOCAB_SIZE = 49408
MAX_LENGTH = 77

_NUM_MERGES = 49152 - 256 - 2


def _bpe_source() -> Path:
    import open_clip.tokenizer

    return Path(open_clip.tokenizer.default_bpe())


@lru_cache(maxsize=1)
def _merges() -> tuple[str, ...]:
    with gzip.open(_bpe_source(), "rt", encoding="utf-8") as handle:
        lines = handle.read().split("\n")
    return tuple(lines[1 : _NUM_MERGES + 1])


def clip_vocab() -> dict[str, int]:
    """The token → id map of OpenAI CLIP's tokenizer (49,408 entries).

    The byte alphabet (GPT-2's reversible byte → printable-character map, open_clip's
    ``bytes_to_unicode``), the same with ``</w>``, one token per BPE merge, then the two special tokens.
    """
    from open_clip.tokenizer import bytes_to_unicode

    base = list(bytes_to_unicode().values())
    tokens = base + [b + "</w>" for b in base]
    tokens += ["".join(merge.split()) for merge in _merges()]
    tokens += ["<|startoftext|>", "<|endoftext|>"]
    assert len(tokens) == VOCAB_SIZE
    return {token: index for index, token in enumerate(tokens)}


def write_clip_tokenizer(folder: Path) -> Path:
    """Write a ``CLIPTokenizer`` folder (vocab.json, merges.txt, tokenizer_config.json) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "vocab.json").write_text(json.dumps(clip_vocab(), ensure_ascii=False), encoding="utf-8")
    (folder / "merges.txt").write_text("#version: 0.2\n" + "\n".join(_merges()) + "\n", encoding="utf-8")
    config = {
        "tokenizer_class": "CLIPTokenizer",
        "model_max_length": MAX_LENGTH,
        "bos_token": "<|startoftext|>",
        "eos_token": "<|endoftext|>",
        "unk_token": "<|endoftext|>",
        "pad_token": "<|endoftext|>",
        "do_lower_case": True,
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
