"""Speed benchmark: our packed trainer against the standard recipe, one table, one CSV.

    python -m bench.speed --models tiny,sd15 --resolutions 256,512 --batch 1 --packs 1,4 \\
        --steps 3 --warmup 1 --device auto --precision fp32 --out bench/results.csv
    python -m bench.speed --models sdxl --packs 1 --steps 2 --warmup 1 --precision bf16   # SDXL, 1024 px

For every model × resolution it runs the variants

* ``baseline``      — the model family's standard recipe (:mod:`bench.baseline`: the diffusers SD or
  SDXL example script, or for Flux the advanced DreamBooth-LoRA script in its textual-inversion-only mode),
  one concept per step (SD 3 has no recipe: its models get our rows only);
* ``sstar``         — our trainer (:func:`inversion.training.trainer.train_concepts`) with one concept;
* ``sstar-packed``  — our trainer with K concepts per UNet batch, for every K > 1 in ``--packs``;

on random-weight models built in memory (no download; directly in bf16/fp16 when the variant
places its weights in that dtype, so the 14 GB fp32 SDXL never has to fit) and synthetic training images (4 per concept,
drawn with numpy/PIL into a temporary folder), and reports the median seconds per optimizer step
after ``--warmup`` steps, concept-steps per second (K / seconds per step), peak memory and the ratios
to the baseline and to the single-concept run. Each variant runs in a fresh subprocess (the same
module with ``--single``) so that peak memory is per variant; ``--no-isolate`` runs them in this
process instead (models built once and reused; CPU peaks then come from resetting the kernel's RSS
high-water mark, ``/proc/self/clear_refs``). Progress goes to stderr, the table to stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from common.atomic import atomic_write

REPO_ROOT = Path(__file__).resolve().parents[1]
IMAGES_PER_CONCEPT = 4
VARIANTS = ("baseline", "sstar", "sstar-packed")
RESULT_PREFIX = "BENCH-RESULT "
CPU_DEFAULTS = (1, 3)  # warm-up, timed steps
GPU_DEFAULTS = (3, 10)

COLUMNS = [
    "variant",
    "model",
    "resolution",
    "batch",
    "concepts_per_batch",
    "s_per_step",
    "concept_steps_per_s",
    "min_s_per_step",
    "cpu_s_per_step",
    "cpu_ratio_to_baseline",
    "load_avg",
    "peak_memory_mb",
    "memory_kind",
    "ratio_to_baseline",
    "ratio_to_single",
    "setup_s",
    "warmup",
    "steps",
    "step_seconds",
    "step_cpu_seconds",
    "device",
    "device_name",
    "threads",
    "precision",
    "error",
]


@dataclass(frozen=True)
class Cell:
    """One measurement: a variant of one model at one resolution."""

    variant: str
    model: str
    resolution: int  # 0: the model's native resolution
    batch: int
    concepts: int
    warmup: int
    steps: int
    device: str
    precision: str
    images: str  # folder holding concept-0/, concept-1/, …
    compile: bool = False  # our trainer with TrainConfig(compile=True); the compile falls in the warm-up
    baseline_precision: str = ""  # the baseline's --mixed_precision; "": the recipe's (bench.baseline.recipe_precision)

    def label(self) -> str:
        res = f"{self.resolution}px" if self.resolution else "native"
        return f"{self.variant} K={self.concepts} {self.model} {res} batch {self.batch}"


def log(message: str) -> None:
    print(f"[bench] {message}", file=sys.stderr, flush=True)


# -- inputs ------------------------------------------------------------------------------------


def make_images(root: Path, concepts: int, size: int, seed: int = 0) -> Path:
    """Draw ``IMAGES_PER_CONCEPT`` synthetic photos per concept into ``root/concept-<i>/``."""
    import numpy as np
    from PIL import Image, ImageDraw

    for c in range(concepts):
        folder = root / f"concept-{c}"
        folder.mkdir(parents=True, exist_ok=True)
        for i in range(IMAGES_PER_CONCEPT):
            path = folder / f"{i:02d}.png"
            if path.exists():
                continue
            rng = np.random.default_rng([seed, c, i])
            y, x = np.mgrid[0:size, 0:size] / size
            base = rng.uniform(0, 255, (3, 3))  # a smooth colour field: one plane per channel
            field = np.stack([base[k, 0] * x + base[k, 1] * y + base[k, 2] * (1 - x) * (1 - y) for k in range(3)], -1)
            image = Image.fromarray(np.clip(field, 0, 255).astype(np.uint8))
            draw = ImageDraw.Draw(image)
            for _ in range(6):  # the "object": a few coloured shapes
                x0, y0 = rng.integers(0, size * 3 // 4, 2)
                w, h = rng.integers(size // 8, size // 3, 2)
                colour = tuple(int(v) for v in rng.integers(0, 256, 3))
                (draw.ellipse if rng.random() < 0.5 else draw.rectangle)([x0, y0, x0 + w, y0 + h], fill=colour)
            noise = rng.normal(0, 6, (size, size, 3))
            pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(path)
    return root


_COMPONENTS: dict[tuple[str, Any], Any] = {}

#: resolutions run when ``--resolutions`` is not given: SD 1.x models at 256 and 512 px, others at their own
DEFAULT_RESOLUTIONS = {"sd1": "256,512"}


def model_family(model: str) -> str:
    """The family (``sd1``, ``sd2``, ``sdxl``, ``sd3``, ``flux``) of the random-weight architecture ``model``,
    from its config alone."""
    from inversion.model.info import classify
    from inversion.model.zoo import ARCHITECTURES, FLOW_ARCHITECTURES

    if model in FLOW_ARCHITECTURES:
        return classify(False, None, FLOW_ARCHITECTURES[model]["transformer"]["_class_name"])
    if model not in ARCHITECTURES:
        raise SystemExit(f"unknown model {model!r}; choose from {', '.join([*ARCHITECTURES, *FLOW_ARCHITECTURES])}")
    configs = ARCHITECTURES[model]
    return classify("text_encoder_2" in configs, argparse.Namespace(**configs["text_encoder"]))


def native_resolution(model: str) -> int:
    """The image size the architecture ``model`` was built for: the denoiser's sample size × the VAE's
    down-sampling (Flux's transformer has none: its VAE's ``sample_size``, as ``DiffusionComponents.resolution``)."""
    from inversion.model.zoo import ARCHITECTURES, FLOW_ARCHITECTURES

    configs = ARCHITECTURES.get(model) or FLOW_ARCHITECTURES[model]
    if "unet" not in configs and "sample_size" not in configs["transformer"]:
        return int(configs["vae"]["sample_size"])
    denoiser = configs["unet"] if "unet" in configs else configs["transformer"]
    return int(denoiser["sample_size"]) * 2 ** (len(configs["vae"]["block_out_channels"]) - 1)


def get_components(model: str, dtype=None):
    """The random-weight model ``model`` (a key of ``inversion.model.components.ARCHITECTURES``), built once per
    process and dtype; ``dtype`` (default fp32) is the dtype the weights are created in."""
    import torch

    dtype = dtype or torch.float32
    if (model, dtype) not in _COMPONENTS:
        from inversion.model.zoo import FLOW_ARCHITECTURES, build_flow_components, build_random_components

        build = build_flow_components if model in FLOW_ARCHITECTURES else build_random_components
        started = time.perf_counter()
        log(f"building {model} (random weights, in memory, {dtype})…")
        default = torch.get_default_dtype()
        torch.set_default_dtype(dtype)
        try:
            _COMPONENTS[model, dtype] = build(model, seed=0)
        finally:
            torch.set_default_dtype(default)
        log(f"built {model} in {time.perf_counter() - started:.1f} s")
    return _COMPONENTS[model, dtype]


# -- memory ------------------------------------------------------------------------------------


def _reset_peak(device) -> str:
    """Start a new peak-memory window; returns what kind of peak will be reported."""
    import torch

    from inversion.device import synchronize

    if device.type == "cuda":
        synchronize(device)
        torch.cuda.reset_peak_memory_stats(device)
        return "cuda-allocated"
    try:
        Path("/proc/self/clear_refs").write_text("5")  # reset VmHWM to the current RSS
        return "rss"
    except OSError:
        return "rss-process"  # ru_maxrss: the process-wide peak (fine in a fresh subprocess)


def _peak_mb(device, kind: str) -> float:
    import torch

    if kind == "cuda-allocated":
        return torch.cuda.max_memory_allocated(device) / 2**20
    if kind == "rss":
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


def _load_average() -> str:
    """The 1-minute load average when the run ended (to spot runs disturbed by other jobs)."""
    try:
        return Path("/proc/loadavg").read_text().split()[0]
    except OSError:
        return ""


def device_name(device) -> str:
    import torch

    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    name = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name} ({os.cpu_count()} cores)"


# -- one measurement ---------------------------------------------------------------------------


def run_cell(cell: Cell) -> dict[str, Any]:
    """Measure one cell in this process; returns a CSV row (ratios filled in later)."""
    import torch

    from bench.baseline import recipe_precision, run_baseline
    from inversion.config import ConceptConfig, TrainConfig
    from inversion.device import DTYPES, resolve_device, resolve_dtype, synchronize
    from inversion.training.trainer import train_concepts

    torch.manual_seed(0)
    device = resolve_device(cell.device)
    if cell.variant == "baseline":
        mixed = recipe_precision(model_family(cell.model), device, cell.baseline_precision or None)
        weight_dtype = DTYPES["fp32" if mixed == "no" else mixed]
    else:
        weight_dtype = resolve_dtype(cell.precision, device)
    # built in the dtype the variant runs its frozen weights in (a fresh process per variant, or cached per dtype)
    components = get_components(cell.model, weight_dtype)
    resolution = cell.resolution or components.resolution
    images = Path(cell.images)
    total = cell.warmup + cell.steps
    row: dict[str, Any] = {
        "variant": cell.variant,
        "model": cell.model,
        "resolution": resolution,
        "batch": cell.batch,
        "concepts_per_batch": cell.concepts,
        "warmup": cell.warmup,
        "steps": cell.steps,
        "device": device.type,
        "device_name": device_name(device),
        "threads": torch.get_num_threads(),
    }

    def progress(step: int, seconds: float, loss: str) -> None:
        phase = "warm-up" if step <= cell.warmup else "timed"
        log(f"  {cell.label()}: step {step}/{total} ({phase}) {seconds:.3f} s  loss {loss}")

    kind = ""
    if cell.variant == "baseline":
        row["precision"] = "fp32" if mixed == "no" else f"{mixed}-amp"
        holder: dict[str, str] = {}

        def ready() -> None:
            holder["kind"] = _reset_peak(device)

        result = run_baseline(
            components,
            images / "concept-0",
            resolution=resolution,
            batch_size=cell.batch,
            steps=total,
            device=device,
            mixed_precision=mixed,
            on_ready=ready,
            on_step=lambda s, sec, loss: progress(s, sec, f"{loss:.4f}"),
        )
        kind = holder["kind"]
        times = result.step_seconds
        cpu_times: list[float | None] = list(result.step_cpu_seconds)
        setup = result.setup_seconds
        error = ""
    else:
        row["precision"] = cell.precision + ("+compile" if cell.compile else "")
        concepts = [
            ConceptConfig(token=f"<bench-{i}>", initializer="cat", images=images / f"concept-{i}", seed=i)
            for i in range(cell.concepts)
        ]
        config = TrainConfig(
            steps=total,
            batch_size=cell.batch,
            resolution=resolution,
            precision=cell.precision,
            device=str(device),
            seed=0,
            compile=cell.compile,
        )
        components.to(device, weight_dtype)  # weights placed before the memory window, as for the baseline
        kind = _reset_peak(device)
        stamps: list[float] = []
        cpu_stamps: list[float] = []

        def callback(report) -> None:
            synchronize(device)  # keep queued GPU work inside its own step's window
            previous = stamps[-1] if stamps else 0.0
            stamps.append(report.elapsed)
            cpu_stamps.append(time.process_time())
            losses = " ".join(f"{v:.4f}" for v in report.losses.values())
            progress(report.step, report.elapsed - previous, losses)

        started = time.perf_counter()
        results = train_concepts(components, concepts, config, callback=callback)
        wall = time.perf_counter() - started
        times = [b - a for a, b in zip([0.0, *stamps], stamps)]
        # process CPU time between callbacks; the first step's start is not visible from outside
        cpu_times = [None] + [b - a for a, b in zip(cpu_stamps, cpu_stamps[1:])]
        setup = wall - (stamps[-1] if stamps else 0.0)  # latent caching, token set-up, results
        error = "; ".join(r.error for r in results if r.error)
        if len(times) < total and not error:
            error = f"only {len(times)} of {total} steps ran"
    row["peak_memory_mb"] = round(_peak_mb(device, kind), 1)
    row["memory_kind"] = kind
    timed = times[cell.warmup :]
    row["step_seconds"] = ";".join(f"{t:.4f}" for t in timed)
    row["step_cpu_seconds"] = ";".join("" if t is None else f"{t:.4f}" for t in cpu_times[cell.warmup :])
    row["setup_s"] = round(setup, 3)
    row["load_avg"] = _load_average()
    row["error"] = error
    if timed:
        median = statistics.median(timed)
        row["s_per_step"] = round(median, 4)
        row["min_s_per_step"] = round(min(timed), 4)  # other jobs only ever add time: the min is a noise floor
        row["concept_steps_per_s"] = round(cell.concepts / median, 4)
    cpu_timed = [t for t in cpu_times[cell.warmup :] if t is not None]
    if cpu_timed and device.type == "cpu":
        row["cpu_s_per_step"] = round(statistics.median(cpu_timed), 4)
    return row


def run_isolated(cell: Cell) -> dict[str, Any]:
    """Run one cell in a fresh interpreter (``python -m bench.speed --single``) so its peak memory is its own."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(REPO_ROOT), env.get("PYTHONPATH", "")) if p)
    command = [sys.executable, "-m", "bench.speed", "--single", json.dumps(asdict(cell))]
    proc = subprocess.run(command, cwd=REPO_ROOT, env=env, stdout=subprocess.PIPE, stderr=None, text=True)
    for line in reversed(proc.stdout.splitlines()):
        if line.startswith(RESULT_PREFIX):
            return json.loads(line[len(RESULT_PREFIX) :])
    return {"error": f"subprocess exited with status {proc.returncode} and no result"}


def _single(spec: str) -> int:
    cell = Cell(**json.loads(spec))
    try:
        row = run_cell(cell)
    except Exception as exc:  # noqa: BLE001 - any failure of one cell is reported as its row, not a crash
        log(f"  {cell.label()} failed: {type(exc).__name__}: {exc}")
        row = {"error": f"{type(exc).__name__}: {exc}"}
    print(RESULT_PREFIX + json.dumps(row), flush=True)
    return 0


# -- the table ---------------------------------------------------------------------------------


def fill_ratios(rows: list[dict[str, Any]]) -> None:
    """ratio_to_baseline / ratio_to_single: concept-steps/s relative to the same model, resolution and batch."""

    def key(r):
        return (r.get("model"), r.get("resolution"), r.get("batch"), r.get("device"))

    for row in rows:
        for column, variant in (("ratio_to_baseline", "baseline"), ("ratio_to_single", "sstar")):
            ref = next(
                (
                    r
                    for r in rows
                    if key(r) == key(row) and r.get("variant") == variant and r.get("concept_steps_per_s")
                ),
                None,
            )
            value = row.get("concept_steps_per_s")
            row[column] = round(value / ref["concept_steps_per_s"], 3) if ref and value else ""
        # the same ratio from process CPU seconds (robust when other jobs share the cores)
        ref = next(
            (r for r in rows if key(r) == key(row) and r.get("variant") == "baseline" and r.get("cpu_s_per_step")), None
        )
        value = row.get("cpu_s_per_step")
        row["cpu_ratio_to_baseline"] = (
            round(ref["cpu_s_per_step"] * row.get("concepts_per_batch", 1) / value, 3) if ref and value else ""
        )


def format_table(rows: list[dict[str, Any]]) -> str:
    headers = [
        "variant",
        "model",
        "res",
        "batch",
        "K",
        "s/step",
        "min s/step",
        "concept-steps/s",
        "peak mem",
        "× baseline",
        "× single",
        "cpu s/step",
        "cpu × baseline",
        "setup s",
        "note",
    ]

    def num(value, fmt):
        return format(value, fmt) if isinstance(value, (int, float)) and value != "" else "-"

    lines = []
    for r in rows:
        mem = r.get("peak_memory_mb")
        memory = f"{mem / 1024:.2f} GiB {r.get('memory_kind', '')}".strip() if isinstance(mem, (int, float)) else "-"
        lines.append(
            [
                str(r.get("variant", "?")),
                str(r.get("model", "?")),
                str(r.get("resolution", "?")),
                str(r.get("batch", "?")),
                str(r.get("concepts_per_batch", "?")),
                num(r.get("s_per_step"), ".3f"),
                num(r.get("min_s_per_step"), ".3f"),
                num(r.get("concept_steps_per_s"), ".4f"),
                memory,
                num(r.get("ratio_to_baseline"), ".2f"),
                num(r.get("ratio_to_single"), ".2f"),
                num(r.get("cpu_s_per_step"), ".3f"),
                num(r.get("cpu_ratio_to_baseline"), ".2f"),
                num(r.get("setup_s"), ".1f"),
                str(r.get("error") or ""),
            ]
        )
    widths = [max(len(h), *(len(line[i]) for line in lines)) if lines else len(h) for i, h in enumerate(headers)]
    out = ["  ".join(h.ljust(w) for h, w in zip(headers, widths)).rstrip(), "  ".join("-" * w for w in widths)]
    out += ["  ".join(v.ljust(w) for v, w in zip(line, widths)).rstrip() for line in lines]
    return "\n".join(out)


def write_csv(rows: list[dict[str, Any]], path: Path) -> None:
    """Write ``rows`` (the :data:`COLUMNS`) as a CSV file, atomically."""

    def write(tmp: Path) -> None:
        with tmp.open("w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=COLUMNS, extrasaction="ignore")
            writer.writeheader()
            for row in rows:
                writer.writerow({c: row.get(c, "") for c in COLUMNS})

    atomic_write(path, write)


def read_csv(path: Path) -> list[dict[str, Any]]:
    """Rows of a CSV written by :func:`write_csv`, numbers parsed back."""

    def parse(value: str):
        try:
            return int(value)
        except ValueError:
            try:
                return float(value)
            except ValueError:
                return value

    with Path(path).open(newline="") as handle:
        return [{k: parse(v) for k, v in row.items()} for row in csv.DictReader(handle)]


# -- command line ------------------------------------------------------------------------------


def _ints(text: str) -> list[int]:
    return [0 if part.strip() == "native" else int(part) for part in text.split(",") if part.strip()]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.speed",
        description=__doc__.split("\n\n")[0],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "--models",
        default="tiny,sd15",
        help="comma-separated architectures: tiny, sd15, sdxl-tiny, sdxl, flux-tiny, sd3-tiny, … (default: tiny,sd15)",
    )
    parser.add_argument(
        "--resolutions",
        default=None,
        help="comma-separated pixel sizes; 'native' = the model's own "
        "(default: 256,512 for SD 1.x models, native for the others: 1024 px for sdxl, 64 px for flux-tiny)",
    )
    parser.add_argument("--batch", type=int, default=1, help="images per concept per step (default: 1)")
    parser.add_argument("--packs", default="1,4", help="concepts per batch K; every K > 1 adds an sstar-packed row")
    parser.add_argument(
        "--packed-resolutions", default=None, help="run the packed rows only at these resolutions (default: at all)"
    )
    parser.add_argument("--variants", default=",".join(VARIANTS), help=f"subset of {','.join(VARIANTS)}")
    parser.add_argument("--steps", type=int, default=None, help="timed steps (default: 3 on CPU, 10 on GPU)")
    parser.add_argument("--warmup", type=int, default=None, help="untimed steps first (default: 1 on CPU, 3 on GPU)")
    parser.add_argument("--device", default="auto", help="auto, cpu or cuda[:N]")
    parser.add_argument(
        "--precision", default="fp32", choices=["fp32", "bf16", "fp16"], help="our trainer's precision (default fp32)"
    )
    parser.add_argument(
        "--baseline-precision",
        default="",
        choices=["", "no", "fp16", "bf16"],
        help="the baseline's --mixed_precision (default: the recipe's — SD 1.x: no on CPU, fp16 on GPU; SDXL: bf16)",
    )
    parser.add_argument(
        "--compile",
        action="store_true",
        help="our trainer with torch.compile'd UNet (compiles during the warm-up steps)",
    )
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "bench" / "results.csv", help="CSV to write")
    parser.add_argument("--images", type=Path, default=None, help="folder for the synthetic images (default: temp)")
    parser.add_argument(
        "--no-isolate",
        dest="isolate",
        action="store_false",
        help="run every variant in this process (faster start; CPU peaks via clear_refs)",
    )
    parser.add_argument("--show", type=Path, default=None, help="print the table of an earlier CSV and exit")
    parser.add_argument("--single", default=None, help=argparse.SUPPRESS)
    return parser.parse_args(argv)


def plan(args: argparse.Namespace, device: str, image_root: Path) -> list[Cell]:
    from bench.baseline import recipe_precision

    models = [m.strip() for m in args.models.split(",") if m.strip()]
    variants = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = sorted(set(variants) - set(VARIANTS))
    if unknown:
        raise SystemExit(f"unknown variant(s) {', '.join(unknown)}; choose from {', '.join(VARIANTS)}")
    packs = sorted({k for k in _ints(args.packs) if k > 1})
    packed_at = set(_ints(args.packed_resolutions)) if args.packed_resolutions else None
    cpu = device == "cpu"
    warmup = args.warmup if args.warmup is not None else (CPU_DEFAULTS if cpu else GPU_DEFAULTS)[0]
    steps = args.steps if args.steps is not None else (CPU_DEFAULTS if cpu else GPU_DEFAULTS)[1]
    if steps < 1 or warmup < 0:
        raise SystemExit("--steps must be >= 1 and --warmup >= 0")
    cells = []
    for model in models:
        resolutions = args.resolutions or DEFAULT_RESOLUTIONS.get(model_family(model), "native")
        for resolution in _ints(resolutions):
            resolution = resolution or native_resolution(model)
            common = dict(
                model=model,
                resolution=resolution,
                batch=args.batch,
                warmup=warmup,
                steps=steps,
                device=device,
                precision=args.precision,
                images=str(image_root),
            )
            if "baseline" in variants and model_family(model) == "sd3":
                log(f"{model}: no baseline row (diffusers has no textual-inversion recipe for SD 3)")
            elif "baseline" in variants:
                try:  # refuse a setting the recipe cannot run before anything is built
                    recipe_precision(model_family(model), device, args.baseline_precision or None)
                except ValueError as exc:
                    raise SystemExit(f"--baseline-precision: {exc}") from exc
                cells.append(Cell(variant="baseline", concepts=1, baseline_precision=args.baseline_precision, **common))
            common["compile"] = args.compile
            if "sstar" in variants:
                cells.append(Cell(variant="sstar", concepts=1, **common))
            if "sstar-packed" in variants and (packed_at is None or resolution in packed_at):
                cells += [Cell(variant="sstar-packed", concepts=k, **common) for k in packs]
    return cells


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    _quiet_libraries()
    if args.single is not None:
        return _single(args.single)
    if args.show is not None:
        print(format_table(read_csv(args.show)))
        return 0
    import torch

    from inversion.device import resolve_device

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory(prefix="sstar-bench-") as tmp:
        image_root = args.images or Path(tmp) / "images"
        cells = plan(args, str(device), image_root)
        if not cells:
            raise SystemExit("nothing to run")
        size = max([c.resolution for c in cells] + [512])
        make_images(image_root, max(c.concepts for c in cells), size)
        log(
            f"{len(cells)} runs on {device_name(device)}, torch {torch.__version__}, "
            f"{torch.get_num_threads()} threads; images in {image_root}"
        )
        rows = []
        started = time.perf_counter()
        for index, cell in enumerate(cells, 1):
            log(f"[{index}/{len(cells)}] {cell.label()} ({cell.warmup} warm-up + {cell.steps} timed steps)")
            tick = time.perf_counter()
            try:
                row = run_isolated(cell) if args.isolate else run_cell(cell)
            except KeyboardInterrupt:  # e.g. a time limit: keep and print what was measured
                log(f"interrupted during run {index}; the table holds the runs before it")
                break
            except Exception as exc:  # noqa: BLE001 - one failed cell becomes an error row; the others still run
                log(f"  failed: {type(exc).__name__}: {exc}")
                row = {"error": f"{type(exc).__name__}: {exc}"}
            for field_name, value in (
                ("variant", cell.variant),
                ("model", cell.model),
                ("batch", cell.batch),
                ("concepts_per_batch", cell.concepts),
                ("device", device.type),
            ):
                row.setdefault(field_name, value)
            row.setdefault("resolution", cell.resolution or "native")
            rows.append(row)
            fill_ratios(rows)
            write_csv(rows, args.out)  # after every run, so an interrupted benchmark keeps what it measured
            log(
                f"  done in {time.perf_counter() - tick:.1f} s: {row.get('s_per_step', '-')} s/step "
                f"{('error: ' + row['error']) if row.get('error') else ''}"
            )
        log(f"all runs done in {time.perf_counter() - started:.1f} s; CSV: {args.out}")
    print(
        f"device: {device_name(device)}; torch {torch.__version__}; {torch.get_num_threads()} threads; "
        f"{cells[0].warmup} warm-up + {cells[0].steps} timed steps; median s/step",
        flush=True,
    )
    print(format_table(rows))
    return 0


def _quiet_libraries() -> None:
    """Silence the model libraries' informational warnings (dtype casts, embedding resizing)."""
    import logging
    import warnings

    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    os.environ.setdefault("DIFFUSERS_VERBOSITY", "error")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    for name in ("diffusers", "transformers"):
        logging.getLogger(name).setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", category=FutureWarning)


if __name__ == "__main__":
    sys.exit(main())
