"""What a nightly ``learn_catalog`` run costs at catalog scale (issue 11), measured at the HTTP level.

For each N it builds, on a moto S3 server behind a counting proxy:

* a catalog of N concepts × 4 small PNG images (uploaded straight to moto, in parallel);
* a complete result for every concept, written by our own publishing code
  (:meth:`storage.results.ResultStore.publish` with stand-in files; no training), their ``ok``
  metrics rows (:func:`storage.metrics.append_metrics`), the embeddings index, and the scan state a
  previous run would have left (:func:`storage.scanstate.save_scan_state` of a full scan); all of it
  by ``tests.flows.seeding.seed_learned_output``, which the tests use too.

Then it times ``learn_catalog`` runs, each in a fresh child process under a Prefect test server:

* ``no-op`` — nothing changed since the state was written;
* ``changed`` — one image of ``--changed`` (default 1%) of the concepts replaced; those concepts are
  learned for real with 1 step on the tiny random-weight model (rendering and scoring at 1 step, 1
  sample, 1 prompt, the tiny CLIP), so the run pays for exactly what changed;
* ``first`` (with ``--first-run``) — the same no-op catalog without a scan state: what a lost state
  (or the first run after upgrading) costs: every image read once, then every concept skipped.

Reported per run: wall time of the flow call; requests by kind (LIST, GET, HEAD, PUT, other) counted by
the proxy; catalog image bytes read (and what the changed concepts' images weigh); the coordinator's
peak RSS, and whether torch was imported in it (a ``changed`` run trains in the same process). Run
from the repository root::

    .venv/bin/python -m bench.catalog_scale --sizes 1000,5000,10000 --changed 0.01 --out bench/results-catalog-scale.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from tests.storage.counting_proxy import CountingProxy, by_kind, bytes_read  # noqa: E402

BUCKET = "sstar-bench"
IMAGES_PER_CONCEPT = 4
KINDS = ("LIST", "GET", "HEAD", "PUT")
LEARN = dict(steps=1, batch_size=1)
EVALUATION = dict(prompts=["a photo of {}"], samples=1, render_steps=1, clip_arch="sstar-tiny-clip")
RUN = dict(device="cpu", checkpoint_every=0, workers=4, concepts_per_batch=4)
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
}


def _png(seed: int) -> bytes:
    """A small 32×32 noise PNG (~3 KB), distinct per seed."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


def _start_moto() -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen(
        [sys.executable, str(REPO / "tests" / "storage" / "moto_s3_server.py"), "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        env={**os.environ, **ENV},
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().decode()
    port = int(line.strip().rsplit(":", 1)[1])
    return proc, f"http://127.0.0.1:{port}"


def _settings(learn_model: str, clip: str):
    from tasks.settings import EvalSettings, LearnSettings, RunSettings

    return (
        LearnSettings(model=learn_model, **LEARN),
        EvalSettings(clip_checkpoint=clip, **EVALUATION),
        RunSettings(**RUN),
    )


def build(n: int, root: str, moto: str, model: str, clip: str, workers: int) -> dict:
    """Catalog + complete results + metrics + index + scan state for N concepts, straight on moto."""
    from storage.store.open import open_store
    from storage.store.settings import S3Settings
    from tests.flows.seeding import seed_learned_output

    s3 = S3Settings(
        endpoint_url=moto,
        region="us-east-1",
        access_key_id=ENV["AWS_ACCESS_KEY_ID"],
        secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
    )
    catalog, out = open_store(f"s3://{BUCKET}/{root}/catalog", s3), open_store(f"s3://{BUCKET}/{root}/out", s3)
    ids = [f"c{i:05d}" for i in range(n)]
    started = time.monotonic()

    def upload(i: int) -> None:
        for k in range(IMAGES_PER_CONCEPT):
            catalog.put(f"{ids[i]}/{k}.png", _png(i * IMAGES_PER_CONCEPT + k))

    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(upload, range(n)))
    learn, _, _ = _settings(model, clip)
    seed_learned_output(catalog, out, learn, s3, workers)
    return {"seconds": time.monotonic() - started, "ids": ids, "s3": s3}


CHILD = r"""
import json, os, sys, time
sys.path.insert(0, os.environ["SSTAR_REPO"])
spec = json.loads(sys.argv[1])
from prefect.testing.utilities import prefect_test_harness
from flows.learn import learn_catalog
from tasks.settings import EvalSettings, LearnSettings, RunSettings
with prefect_test_harness(server_startup_timeout=180):
    started = time.monotonic()
    state = learn_catalog(catalog=spec["catalog"], out=spec["out"], learn=LearnSettings(**spec["learn"]),
                          evaluation=EvalSettings(**spec["evaluation"]), run=RunSettings(**spec["run"]),
                          run_id=spec["run_id"], return_state=True)
    seconds = time.monotonic() - started
# VmHWM: this process's own peak RSS (ru_maxrss would carry over the forking parent's from before exec)
with open("/proc/self/status") as status:
    peak_kib = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:"))
print("RESULT " + json.dumps({"seconds": seconds, "state": state.type.value, "torch": "torch" in sys.modules,
                               "rss_mib": peak_kib / 1024}), flush=True)
"""


def run_flow(root: str, proxy: CountingProxy, model: str, clip: str, run_id: str, work: Path) -> dict:
    """One learn_catalog run in a child process (its own Prefect test server); counts from the proxy."""
    learn, evaluation, run = _settings(model, clip)
    spec = {
        "catalog": f"s3://{BUCKET}/{root}/catalog",
        "out": f"s3://{BUCKET}/{root}/out",
        "run_id": run_id,
        "learn": learn.model_dump(),
        "evaluation": evaluation.model_dump(),
        "run": run.model_dump(),
    }
    env = {
        **os.environ,
        **ENV,
        "AWS_ENDPOINT_URL": proxy.endpoint,
        "SSTAR_REPO": str(REPO),
        "SSTAR_CACHE_DIR": str(work / "cache"),
        "PREFECT_HOME": str(work / "prefect"),
        "PREFECT_LOGGING_LEVEL": "WARNING",
    }
    proxy.reset()
    done = subprocess.run([sys.executable, "-c", CHILD, json.dumps(spec)], env=env, capture_output=True, text=True)
    requests = proxy.reset()
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    if not lines:
        raise RuntimeError(f"learn_catalog child failed ({done.returncode}):\n{done.stderr[-3000:]}")
    result = json.loads(lines[0].removeprefix("RESULT "))
    result["requests"] = by_kind(requests)
    result["image_bytes"] = bytes_read(requests, f"{root}/catalog/", (".png",))
    return result


def change(ids: list[str], fraction: float, s3, root: str, seed: int = 0) -> tuple[int, int]:
    """Replace one image of ``fraction`` of the concepts; returns (concepts changed, bytes of their images)."""
    from storage.store.open import open_store

    catalog = open_store(f"s3://{BUCKET}/{root}/catalog", s3)
    picked = random.Random(seed).sample(ids, max(1, round(len(ids) * fraction)))
    for concept_id in picked:
        catalog.put(f"{concept_id}/0.png", _png(10**9 + int(concept_id[1:])))
    weight = sum(info.size for cid in picked for info in catalog.list_info(f"{cid}/"))
    return len(picked), weight


def _row(n: int, name: str, result: dict, expected_bytes: int | None = None) -> dict:
    requests = result["requests"]
    return {
        "concepts": n,
        "run": name,
        "wall_s": round(result["seconds"], 1),
        "state": result["state"],
        **{k: requests.get(k, 0) for k in KINDS},
        "other": sum(v for k, v in requests.items() if k not in KINDS),
        "image_bytes": result["image_bytes"],
        "changed_image_bytes": expected_bytes,
        "peak_rss_mib": round(result["rss_mib"]),
        "torch": "yes" if result["torch"] else "no",
    }


def print_table(rows: list[dict]) -> None:
    header = [
        "concepts",
        "run",
        "wall_s",
        "state",
        *KINDS,
        "other",
        "image_bytes",
        "changed_image_bytes",
        "peak_rss_mib",
        "torch",
    ]
    widths = [max(len(h), *(len(str(r[h])) for r in rows)) for h in header]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for row in rows:
        print("  ".join(str(row[h]).rjust(w) for h, w in zip(header, widths)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default="1000", help="comma-separated catalog sizes N (default 1000)")
    parser.add_argument("--changed", type=float, default=0.01, help="fraction of concepts changed (default 0.01)")
    parser.add_argument("--first-run", action="store_true", help="also time a run without a scan state")
    parser.add_argument("--workers", type=int, default=16, help="upload threads while building")
    parser.add_argument("--out", help="write the table as CSV here")
    args = parser.parse_args(argv)
    os.environ.update(ENV)
    from inversion.evaluation.clip import write_tiny_clip
    from inversion.model.zoo import write_random_model

    rows: list[dict] = []
    moto, endpoint = _start_moto()
    proxy = CountingProxy(endpoint).start()
    try:
        with tempfile.TemporaryDirectory(prefix="sstar-catalog-scale-") as tmp:
            work = Path(tmp)
            model = str(write_random_model("tiny", work / "tiny"))
            clip = str(write_tiny_clip(work / "tiny-clip.pt"))
            os.environ["SSTAR_CACHE_DIR"] = str(work / "cache")
            from storage.store.settings import S3Settings

            S3Settings(
                endpoint_url=endpoint,
                region="us-east-1",
                access_key_id=ENV["AWS_ACCESS_KEY_ID"],
                secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
            ).s3_client().create_bucket(Bucket=BUCKET)
            for n in (int(x) for x in args.sizes.split(",")):
                root = f"n{n}"
                built = build(n, root, endpoint, model, clip, args.workers)
                print(
                    f"N={n}: catalog, results, metrics, index and scan state built in {built['seconds']:.0f} s",
                    flush=True,
                )
                rows.append(_row(n, "no-op", run_flow(root, proxy, model, clip, f"{root}-noop", work)))
                print_table(rows[-1:])
                if args.first_run:
                    from storage.scanstate import STATE_KEY
                    from storage.store.open import open_store

                    open_store(f"s3://{BUCKET}/{root}/out", built["s3"]).delete(STATE_KEY)
                    rows.append(_row(n, "first", run_flow(root, proxy, model, clip, f"{root}-first", work)))
                    print_table(rows[-1:])
                count, weight = change(built["ids"], args.changed, built["s3"], root)
                result = run_flow(root, proxy, model, clip, f"{root}-changed", work)
                rows.append(_row(n, f"changed ({count})", result, weight))
                print_table(rows[-1:])
    finally:
        proxy.stop()
        moto.terminate()
        moto.wait(timeout=30)
    print()
    print_table(rows)
    if args.out:
        with open(args.out, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
