"""Measure issue 22's training options in the toy world: steps to plateau and to quality, hue error, editability.

    python -m bench.quality.options --out DIR [--sets original,varied]
        [--combos word-free,cross-free,word-vocab,cross-vocab] [--rule 25/3/50] [--samples 32]
        [--curve-every 10] [--curve-samples 16] [--concepts 4] [--device cpu] [--threads 1]

Cells are (held-out set, combination of ``init_mode``/``norm_mode``, plateau rule, concept). Per set
(:data:`SETS`: ``original`` = :data:`toyworld.scenes.HELD_OUT`, 4 training images that differ only in
position; ``varied`` = :data:`toyworld.scenes.HELD_OUT_VARIED`, the same hues and shapes on images whose
background and size vary) and combination, the set's missing concepts are learned in one pack (a packed
concept trains as it would alone) with the initializer = the shape word, ``stop="plateau"`` under the given
rule (``every/patience/min_steps``; min_delta stays 0.01) and the default cap of 600 steps. Then:

1. **steps to plateau** — the step the rule stopped at (``stop_reason``: plateau or max_steps);
2. **steps to quality** — every ``--curve-every`` steps (the trainer's checkpoints) ``--curve-samples`` images
   of ``a photo of a <tok>`` (seeds 1000…) are measured by the oracle; the first checkpoint whose median hue
   error is within 10 % (or 0.5°) of the curve's last point (the stop step) — the rule of
   :meth:`bench.quality.run.Curve.time_to_quality`, the same for every option;
3. **the verdicts**, ``--samples`` images each (seeds 0…): hue error of ``a photo of a <tok>`` and its ratio to
   the best caption's (for the varied set the best caption names no background or size:
   ``a photo of a orange circle``); **editability** with :mod:`bench.quality.compose`'s edits (three
   backgrounds, two sizes): mean background accuracy over the background edits, mean size accuracy over the
   size edits, hue accuracy = the share of all edited samples within 10° of the concept's hue, and the worst
   edit's hue-error ratio; **composition with strength** (compose's part 3): ``a photo of a (<tok>:s)`` at
   ``s`` = 0.5 and 1.5, median hue error.

Every cell appends one row to ``DIR/cells.csv`` as soon as its set and combination are measured, and a run
skips the cells already there, so the table can be built in parts (``--combos`` a few at a time, killed
and restarted). The best captions' verdicts are measured once per set into ``DIR/captions.csv``.
``DIR/table.md`` is rewritten from both files at the end of every run (:func:`summary_table`).

The options reach :class:`inversion.config.TrainConfig` as ``init_mode`` and ``norm_mode``; while the
trainer does not have them yet, only ``word-free`` (today's behaviour) runs and the others are refused.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.compose import EDITS, caption_prompt, measure_edit, progress_logger, summarise_word, word_prompt
from bench.quality.run import Curve, given, token_of, write_concept_images
from toyworld import MODEL_DIR
from toyworld.scenes import BEST_TEMPLATE, HELD_OUT, HELD_OUT_VARIED, HeldOutConcept

SETS: dict[str, tuple[HeldOutConcept, ...]] = {"original": HELD_OUT, "varied": HELD_OUT_VARIED}
#: combination name → (init_mode, norm_mode)
COMBOS: dict[str, tuple[str, str]] = {
    "word-free": ("word", "free"),
    "cross-free": ("cross", "free"),
    "word-vocab": ("word", "vocab"),
    "cross-vocab": ("cross", "vocab"),
}
DEFAULT_COMBO = "word-free"
WITHIN = 10.0  # degrees: a sample's hue is right
CELLS_FILE, CAPTIONS_FILE, TABLE_FILE = "cells.csv", "captions.csv", "table.md"
CELL_KEY = ("set", "combo", "rule", "concept")


def plateau_rule(text: str) -> dict[str, int]:
    """``"25/3/50"`` → TrainConfig's ``stop_every``, ``stop_patience``, ``stop_min_steps``."""
    try:
        every, patience, minimum = (int(part) for part in text.split("/"))
    except ValueError:
        raise ValueError(f"rule must be every/patience/min_steps, e.g. 25/3/50, got {text!r}") from None
    return {"stop_every": every, "stop_patience": patience, "stop_min_steps": minimum}


@dataclass(frozen=True)
class OptionsSettings:
    sets: tuple[str, ...] = tuple(SETS)
    combos: tuple[str, ...] = (DEFAULT_COMBO,)
    rule: str = "25/3/50"  # plateau: check every / patience / min steps
    concepts: int = 4  # the first N of each set
    samples: int = 32
    steps: int | None = None  # the cap (None: TrainConfig's)
    curve_every: int = 10
    curve_samples: int = 16
    strengths: tuple[float, ...] = (0.5, 1.5)
    render_steps: int = 15
    sampler: str = "dpm"
    guidance: float = 3.0
    device: str = "auto"
    threads: int = 1
    train_images: int = 4
    render_batch: int = 64

    def __post_init__(self) -> None:
        unknown = [s for s in self.sets if s not in SETS] + [c for c in self.combos if c not in COMBOS]
        if unknown:
            raise ValueError(
                f"unknown set or combination {unknown[0]!r} (sets: {', '.join(SETS)}; "
                f"combinations: {', '.join(COMBOS)})"
            )
        plateau_rule(self.rule)

    @property
    def seeds(self) -> list[int]:
        return list(range(self.samples))


FAST = OptionsSettings(
    sets=("varied",),
    rule="2/1/2",
    concepts=1,
    samples=2,
    steps=4,
    curve_every=2,
    curve_samples=2,
    render_steps=2,
)


def train_config(settings: OptionsSettings, combo: str, resolution: int):
    """TrainConfig at the defaults with plateau stopping under ``settings.rule``, checkpoints at the curve's
    interval and the combination's ``init_mode``/``norm_mode`` (passed only once TrainConfig has them)."""
    from inversion.config import TrainConfig

    init_mode, norm_mode = COMBOS[combo]
    options: dict[str, Any] = {"init_mode": init_mode, "norm_mode": norm_mode}
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    if not set(options) <= known:
        if combo != DEFAULT_COMBO:
            raise SystemExit(f"TrainConfig has no init_mode/norm_mode yet: only {DEFAULT_COMBO} can run, not {combo}")
        options = {}
    rule = plateau_rule(settings.rule)
    config = TrainConfig(
        resolution=resolution,
        device=settings.device,
        stop="plateau",
        stop_every=rule["stop_every"],
        stop_patience=rule["stop_patience"],
        stop_min_steps=rule["stop_min_steps"],
        checkpoint_every=settings.curve_every,
        **options,
    )
    return config if settings.steps is None else replace(config, steps=settings.steps)


# -- files --------------------------------------------------------------------------------------------


def read_rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def append_rows(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    """Append ``rows`` to a CSV (header from the first row when the file is new, else the file's own);
    flushed at once."""
    if not rows:
        return
    new = not path.is_file()
    fields = list(rows[0]) if new else next(csv.reader(path.open(newline="", encoding="utf-8")))
    with path.open("a", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        if new:
            writer.writeheader()
        writer.writerows(rows)


def done_keys(path: Path, key: Sequence[str]) -> set[tuple[str, ...]]:
    return {tuple(row[k] for k in key) for row in read_rows(path)}


# -- measuring ----------------------------------------------------------------------------------------


def edit_verdicts(
    strips: Sequence[Sequence[Any]], concept: HeldOutConcept, prompts_per_edit: Sequence[Any]
) -> dict[str, Any]:
    """The editability verdicts of one word (or caption) from its images per edit (:data:`EDITS` order)."""
    rows = [{"edit": e.name, **measure_edit(strip, concept, e)} for e, strip in zip(prompts_per_edit, strips)]
    summary = summarise_word(rows)
    edited = np.concatenate([r["hue_errors"] for r in rows if r["edit"] != "unedited"])
    return {
        "hue_error": summary["unedited_hue_error"],
        "within_10": summary["unedited_within_10"],
        "edited_hue_error": summary["edited_hue_error"],
        "edited_hue_accuracy": float(np.mean(edited <= WITHIN)),
        "worst_edit": summary["worst_edit"],
        "worst_edit_ratio": summary["worst_edit_ratio"],
        "background_accuracy": summary["background_accuracy"],
        "size_accuracy": summary["size_accuracy"],
    }


def measure_captions(renderer, set_name: str, concepts, settings: OptionsSettings, log) -> list[dict[str, Any]]:
    """The best caption's verdicts (edited the same way) for each concept of a set."""
    prompts = [caption_prompt(c, e) for c in concepts for e in EDITS]
    images = renderer.render(prompts, settings.seeds, progress=progress_logger(f"{set_name} captions", log))
    rows = []
    for i, concept in enumerate(concepts):
        strips = images[i * len(EDITS) : (i + 1) * len(EDITS)]
        verdicts = edit_verdicts(strips, concept, EDITS)
        rows.append({"set": set_name, "concept": concept.name, "caption": concept.best_caption(), **verdicts})
    return rows


def learn_pack(components, renderer, concepts, combo: str, settings: OptionsSettings, work: Path, log):
    """Learn ``concepts`` in one pack under the combination, measuring each word's curve at its checkpoints;
    returns (results, curves by token, pack seconds)."""
    from inversion.config import ConceptConfig
    from inversion.training.trainer import train_concepts

    config = train_config(settings, combo, components.resolution)
    configs, curves, dirs = [], {}, []
    for concept in concepts:
        seed = seed_of(concept)
        folder = write_concept_images(concept, work / concept.name, settings.train_images, components.resolution, seed)
        configs.append(ConceptConfig(token_of(concept), concept.shape, folder, seed=seed))
        curves[token_of(concept)] = Curve(renderer, concept, list(range(1000, 1000 + settings.curve_samples)))
        dirs.append(work / f"{combo}-{concept.name}")
    tick = time.perf_counter()
    results = train_concepts(
        components,
        configs,
        config,
        output_dirs=dirs,
        on_checkpoint=lambda token, path: curves[token].on_checkpoint(token, path),
    )
    failed = [f"{r.token}: {r.error}" for r in results if r.error]
    if failed:
        raise RuntimeError(f"training failed for {failed[0]}")
    for result in results:
        curves[result.token].measure(result.steps, result.embedding.vectors, train_seconds=0.0)
    seconds = time.perf_counter() - tick
    log(f"{combo}: learned {len(results)} words in {seconds:.0f}s (load average {os.getloadavg()[0]:.1f})")
    return results, curves, seconds


def seed_of(concept: HeldOutConcept) -> int:
    """The concept's index in its set: the training images' and the concept's seed (as bench.quality.run)."""
    for concepts in SETS.values():
        names = [c.name for c in concepts]
        if concept.name in names:
            return names.index(concept.name)
    raise ValueError(f"{concept.name} is in no held-out set")


def word_verdicts(renderer, results, concepts, settings: OptionsSettings, log) -> list[dict[str, Any]]:
    """Per word: the unedited and edited verdicts and the strengths' hue errors (one render call)."""
    from bench.world import oracle as O

    per_word = len(EDITS) + len(settings.strengths)
    prompts = []
    for concept in concepts:
        token = token_of(concept)
        prompts += [word_prompt(token, e) for e in EDITS]
        prompts += [BEST_TEMPLATE.format(f"({token}:{s:g})") for s in settings.strengths]
    images = renderer.render(
        prompts, settings.seeds, [r.embedding for r in results], progress=progress_logger("verdicts", log)
    )
    rows = []
    for i, concept in enumerate(concepts):
        strips = images[i * per_word : (i + 1) * per_word]
        row = edit_verdicts(strips[: len(EDITS)], concept, EDITS)
        for strength, strip in zip(settings.strengths, strips[len(EDITS) :]):
            summary = O.summarise(O.measure(strip), concept.hue, concept.background)
            row[f"strength_{strength:g}_hue_error"] = summary["median_hue_error"]
        rows.append(row)
    return rows


def cell_rows(set_name, combo, concepts, results, curves, verdicts, captions, settings, seconds) -> list[dict]:
    init_mode, norm_mode = COMBOS[combo]
    rows = []
    for concept, result, verdict in zip(concepts, results, verdicts):
        curve = curves[result.token]
        quality = curve.time_to_quality()
        caption = captions[(set_name, concept.name)]
        rows.append(
            {
                "set": set_name,
                "combo": combo,
                "rule": settings.rule,
                "concept": concept.name,
                "init_mode": init_mode,
                "norm_mode": norm_mode,
                "steps_to_plateau": result.steps,
                "stop_reason": result.stop_reason,
                "steps_to_quality": quality["steps"],
                "curve_final_error": quality["final_error"],
                **verdict,
                "caption_hue_error": float(caption["hue_error"]),
                "hue_error_ratio": verdict["hue_error"] / max(float(caption["hue_error"]), 1e-9),
                "final_loss": result.final_loss,
                "pack_train_seconds": round(seconds, 1),
                "load_average": round(os.getloadavg()[0], 1),
                "samples": settings.samples,
                "curve": json.dumps([[p["step"], round(p["median_hue_error"], 2)] for p in curve.points]),
            }
        )
    return rows


def run_options(world: Path, out: Path, settings: OptionsSettings, log: Callable[[str], None] = print) -> int:
    """Measure every missing cell of ``settings``; returns how many cells were measured."""
    from inversion.device import torch_threads

    with torch_threads(settings.threads):
        return _run_cells(world, out, settings, log)


def _run_cells(world: Path, out: Path, settings: OptionsSettings, log: Callable[[str], None]) -> int:
    from inversion.evaluation.render import Renderer, RenderSettings
    from inversion.model.components import load_components

    out.mkdir(parents=True, exist_ok=True)
    components = load_components(Path(world))
    renderer = Renderer(
        components,
        RenderSettings(
            steps=settings.render_steps,
            guidance=settings.guidance,
            device=settings.device,
            batch_size=settings.render_batch,
            sampler=settings.sampler,  # type: ignore[arg-type]
        ),
    )
    measured = 0
    for set_name in settings.sets:
        concepts = list(SETS[set_name][: settings.concepts])
        missing = [c for c in concepts if (set_name, c.name) not in done_keys(out / CAPTIONS_FILE, ("set", "concept"))]
        append_rows(
            out / CAPTIONS_FILE, measure_captions(renderer, set_name, missing, settings, log) if missing else []
        )
        captions = {(r["set"], r["concept"]): r for r in read_rows(out / CAPTIONS_FILE)}
        for combo in settings.combos:
            done = done_keys(out / CELLS_FILE, CELL_KEY)
            todo = [c for c in concepts if (set_name, combo, settings.rule, c.name) not in done]
            if not todo:
                log(f"{set_name} {combo} {settings.rule}: every cell done, skipped")
                continue
            train_config(settings, combo, components.resolution)  # refuses an unknown option before any work
            with tempfile.TemporaryDirectory(prefix="sstar-options-") as tmp:
                results, curves, seconds = learn_pack(components, renderer, todo, combo, settings, Path(tmp), log)
            verdicts = word_verdicts(renderer, results, todo, settings, log)
            rows = cell_rows(set_name, combo, todo, results, curves, verdicts, captions, settings, seconds)
            append_rows(out / CELLS_FILE, rows)
            measured += len(rows)
            log(f"{set_name} {combo} {settings.rule}: {len(rows)} cells written")
    return measured


# -- the table ----------------------------------------------------------------------------------------


SUMMARY_HEADER = (
    "set",
    "combination",
    "rule",
    "concepts",
    "steps to plateau (median; range)",
    "steps to quality (median; range)",
    "steps to settle (median; range)",
    "hue err° (median)",
    "ratio to best caption (max; ≤ 0.25)",
    "bg acc",
    "size acc",
    "hue acc under edits",
    "worst edit ratio (max)",
    "strength 0.5 / 1.5 err° (median)",
)
CELL_HEADER = (
    "set",
    "combination",
    "rule",
    "concept",
    "plateau step",
    "quality step",
    "settle step",
    "hue err°",
    "caption err°",
    "ratio",
    "bg acc",
    "size acc",
    "hue acc edits",
    "worst edit (ratio)",
    "s=0.5 / 1.5 err°",
)
CAPTION_HEADER = (
    "set",
    "concept",
    "best caption (words only)",
    "hue err°",
    "bg acc",
    "size acc",
    "hue acc under edits",
)


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = [header, ["---"] * len(header), *rows]
    return "\n".join("| " + " | ".join(line) + " |" for line in lines)


def summary_table(cells: Sequence[dict[str, str]], captions: Sequence[dict[str, str]]) -> str:
    """Markdown: one line per (set, combination, rule) over its concepts, the best captions, then one line per cell."""
    groups: dict[tuple[str, str, str], list[dict[str, str]]] = {}
    for row in cells:
        groups.setdefault((row["set"], row["combo"], row["rule"]), []).append(row)
    summary = []
    for (set_name, combo, rule), rows in groups.items():
        col = _column_of(rows)
        ratio = col("hue_error_ratio")
        summary.append(
            [
                set_name,
                combo,
                rule,
                str(len(rows)),
                _median_range(col("steps_to_plateau")),
                _median_range(col("steps_to_quality")),
                _median_range(np.array([steps_to_settle(r["curve"]) for r in rows])),
                f"{np.median(col('hue_error')):.1f}",
                f"{ratio.max():.2f}; {int((ratio <= 0.25).sum())}/{len(rows)}",
                f"{col('background_accuracy').mean():.2f}",
                f"{col('size_accuracy').mean():.2f}",
                f"{col('edited_hue_accuracy').mean():.2f}",
                f"{col('worst_edit_ratio').max():.2f}",
                f"{np.median(col('strength_0.5_hue_error')):.1f} / {np.median(col('strength_1.5_hue_error')):.1f}",
            ]
        )
    caption_rows = [
        [
            r["set"],
            r["concept"],
            f"`{r['caption']}`",
            *_floats(r, "hue_error", "background_accuracy", "size_accuracy"),
            f"{float(r['edited_hue_accuracy']):.2f}",
        ]
        for r in captions
    ]
    return "\n\n".join(
        [
            markdown(SUMMARY_HEADER, summary),
            markdown(CAPTION_HEADER, caption_rows),
            markdown(CELL_HEADER, [_cell_line(r) for r in cells]),
        ]
    )


def _cell_line(r: dict[str, str]) -> list[str]:
    return [
        r["set"],
        r["combo"],
        r["rule"],
        r["concept"],
        r["steps_to_plateau"],
        r["steps_to_quality"],
        str(steps_to_settle(r["curve"])),
        *_floats(r, "hue_error", "caption_hue_error"),
        f"{float(r['hue_error_ratio']):.2f}",
        f"{float(r['background_accuracy']):.2f}",
        f"{float(r['size_accuracy']):.2f}",
        f"{float(r['edited_hue_accuracy']):.2f}",
        f"{r['worst_edit']} ({float(r['worst_edit_ratio']):.2f})",
        f"{float(r['strength_0.5_hue_error']):.1f} / {float(r['strength_1.5_hue_error']):.1f}",
    ]


def _floats(row: dict[str, str], *keys: str) -> list[str]:
    """Hue errors with one decimal, accuracies with two."""
    return [f"{float(row[k]):.1f}" if k.endswith("error") else f"{float(row[k]):.2f}" for k in keys]


def steps_to_settle(curve: str) -> int:
    """The first checkpoint from which every later point of a cell's curve (its ``curve`` column: JSON
    ``[[step, error], …]``) stays within 10 % (or 0.5°) of the last one: a stricter reading of steps to
    quality that a lucky early point on a noisy curve cannot satisfy."""
    points = json.loads(curve)
    final = points[-1][1]
    settled = points[-1][0]
    for step, error in reversed(points):
        if error > max(final * 1.1, final + 0.5):
            break
        settled = step
    return int(settled)


def _column_of(rows: Sequence[dict[str, str]]) -> Callable[[str], np.ndarray]:
    return lambda key: np.array([float(r[key]) for r in rows])


def _median_range(values: np.ndarray) -> str:
    return f"{np.median(values):g}; {values.min():g}–{values.max():g}"


def write_table(out: Path) -> str:
    table = summary_table(read_rows(out / CELLS_FILE), read_rows(out / CAPTIONS_FILE))
    (out / TABLE_FILE).write_text(table + "\n", encoding="utf-8")
    return table


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.options", description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, default=MODEL_DIR)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--sets", default=None, help=f"comma-separated, of {', '.join(SETS)}")
    p.add_argument("--combos", default=None, help=f"comma-separated, of {', '.join(COMBOS)}")
    p.add_argument("--rule", default=None, help="plateau rule every/patience/min_steps (default 25/3/50)")
    p.add_argument("--concepts", type=int, default=None, help="the first N concepts of each set")
    p.add_argument("--samples", type=int, default=None, help="images per verdict")
    p.add_argument("--steps", type=int, default=None, help="the step cap (default: TrainConfig's)")
    p.add_argument("--curve-every", type=int, default=None)
    p.add_argument("--curve-samples", type=int, default=None)
    p.add_argument("--render-steps", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    p.add_argument("--fast", action="store_true", help="smoke mode: one varied concept, a few steps and samples")
    args = p.parse_args(argv)
    from inversion.cli import quiet_libraries

    quiet_libraries()
    overrides = given(
        sets=tuple(args.sets.split(",")) if args.sets else None,
        combos=tuple(args.combos.split(",")) if args.combos else None,
        rule=args.rule,
        concepts=args.concepts,
        samples=args.samples,
        steps=args.steps,
        curve_every=args.curve_every,
        curve_samples=args.curve_samples,
        render_steps=args.render_steps,
        device=args.device,
        threads=args.threads,
    )
    settings = replace(FAST if args.fast else OptionsSettings(), **overrides)
    tick, load = time.perf_counter(), os.getloadavg()[0]
    measured = run_options(args.world, args.out, settings, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(write_table(args.out))
    print(
        f"{measured} cells measured into {args.out / CELLS_FILE} in {time.perf_counter() - tick:.0f}s "
        f"(load average {load:.1f} → {os.getloadavg()[0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
