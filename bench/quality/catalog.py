"""What a catalog run costs in the toy world: ``sstar learn`` over 8 concepts, fixed steps against the
plateau rule (with continuous packing and the cached words-only baseline, both always on).

    python -m bench.quality.catalog --out DIR --stop fixed|plateau [--steps 600] [--sampler ddim|dpm]
        [--render-steps 15] [--samples 6] [--k 4] [--rerun]

Writes a catalog of the toy world's 4 held-out concepts and 4 more at the other half-way hues
(:data:`EXTRA`), runs the real command (``sstar learn`` in a subprocess, Prefect's ephemeral server,
one torch thread as the demo, a brand-new ``PREFECT_HOME`` per run) into ``DIR/out-<stop>`` with the
demo's evaluation (``a photo of a {}``, guidance 3, the world CLIP), and prints the wall time and, per
concept, the metrics row: status,
steps run, stop reason, training and evaluation seconds, CLIP image similarity and lift. ``--rerun``
runs the same catalog a second time into a fresh output that keeps the first run's baseline cache
(a re-learned catalog). Results go to ``DIR/catalog-<stop>.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.dataset as ds

import toyworld
from toyworld.scenes import HELD_OUT, HeldOutConcept

#: four more concepts, at the half-way hues the held-out ones leave out
EXTRA: tuple[HeldOutConcept, ...] = (
    HeldOutConcept("extra-orange-yellow-square", 67.5, "square", 0.65, "white"),
    HeldOutConcept("extra-green-teal-circle", 157.5, "circle", 0.70, "gray"),
    HeldOutConcept("extra-blue-purple-square", 247.5, "square", 0.65, "white"),
    HeldOutConcept("extra-pink-red-triangle", 337.5, "triangle", 0.70, "black"),
)
COLUMNS = (
    "concept_id",
    "status",
    "steps_run",
    "stop_reason",
    "train_seconds",
    "eval_seconds",
    "image_similarity",
    "baseline_image_similarity",
    "inversion_lift",
)


def run_catalog(
    root: Path, stop: str, steps: int, sampler: str, render_steps: int, samples: int, k: int, out: Path
) -> dict:
    """One ``sstar learn`` of the 8-concept catalog into ``out``; the wall time and the metrics rows."""
    from flows.demo import write_world_catalog

    catalog = root / "catalog"
    if not catalog.is_dir():
        write_world_catalog(catalog, concepts=HELD_OUT + EXTRA)
    prompts = root / "prompts.txt"
    prompts.write_text("a photo of a {}\n")
    command = [
        sys.executable,
        "-m",
        "flows.cli",
        "learn",
        "--catalog",
        str(catalog),
        "--out",
        str(out),
        "--model",
        str(toyworld.MODEL_DIR),
        "--max-steps",
        str(steps),
        "--stop",
        stop,
        "--batch-size",
        "4",
        "--concepts-per-batch",
        str(k),
        "--prompts",
        str(prompts),
        "--samples",
        str(samples),
        "--render-steps",
        str(render_steps),
        "--sampler",
        sampler,
        "--guidance",
        "3",
        "--clip-arch",
        toyworld.CLIP_ARCH,
        "--clip-checkpoint",
        str(toyworld.CLIP_CHECKPOINT),
        "--device",
        "cpu",
        "--workers",
        "2",
    ]
    home = out.parent / f"prefect-home-{out.name}"  # a fresh Prefect home per run: its migration costs each run
    shutil.rmtree(home, ignore_errors=True)  # the same, and no slot left in a shared database blocks it
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PREFECT_HOME": str(home)}
    tick = time.perf_counter()
    done = subprocess.run(command, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - tick
    if done.returncode != 0:
        raise SystemExit(f"sstar learn exited {done.returncode}:\n{done.stderr[-3000:]}")
    rows = ds.dataset(out / "metrics", format="parquet", partitioning="hive").to_table().to_pylist()
    return {
        **prefect_timings(home),
        "stop": stop,
        "steps": steps,
        "sampler": sampler,
        "render_steps": render_steps,
        "samples": samples,
        "k": k,
        "wall_seconds": wall,
        "rows": [{c: r.get(c) for c in COLUMNS} for r in rows],
    }


def prefect_timings(home: Path) -> dict:
    """Seconds of the flow run and of each kind of task run (summed; tasks of one kind may overlap), read
    from the run's own Prefect database in ``home`` — what the Prefect UI shows for the run."""
    db = sqlite3.connect(home / "prefect.db")
    try:
        (flow,) = db.execute(
            "select (julianday(end_time) - julianday(start_time)) * 86400 from flow_run where end_time is not null"
        ).fetchall()
        tasks: dict[str, float] = {}
        query = "select name, (julianday(end_time) - julianday(start_time)) * 86400 from task_run"
        for name, seconds in db.execute(query + " where end_time is not null"):
            kind = name.rsplit("-", 1)[0]
            tasks[kind] = tasks.get(kind, 0.0) + seconds
    finally:
        db.close()
    return {"flow_run_seconds": flow[0], "task_seconds": tasks}


def format_result(result: dict) -> str:
    tasks = result.get("task_seconds", {})
    lines = [
        f"stop={result['stop']} cap={result['steps']} sampler={result['sampler']}×{result['render_steps']} "
        f"samples={result['samples']} K={result['k']}: wall {result['wall_seconds']:.0f} s, flow run "
        f"{result.get('flow_run_seconds', float('nan')):.0f} s (invert {tasks.get('invert-pack', 0):.0f} s, "
        f"score {tasks.get('score-outcomes', 0):.0f} s summed over its tasks)"
    ]
    for row in sorted(result["rows"], key=lambda r: r["concept_id"]):
        lines.append("  " + "  ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c]) for c in COLUMNS))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.catalog", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--stop", choices=("fixed", "plateau"), required=True)
    p.add_argument("--steps", type=int, default=600)
    p.add_argument("--sampler", choices=("ddim", "dpm"), default="ddim")
    p.add_argument("--render-steps", type=int, default=15)
    p.add_argument("--samples", type=int, default=6)
    p.add_argument("--k", type=int, default=4)
    p.add_argument("--rerun", action="store_true", help="learn the catalog again, keeping the baseline cache")
    args = p.parse_args(argv)
    root = args.out.resolve()
    out = root / f"out-{args.stop}"
    shutil.rmtree(out, ignore_errors=True)
    results = [run_catalog(root, args.stop, args.steps, args.sampler, args.render_steps, args.samples, args.k, out)]
    if args.rerun:
        again = root / f"out-{args.stop}-rerun"
        shutil.rmtree(again, ignore_errors=True)
        shutil.copytree(out / "baselines", again / "baselines")
        results.append(
            run_catalog(root, args.stop, args.steps, args.sampler, args.render_steps, args.samples, args.k, again)
        )
    for result in results:
        print(format_result(result))
    (root / f"catalog-{args.stop}.json").write_text(json.dumps(results, indent=1, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
