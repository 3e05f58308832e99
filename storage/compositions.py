"""Compositions: the catalog's ``_compositions.json`` in, composition rows (Parquet) and results out.

Catalog::

    <catalog>/_compositions.json   optional: [{"id": "mug-in-brand-style",
                                               "prompt": "a photo of {mug} in the style of ({brand-style}:0.8)"}, …]

Each ``{concept-id}`` names a concept of the catalog; the run puts that concept's learned token there.

Output::

    <out>/compositions/<composition_id>/<key>/grid.png, grid.thumb.jpg, scores.json   (scores.json last)
    <out>/composition_metrics/run_date=YYYY-MM-DD/<run_id>-<hash8>.parquet              one file per run

``key`` (16 hex) is a digest of the prompt and the digests of the concepts it names (and the settings
that change the pixels), so a composition is rendered again only when one of those changed.
Rows follow :data:`COMPOSITIONS_SCHEMA` (documented in the README).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from datetime import date, datetime, timezone
from typing import Any

import pyarrow as pa

from storage.catalog import validate_concept_id
from storage.errors import InvalidConcept, InvalidInput, NotFound, redact
from storage.metrics import STATUSES, Status
from storage.results import check_run_id
from storage.runfiles import append_run_file, read_run_files, rows_table
from storage.store.open import open_store
from storage.store.settings import S3Settings

COMPOSITIONS_FILE = "_compositions.json"
COMPOSITIONS_DIR = "compositions"
COMPOSITION_METRICS_DIR = "composition_metrics"
MAX_COMPOSITIONS_BYTES = 1024 * 1024
_PLACEHOLDER = re.compile(r"\{([^{}]*)\}")

COMPOSITIONS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("composition_id", pa.string(), nullable=False),
        pa.field("prompt", pa.string(), nullable=False),
        pa.field("key", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("concepts", pa.list_(pa.string()), nullable=False),
        pa.field("digests", pa.list_(pa.string())),
        pa.field("image_similarities", pa.list_(pa.float64())),
        pa.field("min_image_similarity", pa.float64()),
        pa.field("text_similarity", pa.float64()),
        pa.field("grid_uri", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)


@dataclass(frozen=True)
class CompositionSpec:
    """One entry of ``_compositions.json``: its id, prompt template and the concept ids it names, in order."""

    composition_id: str
    prompt: str
    concepts: tuple[str, ...]

    def filled(self, tokens: dict[str, str]) -> str:
        """The prompt with each ``{concept-id}`` replaced by ``tokens[concept-id]``."""
        return _PLACEHOLDER.sub(lambda m: tokens[m.group(1)], self.prompt)


def parse_compositions(raw: bytes, where: str = COMPOSITIONS_FILE) -> list[CompositionSpec]:
    """Validate the file's bytes: a JSON list of ``{"id", "prompt"}`` objects, ids unique and valid like concept
    ids, each prompt naming at least one ``{concept-id}``. One-line :class:`InvalidInput` naming the entry."""
    try:
        data = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InvalidInput(f"{where}: not valid JSON ({exc})") from None
    if not isinstance(data, list):
        raise InvalidInput(f'{where}: expected a JSON list of {{"id", "prompt"}} objects')
    specs: dict[str, CompositionSpec] = {}
    for i, entry in enumerate(data):
        if not isinstance(entry, dict) or set(entry) != {"id", "prompt"}:
            raise InvalidInput(f"{where}: entry {i} must have exactly the keys id and prompt")
        cid, prompt = entry["id"], entry["prompt"]
        try:
            validate_concept_id(cid)
        except InvalidConcept:
            raise InvalidInput(f"{where}: entry {i} has an invalid id {cid!r} (1-128 of A-Z a-z 0-9 . _ -)") from None
        if cid in specs:
            raise InvalidInput(f"{where}: id {cid!r} appears twice")
        if not isinstance(prompt, str) or not prompt.strip():
            raise InvalidInput(f"{where}: composition {cid} needs a prompt")
        concepts = tuple(dict.fromkeys(_PLACEHOLDER.findall(prompt)))
        if not concepts:
            raise InvalidInput(f"{where}: composition {cid}'s prompt names no concept (write {{concept-id}})")
        for concept in concepts:
            try:
                validate_concept_id(concept)
            except InvalidConcept:
                raise InvalidInput(f"{where}: composition {cid} names {{{concept}}}, not a concept id") from None
        specs[cid] = CompositionSpec(cid, prompt, concepts)
    return list(specs.values())


def read_compositions(catalog_uri: str, s3: S3Settings | None = None) -> list[CompositionSpec]:
    """The compositions of ``<catalog>/_compositions.json`` (none when the file is absent)."""
    store = open_store(catalog_uri, s3)
    try:
        raw = store.get(COMPOSITIONS_FILE)
    except NotFound:
        return []
    if len(raw) > MAX_COMPOSITIONS_BYTES:
        raise InvalidInput(f"{store.url(COMPOSITIONS_FILE)} is larger than {MAX_COMPOSITIONS_BYTES} bytes")
    return parse_compositions(raw, store.url(COMPOSITIONS_FILE))


def composition_prefix(composition_id: str, key: str) -> str:
    """Where a composition's result lives under the output root."""
    return f"{COMPOSITIONS_DIR}/{validate_concept_id(composition_id)}/{key}"


@dataclass(frozen=True)
class CompositionRow:
    """One composition in one run (see :data:`COMPOSITIONS_SCHEMA`)."""

    run_id: str
    composition_id: str
    prompt: str
    status: Status
    concepts: tuple[str, ...]
    key: str | None = None
    error: str | None = None
    digests: tuple[str | None, ...] | None = None
    image_similarities: tuple[float, ...] | None = None
    min_image_similarity: float | None = None
    text_similarity: float | None = None
    grid_uri: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    run_date: date | None = None

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        if self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        if self.run_date is None:
            object.__setattr__(self, "run_date", self.created_at.astimezone(timezone.utc).date())
        if self.error is not None:
            object.__setattr__(self, "error", redact(self.error)[:4000])

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def append_compositions(out_uri: str, rows: Iterable[CompositionRow], s3: S3Settings | None = None) -> str:
    """Write ``rows`` (one run, one date) as one new Parquet file under ``<out>/composition_metrics/``; its URI."""
    rows = list(rows)
    if not rows or len({(r.run_id, r.run_date) for r in rows}) != 1:
        raise InvalidInput("append_compositions needs rows of one run on one date")
    run_date = rows[0].run_date
    assert run_date is not None
    table = rows_table(rows, COMPOSITIONS_SCHEMA).drop_columns(["run_date"])
    ids = [r.composition_id for r in rows]
    return append_run_file(out_uri, COMPOSITION_METRICS_DIR, rows[0].run_id, run_date, table, ids, s3)


def read_composition_rows(out_uri: str, s3: S3Settings | None = None) -> pa.Table:
    """Every composition row under ``<out>/composition_metrics/`` (:data:`COMPOSITIONS_SCHEMA`), oldest first."""
    table = read_run_files(out_uri, COMPOSITION_METRICS_DIR, COMPOSITIONS_SCHEMA, s3)
    return table.sort_by([("created_at", "ascending"), ("composition_id", "ascending")])
