"""Measure Textual Inversion quality in the toy world: does the learned word beat the best caption?

    python -m bench.quality.run --world toyworld/weights --out /tmp/quality [--concepts 4]
        [--samples 32] [--steps 600] [--fast]

For each held-out concept of :data:`bench.world.generate.HELD_OUT` (a hue half-way between two hue
words, a fixed shape, size and background):

1. write 4 training images of it to a temporary folder and learn a word with our trainer at its
   **defaults** (:class:`inversion.config.TrainConfig`; resolution = the world's 32 px). The
   initializer is the concept's **shape word** (``circle``…): it says nothing about hue or
   background, so whatever the word learns about them is the inversion's doing; it is also the
   class word of CLIP text similarity;
2. render ``--samples`` images of ``a photo of a <token>`` and of the concept's best caption
   (``a photo of a large orange circle on a white background``) with the same seeds, guidance 3,
   through :func:`inversion.evaluation.scoring.score_concept` (which renders with
   :class:`inversion.evaluation.render.Renderer`
   and scores with the world CLIP exactly as the flows do: image similarity, text similarity,
   words-only baseline, inversion lift), and measure both sets with the oracle: median hue error,
   share within 10°, background accuracy;
3. **time to quality**: every ``--curve-every`` steps (the trainer's ``on_checkpoint`` hook) render
   ``--curve-samples`` images of the learned word and record the oracle's median hue error — for our
   defaults and for the standard recipe's settings (lr 5e-4 scaled by the batch of 4 = 2e-3,
   constant schedule, weight decay 1e-2: all expressible through TrainConfig). Time to quality is
   the first checkpoint whose error is within 10% (or 0.5°) of the run's final error, in steps and
   training seconds (rendering time excluded).

Prints one table and writes ``quality.json`` and ``quality.csv`` to ``--out``. ``--fast`` is a
seconds-long smoke mode (meaningless numbers).
"""

from __future__ import annotations

import argparse
import csv
import json
import shutil
import sys
import tempfile
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch

from bench.world import generate as G
from bench.world import oracle as O
from bench.world.configs import WORLD_CLIP_ARCH
from toyworld import MODEL_DIR

PROMPT = "a photo of a {}"
CLIP_FILE = Path("clip") / f"{WORLD_CLIP_ARCH}.safetensors"


@dataclass(frozen=True)
class QualitySettings:
    concepts: int = 4
    samples: int = 32
    steps: int | None = None  # None: TrainConfig's default
    render_steps: int = 25
    guidance: float = 3.0
    curve_every: int = 50
    curve_samples: int = 16
    recipe_curve: bool = True
    clip: bool = True
    pack: bool = False  # train all concepts in one pack (no curves): the regression test's cheap mode
    device: str = "auto"
    train_images: int = 4
    stop: str = "fixed"  # TrainConfig.stop: fixed (to the cap) or plateau (inversion.training.stopping)


FAST = QualitySettings(concepts=2, samples=4, steps=6, render_steps=4, curve_every=3, curve_samples=2)


def defaults_config(settings: QualitySettings, resolution: int):
    from inversion.config import TrainConfig

    base = TrainConfig(resolution=resolution, device=settings.device, stop=settings.stop)
    return base if settings.steps is None else replace(base, steps=settings.steps)


def recipe_config(settings: QualitySettings, resolution: int):
    """The standard recipe's optimiser settings (diffusers example script): lr 5e-4 × batch, constant, wd 1e-2."""
    return replace(
        defaults_config(settings, resolution),
        lr=5e-4,
        scale_lr=True,
        batch_size=4,
        lr_schedule="constant",
        lr_warmup_steps=0,
        weight_decay=1e-2,
    )


def token_of(concept: G.HeldOutConcept) -> str:
    return f"<{concept.name}>"


def write_concept_images(concept: G.HeldOutConcept, folder: Path, count: int, resolution: int, seed: int) -> Path:
    from PIL import Image

    folder.mkdir(parents=True, exist_ok=True)
    for i, image in enumerate(G.concept_images(concept, count, seed=seed, resolution=resolution)):
        Image.fromarray(image).save(folder / f"{i:02d}.png")
    return folder


def oracle_summary(images, concept: G.HeldOutConcept) -> dict[str, float]:
    return O.summarise(O.measure(images), concept.hue, concept.background)


class Curve:
    """Oracle hue error of the learned word at the trainer's checkpoints (rendering time excluded)."""

    def __init__(self, renderer, concept: G.HeldOutConcept, seeds: list[int]) -> None:
        self.renderer, self.concept, self.seeds = renderer, concept, seeds
        self.points: list[dict[str, float]] = []
        self.started = time.perf_counter()
        self.eval_seconds = 0.0

    def measure(self, step: int, vectors: torch.Tensor, train_seconds: float | None = None) -> None:
        from inversion.embeddings.formats import LearnedEmbedding

        if self.points and self.points[-1]["step"] == step:
            return  # the trainer hands over a finished concept's final checkpoint: the end is measured once
        tick = time.perf_counter()
        if train_seconds is None:
            train_seconds = tick - self.started - self.eval_seconds
        token = token_of(self.concept)
        images = self.renderer.render([PROMPT.format(token)], self.seeds, [LearnedEmbedding(token, vectors)])[0]
        summary = oracle_summary(images, self.concept)
        self.points.append(
            {"step": step, "train_seconds": round(train_seconds, 3), "median_hue_error": summary["median_hue_error"]}
        )
        self.eval_seconds += time.perf_counter() - tick

    def on_checkpoint(self, token: str, path: Path) -> None:
        from inversion.training.checkpoint import read_checkpoint

        checkpoint = read_checkpoint(path)
        self.measure(checkpoint.step, checkpoint.vectors)

    def time_to_quality(self) -> dict[str, Any]:
        if not self.points:
            return {}
        final = self.points[-1]["median_hue_error"]
        for point in self.points:
            if point["median_hue_error"] <= max(final * 1.1, final + 0.5):
                return {"steps": point["step"], "train_seconds": point["train_seconds"], "final_error": final}
        return {
            "steps": self.points[-1]["step"],
            "train_seconds": self.points[-1]["train_seconds"],
            "final_error": final,
        }


def learn_with_curve(components, renderer, concept_cfg, concept, config, work: Path, settings: QualitySettings):
    """Train one concept, measuring the curve at every ``curve_every`` steps; returns (result, curve)."""
    from inversion.text.tokens import initial_vectors
    from inversion.training.trainer import train_concepts

    curve = Curve(renderer, concept, list(range(1000, 1000 + settings.curve_samples)))
    start = initial_vectors(components.text_encoder, components.tokenizer, concept_cfg.initializer, 1)
    curve.measure(0, start, train_seconds=0.0)
    curve.started, curve.eval_seconds = time.perf_counter(), 0.0
    out = work / f"{concept_cfg.slug}-{config.lr:g}"
    shutil.rmtree(out, ignore_errors=True)
    config = replace(config, checkpoint_every=settings.curve_every)
    (result,) = train_concepts(components, [concept_cfg], config, output_dirs=[out], on_checkpoint=curve.on_checkpoint)
    if result.error:
        raise RuntimeError(result.error)
    curve.measure(result.steps, result.embedding.vectors, train_seconds=result.seconds)
    return result, curve


def evaluate(renderer, clip, concept: G.HeldOutConcept, embedding, reference, settings: QualitySettings) -> dict:
    """Render learned word and best caption over the same seeds; oracle and (optionally) CLIP scores."""
    seeds = list(range(settings.samples))
    best = concept.best_caption()
    row: dict[str, Any] = {}
    if clip is not None:
        from inversion.evaluation.scoring import ScoreSettings, score_concept

        scores = score_concept(
            renderer,
            clip,
            embedding,
            reference,
            concept.shape,
            captions=[best],
            settings=ScoreSettings(prompts=(PROMPT,), seeds=tuple(seeds)),
        )
        learned_images, caption_images = scores.learned.images[0], scores.baselines[0].images[0]
        row.update(
            clip_image_similarity=scores.image_similarity,
            clip_text_similarity=scores.text_similarity,
            clip_baseline_image_similarity=scores.baseline_image_similarity,
            clip_baseline_text_similarity=scores.baseline_text_similarity,
            clip_inversion_lift=scores.inversion_lift,
            clip_text_lift=scores.text_lift,
        )
    else:
        learned_images, caption_images = renderer.render([PROMPT.format(embedding.token), best], seeds, [embedding])
    learned = oracle_summary(learned_images, concept)
    caption = oracle_summary(caption_images, concept)
    row.update({f"learned_{k}": v for k, v in learned.items() if k != "n"})
    row.update({f"caption_{k}": v for k, v in caption.items() if k != "n"})
    row["oracle_lift_deg"] = caption["median_hue_error"] - learned["median_hue_error"]
    row["hue_error_ratio"] = learned["median_hue_error"] / max(caption["median_hue_error"], 1e-9)
    if clip is not None:
        row["clip_and_oracle_agree"] = bool((row["clip_inversion_lift"] > 0) == (row["oracle_lift_deg"] > 0))
    row["strips"] = (learned_images, caption_images)
    return row


def run_quality(world: Path, out: Path | None, settings: QualitySettings, log=print) -> list[dict[str, Any]]:
    """Learn and measure ``settings.concepts`` held-out concepts; returns one row per concept."""
    from PIL import Image

    from inversion.config import ClipSpec, ConceptConfig
    from inversion.evaluation.clip import load_clip
    from inversion.evaluation.render import Renderer, RenderSettings
    from inversion.model.components import load_components
    from inversion.training.trainer import train_concepts

    world = Path(world)
    components = load_components(world)
    resolution = components.resolution
    renderer = Renderer(
        components,
        RenderSettings(steps=settings.render_steps, guidance=settings.guidance, device=settings.device, batch_size=32),
    )
    clip = None
    if settings.clip and (world / CLIP_FILE).is_file():
        clip = load_clip(ClipSpec(WORLD_CLIP_ARCH, checkpoint=world / CLIP_FILE), settings.device)
    concepts = list(G.HELD_OUT[: settings.concepts])
    rows: list[dict[str, Any]] = []
    with tempfile.TemporaryDirectory(prefix="sstar-quality-") as tmp:
        work = Path(tmp)
        configs, references = [], []
        for i, concept in enumerate(concepts):
            folder = write_concept_images(concept, work / concept.name, settings.train_images, resolution, seed=i)
            configs.append(ConceptConfig(token_of(concept), concept.shape, folder, seed=i))
            references.append([Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))])
        defaults = defaults_config(settings, resolution)
        if settings.pack:
            tick = time.perf_counter()
            results = train_concepts(components, configs, defaults)
            log(
                f"trained {len(configs)} concepts in one pack, {defaults.steps} steps, "
                f"{time.perf_counter() - tick:.1f}s"
            )
            learned = {r.token: (r, None, None) for r in results}
        else:
            learned = {}
            for concept, cfg in zip(concepts, configs):
                tick = time.perf_counter()
                result, curve = learn_with_curve(components, renderer, cfg, concept, defaults, work, settings)
                log(
                    f"{concept.name}: defaults, {result.steps} steps in {result.seconds:.1f}s "
                    f"(+{time.perf_counter() - tick - result.seconds:.1f}s setup and curve rendering)"
                )
                recipe = None
                if settings.recipe_curve:
                    _, recipe = learn_with_curve(
                        components, renderer, cfg, concept, recipe_config(settings, resolution), work, settings
                    )
                    log(f"{concept.name}: standard recipe's settings done")
                learned[cfg.token] = (result, curve, recipe)
        for concept, cfg, reference in zip(concepts, configs, references):
            result, curve, recipe = learned[cfg.token]
            row = {
                "concept": concept.name,
                "hue": concept.hue,
                "shape": concept.shape,
                "background": concept.background,
                "best_caption": concept.best_caption(),
                "initializer": cfg.initializer,
                "train_steps": result.steps,
                "stop_reason": result.stop_reason,
                "held_out_losses": result.held_out_losses,
                "train_seconds": result.seconds,
                "final_loss": result.final_loss,
            }
            row.update(evaluate(renderer, clip, concept, result.embedding, reference, settings))
            strips = row.pop("strips")
            if curve is not None:
                row["curve_defaults"] = curve.points
                row["time_to_quality_defaults"] = curve.time_to_quality()
            if recipe is not None:
                row["curve_recipe"] = recipe.points
                row["time_to_quality_recipe"] = recipe.time_to_quality()
            if out is not None:
                _save_strips(out / f"{concept.name}.png", reference, *strips)
            rows.append(row)
            log(
                f"{concept.name}: learned median hue error {row['learned_median_hue_error']:.1f}°, "
                f"best caption {row['caption_median_hue_error']:.1f}°"
            )
    return rows


def _save_strips(path: Path, reference, learned, caption) -> None:
    """Three rows: the training images, the learned word's samples, the best caption's samples."""
    rows = [
        np.concatenate([np.asarray(im.convert("RGB")) for im in images], axis=1)
        for images in (reference, learned, caption)
    ]
    width = max(r.shape[1] for r in rows)
    padded = [np.pad(r, ((0, 2), (0, width - r.shape[1]), (0, 0)), constant_values=255) for r in rows]
    from PIL import Image

    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.concatenate(padded)).save(path)


TABLE = (
    ("concept", "concept", "{}"),
    ("hue", "hue", "{:.1f}"),
    ("steps", "train_steps", "{}"),
    ("train s", "train_seconds", "{:.1f}"),
    ("learned err°", "learned_median_hue_error", "{:.1f}"),
    ("caption err°", "caption_median_hue_error", "{:.1f}"),
    ("ratio", "hue_error_ratio", "{:.2f}"),
    ("≤10° L/C", ("learned_within_10", "caption_within_10"), "{:.2f}/{:.2f}"),
    ("bg acc L/C", ("learned_background_accuracy", "caption_background_accuracy"), "{:.2f}/{:.2f}"),
    ("CLIP-I L/C", ("clip_image_similarity", "clip_baseline_image_similarity"), "{:.3f}/{:.3f}"),
    ("CLIP lift", "clip_inversion_lift", "{:+.3f}"),
    ("CLIP-T", "clip_text_similarity", "{:.3f}"),
    ("agree", "clip_and_oracle_agree", "{}"),
    ("TTQ ours steps/s", ("time_to_quality_defaults", "steps", "train_seconds"), "{}/{:.0f}"),
    ("TTQ recipe steps/s", ("time_to_quality_recipe", "steps", "train_seconds"), "{}/{:.0f}"),
)


def _cell(row: dict[str, Any], key, fmt: str) -> str:
    try:
        if isinstance(key, str):
            return fmt.format(row[key])
        if len(key) == 3 and isinstance(row.get(key[0]), dict):
            return fmt.format(row[key[0]][key[1]], row[key[0]][key[2]])
        return fmt.format(*(row[k] for k in key))
    except (KeyError, TypeError, ValueError):
        return "—"


def format_table(rows: list[dict[str, Any]]) -> str:
    cells = [[h for h, _, _ in TABLE]] + [[_cell(r, k, f) for _, k, f in TABLE] for r in rows]
    widths = [max(len(c[i]) for c in cells) for i in range(len(TABLE))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(line, widths)) for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    wins = sum(r["hue_error_ratio"] < 0.7 for r in rows)
    lines.append(f"learned word beats the best caption (median hue error < 0.7×) on {wins}/{len(rows)} concepts")
    return "\n".join(lines)


CSV_FIELDS = (
    "concept",
    "hue",
    "shape",
    "background",
    "best_caption",
    "initializer",
    "train_steps",
    "stop_reason",
    "train_seconds",
    "final_loss",
    "learned_median_hue_error",
    "caption_median_hue_error",
    "hue_error_ratio",
    "oracle_lift_deg",
    "learned_within_10",
    "caption_within_10",
    "learned_background_accuracy",
    "caption_background_accuracy",
    "learned_shape_found",
    "caption_shape_found",
    "clip_image_similarity",
    "clip_baseline_image_similarity",
    "clip_inversion_lift",
    "clip_text_similarity",
    "clip_baseline_text_similarity",
    "clip_text_lift",
    "clip_and_oracle_agree",
)


def write_results(rows: list[dict[str, Any]], out: Path, meta: dict[str, Any]) -> None:
    out.mkdir(parents=True, exist_ok=True)
    payload = {**meta, "concepts": rows}
    (out / "quality.json").write_text(json.dumps(payload, indent=2, default=float) + "\n", encoding="utf-8")
    with (out / "quality.csv").open("w", newline="", encoding="utf-8") as handle:
        writer = csv.DictWriter(
            handle,
            fieldnames=[
                *CSV_FIELDS,
                "ttq_defaults_steps",
                "ttq_defaults_seconds",
                "ttq_recipe_steps",
                "ttq_recipe_seconds",
            ],
            extrasaction="ignore",
        )
        writer.writeheader()
        for row in rows:
            flat = dict(row)
            for name in ("defaults", "recipe"):
                ttq = row.get(f"time_to_quality_{name}") or {}
                flat[f"ttq_{name}_steps"] = ttq.get("steps")
                flat[f"ttq_{name}_seconds"] = ttq.get("train_seconds")
            writer.writerow(flat)


def given(**options: Any) -> dict[str, Any]:
    """The command-line options the user gave (those not ``None``), to override a settings object with."""
    return {name: value for name, value in options.items() if value is not None}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.run", description=__doc__.split("\n")[0])
    p.add_argument("--world", type=Path, default=MODEL_DIR)
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--concepts", type=int, default=None, help=f"how many held-out concepts (max {len(G.HELD_OUT)})")
    p.add_argument("--samples", type=int, default=None, help="images per variant for the final evaluation")
    p.add_argument("--steps", type=int, default=None, help="the step cap (default: TrainConfig's)")
    p.add_argument("--stop", choices=("fixed", "plateau"), default=None, help="stopping policy (default fixed)")
    p.add_argument("--render-steps", type=int, default=None)
    p.add_argument("--guidance", type=float, default=None)
    p.add_argument("--curve-every", type=int, default=None)
    p.add_argument("--curve-samples", type=int, default=None)
    p.add_argument("--no-recipe", action="store_true", help="skip the standard recipe's curve")
    p.add_argument("--no-clip", action="store_true", help="skip CLIP scoring")
    p.add_argument("--pack", action="store_true", help="train all concepts in one pack, no curves")
    p.add_argument("--device", default=None)
    p.add_argument("--fast", action="store_true", help="smoke mode: 2 concepts, a few steps and samples")
    args = p.parse_args(argv)
    from inversion.cli import quiet_libraries

    quiet_libraries()
    settings = FAST if args.fast else QualitySettings()
    overrides = given(
        concepts=args.concepts,
        samples=args.samples,
        steps=args.steps,
        render_steps=args.render_steps,
        guidance=args.guidance,
        curve_every=args.curve_every,
        curve_samples=args.curve_samples,
        device=args.device,
        stop=args.stop,
    )
    if args.no_recipe:
        overrides["recipe_curve"] = False
    if args.no_clip:
        overrides["clip"] = False
    if args.pack:
        overrides["pack"] = True
    settings = replace(settings, **overrides)
    tick = time.perf_counter()
    rows = run_quality(args.world, args.out, settings)
    table = format_table(rows)
    print(table)
    meta = {
        "world": str(args.world.resolve()),
        "settings": settings.__dict__,
        "prompt": PROMPT,
        "seconds": time.perf_counter() - tick,
        "torch": torch.__version__,
        "device": settings.device,
    }
    write_results(rows, args.out, meta)
    (args.out / "quality-table.txt").write_text(table + "\n", encoding="utf-8")
    print(f"wrote {args.out / 'quality.json'} and quality.csv ({time.perf_counter() - tick:.0f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
