"""Run metrics as an append-only, hive-partitioned Parquet dataset, and the embeddings index.

Layout under the output root::

    metrics/run_date=YYYY-MM-DD/<run_id>-<hash8>.parquet   one file per append, write-once (named by run and concepts)
    embeddings_index/index.parquet                         latest good embedding per concept

Files are serialised in memory and stored with a write-once put (atomic on both backends), so
a reader never sees a partial file and appends never collide; the index is rewritten by compare-and-swap.
Reading goes through :func:`pyarrow.dataset` with the filesystem from :func:`storage.store.open.pyarrow_filesystem`
(explicit S3 endpoint). ``run_date`` lives in the directory name only (hive convention).
"""

from __future__ import annotations

import io
import json
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from datetime import date, datetime, timedelta, timezone
from typing import Any, Literal, get_args

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from common.filenames import GRID_FILENAME, KEYED_WORD_FAMILIES, SCORES_FILENAME, word_filename
from storage.errors import InvalidInput, StorageError, redact
from storage.results import ResultManifest, ResultStore, check_run_id
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
        pa.field("relearn_reason", pa.string()),
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
_SCORE_FIELDS = (
    "image_similarity",
    "text_similarity",
    "baseline_image_similarity",
    "baseline_text_similarity",
    "inversion_lift",
)
_STR_FIELDS = (
    "digest",
    "token",
    "relearn_reason",
    "model",
    "model_family",
    "stop_reason",
    "embedding_uri",
    "grid_uri",
)


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
    #: why the concept was learned in this run (storage.relearn: ``new``, ``images changed + model changed`` …);
    #: null for skipped rows (set to null there), unusable concepts and rows written before the column existed
    relearn_reason: str | None = None
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
        if self.status == "skipped":  # not learned in this run, so not learned again for any reason
            object.__setattr__(self, "relearn_reason", None)
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

    All rows must share ``run_id`` and ``run_date``. The file name ``<run_id>-<hash8>.parquet`` follows
    from the run and its concept ids and is written once: existing files are never touched, and a retried
    append of the same rows leaves the one file the first try wrote (no concept gets two rows in a run).
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
    return append_run_file(out_uri, METRICS_DIR, run_id, run_date, table, [r.concept_id for r in rows], s3)


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
    out_uri: str,
    s3: S3Settings | None = None,
    *,
    rows: Iterable[MetricsRow] | None = None,
    published: Mapping[str, Iterable[str]] | None = None,
) -> str:
    """Bring ``<out>/embeddings_index/index.parquet`` up to date: for each concept, the most recent
    ``ok`` metrics row (by ``created_at``, then ``run_id``) with an ``embedding_uri`` whose result is
    complete (``_SUCCESS`` present). Returns the index URI.

    With ``rows`` (a run's new rows) the stored index is read and only those rows are merged in: the
    cost follows the run, not the metrics history, and an unchanged index is not rewritten. Without
    ``rows``, or when there is no readable index yet, it is rebuilt from the whole metrics history
    (one listing finds the complete results).

    The index is then reconciled with the published results, ``published`` (concept id → digests with
    a ``_SUCCESS``, the listing the run made anyway; listed here when rows are not given): a concept
    published but missing from the index, or whose current content (a ``skipped`` row's digest) was
    published after its indexed row, gets the ``ok`` row its publishing run wrote (or, when that run
    died before writing metrics, a row made from the manifest and ``scores.json``). So a run killed
    between its metrics and the index leaves nothing behind once any run of the catalog follows.

    The write is a compare-and-swap (:meth:`~storage.store.base.ObjectStore.update`): two runs updating
    one index at once both keep their concepts.
    """
    store = open_store(out_uri, s3)
    results = ResultStore(store)
    if rows is None and published is None:
        published = results.completed()
    merge = _IndexMerge(
        out_uri,
        s3,
        results,
        {cid: frozenset(digests) for cid, digests in (published or {}).items()},
        None if rows is None else [r.to_dict() for r in rows],
    )
    store.update(INDEX_KEY, merge)
    return store.url(INDEX_KEY)


class _IndexMerge:
    """The index's read-modify-write step (pure in the stored bytes, so it can run again after a lost race);
    what it reads besides the index (metrics history, completeness, manifests) is read once and kept."""

    def __init__(
        self,
        out_uri: str,
        s3: S3Settings | None,
        results: ResultStore,
        published: Mapping[str, frozenset[str]],
        new: list[dict[str, Any]] | None,
    ) -> None:
        self.out_uri, self.s3, self.results, self.published, self.new = out_uri, s3, results, published, new
        self._history: list[dict[str, Any]] | None = None
        self._complete: dict[tuple[str, str], bool] = {}
        self._manifests: dict[tuple[str, str], ResultManifest | None] = {}
        self._run_rows: dict[str, list[dict[str, Any]]] = {}

    def __call__(self, raw: bytes | None) -> bytes | None:
        current = _parse_index(raw)
        if current is None or self.new is None:
            if self._history is None:
                self._history = read_metrics(self.out_uri, self.s3).to_pylist()
            # the stored rows too: a run that updated the index after the history was read keeps its concepts
            latest = _latest_ok([*self._history, *(current or {}).values(), *(self.new or ())], self.is_complete)
        else:
            trusted = {(cid, row["digest"]) for cid, row in current.items()}
            latest = _latest_ok(
                [*current.values(), *self.new],
                lambda cid, digest: (cid, digest) in trusted or self.is_complete(cid, digest),
            )
        self.reconcile(latest)
        if current is not None and latest == current:
            return None
        ordered = [latest[c] for c in sorted(latest)]
        return to_parquet(pa.Table.from_pylist(ordered, schema=INDEX_SCHEMA))

    def is_complete(self, concept_id: str, digest: str) -> bool:
        if digest in self.published.get(concept_id, ()):
            return True
        if (concept_id, digest) not in self._complete:
            self._complete[concept_id, digest] = _is_complete(self.results, concept_id, digest)
        return self._complete[concept_id, digest]

    def reconcile(self, latest: dict[str, dict[str, Any]]) -> None:
        """Add the published concepts the index lacks, and move a concept whose current content was
        published after its indexed row to that result (see :func:`update_embeddings_index`)."""
        for concept_id, digests in sorted(self.published.items()):
            if concept_id not in latest:
                newest = self._newest(concept_id, digests)
                if newest is not None:
                    latest[concept_id] = self._index_row(newest)
        for row in self.new or ():
            indexed = latest.get(row["concept_id"])
            if row["status"] != "skipped" or indexed is None or row["digest"] == indexed["digest"]:
                continue
            if row["digest"] in self.published.get(row["concept_id"], ()):
                manifest = self._manifest(row["concept_id"], row["digest"])
                if manifest is not None and _published_at(manifest) > indexed["created_at"]:
                    latest[row["concept_id"]] = self._index_row(manifest)

    def _manifest(self, concept_id: str, digest: str) -> ResultManifest | None:
        if (concept_id, digest) not in self._manifests:
            try:
                self._manifests[concept_id, digest] = self.results.read_manifest(concept_id, digest)
            except StorageError:  # unreadable: not a result to index
                self._manifests[concept_id, digest] = None
        return self._manifests[concept_id, digest]

    def _newest(self, concept_id: str, digests: Iterable[str]) -> ResultManifest | None:
        manifests = [m for m in (self._manifest(concept_id, d) for d in sorted(digests)) if m is not None]
        return max(manifests, key=_published_at, default=None)

    def _index_row(self, manifest: ResultManifest) -> dict[str, Any]:
        """The index row of a published result: its publishing run's ``ok`` row, else one made from the
        manifest, ``scores.json`` and this run's row of the concept."""
        for row in self._rows_of_run(manifest.run_id, _published_at(manifest).date()):
            if row["concept_id"] == manifest.concept_id and row["digest"] == manifest.digest and row["status"] == "ok":
                return {k: row[k] for k in _INDEX_COLUMNS}
        return self._row_from_manifest(manifest)

    def _rows_of_run(self, run_id: str, published_on: date) -> list[dict[str, Any]]:
        """The metrics rows run ``run_id`` wrote on the day it published or the next (a row is made after
        its publish, maybe past midnight): one listing per day, only for results being reconciled."""
        if run_id not in self._run_rows:
            store, found = self.results.store, []
            for day in (published_on, published_on + timedelta(days=1)):
                for key in store.list(f"{METRICS_DIR}/run_date={day.isoformat()}/{run_id}"):
                    if key.rsplit("/", 1)[1].startswith(f"{run_id}-"):
                        table = pq.read_table(io.BytesIO(store.get(key)))
                        found += [{**r, "run_date": day} for r in table.to_pylist()]
            self._run_rows[run_id] = found
        return self._run_rows[run_id]

    def _row_from_manifest(self, manifest: ResultManifest) -> dict[str, Any]:
        cid, digest, files = manifest.concept_id, manifest.digest, manifest.files
        scores: dict[str, Any] = {}
        if SCORES_FILENAME in files:
            scores = json.loads(self.results.store.get(self.results.key(cid, digest, SCORES_FILENAME)))
        ours = next((r for r in self.new or () if r["concept_id"] == cid and r["digest"] == digest), {})
        created_at = _published_at(manifest)
        row = {name: scores.get(name) for name in _INDEX_COLUMNS if name in _SCORE_FIELDS}
        row.update({name: ours.get(name) for name in ("token", "model", "steps", "vectors")})
        word = _word_file(files, ours.get("token") or scores.get("token"), ours.get("model_family"))
        row.update(
            concept_id=cid,
            digest=digest,
            embedding_uri=self.results.uri(cid, digest, word) if word is not None else None,
            grid_uri=self.results.uri(cid, digest, GRID_FILENAME) if GRID_FILENAME in files else None,
            run_id=manifest.run_id,
            run_date=created_at.date(),
            created_at=created_at,
        )
        return {k: row[k] for k in _INDEX_COLUMNS}


def _word_file(files: Mapping[str, Any], token: str | None, family: str | None) -> str | None:
    """Which of a published result's ``files`` stands for its word (:func:`~common.filenames.word_filename`); with
    no row to name the model's family, whichever family's file the result holds; ``None`` when it holds none."""
    families = (family,) if family else (None, *KEYED_WORD_FAMILIES)
    return next((name for f in families if (name := word_filename(token or "", f)) in files), None)


def _published_at(manifest: ResultManifest) -> datetime:
    return datetime.fromisoformat(manifest.created_at).astimezone(timezone.utc)


def _parse_index(raw: bytes | None) -> dict[str, dict[str, Any]] | None:
    """The stored index by concept; ``None`` when there is none or it is unreadable (then it is rebuilt)."""
    if raw is None:
        return None
    try:
        table = pq.read_table(io.BytesIO(raw), schema=INDEX_SCHEMA)
    except (OSError, pa.ArrowException):
        return None
    return {r["concept_id"]: r for r in table.cast(INDEX_SCHEMA).to_pylist()}


def _is_complete(results: ResultStore, concept_id: str, digest: str) -> bool:
    try:
        return results.is_complete(concept_id, digest)
    except InvalidInput:  # id/digest not usable as a result path
        return False


def _latest_ok(rows: list[dict[str, Any]], complete: Callable[[str, str], bool]) -> dict[str, dict[str, Any]]:
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
