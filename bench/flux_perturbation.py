"""How much a Flux word's T5 rows move a render, against its CLIP rows, at equal perturbation norms (issue 23).

    python -m bench.flux_perturbation [--seeds 8] [--steps 8] [--guidance 3.5] [--out FILE.csv]

On the tiny random-weight Flux model (``sstar model flux-tiny``'s architecture, built in memory) a word starts
at the initializer ``cat``'s rows in both text encoders (CLIP-L and T5). For each seed, a random direction is
drawn for each encoder, and the word is moved along one of them only: its CLIP-L rows by ``eps * d_clip``
(T5's rows untouched), or its T5 rows by ``eps * d_t5`` (CLIP's untouched), with the same ``eps``, so both
perturbations have the same L2 norm. Each word renders ``a photo of <word>`` with sstar's renderer
(:class:`inversion.evaluation.render.Renderer`: Flux's embedded guidance, no negative) from the seed's noise,
and the change is the RMS pixel difference (the VAE's float output in [0, 1], before 8-bit rounding) from the
unmoved word's render, same seed.

Two scales of ``eps``: ``absolute`` (the same number for both encoders: the issue's equal norms) and
``relative`` (a fraction of each encoder's mean vocabulary row norm: the tiny model's CLIP-L rows are ~0.11
long and T5's ~9.8, as real T5 rows are far longer than CLIP's). The conditioning changes are reported too:
CLIP-L reaches Flux's transformer only through the pooled vector, T5 only through the sequence (each the
largest change of a row, over that row's norm: the pooled vector, or the sequence's most-moved token).

Tiny random weights say nothing about quality or about real Flux: this measures the mechanics (which rows
reach the image, and how strongly in this model), not what a trained word does.
"""

from __future__ import annotations

import argparse
import csv
import statistics
from pathlib import Path
from typing import Any

FIELDS = (
    "mode",
    "eps",
    "eps_over_clip_vocab",
    "eps_over_t5_vocab",
    "seed",
    "image_change_clip",
    "image_change_t5",
    "t5_over_clip",
    "pooled_change_clip",
    "sequence_change_t5",
)
DEFAULT_OUT = Path(__file__).resolve().parent / "results-flux-perturbation.csv"
PROMPT = "a photo of {}"


def _words(base, directions, cases, family):
    """The unmoved word and, per ``(mode, eps, clip_eps, t5_eps)`` case, the CLIP-moved and T5-moved words."""
    from inversion.embeddings.formats import LearnedEmbedding

    clip_base, t5_base = base
    d_clip, d_t5 = directions
    words = [LearnedEmbedding.from_tables("<base>", [clip_base, t5_base], family)]
    for index, (_, _, clip_eps, t5_eps) in enumerate(cases):
        words.append(LearnedEmbedding.from_tables(f"<clip{index}>", [clip_base + clip_eps * d_clip, t5_base], family))
        words.append(LearnedEmbedding.from_tables(f"<t5x{index}>", [clip_base, t5_base + t5_eps * d_t5], family))
    return words


def _conditioning(text, words) -> list[tuple[Any, Any]]:
    """Each word's Flux conditioning for :data:`PROMPT`: (T5 sequence, CLIP-L pooled vector)."""
    import torch

    out = []
    with torch.no_grad():
        for word in words:
            placeholder = text.register(word.token, word.num_vectors)
            with text.learned([placeholder], [word.vectors]):
                embeds = text.encode([PROMPT.format(word.token)])
            out.append((embeds.hidden[0], embeds.pooled[0]))
    return out


def _relative(moved, base) -> float:
    """The largest change of a row (a token position, or the pooled vector) over that row's norm."""
    moved, base = moved.reshape(-1, moved.shape[-1]), base.reshape(-1, base.shape[-1])
    return float(((moved - base).norm(dim=-1) / base.norm(dim=-1)).max())


def _seed_rows(components, renderer, seed: int, cases, base, norms) -> list[dict[str, Any]]:
    """Render the unmoved word and every moved one from ``seed``'s noise; one row per case."""
    import numpy as np
    import torch

    from inversion.text.encoder import PromptEncoder

    generator = torch.Generator().manual_seed(1000 + seed)
    directions = []
    for table in base:
        d = torch.randn(table.shape, generator=generator)
        directions.append(d / d.norm())
    words = _words(base, directions, cases, components.family)
    images = renderer.render_arrays([PROMPT.format(w.token) for w in words], [seed], words)
    pixels = [np.asarray(row[0], dtype=np.float64) for row in images]
    conditioning = _conditioning(PromptEncoder(components), words)
    rows = []
    for index, (mode, eps, clip_eps, t5_eps) in enumerate(cases):
        clip_at, t5_at = 1 + 2 * index, 2 + 2 * index
        clip_change = float(np.sqrt(((pixels[clip_at] - pixels[0]) ** 2).mean()))
        t5_change = float(np.sqrt(((pixels[t5_at] - pixels[0]) ** 2).mean()))
        rows.append(
            {
                "mode": mode,
                "eps": eps,
                "eps_over_clip_vocab": clip_eps / norms[0],
                "eps_over_t5_vocab": t5_eps / norms[1],
                "seed": seed,
                "image_change_clip": clip_change,
                "image_change_t5": t5_change,
                "t5_over_clip": t5_change / clip_change if clip_change > 0 else float("inf"),
                "pooled_change_clip": _relative(conditioning[clip_at][1], conditioning[0][1]),
                "sequence_change_t5": _relative(conditioning[t5_at][0], conditioning[0][0]),
            }
        )
    return rows


def measure(seeds: int, steps: int, guidance: float, absolute, relative) -> list[dict[str, Any]]:
    """Every (case, seed) row: see the module docstring."""
    from inversion.evaluation.render import Renderer, RenderSettings
    from inversion.model.zoo import build_flow_components
    from inversion.text.encoder import PromptEncoder

    components = build_flow_components("flux-tiny", seed=0)
    text = PromptEncoder(components)
    norms = [stats.mean for stats in text.vocab_norms()]
    start = text.initial_vectors("cat", 1)
    base = list(start.split(list(text.widths), dim=1))
    cases = [("absolute", eps, eps, eps) for eps in absolute]
    cases += [("relative", frac, frac * norms[0], frac * norms[1]) for frac in relative]
    renderer = Renderer(components, RenderSettings(steps=steps, guidance=guidance, device="cpu", batch_size=16))
    rows = []
    for seed in range(seeds):
        rows += _seed_rows(components, renderer, seed, cases, base, norms)
    return rows


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per case: medians over seeds and how many seeds moved the image more with T5's rows."""
    out = []
    cases = dict.fromkeys((r["mode"], r["eps"]) for r in rows)
    for mode, eps in cases:
        group = [r for r in rows if r["mode"] == mode and r["eps"] == eps]
        out.append(
            {
                "mode": mode,
                "eps": eps,
                "eps_clip": group[0]["eps_over_clip_vocab"],
                "eps_t5": group[0]["eps_over_t5_vocab"],
                "seeds": len(group),
                "clip": statistics.median(r["image_change_clip"] for r in group),
                "t5": statistics.median(r["image_change_t5"] for r in group),
                "ratio": statistics.median(r["t5_over_clip"] for r in group),
                "ratio_min": min(r["t5_over_clip"] for r in group),
                "ratio_max": max(r["t5_over_clip"] for r in group),
                "t5_wins": sum(r["image_change_t5"] > r["image_change_clip"] for r in group),
                "pooled": statistics.median(r["pooled_change_clip"] for r in group),
                "sequence": statistics.median(r["sequence_change_t5"] for r in group),
            }
        )
    return out


def table(summary: list[dict[str, Any]]) -> str:
    """The summary as a Markdown table (what the README quotes)."""
    lines = [
        "| eps | eps / vocab norm (CLIP-L, T5) | seeds | image change, CLIP rows moved | image change, T5 rows moved "
        "| T5 / CLIP (median, range) | T5 moved it more | pooled vector change (CLIP) "
        "| largest sequence row change (T5) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for s in summary:
        eps = f"{s['eps']:g} ({s['mode']})"
        lines.append(
            f"| {eps} | {s['eps_clip']:.3g}, {s['eps_t5']:.3g} | {s['seeds']} | {s['clip']:.2e} | {s['t5']:.2e} "
            f"| {s['ratio']:.2g} ({s['ratio_min']:.2g}–{s['ratio_max']:.2g}) | {s['t5_wins']}/{s['seeds']} "
            f"| {s['pooled']:.3f} | {s['sequence']:.3f} |"
        )
    return "\n".join(lines)


def _floats(text: str) -> list[float]:
    return [float(x) for x in text.split(",") if x.strip()]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=8, help="seeds (directions and noise), at least 8 for the README")
    parser.add_argument("--steps", type=int, default=8, help="denoising steps per render")
    parser.add_argument("--guidance", type=float, default=3.5, help="Flux's embedded guidance")
    parser.add_argument("--absolute", type=_floats, default=[0.1, 1.0, 10.0], help="equal L2 norms, e.g. 0.1,1,10")
    parser.add_argument("--relative", type=_floats, default=[0.5, 2.0], help="fractions of each vocabulary mean norm")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="CSV of every (case, seed) row")
    args = parser.parse_args(argv)
    import torch

    torch.set_num_threads(max(1, torch.get_num_threads()))
    rows = measure(args.seeds, args.steps, args.guidance, args.absolute, args.relative)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with args.out.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=FIELDS)
        writer.writeheader()
        for row in rows:
            writer.writerow({k: f"{v:.6g}" if isinstance(v, float) else v for k, v in row.items()})
    print(table(summarize(rows)))
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
