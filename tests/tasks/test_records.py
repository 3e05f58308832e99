"""tasks.records and the metrics row's JSON form: what tasks and flow runs hand to one another must
survive the trip unchanged (pickling for process pools and Prefect results, JSON between flow runs)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from datetime import date, datetime, timedelta, timezone

import pytest

from storage.metrics import MetricsRow
from tasks.publish import row_from_json, row_to_json, rows_key
from tasks.records import ConceptRecord, InversionOutcome, ScoredConcept, StagedConcept

RECORD = ConceptRecord(
    concept_id="red-square",
    digest="0123456789abcdef",
    token="<red-square>",
    initializer="square",
    class_name="square",
    property="object",
    vectors=2,
    images=("red-square/00.png", "red-square/01.png"),
    captions=("a red square",),
)
STAGED = StagedConcept(RECORD, "/work/red-square", "/work/red-square/images", 2, ("red-square/x.png: truncated",))
OUTCOME = InversionOutcome(
    STAGED,
    "/work/red-square/embedding/learned_embeds.safetensors",
    steps=4,
    resumed_from=2,
    final_loss=0.125,
    train_seconds=1.5,
)
SCORED = ScoredConcept(
    OUTCOME, {"image_similarity": 0.5, "per_prompt": [{"prompt": "a photo of <red-square>"}]}, ("/work/a.png",)
)


@pytest.mark.parametrize(
    "record",
    [
        RECORD,
        STAGED,
        OUTCOME,
        SCORED,
        ScoredConcept(InversionOutcome(STAGED, None, error="diverged"), error="diverged"),
    ],
    ids=lambda r: type(r).__name__,
)
def test_records_survive_pickling(record) -> None:
    back = pickle.loads(pickle.dumps(record))
    assert back == record and type(back) is type(record)


def test_records_are_immutable() -> None:
    with pytest.raises(dataclasses.FrozenInstanceError):
        RECORD.vectors = 3  # type: ignore[misc]


def test_concept_record_as_a_dict_holds_every_field() -> None:
    assert ConceptRecord(**RECORD.to_dict()) == RECORD


def test_known_digest_is_the_digest_and_a_pending_record_names_itself() -> None:
    assert RECORD.known_digest() == "0123456789abcdef"
    pending = dataclasses.replace(RECORD, digest=None)
    with pytest.raises(ValueError, match="^concept red-square has no digest"):
        pending.known_digest()


def _ok_row(**overrides) -> MetricsRow:
    values = dict(
        run_id="run-1",
        concept_id="red-square",
        status="ok",
        digest=RECORD.digest,
        token=RECORD.token,
        model="/models/tiny",
        steps=4,
        vectors=2,
        lr=0.005,
        image_similarity=0.75,
        text_similarity=0.25,
        baseline_image_similarity=0.625,
        baseline_text_similarity=0.3125,
        inversion_lift=0.125,
        final_loss=0.0625,
        train_seconds=1.5,
        embedding_uri="s3://b/out/e.safetensors",
        grid_uri="s3://b/out/grid.png",
        created_at=datetime(2024, 5, 1, 23, 59, 58, 123456, tzinfo=timezone(timedelta(hours=-2))),
    )
    return MetricsRow(**(values | overrides))


@pytest.mark.parametrize(
    "row",
    [
        _ok_row(),
        _ok_row(run_date=date(2024, 4, 30)),
        MetricsRow(
            run_id="run-1", concept_id="bad-meta", status="failed", error="concept.json: property must be one of"
        ),
    ],
    ids=["ok", "explicit-run-date", "failed"],
)
def test_metrics_rows_round_trip_through_json(row: MetricsRow) -> None:
    raw = row_to_json(row)
    assert isinstance(json.loads(raw), dict)  # plain JSON: what a child flow run leaves in the store
    back = row_from_json(raw)
    assert back == row
    assert back.created_at.tzinfo is not None and back.created_at == row.created_at
    assert back.run_date == row.run_date


def test_created_at_is_kept_in_utc_and_dates_the_row() -> None:
    row = row_from_json(row_to_json(_ok_row()))
    assert row.created_at.utcoffset() == timedelta(0) and row.created_at.microsecond == 123456
    assert row.run_date == date(2024, 5, 2)  # 23:59 at UTC-2 is the next day in UTC


def test_rows_key_is_per_run_and_concept() -> None:
    assert rows_key("run-1", "red-square") == "runs/run-1/rows/red-square.json"
    assert len({rows_key(r, c) for r in ("run-1", "run-2") for c in ("a", "b")}) == 4
