"""Where a learned word's norm sits against its vocabulary: the evidence behind ``BLOWN_UP_RATIO``.

    python -m bench.norms [--steps 200] [--lrs 5e-3,5e-2,5e-1] [--out FILE.json]

Prints, for the toy world's text encoder and for a random-weight tiny CLIP, the vocabulary's row-norm
statistics (mean, std, max, and the 99.9th percentile, each also as a multiple of the mean), then
learns the toy world's 4 held-out concepts (one pack, plain TI, the trainer's defaults but for the
learning rate) at each ``--lrs`` value and reports every word's largest norm as a multiple of the
vocabulary mean (:func:`inversion.embeddings.norms.norm_ratio`), with its start (the initializer's row).
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Any


def _stats(table) -> dict[str, float]:
    from inversion.embeddings.norms import vocab_norms

    norms = table.detach().float().norm(dim=1)
    stats = vocab_norms(table)
    p999 = float(norms.quantile(0.999))
    return {
        "mean": stats.mean,
        "std": stats.std,
        "max": stats.max,
        "max_ratio": stats.max / stats.mean,
        "p999_ratio": p999 / stats.mean,
    }


def _learned(components, lr: float, steps: int, work: Path) -> list[dict[str, Any]]:
    from bench.quality.run import token_of, write_concept_images
    from bench.world import generate as G
    from inversion.config import ConceptConfig, TrainConfig
    from inversion.embeddings.formats import LearnedEmbedding
    from inversion.embeddings.norms import norm_ratio, vocab_norms
    from inversion.text.encoder import PromptEncoder
    from inversion.training.trainer import train_concepts

    configs = []
    for i, concept in enumerate(G.HELD_OUT):
        folder = write_concept_images(concept, work / concept.name, 4, components.resolution, seed=i)
        configs.append(ConceptConfig(token_of(concept), concept.shape, folder, seed=i))
    config = TrainConfig(resolution=components.resolution, device="cpu", steps=steps, lr=lr)
    norms = [vocab_norms(components.text_encoder.get_input_embeddings().weight)]
    text = PromptEncoder(components)
    rows = []
    for learned, result in zip(configs, train_concepts(components, configs, config)):
        start = LearnedEmbedding(learned.token, text.initial_vectors(learned.initializer, 1))
        rows.append(
            {
                "lr": lr,
                "token": learned.token,
                "start_ratio": norm_ratio(start, norms),
                "ratio": norm_ratio(result.embedding, norms),
                "final_loss": result.final_loss,
            }
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=200)
    parser.add_argument("--lrs", default="5e-3,5e-2,5e-1")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)

    from inversion.model.components import load_components
    from inversion.model.zoo import build_random_components
    from toyworld import MODEL_DIR

    world = load_components(MODEL_DIR)
    tiny = build_random_components("tiny")
    report: dict[str, Any] = {
        "vocabulary": {
            "toyworld": _stats(world.text_encoder.get_input_embeddings().weight),
            "tiny-random": _stats(tiny.text_encoder.get_input_embeddings().weight),
        },
        "learned": [],
    }
    print(json.dumps(report["vocabulary"], indent=1))
    with tempfile.TemporaryDirectory() as work:
        for lr in (float(x) for x in args.lrs.split(",")):
            rows = _learned(world, lr, args.steps, Path(work))
            report["learned"] += rows
            for row in rows:
                print(json.dumps(row))
    if args.out is not None:
        args.out.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
