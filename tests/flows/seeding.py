"""An output folder as a previous catalog run would have left it, written without training.

Used by tests that time or inspect a run where nothing changed, and by ``bench/catalog_scale.py``:
every concept of the catalog gets a complete result (published by our own
:meth:`storage.results.ResultStore.publish`, with stand-in files), an ``ok`` metrics row, its row in
the embeddings index, and the scan state of a full scan.
"""

from __future__ import annotations

import io
from concurrent.futures import ThreadPoolExecutor

from PIL import Image

from storage.catalog import CatalogScan, discover_catalog
from storage.metrics import MetricsRow, append_metrics, update_embeddings_index
from storage.results import ResultStore
from storage.scanstate import save_scan_state
from storage.store.base import ObjectStore
from storage.store.settings import S3Settings
from tasks.ingest import learning_identity
from tasks.settings import LearnSettings

SEED_RUN_ID = "seed-run"


def _grid_png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8), (90, 90, 90)).save(buffer, format="PNG")
    return buffer.getvalue()


def seed_learned_output(
    catalog: ObjectStore, out: ObjectStore, learn: LearnSettings, s3: S3Settings | None = None, workers: int = 8
) -> CatalogScan:
    """Scan ``catalog`` with ``learn``'s identity and write, under ``out``, a complete stand-in result,
    an ``ok`` metrics row and an index row for every concept, then the scan state; returns the scan."""
    scan = discover_catalog(catalog, learning_identity(learn), max_workers=min(workers, 8))
    results, grid = ResultStore(out), _grid_png()

    def publish(spec) -> MetricsRow:
        files = {
            "learned_embeds.safetensors": f"stand-in {spec.concept_id}".encode(),
            "grid.png": grid,
            "scores.json": b'{"image_similarity": 0.5}',
        }
        done = results.publish(spec.concept_id, spec.digest, files, run_id=SEED_RUN_ID)
        return MetricsRow(
            run_id=SEED_RUN_ID,
            concept_id=spec.concept_id,
            status="ok",
            digest=spec.digest,
            token=spec.meta.token,
            model=learn.model,
            steps=learn.steps,
            vectors=spec.meta.vectors,
            image_similarity=0.5,
            text_similarity=0.25,
            baseline_image_similarity=0.4,
            baseline_text_similarity=0.25,
            inversion_lift=0.1,
            embedding_uri=done.uris["learned_embeds.safetensors"],
            grid_uri=done.uris["grid.png"],
        )

    with ThreadPoolExecutor(max(1, workers)) as pool:
        rows = list(pool.map(publish, scan.specs))
    append_metrics(out.uri, rows, s3)
    update_embeddings_index(out.uri, s3, rows=rows)
    save_scan_state(out, scan.state)
    return scan
