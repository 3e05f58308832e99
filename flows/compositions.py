"""Compositions in the catalog flow: after the concepts are learned, render and score each entry of
``<catalog>/_compositions.json`` (:mod:`storage.compositions`) and append the composition rows.

A composition naming a concept that is missing from the catalog, failed in this run, or has no
complete result becomes a ``failed`` row naming that concept; the others go to :func:`tasks.compose.compose_task`
(which reuses a result whose key — prompt and concept digests — is unchanged).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from prefect import get_run_logger
from prefect.task_runners import ThreadPoolTaskRunner

from storage.compositions import CompositionRow, CompositionSpec, append_compositions, read_compositions
from storage.errors import StorageError
from storage.metrics import MetricsRow
from tasks.compose import LearnedConcept, compose_task, failed_composition
from tasks.concurrency import give_back_parked_slots
from tasks.records import ConceptRecord
from tasks.settings import EvalSettings, LearnSettings, RunSettings


def _concepts(
    spec: CompositionSpec, rows: Mapping[str, MetricsRow], records: Mapping[str, ConceptRecord]
) -> tuple[list[LearnedConcept], str | None]:
    """The learned concepts ``spec`` names, or why it cannot be composed (naming the concept)."""
    found = []
    for concept_id in spec.concepts:
        row, record = rows.get(concept_id), records.get(concept_id)
        if row is None or record is None:
            return [], f"concept {concept_id} is not a usable concept of the catalog"
        if row.status == "failed":
            return [], f"concept {concept_id} failed: {row.error or 'no reason recorded'}"
        if not row.digest:
            return [], f"concept {concept_id} has no learned result"
        found.append(LearnedConcept(record, row.digest))
    return found, None


def _read_specs(catalog: str, run_id: str, logger) -> tuple[list[CompositionSpec], list[CompositionRow]]:
    """The catalog's compositions; none, and a ``failed`` row naming the file, when it cannot be read."""
    try:
        return read_compositions(catalog), []
    except StorageError as exc:
        logger.error("compositions: %s", exc)
        unreadable = CompositionRow(
            run_id=run_id, composition_id="_compositions.json", prompt="", status="failed", concepts=(), error=str(exc)
        )
        return [], [unreadable]


def compose_catalog(
    catalog: str,
    out: str,
    run_id: str,
    rows: Sequence[MetricsRow],
    records: Mapping[str, ConceptRecord],
    learn: LearnSettings,
    evaluation: EvalSettings,
    run: RunSettings,
) -> list[CompositionRow]:
    """Render and score the catalog's compositions; append their rows (one Parquet file) and return them."""
    logger = get_run_logger()
    # 1. the compositions of the catalog
    specs, results = _read_specs(catalog, run_id, logger)
    # 2. compose each whose concepts were learned; the others fail, naming the concept
    by_concept = {row.concept_id: row for row in rows}
    with ThreadPoolTaskRunner[CompositionRow](max_workers=max(1, run.workers)) as runner:
        futures = []
        for spec in specs:
            concepts, problem = _concepts(spec, by_concept, records)
            if problem is not None:
                results.append(failed_composition(spec, run_id, problem))
                continue
            parameters = {
                "spec": spec,
                "concepts": concepts,
                "catalog_uri": catalog,
                "out_uri": out,
                "run_id": run_id,
                "learn": learn,
                "evaluation": evaluation,
                "run": run,
            }
            futures.append((spec, runner.submit(compose_task, parameters)))
        for spec, future in futures:
            row = future.result(raise_on_failure=False)
            if isinstance(row, BaseException):
                row = failed_composition(spec, run_id, f"composition failed: {row}")
            results.append(row)
    give_back_parked_slots()  # the last rendering's GPU slot, kept for a next task that will not come
    # 3. their rows
    for row in results:
        logger.info("composition %s: %s%s", row.composition_id, row.status, f" ({row.error})" if row.error else "")
    if results:
        append_compositions(out, results)
    return results
