"""The Parquet metrics dataset and the embeddings index, on both backends."""

from __future__ import annotations

import re
from datetime import date, datetime, timedelta, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from storage.errors import InvalidInput
from storage.metrics import (
    INDEX_SCHEMA,
    METRICS_SCHEMA,
    MetricsRow,
    append_metrics,
    read_embeddings_index,
    read_metrics,
    update_embeddings_index,
)
from storage.results import ResultStore
from storage.store.base import ObjectStore
from storage.store.open import open_store

from .helpers import SECRET_KEY

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)

EXPECTED = [
    ("run_id", pa.string(), False),
    ("run_date", pa.date32(), False),
    ("concept_id", pa.string(), False),
    ("digest", pa.string(), True),
    ("token", pa.string(), True),
    ("status", pa.string(), False),
    ("error", pa.string(), True),
    ("relearn_reason", pa.string(), True),
    ("model", pa.string(), True),
    ("model_family", pa.string(), True),
    ("steps", pa.int32(), True),
    ("steps_run", pa.int32(), True),
    ("stop_reason", pa.string(), True),
    ("vectors", pa.int32(), True),
    ("lr", pa.float64(), True),
    ("image_similarity", pa.float64(), True),
    ("text_similarity", pa.float64(), True),
    ("baseline_image_similarity", pa.float64(), True),
    ("baseline_text_similarity", pa.float64(), True),
    ("inversion_lift", pa.float64(), True),
    ("final_loss", pa.float64(), True),
    ("norm_ratio", pa.float64(), True),
    ("train_seconds", pa.float64(), True),
    ("eval_seconds", pa.float64(), True),
    ("embedding_uri", pa.string(), True),
    ("grid_uri", pa.string(), True),
    ("created_at", pa.timestamp("us", tz="UTC"), False),
]
_DOC_TYPES = {
    "string": pa.string(),
    "date32": pa.date32(),
    "int32": pa.int32(),
    "float64": pa.float64(),
    "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"),
}


def test_schema_is_exactly_as_documented() -> None:
    assert [(f.name, f.type, f.nullable) for f in METRICS_SCHEMA] == EXPECTED
    assert set(MetricsRow.__dataclass_fields__) == {n for n, _, _ in EXPECTED}
    # the README's data section documents exactly this schema
    text = (REPO / "README.md").read_text()
    assert "<!-- metrics-schema" in text, "README.md lost its metrics schema table"
    block = text.split("<!-- metrics-schema", 1)[1].split("<!-- /metrics-schema -->", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \| (yes|no) \|", block, flags=re.M)
    assert [(n, _DOC_TYPES[t], nl == "yes") for n, t, nl in rows] == EXPECTED


def _row(run_id: str, concept: str, status: str = "ok", at: datetime = T0, **kw) -> MetricsRow:
    return MetricsRow(run_id=run_id, concept_id=concept, status=status, created_at=at, **kw)


def test_append_twice_then_read_back(root_uri: str, settings_for, store: ObjectStore) -> None:
    assert read_metrics(root_uri, settings_for).schema == METRICS_SCHEMA
    assert read_metrics(root_uri, settings_for).num_rows == 0
    first = append_metrics(
        root_uri,
        [
            _row(
                "run-a",
                "cat",
                digest="0123456789abcdef",
                token="<cat>",
                model="sd15",
                steps=500,
                vectors=2,
                lr=5e-3,
                image_similarity=0.81,
                text_similarity=0.27,
                baseline_image_similarity=0.7,
                baseline_text_similarity=0.25,
                inversion_lift=0.11,
                final_loss=0.12,
                train_seconds=61.5,
                embedding_uri="s3://b/e.safetensors",
                grid_uri="s3://b/g.png",
            ),
            _row("run-a", "dog", status="failed", error="CUDA out of memory"),
        ],
        settings_for,
    )
    second = append_metrics(root_uri, [_row("run-b", "cat", status="skipped", at=T0 + timedelta(days=1))], settings_for)
    assert first != second
    keys = list(store.list("metrics/"))
    assert len(keys) == 2
    assert re.fullmatch(r"metrics/run_date=2025-03-01/run-a-[0-9a-f]{8}\.parquet", keys[0])
    assert re.fullmatch(r"metrics/run_date=2025-03-02/run-b-[0-9a-f]{8}\.parquet", keys[1])
    assert first == store.url(keys[0])

    table = read_metrics(root_uri, settings_for)
    assert table.schema == METRICS_SCHEMA
    rows = table.to_pylist()
    assert [(r["run_id"], r["concept_id"], r["status"], r["run_date"]) for r in rows] == [
        ("run-a", "cat", "ok", date(2025, 3, 1)),
        ("run-a", "dog", "failed", date(2025, 3, 1)),
        ("run-b", "cat", "skipped", date(2025, 3, 2)),
    ]
    assert rows[0]["steps"] == 500 and rows[0]["lr"] == 5e-3 and rows[0]["image_similarity"] == 0.81
    assert rows[0]["created_at"] == T0
    assert rows[1]["error"] == "CUDA out of memory" and rows[1]["image_similarity"] is None
    # append-only: a third append adds a file, the first two are untouched
    before = {k: store.get(k) for k in keys}
    append_metrics(root_uri, [_row("run-a", "emu")], settings_for)
    assert {k: store.get(k) for k in keys} == before
    assert read_metrics(root_uri, settings_for).num_rows == 4


def test_errors_are_redacted_before_they_reach_parquet(root_uri: str, settings_for, store: ObjectStore) -> None:
    append_metrics(
        root_uri,
        [_row("run-x", "cat", status="failed", error=f"boto said: secret={SECRET_KEY} and {SECRET_KEY}")],
        settings_for,
    )
    (key,) = store.list("metrics/")
    assert SECRET_KEY.encode() not in store.get(key)
    assert SECRET_KEY not in read_metrics(root_uri, settings_for).column("error")[0].as_py()


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"status": "done"}, "status must be one of ok, failed, skipped"),
        ({"run_id": "a/b"}, "run_id must be"),
        ({"concept_id": ""}, "concept_id must be a non-empty string"),
        ({"steps": 1.5}, "steps must be a 32-bit integer"),
        ({"lr": "fast"}, "lr must be a number"),
        ({"created_at": datetime(2025, 1, 1)}, "created_at must be a timezone-aware datetime"),
        ({"run_date": "2025-01-01"}, "run_date must be a datetime.date"),
    ],
)
def test_rows_are_validated(kwargs, message) -> None:
    base = {"run_id": "r", "concept_id": "c", "status": "ok"}
    with pytest.raises(InvalidInput, match=message):
        MetricsRow(**{**base, **kwargs})


def test_append_rejects_empty_and_mixed_batches(tmp_path: Path) -> None:
    with pytest.raises(InvalidInput, match="at least one row"):
        append_metrics(str(tmp_path), [])
    with pytest.raises(InvalidInput, match="one append holds one run"):
        append_metrics(str(tmp_path), [_row("a", "x"), _row("b", "y")])
    with pytest.raises(InvalidInput, match="one append holds one run"):
        append_metrics(str(tmp_path), [_row("a", "x"), _row("a", "y", at=T0 + timedelta(days=1))])


def test_embeddings_index_picks_latest_completed_ok_row(root_uri: str, settings_for, store: ObjectStore) -> None:
    results = ResultStore(store)
    d1, d2, d3 = "1111111111111111", "2222222222222222", "3333333333333333"
    for concept, digest in (("cat", d1), ("cat", d2), ("dog", d1)):
        results.publish(concept, digest, {"learned_embeds.safetensors": f"{concept}{digest}".encode()}, run_id="pub")

    def ok(run: str, concept: str, digest: str, at: datetime) -> MetricsRow:
        return _row(
            run,
            concept,
            "ok",
            at,
            digest=digest,
            token=f"<{concept}>",
            embedding_uri=results.uri(concept, digest, "learned_embeds.safetensors"),
            image_similarity=0.5,
        )

    append_metrics(
        root_uri,
        [ok("run1", "cat", d1, T0), ok("run1", "dog", d1, T0), _row("run1", "emu", "failed", T0, error="x")],
        settings_for,
    )
    append_metrics(
        root_uri,
        [
            ok("run2", "cat", d2, T0 + timedelta(hours=1)),
            ok("run2", "dog", d3, T0 + timedelta(hours=1)),
        ],  # dog d3 never completed
        settings_for,
    )
    append_metrics(
        root_uri,
        [
            _row("run3", "cat", "failed", T0 + timedelta(hours=2), digest=d3),
            _row("run3", "dog", "skipped", T0 + timedelta(hours=2), digest=d1),
        ],
        settings_for,
    )

    uri = update_embeddings_index(root_uri, settings_for)
    assert uri == store.url("embeddings_index/index.parquet")
    index = read_embeddings_index(root_uri, settings_for)
    assert index.schema == INDEX_SCHEMA
    picked = {r["concept_id"]: (r["run_id"], r["digest"]) for r in index.to_pylist()}
    assert picked == {"cat": ("run2", d2), "dog": ("run1", d1)}
    # rewriting is allowed (single file, atomic replace)
    append_metrics(root_uri, [ok("run4", "dog", d1, T0 + timedelta(hours=3))], settings_for)
    update_embeddings_index(root_uri, settings_for)
    assert {r["concept_id"]: r["run_id"] for r in read_embeddings_index(root_uri, settings_for).to_pylist()} == {
        "cat": "run2",
        "dog": "run4",
    }


def test_empty_index(root_uri: str, settings_for) -> None:
    assert read_embeddings_index(root_uri, settings_for).num_rows == 0
    update_embeddings_index(root_uri, settings_for)
    assert read_embeddings_index(root_uri, settings_for).num_rows == 0
    assert open_store(root_uri, settings_for).exists("embeddings_index/index.parquet")


def test_index_update_merges_a_runs_rows_without_reading_the_history(
    root_uri: str, settings_for, store: ObjectStore, monkeypatch
) -> None:
    results = ResultStore(store)
    d1, d2 = "1111111111111111", "2222222222222222"
    for concept, digest in (("cat", d1), ("dog", d1), ("cat", d2)):
        results.publish(concept, digest, {"learned_embeds.safetensors": f"{concept}{digest}".encode()}, run_id="pub")

    def ok(run: str, concept: str, digest: str, at: datetime) -> MetricsRow:
        return _row(
            run,
            concept,
            "ok",
            at,
            digest=digest,
            embedding_uri=results.uri(concept, digest, "learned_embeds.safetensors"),
        )

    first = [ok("run1", "cat", d1, T0), ok("run1", "dog", d1, T0)]
    append_metrics(root_uri, first, settings_for)
    update_embeddings_index(root_uri, settings_for, rows=first)  # no index yet: built from the history
    monkeypatch.setattr("storage.metrics.read_metrics", lambda *a, **k: pytest.fail("read the metrics history"))
    monkeypatch.setattr(ResultStore, "completed", lambda *a, **k: pytest.fail("listed every result"))
    second = [
        ok("run2", "cat", d2, T0 + timedelta(hours=1)),
        _row("run2", "dog", "skipped", T0, digest=d1),
        ok("run2", "emu", "3333333333333333", T0 + timedelta(hours=1)),
    ]  # emu never completed
    update_embeddings_index(root_uri, settings_for, rows=second)
    picked = {
        r["concept_id"]: (r["run_id"], r["digest"]) for r in read_embeddings_index(root_uri, settings_for).to_pylist()
    }
    assert picked == {"cat": ("run2", d2), "dog": ("run1", d1)}
    before = store.get_with_info("embeddings_index/index.parquet")[1]
    update_embeddings_index(root_uri, settings_for, rows=[_row("run3", "dog", "skipped", T0, digest=d1)])
    assert store.get_with_info("embeddings_index/index.parquet")[1] == before, "an unchanged index is rewritten"
