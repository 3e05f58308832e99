"""tasks.records and the metrics row's JSON form: what tasks and flow runs hand to one another must
survive the trip unchanged (pickling for process pools and Prefect results, JSON between flow runs)."""

from __future__ import annotations

import dataclasses
import json
import pickle
from datetime import date, datetime, timedelta, timezone

import pytest

from storage.catalog import ConceptMeta, ConceptSpec
from storage.metrics import MetricsRow
from storage.scanstate import ConceptState
from tasks.publish import row_from_json, row_to_json, rows_key, scan_from_json
from tasks.records import SCORE_COLUMNS, ConceptRecord, InversionOutcome, ScoredConcept, ScoreSummary, StagedConcept

SPEC = ConceptSpec(
    "red-square",
    ConceptMeta("<red-square>", "square", "square", "object", 2, ("a red square",)),
    ("red-square/00.png", "red-square/01.png"),
    "0123456789abcdef",
    meta_key="red-square/concept.json",
    settings="f" * 16,
)
RECORD = ConceptRecord(SPEC)
STAGED = StagedConcept(RECORD, "/work/red-square", "/work/red-square/images", 2, ("red-square/x.png: truncated",))
OUTCOME = InversionOutcome(
    STAGED,
    "/work/red-square/embedding/learned_embeds.safetensors",
    steps=4,
    resumed_from=2,
    final_loss=0.125,
    train_seconds=1.5,
    files=("/work/red-square/embedding/learned_embeds.safetensors", "/work/red-square/embedding/training.json"),
)
SCORED = ScoredConcept(OUTCOME, ScoreSummary(image_similarity=0.5, inversion_lift=0.25), ("/work/a.png",))


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
        RECORD.spec = SPEC  # type: ignore[misc]


def test_a_record_reads_its_spec() -> None:
    assert (RECORD.concept_id, RECORD.digest, RECORD.token) == ("red-square", "0123456789abcdef", "<red-square>")
    assert (RECORD.initializer, RECORD.class_name, RECORD.property, RECORD.vectors) == ("square", "square", "object", 2)
    assert RECORD.captions == ("a red square",)


def test_the_vector_override_enters_the_metadata_and_nothing_else() -> None:
    assert ConceptRecord.of(SPEC) == ConceptRecord.of(SPEC, 2) == RECORD  # no override, or the same count
    wider = ConceptRecord.of(SPEC, 4)
    assert wider.vectors == 4 and wider.spec.meta == dataclasses.replace(SPEC.meta, vectors=4)
    assert dataclasses.replace(wider.spec, meta=SPEC.meta) == SPEC  # digest, images, meta key, settings kept


def test_known_digest_is_the_digest_and_a_pending_record_names_itself() -> None:
    assert RECORD.known_digest() == "0123456789abcdef"
    pending = ConceptRecord(dataclasses.replace(SPEC, digest=None))
    with pytest.raises(ValueError, match="^concept red-square has no digest"):
        pending.known_digest()


def test_a_score_summary_reads_the_five_columns_of_any_source() -> None:
    scores_json = {"token": "<t>", "image_similarity": 0.5, "inversion_lift": 0.25, "learned": {"per_prompt": []}}
    assert ScoreSummary.of(scores_json) == ScoreSummary(image_similarity=0.5, inversion_lift=0.25)
    assert ScoreSummary.of({}) == ScoreSummary()  # an older scores.json or a row without scores
    assert SCORE_COLUMNS == (
        "image_similarity",
        "text_similarity",
        "baseline_image_similarity",
        "baseline_text_similarity",
        "inversion_lift",
    )


def test_publishing_takes_the_inversions_files_then_scorings_each_once() -> None:
    twice = dataclasses.replace(SCORED, files=("/work/a.png", OUTCOME.files[0]))
    assert twice.files_to_publish() == (*OUTCOME.files, "/work/a.png")


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


#: a row as ``row_to_json`` wrote it before the records were typed (a child run of an older version)
OLD_CHILD_ROW = (
    b'{"row": {"run_id": "20240501T000000-abcd1234", "concept_id": "red-square", "status": "ok", '
    b'"digest": "0123456789abcdef", "token": "<red-square>", "error": null, "model": "/models/tiny", '
    b'"model_family": "sd1", "steps": 4, "steps_run": 4, "stop_reason": "max_steps", "vectors": 2, "lr": 0.005, '
    b'"image_similarity": 0.75, "text_similarity": 0.25, "baseline_image_similarity": 0.625, '
    b'"baseline_text_similarity": 0.3125, "inversion_lift": 0.125, "final_loss": 0.0625, "train_seconds": 1.5, '
    b'"eval_seconds": 2.5, "embedding_uri": "s3://b/out/e.safetensors", "grid_uri": "s3://b/out/grid.png", '
    b'"created_at": "2024-05-01T00:00:00+00:00", "run_date": "2024-05-01"}, '
    b'"scan": ["listing-fingerprint", "images-fingerprint"]}'
)


def test_a_row_left_by_an_older_child_run_still_parses() -> None:
    row = row_from_json(OLD_CHILD_ROW)
    assert (row.concept_id, row.status, row.digest, row.vectors) == ("red-square", "ok", "0123456789abcdef", 2)
    assert ScoreSummary.of(row.to_dict()) == ScoreSummary(0.75, 0.25, 0.625, 0.3125, 0.125)
    assert row.created_at == datetime(2024, 5, 1, tzinfo=timezone.utc) and row.run_date == date(2024, 5, 1)
    assert scan_from_json(OLD_CHILD_ROW) == ConceptState("listing-fingerprint", "images-fingerprint")
