"""Staging in chunks: one task reads, validates and writes the images of many concepts.

A task run per concept made the orchestration of a first night grow with the catalog (issue 21: about two
task runs and 0.6 s per new concept before any training). :func:`stage_chunk` stages a chunk of concepts with
the per-concept code of :func:`tasks.ingest.stage_concept`, one after another: a concept whose staging fails
comes back with its ``error`` (it fails alone), a transient storage error is tried again for that concept
only (:func:`tasks.retry.with_retries`), so a chunk never re-reads the images of the concepts it already staged.
Staging writes only into each concept's own work folder, so a retried chunk starts each concept clean.
:func:`clean_work` removes a chunk's work folders once its concepts are published.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping

from prefect import task

from tasks.ingest import stage_concept
from tasks.records import ConceptRecord, StagedConcept
from tasks.retry import RETRY, with_retries


def stage_one(
    catalog_uri: str, record: ConceptRecord, work_root: str, done_digests: Iterable[str] = ()
) -> StagedConcept:
    """:func:`tasks.ingest.stage_concept` of one concept, transient errors retried; an error that remains
    comes back as the concept's ``error`` (``ingest failed: …``)."""
    digests = tuple(done_digests)
    try:
        return with_retries(lambda: stage_concept(catalog_uri, record, work_root, digests))
    except Exception as exc:  # noqa: BLE001 - one bad concept fails only itself
        return StagedConcept(record, "", "", 0, error=f"ingest failed: {exc}")


@task(name="stage-chunk", **RETRY)
def stage_chunk(
    catalog_uri: str, records: list[ConceptRecord], work_root: str, done: Mapping[str, Iterable[str]]
) -> list[StagedConcept]:
    """Stage every concept of ``records`` (see :func:`tasks.ingest.stage_concept`); ``done`` maps a concept id
    to its digests that have a complete result (a concept found there comes back ``done``). One
    :class:`StagedConcept` per record, in order; a concept that could not be staged carries its ``error``."""
    return [stage_one(catalog_uri, record, work_root, done.get(record.concept_id, ())) for record in records]


def clean_work(staged: Iterable[StagedConcept]) -> None:
    """Remove the work folders of ``staged`` (their images, embeddings and renders): once a chunk's concepts
    are published or failed, nothing reads them again."""
    for s in staged:
        if s.work_dir:
            shutil.rmtree(s.work_dir, ignore_errors=True)
