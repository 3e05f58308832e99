"""Per-run Parquet files under a hive-partitioned directory of the output root.

Layout::

    <out>/<directory>/run_date=YYYY-MM-DD/<run_id>-<hash8>.parquet   one write-once file per append

Shared by run metrics (:mod:`storage.metrics`) and composition rows (:mod:`storage.compositions`):
files are serialised in memory and stored with a write-once put, so a reader never sees a partial
file; ``run_date`` lives in the directory name only (hive convention). A file's name follows from its
run and the ids of its rows (``<hash8>``), so a retried append (a task retry after a lost reply, a re-run
of a step) finds its own file instead of adding a second copy of the run's rows.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from datetime import date

import pyarrow as pa
import pyarrow.dataset as ds
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from storage.errors import StorageError
from storage.store.open import open_store, pyarrow_filesystem
from storage.store.settings import S3Settings

RUN_DATE_PARTITIONING = ds.partitioning(pa.schema([pa.field("run_date", pa.date32())]), flavor="hive")


def rows_table(rows: Sequence[object], schema: pa.Schema) -> pa.Table:
    """``rows`` (objects with one attribute per column of ``schema``) as a table with ``schema``."""
    return pa.table(
        {name: pa.array([getattr(r, name) for r in rows], type=schema.field(name).type) for name in schema.names},
        schema=schema,
    )


def to_parquet(table: pa.Table) -> bytes:
    """``table`` as the bytes of one zstd-compressed Parquet file."""
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="zstd")
    return sink.getvalue().to_pybytes()


def append_run_file(
    out_uri: str,
    directory: str,
    run_id: str,
    run_date: date,
    table: pa.Table,
    ids: Iterable[str],
    s3: S3Settings | None = None,
) -> str:
    """Write ``table`` (one run on one date, without ``run_date``; ``ids`` name its rows) as one file under
    ``<out>/<directory>/run_date=…/``; returns its URI. Existing files are never touched: when the run already
    wrote these ids there (a retry), that file stands and its URI is returned."""
    name = hashlib.sha256("\n".join([run_id, *sorted(ids)]).encode("utf-8")).hexdigest()[:8]
    store = open_store(out_uri, s3)
    key = f"{directory}/run_date={run_date.isoformat()}/{run_id}-{name}.parquet"
    store.put_once(key, to_parquet(table))
    return store.url(key)


def run_files_dataset(
    out_uri: str, directory: str, schema: pa.Schema, s3: S3Settings | None = None
) -> ds.Dataset | None:
    """The files under ``<out>/<directory>/`` as a lazy dataset with ``schema`` (columns added later
    read as null in older files); None when the directory does not exist."""
    filesystem, base = pyarrow_filesystem(out_uri, s3)
    path = f"{base.rstrip('/')}/{directory}"
    try:
        if filesystem.get_file_info(path).type == pafs.FileType.NotFound:
            return None
        return ds.dataset(
            path,
            filesystem=filesystem,
            format="parquet",
            schema=schema,
            partitioning=RUN_DATE_PARTITIONING,
            ignore_prefixes=[".", "_"],
        )
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read {out_uri.rstrip('/')}/{directory}: {exc}") from None


def read_run_files(out_uri: str, directory: str, schema: pa.Schema, s3: S3Settings | None = None) -> pa.Table:
    """Every row under ``<out>/<directory>/`` as one table with ``schema`` (empty when there are none)."""
    dataset = run_files_dataset(out_uri, directory, schema, s3)
    if dataset is None:
        return schema.empty_table()
    try:
        table = dataset.to_table()
    except (OSError, pa.ArrowException) as exc:
        raise StorageError(f"cannot read {out_uri.rstrip('/')}/{directory}: {exc}") from None
    return table.select(schema.names).cast(schema)
