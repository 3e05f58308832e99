"""Command-line commands of the ML core: ``sstar model``, ``sstar invert``, ``sstar render``, ``sstar score``.

Registered on the ``sstar`` entry point by :mod:`flows.cli`. User errors print one line and exit 2.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from .config import PRECISIONS, PROPERTIES, ConceptConfig, TrainConfig


def quiet_libraries() -> None:
    """Silence third-party progress bars and load-time warnings so our own progress is readable."""
    import warnings

    import diffusers
    import transformers

    transformers.utils.logging.set_verbosity_error()
    transformers.utils.logging.disable_progress_bar()
    diffusers.utils.logging.set_verbosity_error()
    diffusers.utils.logging.disable_progress_bar()
    warnings.filterwarnings("ignore", category=FutureWarning)
    logging.getLogger("accelerate").setLevel(logging.ERROR)


def _seeds(text: str) -> list[int]:
    try:
        if "-" in text and "," not in text:
            lo, hi = (int(x) for x in text.split("-", 1))
            return list(range(lo, hi + 1))
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"seeds must look like 0,1,2 or 0-3, got {text!r}") from None


def add_train_arguments(parser: argparse.ArgumentParser) -> None:
    """The training options shared by ``invert`` and the flow commands."""
    d = TrainConfig()
    parser.add_argument("--steps", type=int, default=d.steps, help=f"optimizer steps (default {d.steps})")
    parser.add_argument("--batch-size", type=int, default=d.batch_size, help=f"images per step (default {d.batch_size})")
    parser.add_argument("--grad-accum", type=int, default=d.grad_accum, help="micro-batches per optimizer step")
    parser.add_argument("--lr", type=float, default=d.lr, help=f"learning rate (default {d.lr})")
    parser.add_argument("--scale-lr", action="store_true", help="multiply lr by batch size × grad accumulation")
    parser.add_argument("--lr-schedule", choices=("constant", "cosine"), default=d.lr_schedule)
    parser.add_argument("--resolution", type=int, default=None, help="training size in px (default: the model's)")
    parser.add_argument("--precision", choices=PRECISIONS, default=d.precision, help="dtype of the frozen model")
    parser.add_argument("--device", default=d.device, help="auto, cpu or cuda[:N]")
    parser.add_argument("--seed", type=int, default=d.seed)
    parser.add_argument("--compile", action="store_true",
                        help="torch.compile the UNet: a one-off compile (about a minute) for faster steps on long GPU runs")


def train_config_from_args(args: argparse.Namespace, **extra) -> TrainConfig:
    return TrainConfig(
        steps=args.steps, batch_size=args.batch_size, grad_accum=args.grad_accum, lr=args.lr,
        scale_lr=args.scale_lr, lr_schedule=args.lr_schedule, resolution=args.resolution,
        precision=args.precision, device=args.device, seed=args.seed, compile=args.compile, **extra,
    )


def cmd_model(args: argparse.Namespace) -> int:
    from .models import write_random_model

    out = write_random_model(args.name, Path(args.out), seed=args.seed)
    print(f"wrote {args.name} model to {out}")
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .models import load_components
    from .train import train_concept

    concept = ConceptConfig(
        token=args.token, initializer=args.init, images=Path(args.images), num_vectors=args.vectors,
        property=args.property, flip=not args.no_flip, seed=args.seed,
    )
    config = train_config_from_args(args, checkpoint_every=args.checkpoint_every)
    components = load_components(args.model)
    out = Path(args.out)
    bar = None

    def progress(report) -> None:
        nonlocal bar
        if bar is None:  # opened on the first step, after images and model loaded without error
            bar = tqdm(total=config.steps, initial=config.steps - report.total_steps, desc=f"learning {concept.token}",
                       unit="step", dynamic_ncols=True)
        bar.set_postfix(loss=f"{next(iter(report.losses.values()), float('nan')):.4f}", refresh=False)
        bar.update(1)

    try:
        result = train_concept(components, concept, config, output_dir=out, resume=args.resume, callback=progress)
    finally:
        if bar is not None:
            bar.close()
    per_step = result.seconds / max(1, result.steps - result.resumed_from)
    print(f"learned {result.token} in {result.steps} steps (final loss {result.final_loss:.4f}, {per_step:.3f} s/step)")
    for kind, path in result.files.items():
        print(f"  {kind}: {path}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from .formats import load_embedding
    from .models import load_components
    from .render import Renderer, RenderSettings, make_grid

    embeddings = [load_embedding(Path(p)) for p in args.embedding]
    settings = RenderSettings(steps=args.steps, guidance=args.guidance, resolution=args.resolution,
                              precision=args.precision, device=args.device)
    renderer = Renderer(load_components(args.model), settings)
    with tqdm(total=len(args.prompt) * len(args.seeds), desc="rendering", unit="img") as bar:
        rows = renderer.render(args.prompt, args.seeds, embeddings, progress=lambda done, _: bar.update(done - bar.n))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows, args.prompt, title=", ".join(e.token for e in embeddings) or None).save(out)
    print(f"wrote {out}")
    return 0


def clip_spec_from_args(arch: str, checkpoint: str | None, pretrained: str | None):
    """The CLIP to score with; ViT-B-32 without a checkpoint means OpenAI's weights (downloaded where reachable)."""
    from .clip import DEFAULT_PRETRAINED, ClipSpec

    if checkpoint is None and pretrained is None:
        pretrained = DEFAULT_PRETRAINED
    return ClipSpec(arch=arch, checkpoint=Path(checkpoint) if checkpoint else None, pretrained=pretrained)


def cmd_score(args: argparse.Namespace) -> int:
    from .render import RenderSettings
    from .scoring import run_score_command

    scores = run_score_command(
        args.model, args.embedding, args.images, args.out,
        clip_spec_from_args(args.clip_arch, args.clip_checkpoint, args.clip_pretrained), args.class_word,
        prompts_file=args.prompts, samples=args.samples, captions=args.caption or None, property=args.property,
        token=args.token, render=RenderSettings(steps=args.steps, guidance=args.guidance, device=args.device),
        clip_device=args.device, log=lambda message: print(message, flush=True),
    )
    print(f"image similarity {scores['image_similarity']:.4f} (words only {scores['baseline_image_similarity']:.4f}, "
          f"lift {scores['inversion_lift']:+.4f}); text similarity {scores['text_similarity']:.4f} "
          f"(words only {scores['baseline_text_similarity']:.4f}) — raw CLIP cosines")
    print(f"wrote {scores['files']['scores']}")
    return 0


def add_clip_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--clip-arch", default="ViT-B-32", help="open_clip architecture (default ViT-B-32)")
    parser.add_argument("--clip-checkpoint", help="local open_clip checkpoint file for --clip-arch")
    parser.add_argument("--clip-pretrained", help="open_clip pretrained tag (default 'openai' without a checkpoint)")


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ML commands on the ``sstar`` parser."""
    p = sub.add_parser("model", help="write a random-weight diffusers model folder (no download)")
    p.add_argument("name", choices=("tiny", "sd15-random"))
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_model)

    p = sub.add_parser("invert", help="learn a new word for one concept from a folder of images")
    p.add_argument("--model", required=True, help="diffusers model folder (or hub id)")
    p.add_argument("--images", required=True, help="folder of the concept's images")
    p.add_argument("--token", required=True, help="the new word, e.g. '<my-cat>'")
    p.add_argument("--init", required=True, help="initializer word, e.g. 'cat'")
    p.add_argument("--vectors", type=int, default=1, help="embedding vectors for the token")
    p.add_argument("--property", choices=PROPERTIES, default="object")
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation (text-bearing styles)")
    p.add_argument("--checkpoint-every", type=int, default=0, help="save a resumable checkpoint every K steps")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--out", required=True, help="output folder for the embedding files")
    add_train_arguments(p)
    p.set_defaults(func=cmd_invert)

    p = sub.add_parser("render", help="render prompts with learned embeddings into a labelled grid")
    p.add_argument("--model", required=True)
    p.add_argument("--embedding", nargs="*", default=[], help="embedding file(s): diffusers, A1111 or kohya")
    p.add_argument("--prompt", action="append", required=True, help="a prompt (repeatable)")
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3])
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--resolution", type=int, default=None)
    p.add_argument("--precision", choices=PRECISIONS, default="fp32")
    p.add_argument("--device", default="auto")
    p.add_argument("--out", required=True, help="grid PNG path")
    p.set_defaults(func=cmd_render)

    p = sub.add_parser("score", help="score a learned word with CLIP against its images and a words-only baseline")
    p.add_argument("--model", required=True)
    p.add_argument("--embedding", required=True, help="embedding file: diffusers, A1111 or kohya")
    p.add_argument("--images", required=True, help="folder of the concept's training images")
    p.add_argument("--class-word", required=True, help="the concept's class word (e.g. the initializer, 'cat')")
    p.add_argument("--token", help="override the token stored in the embedding file")
    p.add_argument("--prompts", help="evaluation prompts file: one per line, {} where the token goes")
    p.add_argument("--caption", action="append", help="words-only description for the baseline (repeatable)")
    p.add_argument("--property", choices=PROPERTIES, default="object")
    p.add_argument("--samples", type=int, default=4, help="images per prompt")
    p.add_argument("--steps", type=int, default=25, help="denoising steps")
    p.add_argument("--guidance", type=float, default=7.5)
    p.add_argument("--device", default="auto")
    add_clip_arguments(p)
    p.add_argument("--out", required=True, help="folder for grid.png, baseline_grid.png and scores.json")
    p.set_defaults(func=cmd_score)
