"""How long a learned word's vectors are, measured against its text encoder's vocabulary.

Plain Textual Inversion lets a vector grow: Directional TI's authors (arXiv 2512.13672) report learned
norms "often > 20", far above the vocabulary's rows, and Cross Initialization's (arXiv 2312.15905) "up
to 100×" the starting norm. A word that long drowns the rest of
the prompt in the text encoder's pre-norm attention: "it ignores my prompt". Only the ratio to the
vocabulary says whether a norm is large, so training records each encoder's vocabulary norm statistics
(:class:`VocabNorms`: mean, standard deviation and maximum of the token-embedding rows' L2 norms) in the
embedding file's metadata (:data:`VOCAB_NORMS_KEY`), and ``sstar inspect`` reads them without the model.

:data:`common.norms.BLOWN_UP_RATIO` is the line above which a word counts as blown up, in multiples of
its encoder's vocabulary mean norm; the measurement that placed it is in the constant's comment (it lives
in :mod:`common` because the HTML pages flag blown-up words too).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import torch

from inversion.embeddings.formats import LearnedEmbedding
from inversion.errors import EmbeddingFormatError

#: the metadata key of the per-encoder vocabulary norm statistics (a JSON list, one object per text encoder)
VOCAB_NORMS_KEY = "sstar.vocab_norms"


@dataclass(frozen=True)
class VocabNorms:
    """L2-norm statistics of one text encoder's token-embedding rows."""

    mean: float
    std: float
    max: float

    def ratio(self, norm: float) -> float:
        """``norm`` in multiples of the vocabulary's mean row norm."""
        return norm / self.mean


def vocab_norms(table: torch.Tensor) -> VocabNorms:
    """The norm statistics of the rows of a token-embedding table ``[V, dim]``."""
    norms = table.detach().float().norm(dim=1)
    return VocabNorms(float(norms.mean()), float(norms.std()), float(norms.max()))


def norms_metadata(norms: Sequence[VocabNorms]) -> dict[str, str]:
    """The file metadata recording ``norms`` (one per text encoder, in encoder order)."""
    return {VOCAB_NORMS_KEY: json.dumps([asdict(n) for n in norms], separators=(",", ":"))}


def norms_from_metadata(metadata: Mapping[str, str]) -> tuple[VocabNorms, ...] | None:
    """The vocabulary norms a file's metadata records, or ``None`` when it records none (other trainers)."""
    text = metadata.get(VOCAB_NORMS_KEY)
    if text is None:
        return None
    try:
        return tuple(VocabNorms(float(n["mean"]), float(n["std"]), float(n["max"])) for n in json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise EmbeddingFormatError(
            f"metadata {VOCAB_NORMS_KEY} is not a list of mean/std/max objects ({exc})"
        ) from None


def vector_norms(embedding: LearnedEmbedding) -> list[list[float]]:
    """Per text encoder, the L2 norm of each of the word's vectors."""
    return [table.norm(dim=1).tolist() for table in embedding.tables]


def norm_ratio(embedding: LearnedEmbedding, norms: Sequence[VocabNorms]) -> float:
    """The largest vector norm over all vectors and encoders, each divided by its encoder's vocabulary mean."""
    if len(norms) != len(embedding.tables):
        raise EmbeddingFormatError(
            f"embedding {embedding.token} has {len(embedding.tables)} table(s) but {len(norms)} vocabulary norm(s)"
        )
    return max(stats.ratio(norm) for stats, row in zip(norms, vector_norms(embedding)) for norm in row)
