"""What a catalog's first night costs in orchestration (issue 21): N new concepts, learned at the least work.

Each row builds a catalog of N new concepts (``--images`` noise PNGs of 32×32 px each) on a moto S3
server and runs the real ``sstar learn`` command on it, in a subprocess, with training and scoring at the
least work the CLI allows (``--steps 1 --batch-size 1 --resolution 8 --samples 1 --render-steps 1``, one
prompt, ``--stop fixed``, no periodic checkpoint, the tiny random model and the tiny CLIP, on the CPU) and
packs of ``--packs`` concepts, so that what the run spends around the work dominates its wall time.

The command's ``PREFECT_API_URL`` points at a counting proxy (:mod:`bench.api_proxy`) in front of a real
``prefect server start`` of the row's own (fresh home and database):

* ``--mode local`` — the server on SQLite (the "local server" row); ``sstar learn`` learns the concepts
  itself (Prefect's local task runner);
* ``--mode deployment`` — the server on PostgreSQL (``tests/flows/postgres.py``), a process work pool with
  ``--deployment-workers`` process workers (each behind a second counting proxy) and the child deployment
  that ``deployments/prefect.yaml``'s nightly deployment fans out to, deployed from this checkout;
  ``sstar learn --deployment`` fans out to it.

Per row (one CSV line, appended as it finishes):

* ``wall_s``: the command, start to exit; ``flow_s``: its ``learn-catalog`` flow run (Prefect's start/end);
  ``task_s``: the union of the intervals of every task run of the row (children's included), from
  Prefect's task-run start/end times read after the run; ``orch_s`` = ``wall_s`` − ``task_s``, also per
  concept (``orch_ms_per_concept``);
* ``cpu_s``/``cpu_ms_per_concept``: the coordinator's user+system CPU (``wait4`` rusage of the ``sstar``
  process, by a small wrapper, so the bench's own memory does not carry into it); ``peak_rss_mib`` its
  ``ru_maxrss``;
* ``task_runs`` (and per pack), ``flow_runs``, ``api_calls`` (HTTP requests through the coordinator's proxy),
  ``ws_events`` (event messages sent over its WebSocket: task-run states travel there in Prefect 3),
  ``worker_api_calls``/``worker_ws_events`` (the workers and the child flow runs they start, deployment mode);
  ``top_calls``/``task_kinds``: the most frequent routes and task names;
* ``db_mib``: the server's database (the SQLite files under its ``PREFECT_HOME``, or ``pg_database_size``);
  ``http_5xx`` (seen by the proxies) and ``server_log_errors`` (ERROR/Traceback lines in the server's log);
* ``setup_s`` (catalog upload, server, pool), ``readout_s`` and ``row_s``: how long the row took to run.

Run from the repository root::

    .venv/bin/python -m bench.first_night --n 1000,10000 --mode local --out bench/results-first-night.csv
    .venv/bin/python -m bench.first_night --n 2000 --mode deployment --out bench/results-first-night.csv
    .venv/bin/python -m bench.first_night --show bench/results-first-night.csv
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import os
import re
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from bench.api_proxy import ApiCounts, ApiProxy  # noqa: E402
from bench.csv_rows import append_row  # noqa: E402

BUCKET = "sstar-first-night"
POOL = "local-gpu"
#: the least work ``sstar learn`` allows per concept (1 step of 1 image at 8 px, 1 prompt, 1 sample, 1 render step)
LEAST_WORK = (
    "--steps", "1", "--batch-size", "1", "--resolution", "8", "--stop", "fixed", "--checkpoint-every", "0",
    "--samples", "1", "--render-steps", "1", "--clip-arch", "sstar-tiny-clip", "--device", "cpu",
)  # fmt: skip
ENV = {
    "AWS_ACCESS_KEY_ID": "bench",
    "AWS_SECRET_ACCESS_KEY": "bench-secret",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
    "DO_NOT_TRACK": "1",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PYTHONUNBUFFERED": "1",
}
COLUMNS = (
    "date", "commit", "label", "load1", "mode", "database", "concepts", "pack", "exit", "learned",
    "wall_s", "flow_s", "task_s", "orch_s", "orch_ms_per_concept", "cpu_s", "cpu_ms_per_concept",
    "task_runs", "task_runs_per_pack", "flow_runs", "api_calls", "api_per_concept", "ws_events",
    "worker_api_calls", "worker_ws_events", "peak_rss_mib", "db_mib", "http_5xx", "server_log_errors",
    "setup_s", "readout_s", "row_s", "top_calls", "task_kinds", "note",
)  # fmt: skip
SHOWN = (
    "mode", "concepts", "exit", "learned", "wall_s", "flow_s", "task_s", "orch_s", "orch_ms_per_concept",
    "cpu_ms_per_concept", "task_runs", "task_runs_per_pack", "flow_runs", "api_calls", "ws_events",
    "worker_api_calls", "peak_rss_mib", "db_mib", "http_5xx", "server_log_errors", "row_s",
)  # fmt: skip

#: runs ``sstar learn`` (argv[2:]) as its child and writes the child's rusage to argv[1]: this wrapper is a small
#: process, so the ``ru_maxrss`` the child inherits at exec is the wrapper's, not the (larger) bench's
MEASURE = r"""
import json, os, subprocess, sys, time
started = time.monotonic()
child = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(child.pid, 0)
child.returncode = code = os.waitstatus_to_exitcode(status)
with open(sys.argv[1], "w") as out:
    json.dump({"wall_s": time.monotonic() - started, "exit": code, "cpu_s": usage.ru_utime + usage.ru_stime,
               "maxrss_kib": usage.ru_maxrss}, out)
sys.exit(0)
"""


# -- inputs --------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Inputs:
    """The tiny model, the tiny CLIP and the one prompt every row uses (made once under ``folder``)."""

    model: Path
    clip: Path
    prompts: Path

    @classmethod
    def prepare(cls, folder: Path, model: Path | None = None) -> Inputs:
        folder.mkdir(parents=True, exist_ok=True)
        inputs = cls(model or folder / "tiny", folder / "tiny-clip.pt", folder / "prompts.txt")
        if not (inputs.model / "model_index.json").exists():
            made = subprocess.run(_sstar("model", "tiny", "--out", str(inputs.model)), env=_clean_env(), text=True)
            if made.returncode:
                raise SystemExit("sstar model tiny failed")
        if not inputs.clip.exists():
            from inversion.evaluation.clip import write_tiny_clip

            write_tiny_clip(inputs.clip)
        inputs.prompts.write_text("a photo of {}\n")
        return inputs


def _sstar(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def _clean_env(source: Path = REPO, **extra: str) -> dict[str, str]:
    """This environment without any Prefect setting of the shell, with the bench's and ``extra``; Python finds
    the project's code in ``source`` first (the checkout whose code is measured)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    return {**env, **ENV, "PYTHONPATH": str(source), **extra}


def _png(seed: int) -> bytes:
    """A 32×32 noise PNG (~3 KB), distinct per seed."""
    import numpy as np
    from PIL import Image

    pixels = np.random.default_rng(seed).integers(0, 256, size=(32, 32, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    return buffer.getvalue()


class Moto:
    """moto's S3 server (``tests/storage/moto_s3_server.py``) with the bench's bucket."""

    def __init__(self) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, str(REPO / "tests" / "storage" / "moto_s3_server.py"), "0"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            env=_clean_env(),
        )
        assert self.proc.stdout is not None
        port = int(self.proc.stdout.readline().decode().strip().rsplit(":", 1)[1])
        self.endpoint = f"http://127.0.0.1:{port}"
        self.client().create_bucket(Bucket=BUCKET)

    def client(self) -> Any:
        import boto3

        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=ENV["AWS_DEFAULT_REGION"],
            aws_access_key_id=ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=ENV["AWS_SECRET_ACCESS_KEY"],
        )

    def upload_catalog(self, prefix: str, n: int, images: int, threads: int = 16) -> None:
        """N concepts ``c00000``… with ``images`` distinct PNGs each under ``s3://BUCKET/<prefix>/``."""
        client = self.client()

        def upload(i: int) -> None:
            for k in range(images):
                client.put_object(Bucket=BUCKET, Key=f"{prefix}/c{i:05d}/{k}.png", Body=_png(i * images + k))

        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(upload, range(n)))

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


# -- the Prefect side ----------------------------------------------------------------------------------
@dataclass
class Orchestrator:
    """The Prefect server a row runs against: its API URL (direct), the proxies in front of it, and what to
    stop. ``server`` is None for an external server (``--prefect-api-url``: the smoke test's)."""

    url: str
    proxy: ApiProxy
    server: Any = None
    database_url: str | None = None
    worker_proxy: ApiProxy | None = None
    deployment: str | None = None
    stops: list[Callable[[], None]] = field(default_factory=list)

    def stop(self) -> None:
        for stop in self.stops:  # the server and its workers first, then the proxies they talk through
            stop()


def _proxy(url: str, stops: list[Callable[[], None]]) -> ApiProxy:
    proxy = ApiProxy(url.removesuffix("/api")).start()
    stops.append(proxy.stop)
    return proxy


def start_orchestrator(
    folder: Path,
    database_url: str | None,
    deployment: tuple[str, str] | None,
    workers: int,
    source: Path = REPO,
    worker_env: dict[str, str] | None = None,
) -> Orchestrator:
    """A ``prefect server start`` on ``database_url`` (None: SQLite under its home) behind a counting proxy;
    with ``deployment`` (``flow/name``, entrypoint) also the work pool, the deployment of ``source``'s code and
    ``workers`` process workers with ``worker_env`` (the S3 endpoint), behind a second proxy."""
    from flows.prefect_setup import SLOT_WAIT_S, SLOT_WAIT_VARIABLE
    from tests.flows.prefect_server import PrefectServer

    folder.mkdir(parents=True, exist_ok=True)
    server = PrefectServer(folder, database_url)
    server.env = _clean_env(source, **{k: v for k, v in server.env.items() if k.startswith("PREFECT_")})
    server.env[SLOT_WAIT_VARIABLE] = str(SLOT_WAIT_S)  # what the CLI gives its own local server
    server.env["PREFECT_API_LOG_RETRYABLE_ERRORS"] = "true"  # a 503's cause (e.g. a locked database) in its log
    stops: list[Callable[[], None]] = [server.stop]
    server.start()
    orchestrator = Orchestrator(server.url, _proxy(server.url, stops), server, database_url, stops=stops)
    if deployment is not None:
        deploy(server, *deployment, source)
        orchestrator.worker_proxy = _proxy(server.url, stops)
        server.env.update(worker_env or {})
        server.env.update(PREFECT_API_URL=orchestrator.worker_proxy.url, OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
        for i in range(workers):
            start_worker(server, f"worker-{i}", source)
        orchestrator.deployment = deployment[0]
    return orchestrator


def start_worker(server: Any, name: str, source: Path) -> None:
    """A process worker on :data:`POOL` running one flow run at a time, started in ``source`` (a flow run's
    ``python -m`` puts its working folder first on its path), logging to ``<name>.log``."""
    command = [sys.executable, "-m", "prefect", "worker", "start", "--pool", POOL, "--limit", "1", "--name", name]
    with (server.folder / f"{name}.log").open("wb") as log:
        proc = subprocess.Popen(
            command, env=server.env, stdout=log, stderr=subprocess.STDOUT, cwd=source, start_new_session=True
        )
    server.workers.append(proc)


def child_deployment(source: Path = REPO) -> tuple[str, str]:
    """(``flow/deployment``, entrypoint) of the deployment the nightly catalog run fans out to, as
    ``source``'s ``deployments/prefect.yaml`` declares it."""
    import yaml

    prefect_yaml = source / "deployments" / "prefect.yaml"
    project = yaml.safe_load(prefect_yaml.read_text())
    by_name = {d["name"]: d for d in project["deployments"]}
    targets = [d["parameters"]["run"]["deployment"] for d in project["deployments"] if _fans_out(d)]
    if not targets:
        raise SystemExit(f"{prefect_yaml}: no deployment fans out (parameters.run.deployment)")
    return targets[0], by_name[targets[0].split("/", 1)[1]]["entrypoint"]


def _fans_out(deployment: dict) -> bool:
    return bool(((deployment.get("parameters") or {}).get("run") or {}).get("deployment"))


#: deploys argv[2] (an entrypoint of the checkout argv[1]) as deployment argv[3] on pool argv[4]; prints the flow's
#: name. In a subprocess of that checkout, so its own code gives the parameters' schema
DEPLOY = r"""
import sys
from prefect import flow
from flows.sync import sync_result
source, entrypoint, name, pool = sys.argv[1:5]
loaded = sync_result(flow.from_source(source=source, entrypoint=entrypoint))
sync_result(loaded.deploy(name=name, work_pool_name=pool, print_next_steps=False, build=False, push=False))
print("FLOW", loaded.name)
"""


def deploy(server: Any, target: str, entrypoint: str, source: Path = REPO) -> None:
    """The process work pool :data:`POOL` and ``entrypoint`` of ``source`` deployed as ``target``."""
    create = [sys.executable, "-m", "prefect", "work-pool", "create", POOL, "--type", "process"]
    subprocess.run(create, env=server.env, check=True, capture_output=True, cwd=server.folder)
    flow_name, name = target.split("/", 1)
    command = [sys.executable, "-c", DEPLOY, str(source), entrypoint, name, POOL]
    done = subprocess.run(command, env=server.env, cwd=source, capture_output=True, text=True)
    if done.returncode or f"FLOW {flow_name}" not in done.stdout:
        raise SystemExit(f"deploying {entrypoint} as {target} failed:\n{done.stdout[-1000:]}{done.stderr[-2000:]}")


# -- reading a row back --------------------------------------------------------------------------------
def union_seconds(intervals: list[tuple[float, float]]) -> float:
    """The length of the union of ``(start, end)`` intervals."""
    total, reach = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > reach:
            total += end - max(start, reach)
            reach = end
    return total


def _stamp(text: str | None) -> float | None:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).timestamp() if text else None


def _read_all(client: Any, url: str, body: dict) -> list[dict]:
    """Every object of a ``/…/filter`` endpoint, 200 a page (sorted by id, so pages neither repeat nor skip)."""
    found: dict[str, dict] = {}
    while True:
        page = client.post(url, json={**body, "limit": 200, "offset": len(found)})
        page.raise_for_status()
        items = page.json()
        found.update((item["id"], item) for item in items)
        if len(items) < 200:
            return list(found.values())


def prefect_runs(api: str, since: float | None) -> dict:
    """Flow and task runs of the row from the API (``since``: only flow runs started after it, and their task
    runs; None: the whole server): counts, the union of the task runs' intervals, the coordinator's flow time."""
    import httpx

    with httpx.Client(base_url=api, timeout=120) as client:
        after = {"after_": datetime.fromtimestamp(since).astimezone().isoformat()} if since else None
        flows = _read_all(client, "/flow_runs/filter", {"sort": "ID_DESC", **_filter(start_time=after)})
        ids = [f["id"] for f in flows]
        tasks: list[dict] = []
        for i in range(0, len(ids) if since else 1, 500):
            chosen = _filter(id={"any_": ids[i : i + 500]} if since else None)
            tasks += _read_all(client, "/task_runs/filter", {"sort": "ID_DESC", **chosen})
    intervals = [(_stamp(t["start_time"]), _stamp(t["end_time"])) for t in tasks]
    coordinator = [f for f in flows if not f.get("deployment_id") and not f.get("parent_task_run_id")]
    flow_s = [_stamp(f["end_time"]) - _stamp(f["start_time"]) for f in coordinator if f["start_time"] and f["end_time"]]
    return {
        "flow_runs": len(flows),
        "task_runs": len(tasks),
        "task_s": union_seconds([(a, b) for a, b in intervals if a is not None and b is not None]),
        "unfinished": sum(b is None for _, b in intervals),
        "flow_s": max(flow_s, default=None),
        "task_kinds": Counter(_task_kind(t["name"]) for t in tasks),
    }


def _filter(**fields: Any) -> dict:
    """A ``flow_runs`` filter body of the ``fields`` given (none: no filter)."""
    chosen = {k: v for k, v in fields.items() if v is not None}
    return {"flow_runs": chosen} if chosen else {}


def _task_kind(name: str) -> str:
    """``publish-concept-cff`` → ``publish-concept``; a name without the suffix (the stand-in task run Prefect
    makes in the parent for each child flow run, named after that flow run) → ``(child flow run)``."""
    kind, found = re.subn(r"-[0-9a-f]{3,}$", "", name)
    return kind if found else "(child flow run)"


def settled_runs(api: str, since: float | None, quiet_s: float = 3.0, limit_s: float = 120.0) -> dict:
    """:func:`prefect_runs` once the counts stop changing (the server records task runs from events, after)."""
    deadline, last = time.monotonic() + limit_s, None
    while True:
        runs = prefect_runs(api, since)
        key = (runs["flow_runs"], runs["task_runs"], runs["unfinished"])
        if key == last or time.monotonic() > deadline:
            return runs
        last = key
        time.sleep(quiet_s)


def database_mib(orchestrator: Orchestrator) -> float | None:
    """The server's database size: the SQLite files under its home, or ``pg_database_size``."""
    if orchestrator.server is None:
        return None
    if orchestrator.database_url is None:
        home = Path(orchestrator.server.env["PREFECT_HOME"])
        return sum(p.stat().st_size for p in home.glob("*.db*")) / 2**20
    address = re.match(r".*@([\d.]+):(\d+)/(\w+)$", orchestrator.database_url)
    assert address is not None, orchestrator.database_url
    host, port, name = address.groups()
    query = ["psql", "-h", host, "-p", port, "-U", "postgres", "-d", name, "-tAc"]
    size = subprocess.run([*query, "select pg_database_size(current_database())"], capture_output=True, text=True)
    return int(size.stdout.strip()) / 2**20 if size.returncode == 0 else None


def server_log_errors(orchestrator: Orchestrator) -> tuple[int, str]:
    """The ERROR/CRITICAL records of the server's log, and its most frequent exception line (with its count)."""
    if orchestrator.server is None or not orchestrator.server.log.exists():
        return 0, ""
    lines = orchestrator.server.log.read_text(errors="replace").splitlines()
    records = sum(bool(re.search(r"\| (ERROR|CRITICAL) +\|", line)) for line in lines)
    causes = Counter(line.strip()[:200] for line in lines if re.match(r"[\w.]+(Error|Exception): ", line))
    return records, "; ".join(f"server: {n}x {cause}" for cause, n in causes.most_common(1))


# -- one row -------------------------------------------------------------------------------------------
def learn_command(inputs: Inputs, catalog: str, out: str, pack: int, extra: list[str]) -> list[str]:
    return _sstar(
        "learn", "--catalog", catalog, "--out", out, "--model", str(inputs.model), *LEAST_WORK,
        "--clip-checkpoint", str(inputs.clip), "--prompts", str(inputs.prompts), "--concepts-per-batch", str(pack),
        *extra,
    )  # fmt: skip


def measured(command: list[str], env: dict[str, str], folder: Path) -> dict:
    """Run ``command`` under :data:`MEASURE`; its wall time, exit status, CPU and peak RSS, and its log."""
    usage, log = folder / "usage.json", folder / "sstar-learn.log"
    with log.open("wb") as handle:
        subprocess.run(
            [sys.executable, "-c", MEASURE, str(usage), *command],
            env=env,
            stdout=handle,
            stderr=subprocess.STDOUT,
            cwd=folder,
        )
    result = json.loads(usage.read_text())
    result["log"] = log.read_text(errors="replace")
    return result


def run_row(n: int, mode: str, args: argparse.Namespace, inputs: Inputs, moto: Moto, make_db) -> dict:
    """One row: the catalog, the server (and pool), the measured ``sstar learn``, the read-back."""
    started, load1 = time.monotonic(), os.getloadavg()[0]
    folder = Path(tempfile.mkdtemp(prefix=f"{mode}-n{n}-", dir=args.work))
    prefix = folder.name
    moto.upload_catalog(f"{prefix}/catalog", n, args.images)
    if args.prefect_api_url:
        stops: list[Callable[[], None]] = []
        orchestrator = Orchestrator(args.prefect_api_url, _proxy(args.prefect_api_url, stops), stops=stops)
    else:
        deployment = _deployment_target(args) if mode == "deployment" else None
        database = make_db(f"prefect_{prefix.replace('-', '_')}") if args.database == "postgres" else None
        orchestrator = start_orchestrator(
            folder / "server", database, deployment, args.deployment_workers, args.source, _run_env(args, moto)
        )
    try:
        extra = list(args.learn_args)
        if orchestrator.deployment:
            extra += [
                "--deployment",
                orchestrator.deployment,
                "--max-concurrent-inversions",
                str(args.deployment_workers),
            ]
        command = learn_command(
            inputs, f"s3://{BUCKET}/{prefix}/catalog", f"s3://{BUCKET}/{prefix}/out", args.packs, extra
        )
        env = _clean_env(
            args.source,
            **_run_env(args, moto),
            PREFECT_API_URL=orchestrator.proxy.url,
            PREFECT_HOME=str(folder / "prefect-home"),
        )
        for proxy in (orchestrator.proxy, orchestrator.worker_proxy):
            if proxy is not None:
                proxy.reset()
        setup_s, since = time.monotonic() - started, time.time() - 1
        result = measured(command, env, folder)
        counts = orchestrator.proxy.reset()
        workers = orchestrator.worker_proxy.reset() if orchestrator.worker_proxy else None
        read_from = time.monotonic()
        runs = settled_runs(orchestrator.url, since if orchestrator.server is None else None)
        row = _row(n, mode, args, result, runs, counts, workers)
        row |= {"load1": round(load1, 2), "database": args.database if orchestrator.server else "external"}
        row |= {"db_mib": _round(database_mib(orchestrator), 2), "setup_s": round(setup_s, 1)}
        records, causes = server_log_errors(orchestrator)
        row |= {"server_log_errors": records, "readout_s": round(time.monotonic() - read_from, 1)}
        row["note"] = "; ".join(filter(None, [row["note"], causes, *_first_5xx(counts, workers)]))
    finally:
        orchestrator.stop()
    row["row_s"] = round(time.monotonic() - started, 1)
    return row


def _first_5xx(*counts: ApiCounts | None) -> list[str]:
    """The proxies' 5xx answers, each route once with its count (``3x 503 POST /v2/…``)."""
    seen = sum((c.errors for c in counts if c is not None), Counter())
    return [f"{n}x {error}" for error, n in seen.most_common(3)]


def _run_env(args: argparse.Namespace, moto: Moto) -> dict[str, str]:
    """What the coordinator and the workers' flow runs need besides Prefect's settings: the S3 endpoint, a cache."""
    return {"AWS_ENDPOINT_URL": moto.endpoint, "SSTAR_CACHE_DIR": str(Path(args.work) / "cache")}


def _deployment_target(args: argparse.Namespace) -> tuple[str, str]:
    if args.child_deployment:
        target, _, entrypoint = args.child_deployment.partition("=")
        return target, entrypoint
    return child_deployment(args.source)


def _round(value: float | None, digits: int) -> float | str:
    return "" if value is None else round(value, digits)


def _row(n: int, mode: str, args, result: dict, runs: dict, counts: ApiCounts, workers: ApiCounts | None) -> dict:
    wall, packs = result["wall_s"], -(-n // args.packs)
    learned = re.search(r"run \S+: (\d+) learned, (\d+) skipped, (\d+) failed", result["log"])
    note = f"{runs['unfinished']} task runs without an end" if runs["unfinished"] else ""
    if result["exit"] != 0:
        note = "; ".join(filter(None, [note, _last_error(result["log"])]))
    return {
        "date": datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z"),
        "commit": _commit(args.source),
        "label": args.label,
        "mode": mode,
        "concepts": n,
        "pack": args.packs,
        "exit": result["exit"],
        "learned": int(learned.group(1)) if learned else "",
        "wall_s": round(wall, 1),
        "flow_s": _round(runs["flow_s"], 1),
        "task_s": round(runs["task_s"], 1),
        "orch_s": round(wall - runs["task_s"], 1),
        "orch_ms_per_concept": round(1000 * (wall - runs["task_s"]) / n, 1),
        "cpu_s": round(result["cpu_s"], 1),
        "cpu_ms_per_concept": round(1000 * result["cpu_s"] / n, 1),
        "task_runs": runs["task_runs"],
        "task_runs_per_pack": round(runs["task_runs"] / packs, 2),
        "flow_runs": runs["flow_runs"],
        "api_calls": counts.total,
        "api_per_concept": round(counts.total / n, 1),
        "ws_events": counts.ws_messages,
        "worker_api_calls": workers.total if workers else "",
        "worker_ws_events": workers.ws_messages if workers else "",
        "peak_rss_mib": round(result["maxrss_kib"] / 1024),
        "http_5xx": counts.server_errors + (workers.server_errors if workers else 0),
        "top_calls": counts.top(),
        "task_kinds": "; ".join(f"{k} {v}" for k, v in runs["task_kinds"].most_common(6)),
        "note": note,
    }


def _last_error(log: str) -> str:
    lines = [line.strip() for line in log.splitlines() if line.strip()]
    errors = [line for line in lines if re.search(r"error|Error|Exception|Traceback", line)]
    return (errors or lines or ["no output"])[-1][:300]


def _commit(source: Path) -> str:
    """The measured code's commit: ``source``'s, ``+dirty`` when the code a run executes has uncommitted
    changes; for an export (``git archive``) the first line of its ``COMMIT`` file."""
    if (source / "COMMIT").exists() and not (source / ".git").exists():
        return (source / "COMMIT").read_text().split("\n", 1)[0].strip() + " (export)"
    head = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=source, capture_output=True, text=True)
    paths = ["flows", "tasks", "storage", "inversion", "common", "reports"]
    dirty = subprocess.run(["git", "status", "--porcelain", *paths], cwd=source, capture_output=True, text=True)
    return head.stdout.strip() + ("+dirty" if dirty.stdout.strip() else "")


# -- the table -----------------------------------------------------------------------------------------
def print_table(rows: list[dict]) -> None:
    widths = [max(len(h), *(len(str(r.get(h, ""))) for r in rows)) for h in SHOWN]
    print("  ".join(h.rjust(w) for h, w in zip(SHOWN, widths)))
    for row in rows:
        print("  ".join(str(row.get(h, "")).rjust(w) for h, w in zip(SHOWN, widths)), flush=True)


def markdown(path: Path) -> str:
    """The CSV as a markdown table (the columns of :data:`SHOWN`, with the date and commit)."""
    shown = ("date", "commit", "label", *SHOWN)
    rows = list(csv.DictReader(path.open()))
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(r.get(k, "")).replace("|", "/") for k in shown) + " |" for r in rows]
    return "\n".join(lines)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.first_night", description=__doc__.split("\n\n")[0])
    parser.add_argument("--n", default="1000", help="comma-separated catalog sizes (default 1000)")
    parser.add_argument("--mode", choices=("local", "deployment"), default="local")
    parser.add_argument("--packs", type=int, default=8, help="concepts per pack (--concepts-per-batch; default 8)")
    parser.add_argument("--images", type=int, default=2, help="images per concept (default 2)")
    parser.add_argument("--database", choices=("sqlite", "postgres"), help="default: sqlite local, postgres deployment")
    parser.add_argument("--deployment-workers", type=int, default=2, help="process workers (deployment; default 2)")
    parser.add_argument("--child-deployment", default="", help="'flow/name=path.py:function' (default: prefect.yaml's)")
    parser.add_argument("--learn-args", default="", help="more sstar learn options, space-separated")
    parser.add_argument("--label", default="", help="a note on every row (e.g. 'quiet machine')")
    parser.add_argument("--source", default=str(REPO), help="the checkout whose code runs (default: this one)")
    parser.add_argument("--model", default="", help="a tiny model folder to use instead of building one")
    parser.add_argument("--prefect-api-url", default="", help="an existing Prefect server instead of one per row")
    parser.add_argument("--work", default="", help="work folder (default: a temporary one, deleted)")
    parser.add_argument("--out", default="bench/results-first-night.csv", help="the CSV (rows appended)")
    parser.add_argument("--show", default="", help="print this CSV as a markdown table and exit")
    return parser


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.show:
        print(markdown(Path(args.show)))
        return 0
    args.database = args.database or ("postgres" if args.mode == "deployment" else "sqlite")
    args.learn_args = args.learn_args.split()
    args.source = Path(args.source).resolve()
    with tempfile.TemporaryDirectory(prefix="sstar-first-night-") as tmp:
        args.work = str(Path(args.work or tmp).resolve())
        Path(args.work).mkdir(parents=True, exist_ok=True)
        return _rows(args, Path(args.out).resolve())


def _rows(args: argparse.Namespace, table: Path) -> int:
    inputs = Inputs.prepare(Path(args.work) / "inputs", Path(args.model).resolve() if args.model else None)
    moto, closing, rows = Moto(), [], []
    make_db = None
    try:
        if args.database == "postgres" and not args.prefect_api_url:
            from tests.flows.postgres import running_postgres

            cluster = running_postgres()
            make_db = cluster.__enter__().new_database
            closing.append(lambda: cluster.__exit__(None, None, None))
        for n in (int(x) for x in args.n.split(",")):
            row = run_row(n, args.mode, args, inputs, moto, make_db)
            append_row(table, COLUMNS, row)
            rows.append(row)
            print_table(rows[-1:])
            print(f"  row took {row['row_s']} s (setup {row['setup_s']} s); {row['note']}".rstrip("; "), flush=True)
    finally:
        for close in reversed(closing):
            close()
        moto.stop()
    print()
    print_table(rows)
    print(f"appended to {table}")
    return 0 if all(r["exit"] == 0 for r in rows) else 1


if __name__ == "__main__":
    sys.exit(main())
