"""``sstar inspect FILE… [--model M]``: what an embedding file holds and whether its word is blown up.

For each file: its format (:data:`inversion.embeddings.formats.FORMATS`), token, model family (from
its widths), number of vectors, and per text encoder each vector's L2 norm. Where the file records its
encoders' vocabulary norm statistics (sstar writes them at training, :mod:`inversion.embeddings.norms`)
each norm is shown as a multiple of its vocabulary's mean, and a word past
:data:`~common.norms.BLOWN_UP_RATIO` is flagged. Files from other trainers carry no
statistics: ``--model`` supplies them from the model's own token-embedding tables, and also lists each
vector's nearest vocabulary words (cosine similarity) in its own text encoder's vocabulary, on every family
(an SD 3 or Flux word's T5 rows among T5's unigram pieces). A file that is no embedding gets one line and
makes the command exit 2.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch

from common.norms import BLOWN_UP_RATIO, blown_up
from inversion.embeddings.families import ENCODER_WIDTHS, TOKEN_METADATA_KEY
from inversion.embeddings.formats import (
    FORMATS,
    KEYED_FORMATS,
    EmbeddingFile,
    diffusers_sibling,
    parse_embedding,
    read_metadata,
    read_tensors,
)
from inversion.embeddings.norms import VocabNorms, norms_from_metadata, vocab_norms
from inversion.errors import EmbeddingFormatError, SstarError
from inversion.model.info import Family

#: each model family as the report names it, with its text encoders
FAMILY_LABELS: dict[Family, str] = {
    "sd1": "sd1 (CLIP ViT-L)",
    "sd2": "sd2 (OpenCLIP ViT-H)",
    "sdxl": "sdxl (CLIP ViT-L + OpenCLIP bigG)",
    "sd3": "sd3 (CLIP ViT-L + OpenCLIP bigG + T5-XXL)",
    "flux": "flux (CLIP ViT-L + T5-XXL)",
}
#: widths of the text encoders → the model family they belong to (the real models' widths)
FAMILY_BY_WIDTHS = {ENCODER_WIDTHS[family]: label for family, label in FAMILY_LABELS.items()}
#: how many nearest vocabulary words ``--model`` lists per vector
NEAREST = 5


@dataclass(frozen=True)
class Table:
    """One text encoder's vectors of a word, as inspected."""

    name: str
    vectors: torch.Tensor
    vocab: VocabNorms | None = None
    nearest: tuple[tuple[str, ...], ...] = ()

    @property
    def norms(self) -> list[float]:
        return self.vectors.norm(dim=1).tolist()


@dataclass(frozen=True)
class Inspection:
    """What :func:`inspect_file` found in one file (and its diffusers ``_2`` sibling)."""

    path: Path
    format: str
    token: str
    tables: tuple[Table, ...]
    sibling: Path | None = None
    #: the family the file's keys name (SDXL, SD 3, Flux single files); others are told by their widths
    keyed_family: Family | None = None

    @property
    def widths(self) -> tuple[int, ...]:
        return tuple(int(t.vectors.shape[1]) for t in self.tables)

    @property
    def family(self) -> str:
        if self.keyed_family is not None:
            return FAMILY_LABELS[self.keyed_family]
        return FAMILY_BY_WIDTHS.get(self.widths, f"unknown (width {'+'.join(map(str, self.widths))})")

    @property
    def num_vectors(self) -> int:
        return int(self.tables[0].vectors.shape[0])

    @property
    def ratio(self) -> float | None:
        """The largest norm over the vocabulary mean of its encoder; ``None`` without vocabulary statistics."""
        if any(t.vocab is None for t in self.tables):
            return None
        return max(t.vocab.ratio(n) for t in self.tables if t.vocab is not None for n in t.norms)


class ModelVocabulary:
    """The token-embedding tables and words of a model's text encoders (``--model``), in text-encoder order:
    every family's, T5's included (SD 3: CLIP-L, CLIP-G, T5; Flux: CLIP-L, T5)."""

    def __init__(self, tables: Sequence[torch.Tensor], words: Sequence[Sequence[str]]) -> None:
        self.tables = [t.detach().float() for t in tables]
        #: each text encoder's words by row (its own tokenizer's: CLIP's BPE words, T5's unigram pieces)
        self.words = [list(w) for w in words]
        self.norms = tuple(vocab_norms(t) for t in self.tables)

    @classmethod
    def load(cls, model: str) -> ModelVocabulary:
        """Read a diffusers model folder's (or hub id's) tokenizers and text encoders; no denoiser, no VAE.

        Each text encoder is loaded whole to read its token-embedding table (for a real T5-XXL that is its
        ~19 GB of fp32 weights, as when training)."""
        from inversion.model.components import PART_CLASSES, library_class
        from inversion.model.info import read_family

        classes = PART_CLASSES[read_family(model)]
        tables: list[torch.Tensor] = []
        words: list[list[str]] = []
        for suffix in ("", "_2", "_3"):
            if f"text_encoder{suffix}" not in classes:
                continue
            tokenizer = library_class(classes[f"tokenizer{suffix}"]).from_pretrained(
                model, subfolder=f"tokenizer{suffix}"
            )
            encoder = library_class(classes[f"text_encoder{suffix}"]).from_pretrained(
                model, subfolder=f"text_encoder{suffix}"
            )
            layer = encoder.get_input_embeddings()
            assert isinstance(layer, torch.nn.Embedding)
            tables.append(layer.weight)
            words.append(_words(tokenizer, int(layer.weight.shape[0])))
        return cls(tables, words)

    def nearest(self, encoder: int, vectors: torch.Tensor, k: int = NEAREST) -> tuple[tuple[str, ...], ...]:
        """The ``k`` vocabulary words of text encoder ``encoder`` nearest (cosine) to each of ``vectors``."""
        table = torch.nn.functional.normalize(self.tables[encoder], dim=1)
        scores = torch.nn.functional.normalize(vectors.float(), dim=1) @ table.T
        words = self.words[encoder]
        return tuple(tuple(words[i] for i in row.tolist()) for row in scores.topk(k, dim=1).indices)


def _words(tokenizer, rows: int) -> list[str]:
    """The tokenizer's word for each of an embedding table's ``rows`` (CLIP's ``</w>`` end mark dropped); a row
    the tokenizer has no word for (T5's table is padded past its vocabulary) is ``<row i>``."""
    words = tokenizer.convert_ids_to_tokens(list(range(rows)))
    return [w.replace("</w>", "") if isinstance(w, str) else f"<row {i}>" for i, w in enumerate(words)]


def _tables(parsed: EmbeddingFile, second: EmbeddingFile | None) -> dict[str, torch.Tensor]:
    """The file's vectors by text encoder: per-encoder keys as stored, a one-encoder file as ``text_encoder``."""
    if parsed.format in KEYED_FORMATS:
        return dict(parsed.tables)
    tables = {"text_encoder": next(iter(parsed.tables.values()))}
    if second is not None:
        tables["text_encoder_2"] = next(iter(second.tables.values()))
    return tables


def _read(path: Path) -> tuple[EmbeddingFile, EmbeddingFile | None, Path | None]:
    parsed = parse_embedding(read_tensors(path), path)
    sibling = diffusers_sibling(path) if parsed.format == "diffusers" else None
    second = parse_embedding(read_tensors(sibling), sibling) if sibling is not None else None
    if second is not None and second.format != "diffusers":
        second, sibling = None, None
    return parsed, second, sibling


def inspect_file(path: Path | str, vocabulary: ModelVocabulary | None = None) -> Inspection:
    """Read one embedding file (any format :func:`~inversion.embeddings.formats.parse_embedding` knows).

    Vocabulary statistics come from the file's metadata, else from ``vocabulary``; ``vocabulary`` also
    gives the nearest words. Raises :class:`EmbeddingFormatError` for a file that is no embedding or whose
    widths are not ``vocabulary``'s model's.
    """
    path = Path(path)
    parsed, second, sibling = _read(path)
    tables = _tables(parsed, second)
    counts = {int(v.shape[0]) for v in tables.values()}
    if len(counts) != 1:
        raise EmbeddingFormatError(f"{path}: its tables hold different numbers of vectors ({sorted(counts)})")
    widths = tuple(int(v.shape[1]) for v in tables.values())
    if vocabulary is not None and widths != tuple(int(t.shape[1]) for t in vocabulary.tables):
        model_widths = "+".join(str(int(t.shape[1])) for t in vocabulary.tables)
        raise EmbeddingFormatError(
            f"{path}: vectors of width {'+'.join(map(str, widths))}, but the model's text encoders take "
            f"{model_widths}: it was learned for another model"
        )
    metadata = read_metadata(path)
    recorded = norms_from_metadata(metadata)
    norms = recorded if recorded is not None and len(recorded) == len(tables) else None
    if norms is None and vocabulary is not None:
        norms = vocabulary.norms
    inspected = tuple(
        Table(
            name,
            vectors,
            norms[i] if norms is not None else None,
            vocabulary.nearest(i, vectors) if vocabulary is not None else (),
        )
        for i, (name, vectors) in enumerate(tables.items())
    )
    token = parsed.stored_token if parsed.format == "diffusers" else metadata.get(TOKEN_METADATA_KEY, f"<{path.stem}>")
    layout = parsed.layout
    return Inspection(path, parsed.format, str(token), inspected, sibling, layout[0] if layout else None)


def _table_lines(table: Table) -> list[str]:
    width = int(table.vectors.shape[1])
    if table.vocab is None:
        norms = ", ".join(f"{n:.4g}" for n in table.norms)
        return [f"  {table.name} ({width}): norms {norms} (no vocabulary statistics: pass --model to place them)"]
    vocab = table.vocab
    lines = [
        f"  {table.name} ({width}): vocabulary mean norm {vocab.mean:.4g} (std {vocab.std:.3g}, "
        f"longest row {vocab.max:.4g} = {vocab.ratio(vocab.max):.2f}x)"
    ]
    for i, norm in enumerate(table.norms):
        near = f"; nearest: {', '.join(table.nearest[i])}" if table.nearest else ""
        lines.append(f"    vector {i}: norm {norm:.4g} = {vocab.ratio(norm):.2f}x the mean{near}")
    return lines


def describe(found: Inspection) -> str:
    """The report of one file, several lines."""
    files = f"{found.path} (+ {found.sibling.name})" if found.sibling is not None else str(found.path)
    vectors = f"{found.num_vectors} vector{'s' if found.num_vectors != 1 else ''}"
    lines = [files, f"  {FORMATS[found.format]}; token {found.token}; {found.family}; {vectors}"]
    for table in found.tables:
        lines += _table_lines(table)
    ratio = found.ratio
    if ratio is not None:
        verdict = "BLOWN UP" if blown_up(ratio) else "within range"
        lines.append(f"  largest norm {ratio:.2f}x its vocabulary mean: {verdict} (threshold {BLOWN_UP_RATIO:g}x)")
    return "\n".join(lines)


def _to_stderr(line: str) -> None:
    print(line, file=sys.stderr)


def inspect_files(
    paths: Sequence[Path | str],
    model: str | None = None,
    out: Callable[[str], None] = print,
    err: Callable[[str], None] = _to_stderr,
) -> int:
    """The ``sstar inspect`` command: a report per file to ``out``; a file that is no embedding gets one line
    on ``err``.

    Returns 0, or 2 when any file could not be read as an embedding (or the model could not be loaded).
    """
    try:
        vocabulary = ModelVocabulary.load(model) if model is not None else None
    except (OSError, ValueError, SstarError) as exc:
        err(f"error: cannot read the vocabulary of {model}: {str(exc).splitlines()[0]}")
        return 2
    status = 0
    for path in paths:
        try:
            out(describe(inspect_file(path, vocabulary)))
        except EmbeddingFormatError as exc:
            err(f"error: {exc}")
            status = 2
    return status
