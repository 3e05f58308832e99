"""Create or update the Prefect global concurrency limit that guards GPU work.

Every GPU task of sstar (inversion, rendering and scoring) holds one slot of this limit while it
runs, so ``slots`` is the number of inversions allowed to run at once across all workers:
number of GPUs × inversions per GPU. Run it once per Prefect server (and again when the pool grows):

    python deployments/create_gpu_limit.py --name sstar-gpu --slots 8

It talks to the server of the active Prefect profile (``PREFECT_API_URL``). Importable as well:
``from deployments.create_gpu_limit import ensure_gpu_limit``; the work is done by
:func:`tasks.concurrency.ensure_gpu_limit` (the function ``learn_catalog`` calls at start to
create the limit when it is missing; a run never changes an existing limit).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]

__all__ = ["ensure_gpu_limit", "main"]


def ensure_gpu_limit(name: str = "sstar-gpu", slots: int = 1) -> str:
    """Create the global concurrency limit ``name`` with ``slots`` slots (active), or update an
    existing one to that many; returns ``"created"``, ``"updated"`` or ``"unchanged"``.

    Synchronous (``get_client(sync_client=True)``), so it is safe to call from scripts, from
    inside a running event loop's thread pool and from flows alike.
    """
    if str(REPO_ROOT) not in sys.path:  # run as a script from a checkout: make `tasks` importable
        sys.path.insert(0, str(REPO_ROOT))
    from tasks.concurrency import ensure_gpu_limit as _ensure

    return _ensure(name, slots)


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="create_gpu_limit",
        description="Create or update the Prefect global concurrency limit guarding sstar's GPU work.",
    )
    parser.add_argument(
        "--name",
        default="sstar-gpu",
        help="limit name; must match run.gpu_limit_name of the flows (default: %(default)s)",
    )
    parser.add_argument(
        "--slots",
        type=_positive,
        default=1,
        help="inversions at once across all workers = GPUs x inversions per GPU (default: %(default)s)",
    )
    args = parser.parse_args(argv)
    try:
        action = ensure_gpu_limit(args.name, args.slots)
    except Exception as exc:  # noqa: BLE001 - one line for the operator, not a traceback
        print(
            f"create_gpu_limit: error: could not set limit {args.name!r}: {type(exc).__name__}: {exc}", file=sys.stderr
        )
        return 1
    print(f"global concurrency limit {args.name!r}: {action} ({args.slots} slot{'s' if args.slots != 1 else ''})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
