"""Measure combinations of learned words in the toy world (issue 15): editability, blends, strength, vectors.

    python -m bench.quality.compose --out DIR [--fast] [--samples 16] [--steps N] [--device cpu]

Each held-out concept of :data:`toyworld.scenes.HELD_OUT` is learned **once** at sstar's defaults
(:func:`bench.quality.run.defaults_config`: 600 fixed steps, batch 4, lr 5e-3; initializer = the shape
word, 4 training images) with 1, 2 and 4 vectors — every word in one pack, which gives each its own
gradient — and the learned words are reused by every measurement. Every prompt is rendered with the
same seeds (``0 … samples-1``) at guidance 3 and measured by the oracle (:mod:`bench.world.oracle`):

1. **editability** — ``a photo of a <tok>`` and, in the world's caption grammar
   (:func:`toyworld.scenes.phrase`), ``a photo of a <tok> on a {black,gray,white} background`` and
   ``a photo of a {small,large} <tok>``; the same edits of the best caption. Per word: the median hue
   error of the unedited prompt and of each edit (target: every edit ≤ 1.5× unedited), background
   accuracy over the background edits and size accuracy over the size edits (targets ≥ 0.9);
2. **blends** — :func:`inversion.embeddings.merge.merge_embeddings` of the two held-out circles (22.5° and
   292.5°) at ``w`` = 0 … 1 (weights ``1-w`` and ``w``) in ``sum`` and ``slerp`` modes: the median hue
   unwrapped along the short arc between the parents, Spearman ρ against ``w`` (target |ρ| ≥ 0.9), the
   ends' hue errors against the parents' own (target: within 2°) and the largest deviation from the
   straight line between the measured ends (the straighter mode has the smaller one);
3. **strength** — ``a photo of a (<tok>:s)`` (A1111's rule, :mod:`inversion.text.weighting`): median hue
   error and share within 10°;
4. **vectors** — part 1's measures for the 1-, 2- and 4-vector words (the paper's trade-off: more
   vectors reconstruct better and edit worse).

Prints one table per part and writes ``edits.csv`` (every prompt measured), ``editability.csv`` (one
row per concept and word: parts 1 and 4), ``blends.csv``, ``strength.csv``, ``tables.txt`` and
``compose.json`` (settings, seconds per phase, load average) to ``--out``. ``--fast`` is a seconds-long
smoke mode (the two circles, a few steps and samples: meaningless numbers).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from bench.quality.run import QualitySettings, defaults_config, given, token_of, write_concept_images
from bench.world import oracle as O
from toyworld import MODEL_DIR
from toyworld.scenes import BACKGROUNDS, BEST_TEMPLATE, HELD_OUT, SIZE_WORDS, HeldOutConcept, circular_distance, phrase

BLEND_MODES: tuple[str, ...] = ("sum", "slerp")
CAPTION = "caption"  # the word column's value for the best caption's rows
EDIT_RATIO_TARGET = 1.5
ACCURACY_TARGET = 0.9
SPEARMAN_TARGET = 0.9
BLEND_END_TOLERANCE = 2.0  # degrees
WITHIN = 10.0  # degrees, the strength part's share


@dataclass(frozen=True)
class ComposeSettings:
    """What to learn and render. ``vectors`` must include 1 (blends and strengths use the 1-vector words)."""

    concepts: tuple[str, ...] = tuple(c.name for c in HELD_OUT)
    samples: int = 16
    steps: int | None = None  # None: TrainConfig's default
    render_steps: int = 20
    guidance: float = 3.0
    vectors: tuple[int, ...] = (1, 2, 4)
    blend_pair: tuple[str, str] = ("held-red-orange-circle", "held-purple-pink-circle")
    blend_weights: tuple[float, ...] = (0.0, 0.25, 0.5, 0.75, 1.0)
    strengths: tuple[float, ...] = (0.5, 1.0, 1.5)
    device: str = "auto"
    train_images: int = 4
    render_batch: int = 64
    threads: int = 1  # torch intra-op threads: on a busy machine one is several times faster (README of the demo)

    def __post_init__(self) -> None:
        known = {c.name for c in HELD_OUT}
        unknown = [name for name in (*self.concepts, *self.blend_pair) if name not in known]
        if unknown:
            raise ValueError(f"concepts must be held-out concepts ({', '.join(sorted(known))}), got {unknown[0]!r}")
        if not set(self.blend_pair) <= set(self.concepts):
            raise ValueError(f"blend_pair {self.blend_pair} must be among concepts {self.concepts}")
        if 1 not in self.vectors or any(v < 1 for v in self.vectors):
            raise ValueError(f"vectors must be counts >= 1 including 1, got {self.vectors}")
        if self.samples < 1:
            raise ValueError(f"samples must be >= 1, got {self.samples}")


FAST = ComposeSettings(
    concepts=("held-red-orange-circle", "held-purple-pink-circle"),
    samples=2,
    steps=3,
    render_steps=3,
    vectors=(1, 2),
    blend_weights=(0.0, 0.5, 1.0),
)


@dataclass(frozen=True)
class Edit:
    """One variant of a prompt: the background and size word it names (``None``: not named)."""

    name: str
    background: str | None = None
    size_word: str | None = None


EDITS: tuple[Edit, ...] = (
    Edit("unedited"),
    *(Edit(f"{b} background", background=b) for b in BACKGROUNDS),
    *(Edit(s, size_word=s) for s in SIZE_WORDS),
)


def word_prompt(token: str, edit: Edit) -> str:
    """``a photo of a <tok>`` with the edit in the world's grammar (``a photo of a small <tok>``,
    ``a photo of a <tok> on a gray background``)."""
    return BEST_TEMPLATE.format(phrase(edit.size_word, None, token, edit.background))


def caption_prompt(concept: HeldOutConcept, edit: Edit) -> str:
    """The concept's best caption with the edit's background or size word in place of its own (a varied
    concept's best caption names neither, so the edit adds it)."""
    size_word = edit.size_word or (None if concept.varied else concept.size_word)
    background = edit.background or (None if concept.varied else concept.background)
    return BEST_TEMPLATE.format(phrase(size_word, concept.hue_word, concept.shape, background))


def word_token(concept: HeldOutConcept, vectors: int) -> str:
    """``<name>`` for the 1-vector word (as ``bench.quality.run``), ``<name-v4>`` for 4 vectors."""
    return token_of(concept) if vectors == 1 else f"<{concept.name}-v{vectors}>"


def measure_edit(images, concept: HeldOutConcept, edit: Edit) -> dict[str, Any]:
    """Oracle measures of one prompt's images against the concept's hue and the edit's background and size."""
    measurement = O.measure(images)
    background = edit.background or concept.background
    size_word = edit.size_word or concept.size_word
    summary = O.summarise(measurement, concept.hue, background)
    sizes = O.size_words(measurement, concept.shape)
    errors = np.where(measurement.has_shape, O.hue_error(measurement.hue, concept.hue), 180.0)
    return {
        "median_hue_error": summary["median_hue_error"],
        "within_10": summary["within_10"],
        "background_accuracy": summary["background_accuracy"],
        "size_accuracy": float(np.mean(sizes == SIZE_WORDS.index(size_word))),
        "shape_found": summary["shape_found"],
        "hue_errors": errors.tolist(),
    }


def summarise_word(rows: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One word's editability from its per-edit rows (:data:`EDITS` order): unedited error, the worst
    edit's ratio, background and size accuracy pooled over their edits (and their worst edit)."""
    by_name = {r["edit"]: r for r in rows}
    unedited = by_name["unedited"]["median_hue_error"]
    edited = [r for r in rows if r["edit"] != "unedited"]
    worst = max(edited, key=lambda r: r["median_hue_error"])
    backgrounds = [r for r in edited if r["edit"].endswith("background")]
    sizes = [r for r in edited if r["edit"] in SIZE_WORDS]
    pooled = float(np.median(np.concatenate([r["hue_errors"] for r in edited])))
    summary = {
        "unedited_hue_error": unedited,
        "unedited_within_10": by_name["unedited"]["within_10"],
        "edited_hue_error": pooled,
        "worst_edit": worst["edit"],
        "worst_edit_hue_error": worst["median_hue_error"],
        "worst_edit_ratio": worst["median_hue_error"] / max(unedited, 1e-9),
        "background_accuracy": float(np.mean([r["background_accuracy"] for r in backgrounds])),
        "background_accuracy_min": min(r["background_accuracy"] for r in backgrounds),
        "size_accuracy": float(np.mean([r["size_accuracy"] for r in sizes])),
        "size_accuracy_min": min(r["size_accuracy"] for r in sizes),
    }
    summary["targets_met"] = bool(
        summary["worst_edit_ratio"] <= EDIT_RATIO_TARGET
        and summary["background_accuracy_min"] >= ACCURACY_TARGET
        and summary["size_accuracy_min"] >= ACCURACY_TARGET
    )
    return summary


def spearman(x: Sequence[float], y: Sequence[float]) -> float:
    """Spearman's rank correlation (ties get their average rank); NaN when either side is constant."""

    def ranks(values: Sequence[float]) -> np.ndarray:
        values = np.asarray(values, dtype=np.float64)
        order = values.argsort(kind="stable")
        result = np.empty(len(values))
        result[order] = np.arange(len(values), dtype=np.float64)
        for value in np.unique(values):
            tied = values == value
            result[tied] = result[tied].mean()
        return result

    rx, ry = ranks(x), ranks(y)
    if rx.std() == 0 or ry.std() == 0:
        return float("nan")
    return float(np.corrcoef(rx, ry)[0, 1])


def unwrap_on_arc(hues: np.ndarray, start: float, end: float) -> np.ndarray:
    """Hues as positions on the short arc from ``start`` to ``end`` (degrees, continuous across 0°/360°):
    ``start`` maps to itself, ``end`` to ``start ± arc``; NaN stays NaN."""
    arc = np.mod(end - start + 180.0, 360.0) - 180.0
    centre = start + arc / 2
    return centre + np.mod(np.asarray(hues, dtype=np.float64) - centre + 180.0, 360.0) - 180.0


def blend_path(points: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """One mode's path (rows with ``w`` and ``arc_hue``, the median unwrapped hue): Spearman ρ against
    ``w`` and the largest deviation from the straight line between the two ends' medians."""
    ws = np.array([p["w"] for p in points])
    arc = np.array([p["arc_hue"] for p in points])
    return {"spearman": spearman(ws, arc), "max_deviation": float(np.nanmax(np.abs(arc - straight_line(points))))}


def straight_line(points: Sequence[dict[str, Any]]) -> np.ndarray:
    """Per point, the unwrapped hue linear interpolation in ``w`` between the first and last points would give."""
    ws = np.array([p["w"] for p in points])
    arc = np.array([p["arc_hue"] for p in points])
    return arc[0] + (ws - ws[0]) / (ws[-1] - ws[0]) * (arc[-1] - arc[0])


# -- the run ------------------------------------------------------------------------------------------


@dataclass
class Learned:
    """The learned words (token → embedding and final loss) and the training time."""

    embeddings: dict[str, Any] = field(default_factory=dict)
    final_loss: dict[str, float] = field(default_factory=dict)
    seconds: float = 0.0


def learn(components, concepts: Sequence[HeldOutConcept], settings: ComposeSettings, work: Path) -> Learned:
    """Every (concept, vector count) word in one pack at the defaults; raises if any word failed."""
    from inversion.config import ConceptConfig
    from inversion.training.trainer import train_concepts

    configs = []
    for i, concept in enumerate(concepts):
        folder = write_concept_images(
            concept, work / concept.name, settings.train_images, components.resolution, seed=i
        )
        configs += [
            ConceptConfig(word_token(concept, v), concept.shape, folder, num_vectors=v, seed=i)
            for v in settings.vectors
        ]
    config = defaults_config(QualitySettings(steps=settings.steps, device=settings.device), components.resolution)
    tick = time.perf_counter()
    results = train_concepts(components, configs, config)
    failed = [f"{r.token}: {r.error}" for r in results if r.error]
    if failed:
        raise RuntimeError(f"training failed for {failed[0]}")
    return Learned(
        {r.token: r.embedding for r in results}, {r.token: r.final_loss for r in results}, time.perf_counter() - tick
    )


def progress_logger(part: str, log: Callable[[str], None]) -> Callable[[int, int], None]:
    """A ``Renderer.render`` progress callback that logs each tenth of ``part`` with the load average."""
    reported = [-1]

    def report(done: int, total: int) -> None:
        tenth = done * 10 // total
        if tenth > reported[0]:
            reported[0] = tenth
            log(f"{part}: {done}/{total} images (load average {os.getloadavg()[0]:.1f})")

    return report


def measure_editability(
    renderer, concepts, learned: Learned, settings: ComposeSettings, log: Callable[[str], None] = print
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Parts 1 and 4: every word's and every best caption's edits; returns (per-prompt rows, per-word rows)."""
    jobs = []  # (concept, word label, vectors or None, edit, prompt)
    for concept in concepts:
        for v in settings.vectors:
            jobs += [(concept, f"{v}v", v, e, word_prompt(word_token(concept, v), e)) for e in EDITS]
        jobs += [(concept, CAPTION, None, e, caption_prompt(concept, e)) for e in EDITS]
    images = renderer.render(
        [j[4] for j in jobs],
        list(range(settings.samples)),
        list(learned.embeddings.values()),
        progress=progress_logger("editability", log),
    )
    edits = [
        {"concept": c.name, "word": word, "vectors": v, "edit": e.name, "prompt": prompt, **measure_edit(strip, c, e)}
        for (c, word, v, e, prompt), strip in zip(jobs, images)
    ]
    words = []
    for concept in concepts:
        for word, v in [*((f"{v}v", v) for v in settings.vectors), (CAPTION, None)]:
            rows = [r for r in edits if r["concept"] == concept.name and r["word"] == word]
            loss = learned.final_loss.get(word_token(concept, v)) if v else None
            words.append(
                {
                    "concept": concept.name,
                    "hue": concept.hue,
                    "word": word,
                    "vectors": v,
                    "final_loss": loss,
                    **summarise_word(rows),
                }
            )
    return edits, words


def measure_blends(
    renderer, pair: tuple[HeldOutConcept, HeldOutConcept], learned: Learned, parent_errors, settings: ComposeSettings
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """Part 2: the pair's blends per mode and weight; returns (per-weight rows, per-mode rows)."""
    from inversion.embeddings.merge import Parent, merge_embeddings

    a, b = pair
    parents = [learned.embeddings[token_of(c)] for c in pair]
    blends = [
        (mode, w, merge_embeddings([Parent(parents[0], 1.0 - w), Parent(parents[1], w)], f"<blend-{mode}-{i}>", mode))
        for mode in BLEND_MODES
        for i, w in enumerate(settings.blend_weights)
    ]
    images = renderer.render(
        [BEST_TEMPLATE.format(e.token) for _, _, e in blends], list(range(settings.samples)), [e for _, _, e in blends]
    )
    rows = []
    for (mode, w, _), strip in zip(blends, images):
        m = O.measure(strip)
        arc = unwrap_on_arc(m.hue[m.has_shape], a.hue, b.hue)
        median = float(np.median(arc)) if len(arc) else float("nan")
        rows.append(
            {
                "mode": mode,
                "w": w,
                "median_hue": median % 360.0,
                "arc_hue": median,
                "error_to_a": float(circular_distance(median, a.hue)),
                "error_to_b": float(circular_distance(median, b.hue)),
                "shape_found": float(m.has_shape.mean()),
            }
        )
    modes = []
    for mode in BLEND_MODES:
        points = [r for r in rows if r["mode"] == mode]
        path = blend_path(points)
        for r, line in zip(points, straight_line(points)):
            r["deviation_from_line"] = abs(r["arc_hue"] - line)
        end_a = abs(points[0]["error_to_a"] - parent_errors[a.name])
        end_b = abs(points[-1]["error_to_b"] - parent_errors[b.name])
        modes.append(
            {
                "mode": mode,
                **path,
                "end_a_vs_parent": end_a,
                "end_b_vs_parent": end_b,
                "targets_met": bool(
                    abs(path["spearman"]) >= SPEARMAN_TARGET and max(end_a, end_b) <= BLEND_END_TOLERANCE
                ),
            }
        )
    return rows, modes


def measure_strength(renderer, concepts, learned: Learned, settings: ComposeSettings) -> list[dict[str, Any]]:
    """Part 3: ``a photo of a (<tok>:s)`` for the 1-vector words."""
    jobs = [(c, s, BEST_TEMPLATE.format(f"({token_of(c)}:{s:g})")) for c in concepts for s in settings.strengths]
    images = renderer.render(
        [p for _, _, p in jobs], list(range(settings.samples)), [learned.embeddings[token_of(c)] for c in concepts]
    )
    rows = []
    for (concept, strength, prompt), strip in zip(jobs, images):
        summary = O.summarise(O.measure(strip), concept.hue, concept.background)
        rows.append(
            {
                "concept": concept.name,
                "strength": strength,
                "prompt": prompt,
                "median_hue_error": summary["median_hue_error"],
                "within_10": summary["within_10"],
                "background_accuracy": summary["background_accuracy"],
                "shape_found": summary["shape_found"],
            }
        )
    return rows


def run_compose(world: Path, settings: ComposeSettings, log: Callable[[str], None] = print) -> dict[str, Any]:
    """Learn the words and measure all four parts; returns the rows of each part and the seconds per phase.

    Runs with ``settings.threads`` torch threads and gives the caller's count back afterwards."""
    from inversion.device import torch_threads

    with torch_threads(settings.threads):
        return _measure_all(world, settings, log)


def _measure_all(world: Path, settings: ComposeSettings, log: Callable[[str], None]) -> dict[str, Any]:
    from inversion.evaluation.render import Renderer, RenderSettings
    from inversion.model.components import load_components

    components = load_components(Path(world))
    renderer = Renderer(
        components,
        RenderSettings(
            steps=settings.render_steps,
            guidance=settings.guidance,
            device=settings.device,
            batch_size=settings.render_batch,
        ),
    )
    named = {c.name: c for c in HELD_OUT}
    concepts = [named[name] for name in settings.concepts]
    seconds: dict[str, float] = {}
    with tempfile.TemporaryDirectory(prefix="sstar-compose-") as tmp:
        learned = learn(components, concepts, settings, Path(tmp))
    seconds["train"] = learned.seconds
    log(
        f"learned {len(learned.embeddings)} words in one pack in {learned.seconds:.0f}s "
        f"(load average {os.getloadavg()[0]:.1f})"
    )
    tick = time.perf_counter()
    edits, words = measure_editability(renderer, concepts, learned, settings, log)
    seconds["editability"] = time.perf_counter() - tick
    log(f"editability measured in {seconds['editability']:.0f}s")
    parent_errors = {w["concept"]: w["unedited_hue_error"] for w in words if w["vectors"] == 1}
    tick = time.perf_counter()
    blends, blend_modes = measure_blends(
        renderer, tuple(named[n] for n in settings.blend_pair), learned, parent_errors, settings
    )
    seconds["blends"] = time.perf_counter() - tick
    log(f"blends measured in {seconds['blends']:.0f}s")
    tick = time.perf_counter()
    strength = measure_strength(renderer, concepts, learned, settings)
    seconds["strength"] = time.perf_counter() - tick
    log(f"strength measured in {seconds['strength']:.0f}s")
    return {
        "edits": edits,
        "words": words,
        "blends": blends,
        "blend_modes": blend_modes,
        "strength": strength,
        "seconds": seconds,
    }


# -- tables and files ---------------------------------------------------------------------------------


def format_table(columns: Sequence[tuple[str, Callable[[dict[str, Any]], str]]], rows: Sequence[dict[str, Any]]) -> str:
    """A plain-text table: one ``(header, cell function)`` per column."""
    cells = [[h for h, _ in columns]] + [[cell(r) for _, cell in columns] for r in rows]
    widths = [max(len(line[i]) for line in cells) for i in range(len(columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)).rstrip() for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _f(key: str, fmt: str) -> Callable[[dict[str, Any]], str]:
    return lambda row: "—" if row.get(key) is None else fmt.format(row[key])


EDITABILITY_COLUMNS = (
    ("concept", _f("concept", "{}")),
    ("word", _f("word", "{}")),
    ("unedited err°", _f("unedited_hue_error", "{:.1f}")),
    ("edited err° (pooled)", _f("edited_hue_error", "{:.1f}")),
    ("worst edit", _f("worst_edit", "{}")),
    ("worst err°", _f("worst_edit_hue_error", "{:.1f}")),
    ("worst ratio", _f("worst_edit_ratio", "{:.2f}")),
    ("bg acc mean/min", lambda r: f"{r['background_accuracy']:.2f}/{r['background_accuracy_min']:.2f}"),
    ("size acc mean/min", lambda r: f"{r['size_accuracy']:.2f}/{r['size_accuracy_min']:.2f}"),
    ("targets", lambda r: "met" if r["targets_met"] else "missed"),
)
VECTOR_COLUMNS = (
    ("concept", _f("concept", "{}")),
    ("vectors", _f("vectors", "{}")),
    ("final loss", _f("final_loss", "{:.4f}")),
    ("unedited err°", _f("unedited_hue_error", "{:.1f}")),
    ("≤10°", _f("unedited_within_10", "{:.2f}")),
    ("edited err°", _f("edited_hue_error", "{:.1f}")),
    ("worst ratio", _f("worst_edit_ratio", "{:.2f}")),
    ("bg acc", _f("background_accuracy", "{:.2f}")),
    ("size acc", _f("size_accuracy", "{:.2f}")),
)
BLEND_COLUMNS = (
    ("mode", _f("mode", "{}")),
    ("w", _f("w", "{:.2f}")),
    ("median hue°", _f("median_hue", "{:.1f}")),
    ("on arc°", _f("arc_hue", "{:+.1f}")),
    ("err to A°", _f("error_to_a", "{:.1f}")),
    ("err to B°", _f("error_to_b", "{:.1f}")),
    ("off line°", _f("deviation_from_line", "{:.1f}")),
    ("shape", _f("shape_found", "{:.2f}")),
)
BLEND_MODE_COLUMNS = (
    ("mode", _f("mode", "{}")),
    ("Spearman ρ", _f("spearman", "{:+.2f}")),
    ("|end A − parent A|°", _f("end_a_vs_parent", "{:.1f}")),
    ("|end B − parent B|°", _f("end_b_vs_parent", "{:.1f}")),
    ("max off line°", _f("max_deviation", "{:.1f}")),
    ("targets", lambda r: "met" if r["targets_met"] else "missed"),
)
STRENGTH_COLUMNS = (
    ("concept", _f("concept", "{}")),
    ("strength", _f("strength", "{:g}")),
    ("median err°", _f("median_hue_error", "{:.1f}")),
    ("≤10°", _f("within_10", "{:.2f}")),
    ("bg acc", _f("background_accuracy", "{:.2f}")),
    ("shape", _f("shape_found", "{:.2f}")),
)


def format_tables(result: dict[str, Any]) -> str:
    """The four parts' tables, each under a title line."""
    words = result["words"]
    one = [w for w in words if w["vectors"] in (1, None)]
    straighter = min(result["blend_modes"], key=lambda m: m["max_deviation"])["mode"]
    parts = [
        ("1. editability (1-vector word and best caption)", format_table(EDITABILITY_COLUMNS, one)),
        (
            "2. blends of the two held-out circles (A = first, B = second; weights 1-w, w)",
            format_table(BLEND_COLUMNS, result["blends"])
            + "\n\n"
            + format_table(BLEND_MODE_COLUMNS, result["blend_modes"])
            + f"\nstraighter path: {straighter}",
        ),
        ("3. strength (<tok>:s)", format_table(STRENGTH_COLUMNS, result["strength"])),
        ("4. vectors", format_table(VECTOR_COLUMNS, [w for w in words if w["vectors"]])),
    ]
    return "\n\n".join(f"{title}\n{table}" for title, table in parts)


def _write_csv(path: Path, rows: Sequence[dict[str, Any]]) -> None:
    fields = [k for k in rows[0] if k != "hue_errors"]
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(handle, fieldnames=fields, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)


def write_results(result: dict[str, Any], out: Path, meta: dict[str, Any]) -> None:
    """The CSVs, the tables and ``compose.json`` (meta and every row, per-sample hue errors included)."""
    out.mkdir(parents=True, exist_ok=True)
    for name, key in (("edits", "edits"), ("editability", "words"), ("blends", "blends"), ("strength", "strength")):
        _write_csv(out / f"{name}.csv", result[key])
    (out / "tables.txt").write_text(format_tables(result) + "\n", encoding="utf-8")
    (out / "compose.json").write_text(json.dumps({**meta, **result}, indent=1, default=float) + "\n", encoding="utf-8")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.compose", description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, default=MODEL_DIR)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--samples", type=int, default=None, help="images per prompt (seeds 0 … samples-1)")
    p.add_argument("--steps", type=int, default=None, help="training steps (default: TrainConfig's)")
    p.add_argument("--render-steps", type=int, default=None)
    p.add_argument("--device", default=None)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads (default 1)")
    p.add_argument("--fast", action="store_true", help="smoke mode: the two circles, a few steps and samples")
    args = p.parse_args(argv)
    from inversion.cli import quiet_libraries

    quiet_libraries()
    overrides = given(
        samples=args.samples,
        steps=args.steps,
        render_steps=args.render_steps,
        device=args.device,
        threads=args.threads,
    )
    settings = replace(FAST if args.fast else ComposeSettings(), **overrides)
    load_before = os.getloadavg()
    tick = time.perf_counter()
    result = run_compose(args.world, settings, log=lambda message: print(message, file=sys.stderr, flush=True))
    print(format_tables(result))
    meta = {
        "command": " ".join(["python -m bench.quality.compose", *(argv if argv is not None else sys.argv[1:])]),
        "settings": asdict(settings),
        "total_seconds": time.perf_counter() - tick,
        "load_average_before": load_before,
        "load_average_after": os.getloadavg(),
    }
    write_results(result, args.out, meta)
    print(
        f"wrote {args.out} ({meta['total_seconds']:.0f}s; load average {load_before[0]:.1f} → "
        f"{meta['load_average_after'][0]:.1f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
