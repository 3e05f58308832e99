"""Kill anywhere, re-run, same result, for the result bookkeeping (issue 20): a retried metrics append writes no
second file, and a run killed after its metrics (or after publishing, before its metrics) leaves the embeddings
index behind only until the next run, which puts it right from the published results."""

from __future__ import annotations

import json
from datetime import datetime, timezone

from storage.metrics import MetricsRow, append_metrics, read_embeddings_index, read_metrics, update_embeddings_index
from storage.results import ResultStore
from storage.store.base import ObjectStore

T0 = datetime(2025, 3, 1, 12, 0, tzinfo=timezone.utc)
D1, D2 = "1111111111111111", "2222222222222222"


def test_a_retried_append_writes_no_second_file(root_uri: str, settings_for, store: ObjectStore) -> None:
    rows = [MetricsRow("run-1", "cat", "ok", created_at=T0), MetricsRow("run-1", "dog", "failed", created_at=T0)]
    first = append_metrics(root_uri, rows, settings_for)
    again = append_metrics(root_uri, rows, settings_for)  # write-metrics retried after its reply was lost
    assert again == first
    assert len(list(store.list("metrics/"))) == 1
    assert read_metrics(root_uri, settings_for).num_rows == 2, "a concept got two rows in one run"


def _publish(results: ResultStore, run_id: str, concept: str, digest: str, lift: float) -> None:
    files = {
        "learned_embeds.safetensors": f"{concept}{digest}".encode(),
        "scores.json": json.dumps({"image_similarity": 0.5, "inversion_lift": lift}).encode(),
    }
    results.publish(concept, digest, files, run_id=run_id)


def _ok(results: ResultStore, run_id: str, concept: str, digest: str, lift: float) -> MetricsRow:
    """The row a run makes once it published the concept (made after publishing, as in publish_concept)."""
    _publish(results, run_id, concept, digest, lift)
    return MetricsRow(
        run_id,
        concept,
        "ok",
        digest=digest,
        token=f"<{concept}>",
        model="tiny",
        steps=4,
        image_similarity=0.5,
        inversion_lift=lift,
        embedding_uri=results.uri(concept, digest, "learned_embeds.safetensors"),
    )


def test_the_next_run_reconciles_the_index_from_the_published_results(
    root_uri: str, settings_for, store: ObjectStore
) -> None:
    """run-1 learns cat and dog (index written). run-2 re-learns cat's new images and learns emu, writes its
    metrics and is killed before the index. run-3 publishes fox and is killed before its metrics. run-4 has
    nothing to learn: its rows are skipped rows. Without the reconcile the index keeps cat's old result and
    lacks emu and fox."""
    results = ResultStore(store)
    run1 = [_ok(results, "run-1", c, D1, 0.1) for c in ("cat", "dog")]
    append_metrics(root_uri, run1, settings_for)
    update_embeddings_index(root_uri, settings_for, rows=run1, published=results.completed())
    run2 = [_ok(results, "run-2", "cat", D2, 0.2), _ok(results, "run-2", "emu", D1, 0.3)]
    append_metrics(root_uri, run2, settings_for)  # killed here
    _publish(results, "run-3", "fox", D1, 0.4)  # killed here
    published = results.completed()  # what run-4's scan lists anyway
    run4 = [
        MetricsRow("run-4", c, "skipped", digest=d, token=f"<{c}>", model="tiny", steps=4)
        for c, d in (("cat", D2), ("dog", D1), ("emu", D1), ("fox", D1))
    ]
    append_metrics(root_uri, run4, settings_for)
    update_embeddings_index(root_uri, settings_for, rows=run4, published=published)

    index = {r["concept_id"]: r for r in read_embeddings_index(root_uri, settings_for).to_pylist()}
    assert {c: (r["run_id"], r["digest"]) for c, r in index.items()} == {
        "cat": ("run-2", D2),
        "dog": ("run-1", D1),
        "emu": ("run-2", D1),
        "fox": ("run-3", D1),
    }
    # a result with metrics gets its publishing run's own row, as a clean run's index would hold it
    written = {(r["run_id"], r["concept_id"]): r for r in read_metrics(root_uri, settings_for).to_pylist()}
    for concept in ("cat", "emu"):
        assert index[concept] == {k: written["run-2", concept][k] for k in index[concept]}
    # one killed before its metrics: the manifest's run and time, scores.json's scores, this run's settings
    fox = index["fox"]
    assert fox["inversion_lift"] == 0.4 and fox["token"] == "<fox>" and fox["steps"] == 4
    assert fox["embedding_uri"] == results.uri("fox", D1, "learned_embeds.safetensors")
    # a full rebuild agrees on every concept with metrics
    update_embeddings_index(root_uri, settings_for)
    rebuilt = {r["concept_id"]: r for r in read_embeddings_index(root_uri, settings_for).to_pylist()}
    assert {c: rebuilt[c] for c in ("cat", "dog", "emu")} == {c: index[c] for c in ("cat", "dog", "emu")}


def test_a_run_with_everything_indexed_reads_no_result(root_uri: str, settings_for, store: ObjectStore, monkeypatch):
    results = ResultStore(store)
    run1 = [_ok(results, "run-1", c, D1, 0.1) for c in ("cat", "dog")]
    append_metrics(root_uri, run1, settings_for)
    update_embeddings_index(root_uri, settings_for, rows=run1, published=results.completed())
    published = results.completed()
    monkeypatch.setattr(ResultStore, "read_manifest", lambda *a: (_ for _ in ()).throw(AssertionError("read")))
    skipped = [MetricsRow("run-2", c, "skipped", digest=D1) for c in ("cat", "dog")]
    update_embeddings_index(root_uri, settings_for, rows=skipped, published=published)
    assert read_embeddings_index(root_uri, settings_for).num_rows == 2
