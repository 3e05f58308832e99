"""Tasks that read the catalog: discover concepts, and stage one concept's validated images locally."""

from __future__ import annotations

import shutil
from pathlib import Path

from prefect import get_run_logger, task

from storage.catalog import ConceptMeta, ConceptSpec, discover_catalog
from storage.images import ingest_concept, write_pngs
from storage.objectstore import open_store

from .records import ConceptRecord, StagedConcept
from .retry import RETRY
from .settings import LearnSettings


def record_of(spec: ConceptSpec, vectors_override: int | None = None) -> ConceptRecord:
    meta = spec.meta
    return ConceptRecord(
        concept_id=spec.concept_id, digest=spec.digest, token=meta.token, initializer=meta.initializer,
        class_name=meta.class_name, property=meta.property, vectors=vectors_override or meta.vectors,
        images=tuple(spec.images), captions=tuple(meta.captions),
    )


@task(name="scan-catalog", **RETRY)
def scan_catalog(catalog_uri: str, learn: LearnSettings, concept_ids: list[str] | None = None,
                 ) -> tuple[list[ConceptRecord], list[tuple[str, str]]]:
    """Discover the concepts of the catalog (all, or only ``concept_ids``); returns the usable ones and
    ``(concept_id, problem)`` pairs for concepts that cannot be learned at all."""
    scan = discover_catalog(open_store(catalog_uri), learn.digest_settings(), concept_ids=concept_ids)
    records = [record_of(spec, learn.vectors) for spec in scan.specs]
    usable = {r.concept_id for r in records}
    fatal: dict[str, list[str]] = {}
    for problem in scan.problems:
        if problem.concept_id not in usable:
            fatal.setdefault(problem.concept_id, []).append(str(problem))
    get_run_logger().info("catalog %s: %d concept(s), %d unusable", catalog_uri, len(records), len(fatal))
    return records, [(cid, "; ".join(reasons)) for cid, reasons in sorted(fatal.items())]


@task(name="ingest-concept", **RETRY)
def stage_concept(catalog_uri: str, record: ConceptRecord, work_root: str) -> StagedConcept:
    """Decode and validate the concept's images and write them as PNGs into a local work folder.

    Unusable files are reported; a concept with no usable image comes back with ``error`` set.
    """
    store = open_store(catalog_uri)
    meta = ConceptMeta(record.token, record.initializer, record.class_name, record.property, record.vectors,
                       record.captions)
    spec = ConceptSpec(record.concept_id, meta, record.images, record.digest)
    work_dir = Path(work_root) / f"{record.concept_id}-{record.digest}"
    image_dir = work_dir / "images"
    shutil.rmtree(image_dir, ignore_errors=True)  # a retried attempt starts clean
    ingested = ingest_concept(store, spec)
    problems = tuple(f"{p.file}: {p.reason}" for p in ingested.problems if p.file)
    if not ingested.usable:
        return StagedConcept(record, str(work_dir), str(image_dir), 0, problems,
                             error=f"no usable image ({'; '.join(problems) or 'no images'})")
    write_pngs(ingested.images, image_dir)
    logger = get_run_logger()
    for problem in problems:
        logger.warning("%s: skipped %s", record.concept_id, problem)
    return StagedConcept(record, str(work_dir), str(image_dir), len(ingested.images), problems)

