"""Run metrics as an append-only, hive-partitioned Parquet dataset, and the embeddings index.

Layout under the output root::

    metrics/run_date=YYYY-MM-DD/<run_id>-<uuid8>.parquet   one file per append, write-once
    embeddings_index/index.parquet                         latest good embedding per concept

Files are serialised in memory and stored with a write-once put (atomic on both backends), so
a reader never sees a partial file and appends never collide. Reading goes through
:func:`pyarrow.dataset` with the filesystem from :func:`storage.store.open.pyarrow_filesystem`
(explicit S3 endpoint). ``run_date`` lives in the directory name only (hive convention).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timezone
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import InvalidInput, StorageError, redact
from storage.results import ResultStore, check_run_id
from storage.runfiles import append_run_file, read_run_files, rows_table, run_files_dataset, to_parquet
from storage.store.open import open_store, pyarrow_filesystem
from storage.store.settings import S3Settings

__all__ = [
    "METRICS_SCHEMA",
    "INDEX_SCHEMA",
    "STATUSES",
    "Status",
    "MetricsRow",
    "append_metrics",
    "metrics_dataset",
    "read_metrics",
    "update_embeddings_index",
    "read_embeddings_index",
]

METRICS_DIR = "metrics"
INDEX_KEY = "embeddings_index/index.parquet"
#: what became of one concept (or one composition) in one run; the metrics' ``status`` column holds it
Status = Literal["ok", "failed", "skipped"]
STATUSES: tuple[Status, ...] = get_args(Status)
_MAX_ERROR_CHARS = 4000

METRICS_SCHEMA = pa.schema(
    [
        pa.field("run_id", pa.string(), nullable=False),
        pa.field("run_date", pa.date32(), nullable=False),
        pa.field("concept_id", pa.string(), nullable=False),
        pa.field("digest", pa.string()),
        pa.field("token", pa.string()),
        pa.field("status", pa.string(), nullable=False),
        pa.field("error", pa.string()),
        pa.field("model", pa.string()),
        pa.field("model_family", pa.string()),
        pa.field("steps", pa.int32()),
        pa.field("steps_run", pa.int32()),
        pa.field("stop_reason", pa.string()),
        pa.field("vectors", pa.int32()),
        pa.field("lr", pa.float64()),
        pa.field("image_similarity", pa.float64()),
        pa.field("text_similarity", pa.float64()),
        pa.field("baseline_image_similarity", pa.float64()),
        pa.field("baseline_text_similarity", pa.float64()),
        pa.field("inversion_lift", pa.float64()),
        pa.field("final_loss", pa.float64()),
        pa.field("norm_ratio", pa.float64()),
        pa.field("train_seconds", pa.float64()),
        pa.field("eval_seconds", pa.float64()),
        pa.field("embedding_uri", pa.string()),
        pa.field("grid_uri", pa.string()),
        pa.field("created_at", pa.timestamp("us", tz="UTC"), nullable=False),
    ]
)

_INDEX_COLUMNS = (
    "concept_id",
    "digest",
    "token",
    "embedding_uri",
    "grid_uri",
    "image_similarity",
    "text_similarity",
    "baseline_image_similarity",
    "baseline_text_similarity",
    "inversion_lift",
    "model",
    "steps",
    "vectors",
    "run_id",
    "run_date",
    "created_at",
)
INDEX_SCHEMA = pa.schema([METRICS_SCHEMA.field(name) for name in _INDEX_COLUMNS])
_FILE_SCHEMA = METRICS_SCHEMA.remove(METRICS_SCHEMA.get_field_index("run_date"))
_INT_FIELDS = ("steps", "steps_run", "vectors")
_FLOAT_FIELDS = (
    "lr",
    "image_similarity",
    "text_similarity",
    "baseline_image_similarity",
    "baseline_text_similarity",
    "inversion_lift",
    "final_loss",
    "norm_ratio",
    "train_seconds",
    "eval_seconds",
)
_STR_FIELDS = ("digest", "token", "model", "model_family", "stop_reason", "embedding_uri", "grid_uri")


@dataclass(frozen=True)
class MetricsRow:
    """One concept in one run; mirrors :data:`METRICS_SCHEMA` (see the data section of ``README.md``).

    ``created_at`` defaults to now (UTC), ``run_date`` to ``created_at``'s UTC date; ``error``
    is redacted (no credentials) and truncated to 4000 characters.
    """

    run_id: str
    concept_id: str
    status: Status
    digest: str | None = None
    token: str | None = None
    error: str | None = None
    model: str | None = None
    model_family: str | None = None
    steps: int | None = None
    steps_run: int | None = None
    stop_reason: str | None = None
    vectors: int | None = None
    lr: float | None = None
    image_similarity: float | None = None
    text_similarity: float | None = None
    baseline_image_similarity: float | None = None
    baseline_text_similarity: float | None = None
    inversion_lift: float | None = None
    final_loss: float | None = None
    norm_ratio: float | None = None  # largest vector norm / its encoder's vocabulary mean (inversion.embeddings.norms)
    train_seconds: float | None = None
    eval_seconds: float | None = None
    embedding_uri: str | None = None
    grid_uri: str | None = None
    created_at: datetime = field(default_factory=lambda: datetime.now(timezone.utc))
    run_date: date | None = None

    def __post_init__(self) -> None:
        check_run_id(self.run_id)
        if not isinstance(self.concept_id, str) or not self.concept_id or len(self.concept_id) > 256:
            raise InvalidInput(f"concept_id must be a non-empty string, got {self.concept_id!r}")
        if self.status not in STATUSES:
            raise InvalidInput(f"status must be one of {', '.join(STATUSES)}, got {self.status!r}")
        for name in _STR_FIELDS:
            value = getattr(self, name)
            if value is not None and not isinstance(value, str):
                raise InvalidInput(f"{name} must be a string or None, got {type(value).__name__}")
        for name in _INT_FIELDS:
            value = getattr(self, name)
            if value is not None and (
                not isinstance(value, int) or isinstance(value, bool) or not -(2**31) <= value < 2**31
            ):
                raise InvalidInput(f"{name} must be a 32-bit integer or None, got {value!r}")
        for name in _FLOAT_FIELDS:
            value = getattr(self, name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                raise InvalidInput(f"{name} must be a number or None, got {value!r}")
            object.__setattr__(self, name, float(value))
        if not isinstance(self.created_at, datetime) or self.created_at.tzinfo is None:
            raise InvalidInput(f"created_at must be a timezone-aware datetime, got {self.created_at!r}")
        object.__setattr__(self, "created_at", self.created_at.astimezone(timezone.utc))
        if self.run_date is None:
            object.__setattr__(self, "run_date", self.created_at.date())
        elif isinstance(self.run_date, datetime) or not isinstance(self.run_date, date):
            raise InvalidInput(f"run_date must be a datetime.date, got {self.run_date!r}")
        if self.error is not None:
            if not isinstance(self.error, str):
                raise InvalidInput(f"error must be a string or None, got {type(self.error).__name__}")
            text = redact(self.error)
            if len(text) > _MAX_ERROR_CHARS:
                text = text[: _MAX_ERROR_CHARS - 3] + "..."
            object.__setattr__(self, "error", text)

    def to_dict(self) -> dict[str, Any]:
        """The row as a plain dict (every field is an immutable scalar, so no deep copy: a catalog run
        converts one row per concept)."""
        return {f.name: getattr(self, f.name) for f in fields(self)}


def append_metrics(out_uri: str, rows: Iterable[MetricsRow], s3: S3Settings | None = None) -> str:
    """Write ``rows`` as ONE new Parquet file under ``<out>/metrics/run_date=…/``; returns its URI.

    All rows must share ``run_id`` and ``run_date``. The file name
    ``<run_id>-<uuid8>.parquet`` is unique and written once: existing files are never touched.
    """
    rows = list(rows)
    if not rows:
        raise InvalidInput("append_metrics needs at least one row")
    for row in rows:
        if not isinstance(row, MetricsRow):
            raise InvalidInput(f"rows must be MetricsRow objects, got {type(row).__name__}")
    run_ids = {r.run_id for r in rows}
    run_dates = {r.run_date for r in rows}
    if len(run_ids) != 1 or len(run_dates) != 1:
        raise InvalidInput(
            f"one append holds one run on one date, "
            f"got run_ids {sorted(run_ids)} and run_dates {sorted(map(str, run_dates))}"
        )
    run_id, run_date = rows[0].run_id, rows[0].run_date
    assert run_date is not None
    table = rows_table(rows, METRICS_SCHEMA).drop_columns(["run_date"])
    return append_run_file(out_uri, METRICS_DIR, run_id, run_date, table, s3)


def metrics_dataset(out_uri: str, s3: S3Settings | None = None) -> ds.Dataset | None:
    """The metrics under ``<out>/metrics/`` as a lazy :class:`pyarrow.dataset.Dataset` with
    :data:`METRICS_SCHEMA` (columns added later read as null in older files); None when there are none.
    What ``sql/views.sql`` expects registered as ``metrics_files``."""
    return run_files_dataset(out_uri, METRICS_DIR, METRICS_SCHEMA, s3)


def read_metrics(out_uri: str, s3: S3Settings | None = None) -> pa.Table:
    """Every metrics row under ``<out>/metrics/`` as a table with :data:`METRICS_SCHEMA`, sorted by
    ``created_at``, ``run_id``, ``concept_id`` (empty table when there are none)."""
    table = read_run_files(out_uri, METRICS_DIR, METRICS_SCHEMA, s3)
    return table.sort_by([("created_at", "ascending"), ("run_id", "ascending"), ("concept_id", "ascending")])


def update_embeddings_index(
    out_uri: str, s3: S3Settings | None = None, *, rows: Iterable[MetricsRow] | None = None
) -> str:
    """Bring ``<out>/embeddings_index/index.parquet`` up to date: for each concept, the most recent
    ``ok`` metrics row (by ``created_at``, then ``run_id``) with an ``embedding_uri`` whose result is
    complete (``_SUCCESS`` present). Returns the index URI.

    With ``rows`` (a run's new rows) the stored index is read and only those rows are merged in: the
    cost follows the run, not the metrics history, and an unchanged index is not rewritten. Without
    ``rows``, or when there is no readable index yet, it is rebuilt from the whole metrics history
    (one listing finds the complete results). Writes are atomic replaces.
    """
    store = open_store(out_uri, s3)
    results = ResultStore(store)
    current: dict[str, dict[str, Any]] | None = None
    if rows is not None and store.exists(INDEX_KEY):
        try:
            current = {r["concept_id"]: r for r in read_embeddings_index(out_uri, s3).to_pylist()}
        except StorageError:  # unreadable: rebuild it
            current = None
    if current is None:
        complete = results.completed()
        latest = _latest_ok(read_metrics(out_uri, s3).to_pylist(), lambda cid, digest: digest in complete.get(cid, ()))
        before = None
    else:
        new = [r.to_dict() for r in rows or ()]
        latest = _latest_ok(
            [*current.values(), *new],
            lambda cid, digest: (
                True if current.get(cid, {}).get("digest") == digest else _is_complete(results, cid, digest)
            ),
        )
        before = current
    if before is not None and latest == before:
        return store.url(INDEX_KEY)
    ordered = [latest[c] for c in sorted(latest)]
    table = pa.Table.from_pylist([{k: r[k] for k in _INDEX_COLUMNS} for r in ordered], schema=INDEX_SCHEMA)
    return store.put(INDEX_KEY, to_parquet(table))


def _is_complete(results: ResultStore, concept_id: str, digest: str) -> bool:
    try:
        return results.is_complete(concept_id, digest)
    except InvalidInput:  # id/digest not usable as a result path
        return False


def _latest_ok(rows: list[dict[str, Any]], complete) -> dict[str, dict[str, Any]]:
    """Per concept, the newest ``ok`` row with an embedding whose ``(concept_id, digest)`` is ``complete``."""
    candidates = [r for r in rows if r.get("status", "ok") == "ok" and r["embedding_uri"] and r["digest"]]
    candidates.sort(key=lambda r: (r["created_at"], r["run_id"]), reverse=True)
    latest: dict[str, dict[str, Any]] = {}
    checked: dict[tuple[str, str], bool] = {}
    for row in candidates:
        if row["concept_id"] in latest:
            continue
        pair = (row["concept_id"], row["digest"])
        if pair not in checked:
            checked[pair] = complete(*pair)
        if checked[pair]:
            latest[row["concept_id"]] = {k: row[k] for k in _INDEX_COLUMNS}
    return latest


def read_embeddings_index(out_uri: str, s3: S3Settings | None = None) -> pa.Table:
    """The embeddings index (:data:`INDEX_SCHEMA`); empty if it was never written."""
    filesystem, base = pyarrow_filesystem(out_uri, s3)
    path = f"{base.rstrip('/')}/{INDEX_KEY}"
    try:
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return INDEX_SCHEMA.empty_table()
        table = pq.read_table(path, filesystem=filesystem, schema=INDEX_SCHEMA)
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read the embeddings index {out_uri.rstrip('/')}/{INDEX_KEY}: {exc}") from None
    return table.cast(INDEX_SCHEMA)
