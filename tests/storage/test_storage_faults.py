"""Ingest and publishing through a fault-injecting proxy in front of the S3 endpoint: 503
SlowDown, 500 InternalError, connections dropped before and after the request took effect, and
409 ConditionalRequestConflict on write-once puts. Everything must complete, every object intact."""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor
from datetime import date

import pytest

from storage.catalog import discover_catalog
from storage.images import ingest_concept
from storage.metrics import MetricsRow, append_metrics, read_embeddings_index, read_metrics, update_embeddings_index
from storage.results import ResultStore
from storage.store.open import open_store

from . import imagegen
from .helpers import make_settings, unique_s3_uri

pytestmark = pytest.mark.slow

SETTINGS = {"steps": 100, "lr": 0.005}


def _upload_catalog(store) -> None:
    files = {}
    for c, concept in enumerate(("fox", "owl", "elk")):
        files[f"{concept}/concept.json"] = json.dumps({"class": concept}).encode()
        for i in range(3):
            files[f"{concept}/{i}.jpg"] = imagegen.rgb_jpeg((96 + i, 64), (40 * c, 80 + i, 10))
    files["owl/alpha.png"] = imagegen.rgba_png()
    with ThreadPoolExecutor(max_workers=8) as pool:
        list(pool.map(lambda item: store.put(*item), files.items()))


def test_ingest_and_publish_complete_through_faults(s3_client, s3_settings, fault_proxy) -> None:
    root = unique_s3_uri("faults")
    _upload_catalog(open_store(f"{root}/catalog", s3_settings))
    expected = {
        s.concept_id: s.digest for s in discover_catalog(open_store(f"{root}/catalog", s3_settings), SETTINGS).specs
    }

    proxy = fault_proxy(rate=0.25, seed=20240601)
    flaky = make_settings(proxy.endpoint, max_attempts=10, connect_timeout=5, read_timeout=20)
    catalog = open_store(f"{root}/catalog", flaky)
    scan = discover_catalog(catalog, SETTINGS)
    assert scan.problems == ()
    assert {s.concept_id: s.digest for s in scan.specs} == expected

    out = f"{root}/out"
    results = ResultStore.open(out, flaky)
    published = {}
    rows = []
    for spec in scan.specs:
        ingested = ingest_concept(catalog, spec)
        assert ingested.problems == () and len(ingested.images) == len(spec.images)
        files = {
            "learned_embeds.safetensors": os.urandom(300_000),
            f"{spec.concept_id}.pt": os.urandom(2_000),
            "grid.png": imagegen.rgb_png((64, 64)),
            "scores.json": json.dumps({"image_similarity": 0.5}).encode(),
        }
        results.put_checkpoint(spec.concept_id, spec.digest, "state.pt", os.urandom(50_000))
        result = results.publish(spec.concept_id, spec.digest, files, run_id="flaky-run")
        assert results.clear_checkpoints(spec.concept_id, spec.digest) == 1
        published[spec.concept_id] = (spec.digest, files)
        rows.append(
            MetricsRow(
                run_id="flaky-run",
                concept_id=spec.concept_id,
                status="ok",
                digest=spec.digest,
                embedding_uri=result.uris["learned_embeds.safetensors"],
                grid_uri=result.uris["grid.png"],
            )
        )
    append_metrics(out, rows, flaky)
    update_embeddings_index(out, flaky)  # reads the dataset with pyarrow through the proxy
    assert read_metrics(out, flaky).num_rows == 3
    assert read_embeddings_index(out, flaky).num_rows == 3

    # every fault kind was actually exercised
    assert all(proxy.counts[kind] > 0 for kind in ("503", "500", "drop", "drop_after")), proxy.counts

    # checked directly against the endpoint, without the proxy: every object intact
    direct = ResultStore.open(out, s3_settings)
    for concept_id, (digest, files) in published.items():
        assert direct.is_complete(concept_id, digest)
        assert direct.verify(concept_id, digest) == []
        for name, data in files.items():
            assert direct.store.get(f"embeddings/{concept_id}/{digest}/{name}") == data
        assert direct.list_checkpoints(concept_id, digest) == []


def test_conditional_write_conflicts_are_retried(s3_client, fault_proxy) -> None:
    proxy = fault_proxy(rate=0.0, conflict_rate=0.3, seed=99)
    store = open_store(unique_s3_uri("conflict"), make_settings(proxy.endpoint))
    for i in range(8):
        assert store.put_once(f"k{i}", b"first") is True
    for i in range(8):
        assert store.put_once(f"k{i}", b"second") is False
        assert store.get(f"k{i}") == b"first"
    assert proxy.counts["409"] > 0


def test_pyarrow_reads_retry_through_faults(s3_client, s3_settings, fault_proxy) -> None:
    out = unique_s3_uri("pyarrow-faults")
    for day in range(3):
        append_metrics(
            out,
            [
                MetricsRow(run_id=f"r{day}", concept_id=f"c{i}", status="ok", steps=i, run_date=date(2025, 1, 1 + day))
                for i in range(5)
            ],
            s3_settings,
        )
    proxy = fault_proxy(rate=0.3, seed=5)
    flaky = make_settings(proxy.endpoint, max_attempts=10, connect_timeout=5, read_timeout=20)
    for _ in range(3):
        table = read_metrics(out, flaky)
        assert table.num_rows == 15
        assert sorted(table.column("steps").to_pylist()) == sorted(list(range(5)) * 3)
    assert sum(v for k, v in proxy.counts.items() if k.startswith("pyarrow:")) > 0, proxy.counts
