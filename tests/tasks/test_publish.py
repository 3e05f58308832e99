"""tasks.publish: a concept's files are published write-once with ``_SUCCESS`` last, a failed concept
publishes nothing, and the metrics rows and index are written from what was published."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from common.filenames import SUCCESS_FILENAME, TRAINING_STRIP_FILENAME
from storage.catalog import ConceptMeta, ConceptSpec
from storage.errors import AlreadyExists
from storage.metrics import read_embeddings_index, read_metrics
from storage.results import ResultStore
from tasks.publish import publish_chunk, publish_concept, skipped_row, write_metrics
from tasks.records import SCORE_COLUMNS, ConceptRecord, InversionOutcome, ScoredConcept, ScoreSummary, StagedConcept

SCORES = {
    "image_similarity": 0.75,
    "text_similarity": 0.25,
    "baseline_image_similarity": 0.5,
    "baseline_text_similarity": 0.375,
    "inversion_lift": 0.25,
}
RECORD = ConceptRecord(
    ConceptSpec(
        "red-square", ConceptMeta("<red-square>", "square", "square"), ("red-square/00.png",), "0123456789abcdef"
    )
)


def _scored(work: Path, embedding: bytes = b"vectors", error: str | None = None) -> ScoredConcept:
    """A scored concept whose files (embedding, grid, scores) lie in ``work``."""
    work.mkdir(parents=True, exist_ok=True)
    files = {
        "learned_embeds.safetensors": embedding,
        "grid.png": b"grid pixels",
        "scores.json": json.dumps(SCORES).encode(),
    }
    for name, data in files.items():
        (work / name).write_bytes(data)
    outcome = InversionOutcome(
        StagedConcept(RECORD, str(work), str(work / "images"), 1),
        str(work / "learned_embeds.safetensors"),
        steps=2,
        final_loss=0.5,
        train_seconds=1.25,
        files=(str(work / "learned_embeds.safetensors"),),
    )
    scored_files = tuple(str(work / name) for name in ("grid.png", "scores.json"))
    return ScoredConcept(outcome, ScoreSummary.of(SCORES), scored_files, error=error)


@pytest.fixture
def out(tmp_path: Path) -> str:
    return str(tmp_path / "out")


pytestmark = pytest.mark.usefixtures("quiet_run_logger")


def test_publish_writes_every_file_then_success_and_clears_checkpoints(tmp_path: Path, out: str, learn) -> None:
    results = ResultStore.open(out)
    results.put_checkpoint(RECORD.concept_id, RECORD.digest, "checkpoint.safetensors", b"state")
    scored = _scored(tmp_path / "work")
    row = publish_concept(scored, out, "run-1", learn)

    assert (row.status, row.error, row.run_id, row.concept_id, row.digest) == (
        "ok",
        None,
        "run-1",
        "red-square",
        RECORD.digest,
    )
    assert {k: getattr(row, k) for k in SCORE_COLUMNS} == SCORES
    assert (row.final_loss, row.train_seconds, row.model, row.steps, row.lr) == (
        0.5,
        1.25,
        learn.model,
        learn.steps,
        learn.lr,
    )
    assert row.embedding_uri == results.uri(RECORD.concept_id, RECORD.digest, "learned_embeds.safetensors")
    assert row.grid_uri == results.uri(RECORD.concept_id, RECORD.digest, "grid.png")
    manifest = results.read_manifest(RECORD.concept_id, RECORD.digest)
    assert manifest.run_id == "run-1" and sorted(manifest.files) == [
        "grid.png",
        "learned_embeds.safetensors",
        "scores.json",
    ]
    assert results.verify(RECORD.concept_id, RECORD.digest) == []
    assert Path(row.embedding_uri).read_bytes() == b"vectors"
    assert results.list_checkpoints(RECORD.concept_id, RECORD.digest) == []


def test_the_strip_staging_left_in_the_work_folder_is_published_with_the_result(tmp_path: Path, out: str, learn):
    """Staging writes the training images' strip into the concept's work folder (tasks.ingest); publishing takes
    it with the trainer's and the scorer's files."""
    (tmp_path / "work").mkdir()
    (tmp_path / "work" / TRAINING_STRIP_FILENAME).write_bytes(b"a strip of jpeg")
    publish_concept(_scored(tmp_path / "work"), out, "run-1", learn)
    results = ResultStore.open(out)
    assert TRAINING_STRIP_FILENAME in results.read_manifest(RECORD.concept_id, RECORD.digest).files
    strip = Path(results.uri(RECORD.concept_id, RECORD.digest, TRAINING_STRIP_FILENAME))
    assert strip.read_bytes() == b"a strip of jpeg" and results.verify(RECORD.concept_id, RECORD.digest) == []


def test_publishing_the_same_bytes_again_is_a_no_op(tmp_path: Path, out: str, learn) -> None:
    first = publish_concept(_scored(tmp_path / "a"), out, "run-1", learn)
    success = Path(out) / "embeddings" / RECORD.concept_id / RECORD.digest / SUCCESS_FILENAME
    manifest = success.read_bytes()
    again = publish_concept(_scored(tmp_path / "b"), out, "run-2", learn)
    assert again.status == "ok" and again.embedding_uri == first.embedding_uri
    assert success.read_bytes() == manifest  # still run-1's manifest: nothing was rewritten


def test_different_bytes_for_a_completed_result_are_refused_and_not_retried(
    tmp_path: Path, out: str, learn, monkeypatch
) -> None:
    publish_concept(_scored(tmp_path / "a"), out, "run-1", learn)
    with pytest.raises(AlreadyExists, match="already published by run run-1"):
        publish_concept(_scored(tmp_path / "b", embedding=b"other vectors"), out, "run-2", learn)
    waits: list[float] = []  # a retry waits first (tasks.retry.with_retries)
    monkeypatch.setattr("tasks.retry.time.sleep", waits.append)
    (row,) = publish_chunk.fn([_scored(tmp_path / "c", embedding=b"other vectors")], [], out, "run-2", learn, False)
    assert row.status == "failed" and "already published by run run-1" in (row.error or "")
    assert waits == [], "a deterministic refusal was retried"
    results = ResultStore.open(out)
    assert results.verify(RECORD.concept_id, RECORD.digest) == []
    assert Path(results.uri(RECORD.concept_id, RECORD.digest, "learned_embeds.safetensors")).read_bytes() == b"vectors"


def test_a_retry_replaces_what_an_interrupted_attempt_left(tmp_path: Path, out: str, learn) -> None:
    results = ResultStore.open(out)
    results.store.put(results.key(RECORD.concept_id, RECORD.digest, "learned_embeds.safetensors"), b"half")
    assert not results.is_complete(RECORD.concept_id, RECORD.digest)
    row = publish_concept(_scored(tmp_path / "work"), out, "run-1", learn)
    assert row.status == "ok" and Path(row.embedding_uri).read_bytes() == b"vectors"
    assert results.verify(RECORD.concept_id, RECORD.digest) == []


@pytest.mark.parametrize("where", ["scoring", "inversion"])
def test_a_failed_concept_publishes_nothing(tmp_path: Path, out: str, learn, where: str) -> None:
    scored = _scored(tmp_path / "work", error="scoring failed: boom" if where == "scoring" else None)
    if where == "inversion":
        scored = ScoredConcept(InversionOutcome(scored.inversion.staged, None, error="training of <t> diverged"))
    row = publish_concept(scored, out, "run-1", learn)
    assert row.status == "failed" and row.error == (scored.error or scored.inversion.error)
    assert (row.digest, row.token, row.embedding_uri) == (RECORD.digest, RECORD.token, None)
    assert not Path(out).exists()


def test_skipped_row_carries_the_published_scores(tmp_path: Path, out: str, learn) -> None:
    published = publish_concept(_scored(tmp_path / "work"), out, "run-1", learn)
    row = skipped_row("run-2", RECORD, learn, out)
    assert (row.status, row.run_id, row.error) == ("skipped", "run-2", None)
    assert {k: getattr(row, k) for k in SCORE_COLUMNS} == SCORES
    assert (row.embedding_uri, row.grid_uri) == (published.embedding_uri, published.grid_uri)


def test_write_metrics_appends_rows_and_indexes_complete_results(tmp_path: Path, out: str, learn) -> None:
    from tasks.publish import failed_row

    ok = publish_concept(_scored(tmp_path / "work"), out, "run-1", learn)
    failed = failed_row("run-1", "bad-meta", "concept.json: bad property", learn)
    uri = write_metrics.fn(out, [ok, failed])
    assert Path(uri).is_file() and "run_date=" in uri
    table = read_metrics(out).to_pylist()
    assert sorted((r["concept_id"], r["status"]) for r in table) == [("bad-meta", "failed"), ("red-square", "ok")]
    (indexed,) = read_embeddings_index(out).to_pylist()
    assert (indexed["concept_id"], indexed["digest"], indexed["embedding_uri"]) == (
        "red-square",
        RECORD.digest,
        ok.embedding_uri,
    )
    second = write_metrics.fn(out, [skipped_row("run-2", RECORD, learn, out)])
    assert second != uri and Path(uri).is_file()  # a new file per append; the first is untouched
    assert len(read_metrics(out).to_pylist()) == 3
