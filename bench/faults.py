"""The fault table of issue 20: what a process fault costs a catalog run, and whether the run comes back whole.

Each trial strikes one ``sstar learn`` of a small catalog (the tiny random model, 6 concepts, packs of 2,
checkpoints every few steps, torch on one thread so the bytes repeat) at a seeded random moment, then
checks what is left against a clean reference run of the same catalog:

* **local** — ``kill -9`` (or, with ``--sigterm``, SIGTERM) of the whole ``sstar learn`` process group,
  then the same command again on the same ``PREFECT_HOME`` and output. The kill point is drawn as a phase
  (a seeded shuffle of :data:`KILL_PHASES`, so each phase is struck) and a uniform moment within that
  phase's length in the reference run; *where it struck* is read independently, from the run's log and
  output folder at the moment of the kill (:meth:`Watch.phase`).
* **deployment** — a real ``prefect server start`` (on PostgreSQL when ``tests/flows/postgres.py`` and a
  Debian PostgreSQL are there, else SQLite) with a process work pool of two workers and the
  ``learn-pack`` deployment; ``sstar learn --deployment`` fans the packs out. Faults, alternating:
  ``kill -9`` of one worker *and the flow run it started* while a concept trains, and a ``kill -9`` +
  restart of the server. The command is left to finish by itself (a re-run follows only when it does not).

Per trial (one CSV row, appended as it finishes, so an interrupted table resumes where it stopped):
where it struck, what was published at that moment, whether the re-run (or the surviving command)
finished, whether each concept's published ``learned_embeds.safetensors`` equals the reference's byte for
byte, whether the embeddings index holds every concept at the reference's digest, whether the dashboard's
latest status of every concept is ``ok``, duplicate metrics rows (one run, one concept, two rows), concepts
published before the kill and trained again, the step each killed concept resumed from, the steps of
training lost (estimated: the pack's step at the kill, from the checkpoint times, minus the step resumed
from) and the seconds to recover (the re-run's wall time). Run from the repository root::

    .venv/bin/python -m bench.faults --seed 20 --local 20 --deployment 5 --out bench/results-faults.csv
    .venv/bin/python -m bench.faults --show bench/results-faults.csv     # the table again, as markdown
"""

from __future__ import annotations

import argparse
import csv
import glob
import hashlib
import json
import os
import random
import re
import signal
import struct
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.csv_rows import append_row as append_csv_row

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

COLOURS = [(220, 30, 30), (30, 30, 220), (30, 180, 60), (230, 160, 30), (150, 40, 200), (30, 190, 190)]
PACK = 2
#: the phases of a catalog run as they follow each other (``finish``: the run's work is done, Prefect winds down)
PHASES = ("startup", "scan", "staging", "training", "scoring", "publish", "metrics", "index", "report", "finish")
KILL_PHASES = PHASES[:-1]
#: phases that last tens of milliseconds on the tiny model: followed every 5 ms instead of 50
QUICK_PHASES = ("publish", "metrics", "index", "report")
#: log marks of the middle phases, latest first (:meth:`Watch.phase`)
MILESTONES = (("done:remember-scan", "metrics"), ("published", "publish"), ("done:invert-pack", "scoring"))
COLUMNS = (
    "path", "trial", "fault", "target", "struck", "fault_s", "published_at_fault", "exit_after_fault",
    "stop_s", "rerun_exit", "finished", "same_embeddings", "index_ok", "status_ok", "duplicate_rows",
    "retrained", "resumed_from", "steps_lost", "recover_s", "reference_s", "note",
)  # fmt: skip
RUN_TIMEOUT_S = 600
#: the ``--quick`` kill point: while training, once every concept's first checkpoint is in the output store
FIRST_CHECKPOINT = ("training", -1.0)
#: torch on one thread: the floats are reduced in one order, so the bytes of the learned vectors repeat
THREADS = {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
EMBEDDING = "learned_embeds.safetensors"


# -- inputs and commands -------------------------------------------------------------------------------
@dataclass(frozen=True)
class Plan:
    """What every run of the table runs: the inputs under ``inputs``, ``steps`` per concept, a checkpoint
    every ``every`` steps, and (``api_url``) a Prefect server to use instead of each command's own."""

    inputs: Path
    concepts: int = 6
    steps: int = 20
    every: int = 4
    model: Path | None = None
    api_url: str | None = None

    def model_dir(self) -> Path:
        return self.model or self.inputs / "model"

    def learn_command(self, out: Path, *extra: str) -> list[str]:
        """The ``sstar learn`` every trial runs (absolute paths: deployment workers run elsewhere)."""
        inputs = self.inputs
        return _sstar(
            "learn", "--catalog", str(inputs / "catalog"), "--out", str(out), "--model", str(self.model_dir()),
            "--clip-arch", "sstar-tiny-clip", "--clip-checkpoint", str(inputs / "tiny-clip.pt"),
            "--prompts", str(inputs / "prompts.txt"), "--steps", str(self.steps), "--stop", "fixed",
            "--batch-size", "1", "--samples", "1", "--render-steps", "2", "--device", "cpu",
            "--concepts-per-batch", str(PACK), "--checkpoint-every", str(self.every), *extra,
        )  # fmt: skip

    def env(self, prefect_home: Path | None, base: dict[str, str] | None = None) -> dict[str, str]:
        """The environment of a run: without this shell's Prefect settings (unless ``base`` brings a server's,
        or the plan names a server), ``prefect_home`` as the Prefect home, torch on one thread."""
        env = dict(base) if base is not None else {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
        if self.api_url and base is None:
            env["PREFECT_API_URL"] = self.api_url
        if prefect_home is not None:
            env["PREFECT_HOME"] = str(prefect_home)
        return {
            **env,
            "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
            "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
            "DO_NOT_TRACK": "1",
            **THREADS,
            "CUDA_VISIBLE_DEVICES": "",
            "PYTHONHASHSEED": "0",
            "PYTHONUNBUFFERED": "1",
            "PYTHONPATH": str(REPO),
        }

    def prepare(self) -> None:
        """The tiny model (unless given), the tiny CLIP, a catalog of coloured squares (3 images each), a prompt."""
        folder = self.inputs
        if (folder / "ready").exists():
            return
        from inversion.evaluation.clip import write_tiny_clip
        from tests.conftest import write_shape_images

        folder.mkdir(parents=True, exist_ok=True)
        for i, colour in enumerate(COLOURS[: self.concepts]):
            concept = write_shape_images(folder / "catalog" / f"shape-{i}", count=3, color=colour, size=64, seed=i + 1)
            (concept / "concept.json").write_text(json.dumps({"initializer": "square"}))
        write_tiny_clip(folder / "tiny-clip.pt")
        (folder / "prompts.txt").write_text("a photo of {}\n")
        if self.model is None:
            made = subprocess.run(_sstar("model", "tiny", "--out", str(folder / "model")), env=self.env(folder / "ph"))
            if made.returncode:
                raise SystemExit("sstar model tiny failed")
        (folder / "ready").write_text("")


def _sstar(*args: str) -> list[str]:
    return [sys.executable, "-m", "flows.cli", *args]


def learn_options(plan: Plan) -> str:
    """``sstar learn --help`` of this tree: which fault-handling options it has."""
    return subprocess.run(_sstar("learn", "--help"), env=plan.env(None), capture_output=True, text=True).stdout


# -- following a run -----------------------------------------------------------------------------------
def checkpoint_step(path: Path) -> int | None:
    """The ``step`` in a checkpoint's safetensors header (read without torch), or None while it is unreadable."""
    try:
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        return int(json.loads(header["__metadata__"]["state"])["step"])
    except (OSError, ValueError, KeyError, struct.error):
        return None


@dataclass
class Watch:
    """One running ``sstar learn``: its log lines stamped as they are read, the phase it is in (from the log
    and the output folder), and its checkpoints' steps over time."""

    log: Path
    out: Path
    started: float = field(default_factory=time.monotonic)
    lines: list[tuple[float, str]] = field(default_factory=list)
    phases: dict[str, float] = field(default_factory=dict)
    checkpoints: list[tuple[float, str, int]] = field(default_factory=list)
    run_id: str | None = None
    to_stage: int | None = None
    _read: int = 0
    _marks: set[str] = field(default_factory=set)
    _training: bool = False  # a chunk was staged: its packs train while later chunks stage
    _seen: dict[Path, float] = field(default_factory=dict)

    def seconds(self) -> float:
        return time.monotonic() - self.started

    def text(self) -> str:
        return "\n".join(line for _, line in self.lines)

    def poll(self) -> str:
        """Read what is new; the phase now (also recorded in :attr:`phases` the first time it is seen)."""
        self._read_log()
        phase = self.phase()
        self._read_checkpoints()
        self.phases.setdefault(phase, self.seconds())
        return phase

    def _read_log(self) -> None:
        try:
            with self.log.open("rb") as handle:
                handle.seek(self._read)
                chunk = handle.read()
        except OSError:
            return
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._read += len(complete)
        now = self.seconds()
        for line in complete.decode(errors="replace").splitlines():
            self.lines.append((now, line))
            self._mark(line)

    def _mark(self, line: str) -> None:
        found = re.search(r"run (\S+): (\d+) to stage", line)
        if found:
            self.run_id, self.to_stage = found.group(1), int(found.group(2))
        if "Beginning flow run" in line:
            self._marks.add("flow")
        if "Finished in state" in line:
            task = re.search(r"Task run '([a-z-]+)-[0-9a-f]+'", line)
            self._training |= bool(task and task.group(1) in ("stage-chunk", "invert-pack"))
            self._marks.add(f"done:{task.group(1)}" if task else "done:?")
        if " published to " in line:
            self._marks.add("published")
        if re.search(r"run \S+ done: \{", line):
            self._marks.add("finish")

    def phase(self) -> str:
        """Where the run is, from the latest milestone reached (see :data:`PHASES`)."""
        marks = self._marks
        if "finish" in marks:
            return "finish"
        ended = "done:remember-scan" in marks  # before it, metrics files are the chunks' (written as they finish)
        metrics = sorted(self.out.glob(f"metrics/run_date=*/{self.run_id}-*.parquet")) if self.run_id and ended else []
        if metrics:
            index = self.out / "embeddings_index" / "index.parquet"
            updated = index.exists() and index.stat().st_mtime_ns >= metrics[0].stat().st_mtime_ns
            return "report" if updated else "index"
        for mark, phase in MILESTONES:
            if mark in marks:
                return phase
        if self.to_stage is not None:
            return "training" if self._training else "staging"
        return "scan" if "flow" in marks else "startup"

    def _read_checkpoints(self) -> None:
        for path in self.out.glob("checkpoints/*/*/checkpoint.safetensors"):
            try:
                changed = path.stat().st_mtime_ns
            except OSError:
                continue
            if self._seen.get(path) != changed:
                step = checkpoint_step(path)
                if step is not None:
                    self._seen[path] = changed
                    self.checkpoints.append((self.seconds(), path.parent.parent.name, step))

    def stopped(self) -> dict[str, tuple[float, int]]:
        """Concepts that finished training: when (seconds) and at which pack step."""
        found = {}
        for seconds, line in self.lines:
            hit = re.search(r"- (\S+): stopped \(\w+\) at pack step (\d+)", line)
            if hit:
                found[hit.group(1)] = (seconds, int(hit.group(2)))
        return found


def run_watched(
    command: list[str], env: dict[str, str], log: Path, out: Path, strike: Callable[[Watch, str], bool] | None = None
) -> tuple[Watch, subprocess.Popen, str | None]:
    """Start ``command`` in a process group of its own, follow it every 50 ms (5 ms in :data:`QUICK_PHASES`);
    when ``strike(watch, phase)`` says so, stop following and return the phase it struck (the process still
    runs). Without ``strike``, or when the command ends first, it runs to its end (``RUN_TIMEOUT_S`` at most,
    then SIGKILL)."""
    with log.open("wb") as handle:
        proc = subprocess.Popen(command, env=env, stdout=handle, stderr=subprocess.STDOUT, start_new_session=True)
    watch = Watch(log, out)
    while proc.poll() is None:
        phase = watch.poll()
        if strike is not None and strike(watch, phase):
            return watch, proc, phase
        if watch.seconds() > RUN_TIMEOUT_S:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
            watch.lines.append((watch.seconds(), f"bench: killed after {RUN_TIMEOUT_S} s"))
            break
        time.sleep(0.005 if phase in QUICK_PHASES else 0.05)
    watch.poll()
    return watch, proc, None


# -- what a run left behind ----------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def published(out: Path) -> dict[str, dict[str, str]]:
    """Complete results by concept: digest → SHA-256 of its ``learned_embeds.safetensors`` and ``training.json``."""
    found: dict[str, dict[str, str]] = {}
    for success in sorted(out.glob("embeddings/*/*/_SUCCESS")):
        folder = success.parent
        found.setdefault(folder.parent.name, {})[folder.name] = (
            f"{_sha256(folder / EMBEDDING)}:{_sha256(folder / 'training.json')}"
        )
    return found


def _parquet_rows(pattern: str) -> list[dict]:
    import pyarrow.parquet as pq

    return [row for path in sorted(glob.glob(pattern)) for row in pq.read_table(path).to_pylist()]


def outcome(out: Path, reference: dict) -> dict[str, str]:
    """The checks of a finished output against the reference's: embeddings, index, status, duplicate rows."""
    results = published(out)
    digests = reference["digests"]
    wrong = [
        c
        for c, d in digests.items()
        if list(results.get(c, {})) != [d] or results[c][d].split(":")[0] != reference["embeddings"][c]
    ]
    index = {r["concept_id"]: r["digest"] for r in _parquet_rows(str(out / "embeddings_index" / "index.parquet"))}
    metrics = _parquet_rows(str(out / "metrics" / "run_date=*" / "*.parquet"))
    pairs = [(r["run_id"], r["concept_id"]) for r in metrics]
    duplicates = sorted({f"{run}/{concept}" for run, concept in pairs if pairs.count((run, concept)) > 1})
    statuses = status_problems(out, digests, metrics)
    return {
        "same_embeddings": "yes" if not wrong else "no: " + " ".join(wrong),
        "index_ok": "yes" if index == digests else f"no: {_differences(index, digests)}",
        "status_ok": "yes" if not statuses else "no: " + "; ".join(statuses),
        "duplicate_rows": str(len(duplicates)) + (f" ({' '.join(duplicates)})" if duplicates else ""),
    }


def status_problems(out: Path, digests: dict[str, str], metrics: list[dict]) -> list[str]:
    """What differs from a clean run's status, per concept: the dashboard's latest row is ``ok`` (or
    ``skipped``: a later run found the result) at the reference's digest, its latest ``ok`` row is at that
    digest, and the metrics hold an ``ok`` row for it (what the SQL views and a rebuilt dashboard read)."""
    state = _parquet_rows(str(out / "reports" / "dashboard-state.parquet"))
    latest = {r["concept_id"]: r for r in state if r.get("kind") == "latest"}
    latest_ok = {r["concept_id"]: r for r in state if r.get("kind") == "latest_ok"}
    ok_rows = {(r["concept_id"], r["digest"]) for r in metrics if r["status"] == "ok"}
    problems: dict[str, list[str]] = {}
    for concept, digest in sorted(digests.items()):
        row, learned = latest.get(concept), latest_ok.get(concept)
        if row is None or row["status"] not in ("ok", "skipped") or row["digest"] != digest:
            problems.setdefault(f"latest {row and row['status']}", []).append(concept)
        if learned is None or learned["digest"] != digest:
            problems.setdefault("no latest ok row in the dashboard", []).append(concept)
        if (concept, digest) not in ok_rows:
            problems.setdefault("no ok row in the metrics", []).append(concept)
    return [f"{problem}: {' '.join(concepts)}" for problem, concepts in problems.items()]


def _differences(seen: dict, expected: dict) -> str:
    missing = sorted(set(expected) - set(seen))
    wrong = sorted(k for k in expected if k in seen and seen[k] != expected[k])
    return f"missing {missing or '-'}, wrong {wrong or '-'}, extra {sorted(set(seen) - set(expected)) or '-'}"


def retrained_and_resumed(log: str, out: Path, at_fault: dict[str, dict[str, str]]) -> tuple[list[str], dict]:
    """Concepts complete at the fault that were trained again after it (a trainer's line of theirs in ``log``,
    what ran after the fault, or changed bytes), and the step each concept trained after it resumed from
    (its ``training.json``)."""
    after = published(out)
    retrained = sorted(
        c for c in at_fault if re.search(rf"- {re.escape(c)}: (stopped|resuming)", log) or after.get(c) != at_fault[c]
    )
    resumed = {}
    for concept, digests in after.items():
        if concept not in at_fault:
            (digest,) = list(digests)[-1:]
            record = json.loads((out / "embeddings" / concept / digest / "training.json").read_text())
            resumed[concept] = int(record.get("resumed_from") or 0)
    return retrained, resumed


def pack_step_at(watch: Watch, seconds: float, reference: dict, only: str | None = None) -> float:
    """The pack's step at ``seconds`` into the run, from the last checkpoint or stop before it (a concept's
    step plus the pack step it entered at), extrapolated at ``step_s`` but not past the next checkpoint."""
    offsets, step_s = reference["offsets"], reference["step_s"]
    events = [(t, offsets.get(c, 0) + s) for t, c, s in watch.checkpoints if t <= seconds and only in (None, c)]
    events += [(t, p) for c, (t, p) in watch.stopped().items() if t <= seconds and only in (None, c)]
    if not events:
        return 0.0
    t, step = max(events)
    return min(step + (seconds - t) / step_s, step + reference["every"] - 1)


def steps_lost(reached_pack_step: float, reference: dict, resumed: dict[str, int]) -> int:
    """Concept-steps trained before the fault and trained again: for each concept the re-run trained, the
    steps it had reached (pack step minus its entry step, within [0, steps]) beyond the step it resumed from."""
    lost = 0.0
    for concept, resumed_from in resumed.items():
        reached = min(max(reached_pack_step - reference["offsets"].get(concept, 0), 0), reference["steps"])
        lost += max(0.0, reached - resumed_from)
    return round(lost)


# -- the reference -------------------------------------------------------------------------------------
def reference_run(folder: Path, command: list[str], env: dict[str, str], plan: Plan) -> dict:
    """A clean run (cached in ``reference.json``): its digests, embedding hashes, phase starts, pack offsets."""
    saved = folder / "reference.json"
    if saved.exists():
        return json.loads(saved.read_text())
    folder.mkdir(parents=True, exist_ok=True)
    out = Path(command[command.index("--out") + 1])
    watch, proc, _ = run_watched(command, env, folder / "reference.log", out)
    if proc.returncode != 0:
        raise SystemExit(f"the reference run failed ({proc.returncode}): {folder / 'reference.log'}")
    results = published(out)
    entered = {c: p - plan.steps for c, (_, p) in watch.stopped().items()}
    reference = {
        "seconds": watch.seconds(),
        "digests": {c: next(iter(d)) for c, d in results.items()},
        "embeddings": {c: next(iter(d.values())).split(":")[0] for c, d in results.items()},
        "phases": watch.phases,
        "offsets": entered,
        "steps": plan.steps,
        "every": plan.every,
        "step_s": seconds_per_step(watch.checkpoints),
        "checkpoint_span": max((t for t, _, _ in watch.checkpoints), default=0.0)
        - min((t for t, _, _ in watch.checkpoints), default=0.0),
    }
    saved.write_text(json.dumps(reference, indent=1))
    return reference


def seconds_per_step(checkpoints: list[tuple[float, str, int]]) -> float:
    """The median seconds per step between a concept's consecutive checkpoints (0.2 s when there are none)."""
    last: dict[str, tuple[float, int]] = {}
    rates = []
    for seconds, concept, step in checkpoints:
        if concept in last and step > last[concept][1]:
            rates.append((seconds - last[concept][0]) / (step - last[concept][1]))
        last[concept] = (seconds, step)
    return sorted(rates)[len(rates) // 2] if rates else 0.2


def phase_lengths(reference: dict) -> dict[str, float]:
    starts = reference["phases"]
    seen = [p for p in PHASES if p in starts] + ["end"]
    ends = {**starts, "end": reference["seconds"]}
    return {p: ends[seen[i + 1]] - starts[p] for i, p in enumerate(seen[:-1])}


# -- the local path ------------------------------------------------------------------------------------
def kill_points(seed: int, count: int, reference: dict, among: Sequence[str] = KILL_PHASES) -> list[tuple[str, float]]:
    """``count`` kill points: a phase from seeded shuffles of ``among`` and a uniform moment within its length
    in the reference run (seconds after the phase starts)."""
    rng, lengths, phases = random.Random(seed), phase_lengths(reference), list[str]()
    while len(phases) < count:
        batch = list(among)
        rng.shuffle(batch)
        phases += batch
    return [(p, round(rng.uniform(0, lengths.get(p, 0.0)), 2)) for p in phases[:count]]


def strike_at(target: str, delay: float) -> Callable[[Watch, str], bool]:
    """Strike once ``target`` has lasted ``delay`` seconds, or at once when the run has already passed it."""

    def due(watch: Watch, phase: str) -> bool:
        if PHASES.index(phase) > PHASES.index(target):
            return True
        return phase == target and watch.seconds() - watch.phases[target] >= delay

    return due


def strike_at_first_checkpoint(concepts: int) -> Callable[[Watch, str], bool]:
    """Strike once the output store holds a checkpoint of every one of the ``concepts`` at one step (or the run has
    gone past training): a kill while training whatever the machine's speed (a delay drawn from the reference
    run's phase lengths can land after training on a machine busier or quieter than the reference's), and not
    between two uploads of one pack step (which leaves the pack's concepts resuming from different steps)."""

    def due(watch: Watch, phase: str) -> bool:
        latest = {concept: step for _, concept, step in watch.checkpoints}
        return (len(latest) == concepts and len(set(latest.values())) == 1) or (
            PHASES.index(phase) > PHASES.index("training")
        )

    return due


def signal_group(proc: subprocess.Popen, sig: int, grace: float = 60.0) -> tuple[int | None, float]:
    """Send ``sig`` to the process group; its exit code and seconds to exit (SIGKILL after ``grace`` s: None)."""
    sent = time.monotonic()
    os.killpg(proc.pid, sig)
    try:
        proc.wait(timeout=grace)
        code: int | None = proc.returncode
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        code = None
    _kill_leftovers(proc.pid)
    return code, round(time.monotonic() - sent, 1)


def end_leftovers(prefect_home: Path, grace: float = 5.0) -> list[str]:
    """Processes of a struck run still alive ``grace`` s after its command ended (its Prefect home in their
    environment), as ``pid:name``; each is then ended with SIGKILL, so the re-run starts alone."""
    deadline = time.monotonic() + grace
    while (left := _with_home(prefect_home)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pid, _ in left:
        _kill_leftovers(pid, os.kill)
    return [f"{pid}:{name}" for pid, name in left]


def _with_home(prefect_home: Path) -> list[tuple[int, str]]:
    marker = f"PREFECT_HOME={prefect_home}\0".encode()
    found = []
    for environ in Path("/proc").glob("[0-9]*/environ"):
        try:
            if marker in environ.read_bytes():
                found.append((int(environ.parent.name), (environ.parent / "comm").read_text().strip()))
        except (OSError, ValueError):
            continue
    return found


def _kill_leftovers(target: int, kill: Callable[[int, int], None] = os.killpg) -> None:
    try:
        kill(target, signal.SIGKILL)
    except ProcessLookupError:
        pass


def local_trial(trial: int, point: tuple[str, float], fault: str, plan: Plan, work: Path, reference: dict) -> dict:
    """Strike one local run at ``point`` with ``fault`` (``kill -9`` or ``sigterm``), run it again, check it."""
    folder = work / f"local-{fault.replace(' -', '').replace(' ', '-')}-{trial:02d}"
    folder.mkdir(parents=True, exist_ok=True)
    out, env = folder / "out", plan.env(folder / "prefect-home")
    command = plan.learn_command(out)
    strike = strike_at_first_checkpoint(plan.concepts) if point == FIRST_CHECKPOINT else strike_at(*point)
    watch, proc, struck = run_watched(command, env, folder / "struck.log", out, strike)
    fault_s = round(watch.seconds(), 1)
    at_fault = published(out)
    code, stop_s = signal_group(proc, signal.SIGKILL if fault == "kill -9" else signal.SIGTERM)
    left = end_leftovers(folder / "prefect-home")
    rerun, again, _ = run_watched(command, env, folder / "rerun.log", out)
    row = {
        "target": "training, first checkpoint" if point == FIRST_CHECKPOINT else f"{point[0]}+{point[1]:.1f}s",
        "struck": struck or "after exit",
        "fault_s": fault_s,
        "published_at_fault": len(at_fault),
        "exit_after_fault": code if struck else proc.returncode,
        "stop_s": stop_s if fault != "kill -9" else "",
        "rerun_exit": again.returncode,
        "finished": "yes" if again.returncode == 0 else "no",
        "recover_s": round(rerun.seconds(), 1),
    }
    retrained, resumed = retrained_and_resumed(rerun.text(), out, at_fault)
    reached = pack_step_at(watch, fault_s, reference)
    row |= {
        "retrained": " ".join(retrained) or "none",
        "resumed_from": _resumed(resumed),
        "steps_lost": steps_lost(reached, reference, resumed),
        "note": " ".join(
            ([f"{len(left)} process(es) of the struck run still ran after it ended: {left}"] if left else [])
            + ([_last_error(rerun)] if again.returncode else [])
        ),
    }
    return row | outcome(out, reference)


def _last_error(watch: Watch) -> str:
    """The re-run's most telling line: its last error or exception line, else its last line."""
    lines = [line for _, line in watch.lines if line.strip()]
    errors = [line for line in lines if re.search(r"error|Error|Exception|Traceback|killed after", line)]
    return (errors or lines or ["no output"])[-1].strip()[:300]


# -- the deployment path -------------------------------------------------------------------------------
@dataclass
class Pool:
    """A ``prefect server start`` (:class:`tests.flows.prefect_server.PrefectServer`), the ``learn-pack``
    deployment on its process work pool ``local-gpu``, and the workers by name."""

    server: Any
    deployment_id: Any
    database: str
    workers: dict[str, subprocess.Popen] = field(default_factory=dict)

    def start_worker(self, name: str) -> None:
        self.workers[name] = self.server.start_worker("local-gpu", name)

    def replace_dead_workers(self, trial: int) -> None:
        """A killed worker is replaced, so each trial starts with two."""
        for name, worker in list(self.workers.items()):
            if worker.poll() is not None:
                del self.workers[name]
                self.start_worker(f"{name}-after-{trial}")

    def training_worker(self, concept: str) -> str | None:
        """The worker whose flow run learns ``concept`` now (the flow run's ``prefect.worker.name`` label)."""
        runs = [r for r in self.server.flow_runs(self.deployment_id) if r.state and r.state.is_running()]
        names = [r.labels.get("prefect.worker.name") for r in runs if r.parameters.get("concept_id") == concept]
        return next((n for n in names if n in self.workers and self.workers[n].poll() is None), None)


def start_pool(folder: Path, stack: list[Callable[[], None]]) -> Pool:
    """The server with two process workers and the deployment, from the tests' helpers
    (:mod:`tests.flows.prefect_server`); on the tests' PostgreSQL when a Debian PostgreSQL is installed."""
    from tests.flows.prefect_server import PrefectServer

    database = None
    if glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"):
        from tests.flows.postgres import running_postgres

        postgres = running_postgres()
        database = postgres.__enter__().new_database("sstar_faults")
        stack.append(lambda: None if postgres.__exit__(None, None, None) else None)
    folder.mkdir(parents=True, exist_ok=True)
    server = PrefectServer(folder, database)
    server.env.update(THREADS)  # the workers and the flow runs they start
    stack.append(server.stop)
    server.start()
    pool = Pool(server, server.deploy_learn_pack(), "postgresql" if database else "sqlite")
    for name in ("worker-0", "worker-1"):
        pool.start_worker(name)
    return pool


def deployment_command(plan: Plan, out: Path, options: str) -> list[str]:
    extra = ["--deployment", "learn-pack/learn-pack", "--workers", "2"]
    if "--child-heartbeat-timeout" in options:
        extra += ["--child-heartbeat-timeout", "90"]
    return plan.learn_command(out, *extra)


def _training_now(out: Path, done: dict) -> list[str]:
    """Concepts with a checkpoint and no complete result: those that train now."""
    found = {p.parent.parent.name for p in out.glob("checkpoints/*/*/checkpoint.safetensors")}
    return sorted(found - set(done))


def deployment_trial(trial: int, fault: str, rng: random.Random, pool: Pool, plan: Plan, work: Path, ref: dict) -> dict:
    """Strike a fanned-out run with ``fault`` (``kill worker`` or ``restart server``) at a random moment of its
    training; let the command finish by itself (RUN_TIMEOUT_S at most), re-run it only when it did not."""
    folder, env = work / f"deployment-{trial:02d}", plan.env(None, pool.server.env)
    folder.mkdir(parents=True, exist_ok=True)
    out = folder / "out"
    command = deployment_command(plan, out, learn_options(plan))
    delay, first_checkpoint = rng.uniform(0, ref["checkpoint_span"]), list[float]()

    def due(watch: Watch, phase: str) -> bool:  # ``delay`` s after the first checkpoint, while a concept trains
        if watch.checkpoints and not first_checkpoint:
            first_checkpoint.append(watch.checkpoints[0][0])
        late = bool(first_checkpoint) and watch.seconds() - first_checkpoint[0] >= delay
        return (late and bool(_training_now(out, published(out)))) or watch.seconds() > ref["seconds"] * 1.5

    # 1. strike while a concept trains
    watch, proc, _ = run_watched(command, env, folder / "struck.log", out, due)
    fault_s, at_fault, worker_logs = round(watch.seconds(), 1), published(out), _worker_logs(pool)
    struck, victim = _strike_deployment(fault, pool, out, at_fault)
    # 2. the command finishes by itself, or the user runs it again
    recovering = time.monotonic()
    code = _wait(proc, RUN_TIMEOUT_S)
    watch.poll()  # the rest of its log
    row: dict[str, Any] = {
        "target": f"first checkpoint+{delay:.1f}s",
        "struck": struck,
        "fault_s": fault_s,
        "published_at_fault": len(at_fault),
        "exit_after_fault": code if code is not None else "hung",
        "recover_s": round(time.monotonic() - recovering, 1),
        "finished": "yes" if code == 0 else "no",
        "note": _gpu_slots(pool.server),
    }
    if code != 0:
        row["note"] += f" The command: {_last_error(watch)}"
        rerun, again, _ = run_watched(command, env, folder / "rerun.log", out)
        row |= {"rerun_exit": again.returncode, "finished": "after a re-run" if again.returncode == 0 else "no"}
        row["recover_s"] = round(float(row["recover_s"]) + rerun.seconds(), 1)
        watch.lines += rerun.lines
    # 3. what was trained again, from where, and the steps the killed concept lost
    after_fault = watch.text() + "".join(text[worker_logs.get(name, 0) :] for name, text in _worker_logs(pool, True))
    retrained, resumed = retrained_and_resumed(after_fault, out, at_fault)
    row |= {"retrained": " ".join(retrained) or "none", "resumed_from": _resumed(resumed)}
    if victim is not None and victim in resumed:
        reached = pack_step_at(watch, fault_s, ref, only=victim)
        row["steps_lost"] = steps_lost(reached, ref, {victim: resumed[victim]})
    return row | outcome(out, ref)


def _resumed(resumed: dict[str, int]) -> str:
    return " ".join(f"{c}:{s}" for c, s in sorted(resumed.items()))


def _worker_logs(pool: Pool, texts: bool = False) -> Any:
    """The workers' logs (they carry their flow runs' output): sizes by name, or with ``texts`` (name, text) pairs."""
    logs = sorted(Path(pool.server.folder).glob("worker-*.log"))
    if texts:
        return [(log.name, log.read_text(errors="replace")) for log in logs]
    return {log.name: len(log.read_text(errors="replace")) for log in logs}


def _strike_deployment(fault: str, pool: Pool, out: Path, at_fault: dict) -> tuple[str, str | None]:
    """Apply ``fault``; where it struck (concepts published, concepts training, what was killed) and the
    concept whose flow run was killed."""
    from tests.flows.prefect_server import kill_worker_and_its_flow_runs

    training = _training_now(out, at_fault)
    struck = f"{len(at_fault)} published, training {' '.join(training) or 'none'}"
    if fault == "restart server":
        pool.server.restart()
        return struck + "; server killed and restarted", None
    for concept in training:
        name = pool.training_worker(concept)
        if name is not None:
            groups = kill_worker_and_its_flow_runs(pool.workers[name])
            return struck + f"; killed {name} and its flow run ({concept}; process groups {groups})", concept
    return struck + "; no worker found training", None


def _wait(proc: subprocess.Popen, timeout: float) -> int | None:
    """``proc``'s exit code, or None when it still ran after ``timeout`` s (its group is then killed)."""
    try:
        return proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        _kill_leftovers(proc.pid)
        proc.wait()
        return None


def _gpu_slots(server) -> str:
    """The GPU limit's slots still taken on the server after the trial (``slots taken: N``)."""
    from prefect.client.orchestration import get_client
    from prefect.settings import PREFECT_API_URL, temporary_settings

    try:
        with temporary_settings(updates={PREFECT_API_URL: server.url}), get_client(sync_client=True) as client:
            limit = client.read_global_concurrency_limit_by_name("sstar-gpu")
        return f"slots taken after: {limit.active_slots}."
    except Exception as exc:  # noqa: BLE001 - a report column, not a check
        return f"slots unknown ({type(exc).__name__})."


# -- the table -----------------------------------------------------------------------------------------
def done_trials(path: Path) -> set[tuple[str, str, str]]:
    if not path.exists():
        return set()
    return {(r["path"], r["fault"], r["trial"]) for r in csv.DictReader(path.open())}


def append_row(path: Path, row: dict) -> None:
    append_csv_row(path, COLUMNS, row)
    print(" | ".join(f"{k}={row.get(k, '')}" for k in COLUMNS if row.get(k, "") != ""), flush=True)


def markdown(path: Path) -> str:
    """The CSV as a markdown table (the columns a reader compares first)."""
    shown = ("path", "trial", "fault", "struck", "fault_s", "published_at_fault", "exit_after_fault", "stop_s",
             "finished", "same_embeddings", "index_ok", "status_ok", "duplicate_rows", "retrained", "resumed_from",
             "steps_lost", "recover_s", "note")  # fmt: skip
    rows = list(csv.DictReader(path.open()))
    lines = ["| " + " | ".join(shown) + " |", "|" + "---|" * len(shown)]
    lines += ["| " + " | ".join(str(r.get(k, "")).replace("|", "/") for k in shown) + " |" for r in rows]
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    if args.show:
        print(markdown(Path(args.show)))
        return 0
    if args.quick:
        args.local, args.deployment, args.phases = 1, 0, args.phases or "training"
    work, table = Path(args.work).resolve(), Path(args.out).resolve()
    model = Path(args.model).resolve() if args.model else None
    plan = Plan(work / "inputs", args.concepts, args.steps, args.checkpoint_every, model, args.prefect_api_url or None)
    plan.prepare()
    started = time.monotonic()
    if args.local:  # kill -9 first, then the deployment path, then SIGTERM (the issue asks for the first two)
        _local_trials(args, plan, work, table, "kill -9")
    if args.deployment:
        _deployment_trials(args, plan, work, table)
    if args.local and args.sigterm:
        _local_trials(args, plan, work, table, "sigterm")
    print(f"\n{markdown(table)}\n\n{time.monotonic() - started:.0f} s")
    return 0


def _local_trials(args: argparse.Namespace, plan: Plan, work: Path, table: Path, fault: str) -> None:
    folder = work / "reference"
    reference = reference_run(folder, plan.learn_command(folder / "out"), plan.env(folder / "prefect-home"), plan)
    points = kill_points(args.seed, args.local, reference, args.phases.split(",") if args.phases else KILL_PHASES)
    if args.quick:
        points = [FIRST_CHECKPOINT]
    done = done_trials(table)
    for trial, point in enumerate(points[: args.sigterm if fault == "sigterm" else len(points)], args.first_trial):
        if ("local", fault, str(trial)) not in done:
            row = local_trial(trial, point, fault, plan, work, reference)
            append_row(table, {"path": "local", "trial": trial, "fault": fault, **row} | _seconds(reference))


def _seconds(reference: dict) -> dict[str, float]:
    return {"reference_s": round(reference["seconds"], 1)}


def _deployment_trials(args: argparse.Namespace, plan: Plan, work: Path, table: Path) -> None:
    stack: list[Callable[[], None]] = []
    try:
        pool = start_pool(work / "server", stack)
        folder = work / "deployment-reference"
        command = deployment_command(plan, folder / "out", learn_options(plan))
        reference = reference_run(folder, command, plan.env(None, pool.server.env), plan)
        rng, done = random.Random(args.seed + 1), done_trials(table)
        for trial in range(args.deployment):
            fault = ("kill worker", "restart server")[trial % 2]
            if ("deployment", fault, str(trial)) in done:
                rng.random()  # the draw that trial made
                continue
            row = deployment_trial(trial, fault, rng, pool, plan, work, reference)
            row["note"] = f"{pool.database}. {row['note']}"
            append_row(table, {"path": "deployment", "trial": trial, "fault": fault, **row} | _seconds(reference))
            pool.replace_dead_workers(trial)
    finally:
        for close in reversed(stack):
            close()


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m bench.faults", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seed", type=int, default=20, help="seeds the kill points (default 20)")
    parser.add_argument("--local", type=int, default=20, help="local kill points (default 20)")
    parser.add_argument("--deployment", type=int, default=5, help="deployment-mode faults (default 5)")
    parser.add_argument("--sigterm", type=int, default=0, help="strike the first N local points with SIGTERM too")
    parser.add_argument("--first-trial", type=int, default=0, help="the first local trial's number (default 0)")
    parser.add_argument("--phases", default="", help="strike only these phases (comma-separated), in turn")
    parser.add_argument("--concepts", type=int, default=6, help="catalog size, at most 6 (default 6)")
    parser.add_argument("--steps", type=int, default=20, help="optimizer steps per concept (default 20)")
    parser.add_argument("--checkpoint-every", type=int, default=4, help="steps between checkpoints (default 4)")
    parser.add_argument("--model", default="", help="a tiny model folder to use instead of building one")
    parser.add_argument("--prefect-api-url", default="", help="one Prefect server for every local run (tests)")
    parser.add_argument(
        "--quick",
        action="store_true",
        help="one local kill -9 while training, once every concept has a checkpoint in the store (the smoke test)",
    )
    parser.add_argument("--work", default="/tmp/sstar-faults", help="work folder (kept: resumes trials)")
    parser.add_argument("--out", default="bench/results-faults.csv", help="the CSV (rows appended)")
    parser.add_argument("--show", default="", help="print this CSV as a markdown table and exit")
    return parser


if __name__ == "__main__":
    sys.exit(main())
