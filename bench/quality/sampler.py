"""Cheaper evaluation in the toy world: does a fast sampler at fewer steps give the same CLIP scores?

    python -m bench.quality.sampler --out DIR [--settings ddim:25,dpm:15,dpm:10] [--samples 32]
        [--repeats 2] [--device cpu]

Learns the 4 held-out concepts once (one pack, ``--stop plateau``, the trainer's defaults, as
``bench.quality.run --pack --stop plateau``), then scores the same learned words with each
``sampler:steps`` setting exactly as the flows do (:func:`inversion.evaluation.scoring.score_concepts`: the pack's
words in one batched render, the words-only baseline of each class word, the world CLIP), with the
demo's evaluation (``a photo of a {}``, guidance 3) over ``--samples`` seeds. Per setting and concept
it reports CLIP image similarity, inversion lift and the oracle's median hue error of the learned
word, and the evaluation seconds per concept (best of ``--repeats`` timings of the whole scoring call,
baseline included, no baseline cache), with the differences to the first setting (the reference).
Results go to ``DIR/sampler.json`` and ``DIR/sampler-table.txt``.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench.quality.run import CLIP_FILE, PROMPT, oracle_summary, token_of, write_concept_images
from bench.world import generate as G
from bench.world.configs import WORLD_CLIP_ARCH
from toyworld import MODEL_DIR


def parse_settings(text: str) -> list[tuple[str, int]]:
    """``ddim:25,dpm:15`` → ``[("ddim", 25), ("dpm", 15)]`` (the first is the reference)."""
    settings = []
    for item in text.split(","):
        sampler, _, steps = item.partition(":")
        if sampler not in ("ddim", "dpm") or not steps.isdigit() or int(steps) < 1:
            raise SystemExit(f"--settings item {item!r} is not sampler:steps with sampler ddim or dpm")
        settings.append((sampler, int(steps)))
    return settings


def learn_held_out(components, device: str, work: Path) -> tuple[list, list, list]:
    """The 4 held-out concepts learned in one pack with ``--stop plateau``: (concepts, results, references)."""
    from PIL import Image

    from inversion.config import ConceptConfig, TrainConfig
    from inversion.training.trainer import train_concepts

    concepts = list(G.HELD_OUT)
    configs, references = [], []
    for i, concept in enumerate(concepts):
        folder = write_concept_images(concept, work / concept.name, 4, components.resolution, seed=i)
        configs.append(ConceptConfig(token_of(concept), concept.shape, folder, seed=i))
        references.append([Image.open(p).convert("RGB") for p in sorted(folder.glob("*.png"))])
    config = TrainConfig(resolution=components.resolution, device=device, stop="plateau")
    results = train_concepts(components, configs, config)
    for result in results:
        if result.error:
            raise RuntimeError(result.error)
    return concepts, results, references


def score_setting(
    components, clip, concepts, results, references, sampler: str, steps: int, samples: int, repeats: int, device: str
) -> dict[str, Any]:
    """Score every learned word with one sampler setting; per-concept scores and seconds per concept."""
    from inversion.evaluation.render import Renderer, RenderSettings
    from inversion.evaluation.scoring import ScoreRequest, ScoreSettings, score_concepts

    renderer = Renderer(
        components, RenderSettings(steps=steps, guidance=3.0, device=device, batch_size=32, sampler=sampler)
    )
    settings = ScoreSettings(prompts=(PROMPT,), seeds=tuple(range(samples)))
    requests = [ScoreRequest(r.embedding, c.shape, refs) for c, r, refs in zip(concepts, results, references)]
    timings = []
    for _ in range(repeats):
        tick = time.perf_counter()
        scores = score_concepts(renderer, clip, requests, settings)
        timings.append(time.perf_counter() - tick)
    rows = []
    for concept, score in zip(concepts, scores):
        oracle = oracle_summary(score.learned.images[0], concept)
        rows.append(
            {
                "concept": concept.name,
                "image_similarity": score.image_similarity,
                "baseline_image_similarity": score.baseline_image_similarity,
                "inversion_lift": score.inversion_lift,
                "median_hue_error": oracle["median_hue_error"],
            }
        )
    return {
        "sampler": sampler,
        "steps": steps,
        "seconds_per_concept": min(timings) / len(concepts),
        "timings": timings,
        "rows": rows,
    }


def format_table(measured: list[dict[str, Any]]) -> str:
    """One line per setting and concept, with the differences to the first (reference) setting."""
    reference = {r["concept"]: r for r in measured[0]["rows"]}
    lines = [
        f"{'setting':<9} {'s/concept':>9}  {'concept':<25} {'CLIP-I':>6} {'ΔCLIP-I':>8} {'lift':>7} "
        f"{'Δlift':>7} {'hue err°':>8}"
    ]
    for m in measured:
        for row in m["rows"]:
            ref = reference[row["concept"]]
            lines.append(
                f"{m['sampler'] + '×' + str(m['steps']):<9} {m['seconds_per_concept']:>9.2f}  "
                f"{row['concept']:<25} {row['image_similarity']:>6.3f} "
                f"{row['image_similarity'] - ref['image_similarity']:>+8.3f} {row['inversion_lift']:>+7.3f} "
                f"{row['inversion_lift'] - ref['inversion_lift']:>+7.3f} {row['median_hue_error']:>8.1f}"
            )
    for m in measured[1:]:
        worst_i = max(abs(r["image_similarity"] - reference[r["concept"]]["image_similarity"]) for r in m["rows"])
        worst_l = max(abs(r["inversion_lift"] - reference[r["concept"]]["inversion_lift"]) for r in m["rows"])
        speed = measured[0]["seconds_per_concept"] / m["seconds_per_concept"]
        lines.append(
            f"{m['sampler']}×{m['steps']} against {measured[0]['sampler']}×{measured[0]['steps']}: "
            f"{speed:.2f}× faster, largest |ΔCLIP-I| {worst_i:.3f}, largest |Δlift| {worst_l:.3f}"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.quality.sampler", description=__doc__.split("\n")[0])
    p.add_argument("--out", type=Path, required=True)
    p.add_argument(
        "--settings",
        type=parse_settings,
        default=parse_settings("ddim:25,dpm:15,dpm:10"),
        help="sampler:steps, comma-separated; the first is the reference",
    )
    p.add_argument("--samples", type=int, default=32)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)

    from inversion.config import ClipSpec
    from inversion.evaluation.clip import load_clip
    from inversion.model.components import load_components

    components = load_components(MODEL_DIR)
    clip = load_clip(ClipSpec(WORLD_CLIP_ARCH, checkpoint=MODEL_DIR / CLIP_FILE), args.device)
    with tempfile.TemporaryDirectory(prefix="sstar-sampler-") as tmp:
        concepts, results, references = learn_held_out(components, args.device, Path(tmp))
    measured = [
        score_setting(
            components, clip, concepts, results, references, sampler, steps, args.samples, args.repeats, args.device
        )
        for sampler, steps in args.settings
    ]
    table = format_table(measured)
    print(table)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "sampler-table.txt").write_text(table + "\n")
    (args.out / "sampler.json").write_text(
        json.dumps(
            {"samples": args.samples, "steps_trained": {r.token: r.steps for r in results}, "settings": measured},
            indent=1,
        )
        + "\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
