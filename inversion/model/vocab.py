"""The tokenizers of the random-weight models, built offline: the real CLIP BPE vocabulary, and a small T5 one.

Stable Diffusion 1.x uses OpenAI CLIP's tokenizer. open_clip ships its BPE merges as
``bpe_simple_vocab_16e6.txt.gz``; from it we write the ``vocab.json`` / ``merges.txt`` pair that
``transformers.CLIPTokenizer`` reads. Token ids match open_clip's (``<|startoftext|>`` = 49406,
``<|endoftext|>`` = 49407), so tiny test models tokenise text exactly like real checkpoints.

SD 3 and Flux also read text with T5's SentencePiece unigram tokenizer (32,100 pieces), which ships
nowhere on these machines. :func:`write_t5_tokenizer` trains a small one (:data:`T5_VOCAB_SIZE` pieces) with
the ``tokenizers`` package on the CLIP vocabulary's words, each repeated by its rank (the BPE merges come in
order of frequency), and writes the ``tokenizer.json`` that ``transformers.T5TokenizerFast`` loads. Its
pieces are T5's kind (``▁cat`` starts a word, ``cat`` continues one; ``<pad>`` = 0, ``</s>`` = 1,
``<unk>`` = 2, ``</s>`` closes every text). The trainer picks the pieces, always the same ones; its
scores wobble in the last digits between runs (floating-point sums in hash order), so each piece is
scored instead by its own count in the training text: the same file, byte for byte, on every build.
"""

from __future__ import annotations

import gzip
import json
import math
import string
from collections import Counter
from collections.abc import Iterator
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


#: the pieces of the T5 tokenizer :func:`write_t5_tokenizer` trains (specials included)
T5_VOCAB_SIZE = 2000
T5_SPECIALS = ("<pad>", "</s>", "<unk>")  # ids 0, 1, 2, as in T5
#: how many of CLIP's most frequent words the T5 tokenizer is trained on, and its longest piece
_T5_WORDS = 10_000
_T5_MAX_PIECE = 12
_WORD_START = "\u2581"  # SentencePiece's mark of a piece that begins a word


def _t5_training_words() -> list[tuple[str, int]]:
    """CLIP's most frequent printable words (whole-word tokens, in merge order) with a count falling by rank."""
    ranked = sorted(clip_vocab().items(), key=lambda item: item[1])
    words = [token[: -len("</w>")] for token, _ in ranked if token.endswith("</w>")]
    printable = [w for w in words if len(w) > 1 and all(33 <= ord(ch) < 127 for ch in w)][:_T5_WORDS]
    return [(word, max(1, 64 // (1 + rank // 64))) for rank, word in enumerate(printable)]


def _piece_counts(words: list[tuple[str, int]]) -> Counter[str]:
    """How often each substring (up to the longest piece) of ``▁word`` occurs in the training text."""
    counts: Counter[str] = Counter()
    for word, count in words:
        text = _WORD_START + word
        for start in range(len(text)):
            for end in range(start + 1, min(len(text), start + _T5_MAX_PIECE) + 1):
                counts[text[start:end]] += count
    return counts


def _sentences(words: list[tuple[str, int]]) -> Iterator[str]:
    return (" ".join([word] * count) for word, count in words)


@lru_cache(maxsize=1)
def t5_tokenizer_json() -> str:
    """The ``tokenizer.json`` of the small T5 tokenizer (see the module docstring), deterministic."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    words = _t5_training_words()
    trainer = trainers.UnigramTrainer(
        vocab_size=T5_VOCAB_SIZE,
        special_tokens=list(T5_SPECIALS),
        unk_token="<unk>",
        max_piece_length=_T5_MAX_PIECE,
        initial_alphabet=[ch for ch in string.printable if not ch.isspace()],
        show_progress=False,
    )
    trained = Tokenizer(models.Unigram())
    trained.pre_tokenizer = pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme="always")
    trained.train_from_iterator(_sentences(words), trainer=trainer)
    pieces = [piece for piece, _ in json.loads(trained.to_str())["model"]["vocab"] if piece not in T5_SPECIALS]
    counts = _piece_counts(words)
    total = sum(counts[piece] + 1 for piece in pieces)
    scored = sorted(((p, math.log((counts[p] + 1) / total)) for p in pieces), key=lambda ps: (-ps[1], ps[0]))
    tokenizer = Tokenizer(models.Unigram([(special, 0.0) for special in T5_SPECIALS] + scored, unk_id=2))
    tokenizer.add_special_tokens(list(T5_SPECIALS))
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [pre_tokenizers.WhitespaceSplit(), pre_tokenizers.Metaspace(replacement=_WORD_START, prepend_scheme="always")]
    )
    tokenizer.decoder = decoders.Metaspace(replacement=_WORD_START, prepend_scheme="always")
    tokenizer.post_processor = processors.TemplateProcessing(
        single="$A </s>", pair="$A </s> $B </s>", special_tokens=[("</s>", 1)]
    )
    assert tokenizer.get_vocab_size() == T5_VOCAB_SIZE, tokenizer.get_vocab_size()
    return tokenizer.to_str()


def write_t5_tokenizer(folder: Path) -> Path:
    """Write a ``T5TokenizerFast`` folder (tokenizer.json, tokenizer_config.json) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "tokenizer.json").write_text(t5_tokenizer_json(), encoding="utf-8")
    config = {
        "tokenizer_class": "T5Tokenizer",
        "model_max_length": 512,
        "eos_token": "</s>",
        "pad_token": "<pad>",
        "unk_token": "<unk>",
        "extra_ids": 0,
        "additional_special_tokens": [],
    }
    (folder / "tokenizer_config.json").write_text(json.dumps(config, indent=2), encoding="utf-8")
    return folder
