"""Workflow commands of the ``sstar`` CLI: ``demo``, ``learn``, ``serve``, ``slots``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from inversion.fields import add_arguments, values_from_args
from tasks.settings import EVAL_SETTINGS, LEARN_SETTINGS, RUN_SETTINGS, EvalSettings, LearnSettings, RunSettings

NIGHTLY_CRON = "0 2 * * *"
#: the commands that run flows (the CLI applies its Prefect defaults before them)
PREFECT_COMMANDS = ("demo", "learn", "serve", "slots")
#: the commands that SIGTERM and Ctrl-C stop at the run's next step (flows.stopping)
RUN_COMMANDS = ("demo", "learn")


def settings_from_args(args: argparse.Namespace) -> tuple[LearnSettings, EvalSettings, RunSettings]:
    """The flows' parameter models from the flags of ``sstar learn`` / ``sstar serve``."""
    prompts = None
    if args.prompts:
        from inversion.evaluation.prompts import load_prompts

        prompts = list(load_prompts(Path(args.prompts)))
    learn = LearnSettings(**values_from_args(args, LEARN_SETTINGS))
    evaluation = EvalSettings(prompts=prompts, **values_from_args(args, EVAL_SETTINGS))
    run = RunSettings(**values_from_args(args, RUN_SETTINGS))
    return learn, evaluation, run


def _run_catalog(catalog: str, out: str, learn, evaluation, run) -> int:
    from flows.learn import ConceptsFailed, learn_catalog, new_run_id
    from flows.prefect_setup import start_local_server
    from inversion.cancel import check_stop
    from tasks.preflight import PreflightError

    check_stop()  # signalled while preparing (sstar demo): no flow run
    start_local_server()
    run_id = new_run_id()
    state = learn_catalog(
        catalog=catalog, out=out, learn=learn, evaluation=evaluation, run=run, run_id=run_id, return_state=True
    )
    summary_text = None
    try:
        from storage.store.open import open_store

        summary_text = open_store(out).get(f"runs/{run_id}/summary.json").decode()
    except Exception:  # noqa: BLE001 - the run may have failed before writing its summary
        pass
    if summary_text:
        summary = json.loads(summary_text)
        counts = summary["counts"]
        print(f"\nrun {run_id}: {counts['ok']} learned, {counts['skipped']} skipped, {counts['failed']} failed")
        for concept_id, error in summary["failed"].items():
            print(f"  failed {concept_id}: {error}")
        print(f"  embeddings: {out.rstrip('/')}/embeddings/")
        print(f"  metrics:    {summary['metrics_uri']}")
        print(f"  report:     {summary['report_uri']}")
    if state.is_completed():
        return 0
    try:
        state.result()
    except ConceptsFailed:
        return 1
    except PreflightError as exc:  # nothing was trained or written: one line naming the option to fix
        print(f"sstar: error: {exc}", file=sys.stderr)
        return 2
    except Exception as exc:  # noqa: BLE001 - the run itself broke (e.g. an unreachable catalog): one line, exit 2
        print(
            f"sstar: error: run {run_id} failed: {str(exc).splitlines()[0] if str(exc) else type(exc).__name__}",
            file=sys.stderr,
        )
        return 2
    return 1


def cmd_demo(args: argparse.Namespace) -> int:
    from flows.demo import prepare_demo

    what = "tiny random-weight models" if args.random_models else "the toy world's held-out concepts and model"
    print(f"sstar demo: preparing {what} in {args.dir} …")
    demo = prepare_demo(Path(args.dir), random_models=args.random_models, steps=args.steps)
    if demo.torch_threads:
        import torch

        torch.set_num_threads(demo.torch_threads)
    print(
        f"sstar demo: learning {sum(p.is_dir() for p in demo.catalog.iterdir())} concepts with Prefect "
        f"(local ephemeral server); outputs go to {demo.out}"
    )
    code = _run_catalog(str(demo.catalog), str(demo.out), demo.learn, demo.evaluation, demo.run)
    if code == 0:
        print(f"\nsstar demo: done — open {demo.out / 'reports' / 'latest.html'}")
    return code


def cmd_dashboard(args: argparse.Namespace) -> int:
    from reports.dashboard import write_dashboard
    from storage.metrics import update_embeddings_index

    print(f"embeddings index: {update_embeddings_index(args.out)}")  # rebuilt from the metrics and the results
    print(f"dashboard: {write_dashboard(args.out)}")
    return 0


def cmd_learn(args: argparse.Namespace) -> int:
    learn, evaluation, run = settings_from_args(args)
    return _run_catalog(args.catalog, args.out, learn, evaluation, run)


def cmd_serve(args: argparse.Namespace) -> int:
    from prefect import serve

    from flows.learn import learn_catalog, learn_concept
    from flows.learn_pack import learn_pack
    from flows.sync import sync_result

    learn, evaluation, run = settings_from_args(args)
    params = dict(
        catalog=args.catalog,
        out=args.out,
        learn=learn.model_dump(),
        evaluation=evaluation.model_dump(),
        run=run.model_dump(),
    )
    nightly = sync_result(learn_catalog.to_deployment(name="learn-catalog-nightly", cron=args.cron, parameters=params))
    adhoc = sync_result(
        learn_concept.to_deployment(
            name="learn-concept",
            parameters={k: v for k, v in params.items() if k != "catalog"} | {"catalog": args.catalog},
        )
    )
    # what a nightly run with --deployment learn-pack/learn-pack fans its packs out to
    pack = sync_result(learn_pack.to_deployment(name="learn-pack", parameters={"out": args.out}))
    print(f"serving learn-catalog (cron {args.cron!r}), learn-concept and learn-pack; Ctrl-C to stop")
    serve(nightly, adhoc, pack)
    return 0


def cmd_slots(args: argparse.Namespace) -> int:
    from tasks.concurrency import release_all_slots, slots_report

    if args.release is None:
        print("\n".join(slots_report()))
        return 0
    freed = release_all_slots(args.release)
    print(f"{args.release}: every slot freed" + (f" (held by {'; '.join(freed)})" if freed else ""))
    return 0


def _add_run_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--catalog", required=True, help="catalog URI: s3://bucket/prefix or a local folder")
    p.add_argument("--out", required=True, help="output URI: s3://bucket/prefix or a local folder")
    add_arguments(p, LEARN_SETTINGS)
    p.add_argument("--prompts", help="evaluation prompts file (one per line, {} for the token)")
    add_arguments(p, EVAL_SETTINGS)
    add_arguments(p, RUN_SETTINGS)


def add_commands(sub: argparse._SubParsersAction) -> None:
    """Register the workflow commands on the ``sstar`` parser."""
    p = sub.add_parser("demo", help="learn the toy world's held-out concepts with its model: the method at work")
    p.add_argument("--dir", default="sstar-demo", help="where the catalog, models and outputs go")
    p.add_argument("--steps", type=int, default=None, help="optimizer steps per concept (default: the demo's)")
    p.add_argument(
        "--random-models",
        action="store_true",
        help="plumbing only: generated shapes on tiny random-weight models (lift ≈ 0)",
    )
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser(
        "dashboard",
        help="rebuild <out>/reports/dashboard.html and the embeddings index over all runs (runs refresh them)",
    )
    p.add_argument("--out", required=True, help="output URI of the runs: s3://bucket/prefix or a local folder")
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("learn", help="run learn-catalog on a catalog (local or s3://)")
    _add_run_arguments(p)
    p.set_defaults(func=cmd_learn)

    p = sub.add_parser("slots", help="the GPU slots (Prefect global concurrency limits): who holds them; free one")
    p.add_argument(
        "--release",
        metavar="LIMIT",
        help="free every slot of LIMIT, a live run's too: only when no run uses it (a dead run's slot is freed "
        "by the next waiter by itself)",
    )
    p.set_defaults(func=cmd_slots)

    p = sub.add_parser("serve", help="serve learn-catalog (nightly), learn-concept and learn-pack from this machine")
    _add_run_arguments(p)
    p.add_argument("--cron", default=NIGHTLY_CRON, help=f"schedule of learn-catalog (default {NIGHTLY_CRON!r})")
    p.set_defaults(func=cmd_serve)
