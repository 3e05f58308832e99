"""Command-line commands of the ML core: ``sstar model``, ``sstar invert``, ``sstar render``, ``sstar score``,
``sstar merge``, ``sstar inspect``.

Registered on the ``sstar`` entry point by :mod:`flows.cli`. User errors print one line and exit 2.
Argparse only: one ``_add_<command>`` declares each command's flags, and its ``cmd_<command>`` turns them
into a library call and prints the outcome; the work itself lives in the wings (``sstar score``'s in
:mod:`inversion.evaluation.score_files`), so it can be called, and tested, without a command line.
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path

from inversion.config import MERGE_MODES, PROPERTIES, ConceptConfig, EvalConfig, TrainConfig, clip_spec
from inversion.fields import add_arguments, settings_of, values_from_args

_TRAIN = settings_of(TrainConfig)
_EVAL = settings_of(EvalConfig)
#: the flags of ``sstar invert``: the training settings a command line may set (groups learn and run)
_INVERT = tuple(declared for declared in _TRAIN.values() if declared.spec.group is not None)


def quiet_libraries() -> None:
    """Silence third-party progress bars and load-time warnings so our own progress is readable.

    Without importing transformers or diffusers (and torch with them: a catalog run's coordinator
    never needs them): they read their verbosity from the environment when first imported, and those
    already imported are set directly. Hub download bars are off for all of them.
    """
    import os
    import sys
    import warnings

    from huggingface_hub.utils import disable_progress_bars

    for library in ("transformers", "diffusers"):
        os.environ[f"{library.upper()}_VERBOSITY"] = "error"
        if library in sys.modules:
            module = sys.modules[library]
            module.utils.logging.set_verbosity_error()
            module.utils.logging.disable_progress_bar()
    disable_progress_bars()
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


def cmd_model(args: argparse.Namespace) -> int:
    from inversion.model.zoo import write_random_model

    out = write_random_model(args.name, Path(args.out), seed=args.seed)
    print(f"wrote {args.name} model to {out}")
    return 0


def cmd_invert(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inversion.model.components import load_components
    from inversion.training.trainer import train_concept

    concept = ConceptConfig(
        token=args.token,
        initializer=args.init,
        images=Path(args.images),
        num_vectors=args.vectors,
        property=args.property,
        flip=not args.no_flip,
        seed=args.seed,
    )
    config = TrainConfig(**values_from_args(args, _INVERT))
    components = load_components(args.model)
    out = Path(args.out)
    bar = None

    def progress(report) -> None:
        nonlocal bar
        if bar is None:  # opened on the first step, after images and model loaded without error
            bar = tqdm(
                total=config.steps,
                initial=config.steps - report.total_steps,
                desc=f"learning {concept.token}",
                unit="step",
                dynamic_ncols=True,
            )
        bar.set_postfix(loss=f"{next(iter(report.losses.values()), float('nan')):.4f}", refresh=False)
        bar.update(1)

    try:
        result = train_concept(components, concept, config, output_dir=out, resume=args.resume, callback=progress)
    finally:
        if bar is not None:
            bar.close()
    per_step = result.seconds / max(1, result.steps - result.resumed_from)
    print(
        f"learned {result.token} in {result.steps} steps, stopped by {result.stop_reason} "
        f"(final loss {result.final_loss:.4f}, {per_step:.3f} s/step)"
    )
    for kind, path in result.files.items():
        print(f"  {kind}: {path}")
    return 0


def cmd_render(args: argparse.Namespace) -> int:
    from tqdm import tqdm

    from inversion.embeddings.formats import load_embeddings
    from inversion.evaluation.render import Renderer, RenderSettings, make_grid
    from inversion.model.components import load_components

    embeddings = load_embeddings(args.embedding)
    settings = RenderSettings(
        steps=args.render_steps,
        guidance=args.guidance,
        resolution=args.resolution,
        precision=args.precision,
        device=args.device,
        sampler=args.sampler,
    )
    renderer = Renderer(load_components(args.model), settings)
    with tqdm(total=len(args.prompt) * len(args.seeds), desc="rendering", unit="img") as bar:
        rows = renderer.render(args.prompt, args.seeds, embeddings, progress=lambda done, _: bar.update(done - bar.n))
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    make_grid(rows, args.prompt, title=", ".join(e.token for e in embeddings) or None).save(out)
    print(f"wrote {out}")
    return 0


def cmd_score(args: argparse.Namespace) -> int:
    from inversion.evaluation.render import RenderSettings
    from inversion.evaluation.score_files import score_embedding_file

    evaluation = EvalConfig(**values_from_args(args, _EVAL.values()))
    scores = score_embedding_file(
        args.model,
        args.embedding[0],
        args.images,
        args.out,
        clip_spec(evaluation.clip_arch, evaluation.clip_checkpoint, evaluation.clip_pretrained),
        args.class_word,
        prompts_file=args.prompts,
        samples=evaluation.samples,
        captions=args.caption or None,
        property=args.property,
        token=args.token,
        words=args.embedding[1:],
        render=RenderSettings(
            steps=evaluation.render_steps, guidance=evaluation.guidance, device=args.device, sampler=evaluation.sampler
        ),
        clip_device=args.device,
        log=lambda message: print(message, flush=True),
    )
    print(
        f"image similarity {scores['image_similarity']:.4f} (words only {scores['baseline_image_similarity']:.4f}, "
        f"lift {scores['inversion_lift']:+.4f}); text similarity {scores['text_similarity']:.4f} "
        f"(words only {scores['baseline_text_similarity']:.4f}) — raw CLIP cosines"
    )
    print(f"wrote {scores['files']['scores']}")
    return 0


def cmd_merge(args: argparse.Namespace) -> int:
    from inversion.embeddings.merge import merge_files, parse_source

    files = merge_files([parse_source(text) for text in args.sources], args.token, Path(args.out), args.mode)
    print(f"merged {len(args.sources)} word(s) into {args.token} ({args.mode})")
    for kind, path in files.items():
        print(f"  {kind}: {path}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the ML commands on the ``sstar`` parser."""
    for add_command in (_add_model, _add_invert, _add_render, _add_score, _add_merge, _add_inspect):
        add_command(sub)


def _add_model(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("model", help="write a random-weight diffusers model folder (no download)")
    p.add_argument(
        "name",
        choices=("tiny", "sd15-random", "sd2-tiny", "sd2-random", "sdxl-tiny", "sdxl-random", "sd3-tiny", "flux-tiny"),
        help="*-tiny: a few MB, for tests (sd3-tiny, flux-tiny: SD 3.5 and Flux.1-dev structure); "
        "*-random: the real architecture (SD 1.5, 2.1, XL base)",
    )
    p.add_argument("--out", required=True)
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_model)


def _add_invert(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("invert", help="learn a new word for one concept from a folder of images")
    p.add_argument("--model", required=True, help="diffusers model folder (or hub id)")
    p.add_argument("--images", required=True, help="folder of the concept's images")
    p.add_argument("--token", required=True, help="the new word, e.g. '<my-cat>'")
    p.add_argument("--init", required=True, help="initializer word, e.g. 'cat'")
    p.add_argument("--vectors", type=int, default=1, help="embedding vectors for the token")
    p.add_argument("--property", choices=PROPERTIES, default="object")
    p.add_argument("--no-flip", action="store_true", help="no horizontal-flip augmentation (text-bearing styles)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in --out")
    p.add_argument("--out", required=True, help="output folder for the embedding files")
    add_arguments(p, _INVERT)
    p.set_defaults(func=cmd_invert)


#: what --sampler and --guidance mean for SD 3 and Flux (the render and score commands' descriptions)
_FAMILY_RENDERING = (
    "SD 3 and Flux render from prompt embeddings with the word's rows in every text encoder (T5 included), "
    "with their own flow-matching Euler sampler (--sampler is the UNet families'). SD 3: --guidance is "
    "classifier-free guidance against the empty prompt. Flux: --guidance is FluxPipeline's guidance_scale, "
    "the distilled guidance the transformer reads as an input (Flux.1-dev's usual value is 3.5; the default "
    "7.5 is the UNet families'), one pass per step, no negative prompt."
)


def _add_render(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "render",
        help="render prompts with learned embeddings into a labelled grid",
        description="Render prompts with learned words into a labelled grid. " + _FAMILY_RENDERING,
    )
    p.add_argument("--model", required=True)
    p.add_argument(
        "--embedding",
        nargs="*",
        default=[],
        action="extend",
        help="embedding file(s) of one model family: diffusers, A1111, kohya, SDXL, or SD 3 / Flux "
        "(ComfyUI's file, diffusers' Flux clip_l/t5 file) (repeatable)",
    )
    p.add_argument(
        "--prompt",
        action="append",
        required=True,
        help="a prompt (repeatable); (<tok>:0.7) gives a word a strength, as in A1111",
    )
    p.add_argument("--seeds", type=_seeds, default=[0, 1, 2, 3])
    add_arguments(p, [_EVAL["sampler"], _EVAL["render_steps"], _EVAL["guidance"]], flags={"render_steps": "--steps"})
    p.add_argument("--resolution", type=int, default=None, help="image size in px (default: the model's)")
    add_arguments(p, [_TRAIN["precision"], _TRAIN["device"]])
    p.add_argument("--out", required=True, help="grid PNG path")
    p.set_defaults(func=cmd_render)


def _add_score(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "score",
        help="score a learned word with CLIP against its images and a words-only baseline",
        description="Score a learned word with CLIP against its training images and a words-only baseline "
        "(the captions rendered through the same path). " + _FAMILY_RENDERING,
    )
    p.add_argument("--model", required=True)
    p.add_argument(
        "--embedding",
        required=True,
        nargs="+",
        action="extend",
        help=(
            "embedding file(s): the first is the word scored ({} in the prompts); more are installed "
            "too, so prompts may name their tokens (repeatable)"
        ),
    )
    p.add_argument("--images", required=True, help="folder of the concept's training images")
    p.add_argument("--class-word", required=True, help="the concept's class word (e.g. the initializer, 'cat')")
    p.add_argument("--token", help="override the token stored in the embedding file")
    p.add_argument("--prompts", help="evaluation prompts file: one per line, {} where the token goes")
    p.add_argument("--caption", action="append", help="words-only description for the baseline (repeatable)")
    p.add_argument("--property", choices=PROPERTIES, default="object")
    add_arguments(p, _EVAL.values(), flags={"render_steps": "--steps"})
    add_arguments(p, [_TRAIN["device"]])
    p.add_argument("--out", required=True, help="folder for grid.png, baseline_grid.png and scores.json")
    p.set_defaults(func=cmd_score)


def _add_merge(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("merge", help="write a new word from learned words (weighted sum, slerp or concatenation)")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="FILE[:WEIGHT]",
        help="a parent embedding file and its weight (default 1; repeatable)",
    )
    p.add_argument("--token", required=True, help="the new word, e.g. '<ab>'")
    p.add_argument(
        "--mode",
        choices=MERGE_MODES,
        default="sum",
        help=(
            "sum: weighted sum of matched vectors; slerp: spherical interpolation of two words' "
            "matched vectors; concat: one multi-vector word (default sum)"
        ),
    )
    p.add_argument("--out", required=True, help="folder for the new word's files (every format sstar writes)")
    p.set_defaults(func=cmd_merge)


def cmd_inspect(args: argparse.Namespace) -> int:
    from inversion.embeddings.inspector import inspect_files

    return inspect_files(args.files, args.model)


def _add_inspect(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "inspect", help="show embedding files: format, token, family, vectors, norms (and blown-up words)"
    )
    p.add_argument("files", nargs="+", metavar="FILE", help="embedding files (ours or other trainers')")
    p.add_argument(
        "--model",
        default=None,
        help="diffusers model folder or hub id: its vocabulary places the norms, names each vector's nearest words",
    )
    p.set_defaults(func=cmd_inspect)
