"""Golden test: what one small ``sstar learn`` catalog run writes, pinned in ``catalog_run.json``.

Written before modules move (a refactor that must not change behaviour), so it knows the product only
through what a user sees: the ``sstar`` command (resolved from ``[project.scripts]`` in pyproject.toml
and run in a fresh interpreter), the files it writes, and plain pyarrow / json / hashlib. It imports no
module of the product; the tiny scoring CLIP is written with open_clip directly from the
``sstar-tiny-clip.json`` architecture file, wherever that file lives in the repository.

The run: a tiny random model written by ``sstar model tiny``, two generated square concepts and one
composition of both, 4 optimizer steps (``--stop fixed``), one prompt, one sample, two render steps, on
the CPU, in a fresh ``PREFECT_HOME``, with torch on one thread (``OMP_NUM_THREADS=1``,
``MKL_NUM_THREADS=1``) so the floats are reduced in one order and the embedding bytes repeat (with two
threads they differ from one thread's). The pinned bytes hold for one set of installed libraries on one
CPU family; a new torch, diffusers or transformers (the ``inputs`` section shows it) is a reason to
regenerate, a moved module is not.

Pinned, each as a section of the golden file:

- ``concept_digests``: every concept's digest. A changed digest re-learns every user's catalog.
- ``output_keys``: the object keys under the output folder, with the run id, the run date and the
  ``<run_id>-<uuid8>.parquet`` suffix of write-once files replaced by placeholders.
- ``published_embeddings``: the SHA-256 of each published embedding file (``*.safetensors``, ``*.pt``).
  The ``.pt`` is torch's legacy format, which names each tensor storage by its memory address; those
  names are replaced by ordinals before hashing, every other byte counts.
- ``training_records``: each published ``training.json`` without its wall time (``train_seconds``).
- ``parquet_schemas``: column names, Arrow types and nullability, in order, of the metrics, embeddings
  index and composition metrics files (the two metrics files hold no ``run_date``: it lives in their
  hive directory name).
- ``inputs``: the SHA-256 of every file of the tiny model and of the CLIP checkpoint. When these
  change (a new diffusers, transformers or torch), the digests change with them: regenerate.
- ``baseline_and_composition_keys``: the keys under ``baselines/``, ``compositions/`` and
  ``composition_metrics/``. These cache keys MAY change once in the module-moving refactor; that
  section alone can be rewritten (see below), and a reviewer sees that nothing else moved.

Modes (environment variable ``SSTAR_REGENERATE_GOLDEN``):

- unset: compare every section with the golden file; fail with a unified diff of each section that
  differs.
- ``1`` or ``all``: run, rewrite the whole golden file, pass.
- a comma-separated list of section names, e.g. ``baseline_and_composition_keys``: rewrite those
  sections only and still compare all the others.
"""

from __future__ import annotations

import difflib
import hashlib
import io
import json
import os
import pickle
import pickletools
import re
import struct
import subprocess
import sys
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from tests.conftest import REPO_ROOT, write_shape_images

pytestmark = pytest.mark.slow

GOLDEN = Path(__file__).with_name("catalog_run.json")
REGENERATE = "SSTAR_REGENERATE_GOLDEN"
CACHE_KEYS = "baseline_and_composition_keys"
SECTIONS = (
    "inputs",
    "concept_digests",
    "output_keys",
    "published_embeddings",
    "training_records",
    "parquet_schemas",
    CACHE_KEYS,
)
#: keys under these prefixes go to the CACHE_KEYS section
CACHE_PREFIXES = ("baselines/", "compositions/", "composition_metrics/")
#: what the golden file says about itself (not compared)
ABOUT = (
    "Written by tests/golden/test_golden_catalog_run.py; regenerate deliberately with "
    "SSTAR_REGENERATE_GOLDEN=1 (all) or SSTAR_REGENERATE_GOLDEN=<section>[,<section>] (see the test's docstring)."
)

CONCEPTS = {"red-square": ((220, 30, 30), 1), "blue-square": ((30, 30, 220), 2)}
COMPOSITIONS = [{"id": "red-and-blue", "prompt": "a photo of {red-square} next to {blue-square}"}]
PROMPTS = "a photo of {}\n"
# every path relative to the run's working folder: keys that digest a path (a composition's key names
# the CLIP checkpoint as given) stay the same from one temporary folder to the next
LEARN_ARGS = [
    "learn",
    "--catalog", "catalog",
    "--out", "out",
    "--model", "model",
    "--clip-arch", "sstar-tiny-clip",
    "--clip-checkpoint", "tiny-clip.pt",
    "--prompts", "prompts.txt",
    "--steps", "4",
    "--stop", "fixed",
    "--batch-size", "2",
    "--samples", "1",
    "--render-steps", "2",
    "--device", "cpu",
    "--workers", "1",
    "--concepts-per-batch", "2",
    "--checkpoint-every", "2",
]  # fmt: skip

# runs ``module:function`` of the entry point with ``sys.argv`` as ``sstar`` would see it
_ENTRY = (
    "import importlib, sys\n"
    "module, function = sys.argv.pop(1), sys.argv.pop(1)\n"
    "sys.argv[0] = 'sstar'\n"
    "sys.exit(getattr(importlib.import_module(module), function)())\n"
)

# the tiny CLIP's random weights, as open_clip builds them from the architecture file with seed 0
_TINY_CLIP = (
    "import sys\n"
    "from pathlib import Path\n"
    "import open_clip, torch\n"
    "config_file, out = Path(sys.argv[1]), Path(sys.argv[2])\n"
    "open_clip.add_model_config(config_file)\n"
    "torch.manual_seed(0)\n"
    "model = open_clip.CLIP(**open_clip.get_model_config(config_file.stem))\n"
    "torch.save({k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}, out)\n"
)


def _sstar_entry_point() -> tuple[str, str]:
    """``(module, function)`` of the ``sstar`` script in pyproject.toml (follows the module wherever it moves)."""
    text = (REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8")
    scripts = re.search(r"^\[project\.scripts\]\s*$(.*?)(?=^\[|\Z)", text, re.M | re.S)
    assert scripts, "pyproject.toml has no [project.scripts]"
    found = re.search(r"""^\s*["']?sstar["']?\s*=\s*["']([\w.]+):(\w+)["']""", scripts.group(1), re.M)
    assert found, "pyproject.toml's [project.scripts] has no sstar entry"
    return found.group(1), found.group(2)


def _find_in_repo(name: str) -> Path:
    """The one file called ``name`` in the repository (hidden folders and caches left out)."""
    found = []
    for folder, subfolders, files in os.walk(REPO_ROOT):
        subfolders[:] = [d for d in subfolders if not d.startswith(".") and d not in ("__pycache__", "node_modules")]
        found += [Path(folder) / name for f in files if f == name]
    assert len(found) == 1, f"expected one {name} in the repository, found {found}"
    return found[0]


def _env(work: Path) -> dict[str, str]:
    """This process's environment without its Prefect and Hugging Face settings, with a new Prefect home, its own
    fingerprint cache and torch on one thread. (``HF_HUB_OFFLINE``, which a benchmark run earlier in the suite may
    leave set, makes transformers write ``local_files_only: true`` into the tiny model's tokenizer config: another
    model fingerprint, so other digests.)"""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("PREFECT_", "HF_", "HUGGINGFACE_", "TRANSFORMERS_")) and k != "DO_NOT_TRACK"
    }
    return {
        **env,
        "PREFECT_HOME": str(work / "prefect-home"),
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "DO_NOT_TRACK": "1",
        "SSTAR_CACHE_DIR": str(work / "sstar-cache"),
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
        "CUDA_VISIBLE_DEVICES": "",
        "PYTHONHASHSEED": "0",
        "PYTHONUNBUFFERED": "1",
        "PYTHONPATH": str(REPO_ROOT),
    }


def _python(code: str, *args: str, work: Path, timeout: float) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args],
        cwd=work,
        env=_env(work),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"exit {done.returncode}:\n{(done.stdout + done.stderr)[-6000:]}"
    return done


def _sstar(*args: str, work: Path, timeout: float = 480) -> str:
    """Run ``sstar args…`` in ``work``; its stdout (the test fails on a non-zero exit)."""
    return _python(_ENTRY, *_sstar_entry_point(), *args, work=work, timeout=timeout).stdout


def _prepare(work: Path) -> None:
    """The run's inputs under ``work``: model, CLIP checkpoint, catalog (with compositions), prompts."""
    _sstar("model", "tiny", "--out", "model", work=work, timeout=300)
    _python(_TINY_CLIP, str(_find_in_repo("sstar-tiny-clip.json")), "tiny-clip.pt", work=work, timeout=300)
    catalog = work / "catalog"
    for concept_id, (color, seed) in CONCEPTS.items():
        write_shape_images(catalog / concept_id, count=3, color=color, size=64, seed=seed)
        (catalog / concept_id / "concept.json").write_text(json.dumps({"initializer": "square"}))
    (catalog / "_compositions.json").write_text(json.dumps(COMPOSITIONS))
    (work / "prompts.txt").write_text(PROMPTS)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _legacy_pt_normalised(data: bytes) -> bytes:
    """A legacy-format ``torch.save`` file with each storage name (a memory address) replaced by its ordinal.

    The format is five pickles then raw storages: magic number, protocol version, system info, the
    object (naming storages by key), the list of keys. Keys appear as pickle BINUNICODE strings."""
    stream = io.BytesIO(data)
    for _ in range(4):
        for _opcode in pickletools.genops(stream):  # walks one pickle without running it
            pass
    keys = pickle.load(stream)  # a list of str: nothing else is unpickled
    assert isinstance(keys, list) and keys and all(isinstance(k, str) for k in keys), keys
    for ordinal, key in enumerate(keys):
        old, new = key.encode(), f"storage-{ordinal}".encode()
        assert old in data, key
        data = data.replace(b"X" + struct.pack("<I", len(old)) + old, b"X" + struct.pack("<I", len(new)) + new)
    return data


def _schema(path: Path) -> list[str]:
    return [f"{f.name}: {f.type}{'' if f.nullable else ' not null'}" for f in pq.read_schema(path)]


def _normalised_key(key: str, run_id: str) -> str:
    key = key.replace(run_id, "<run_id>")
    key = re.sub(r"run_date=\d{4}-\d{2}-\d{2}", "run_date=<date>", key)
    key = re.sub(r"<run_id>-[0-9a-f]{8}\.parquet$", "<run_id>-<uuid8>.parquet", key)
    left = re.search(r"\d{8}T\d{6}|\d{4}-\d{2}-\d{2}", key)
    assert not left, f"a run-dependent stamp is left in the key {key!r}: normalise it here"
    return key


def _observe(work: Path, stdout: str) -> dict:
    """What the run in ``work`` wrote, as the golden file's sections."""
    out = work / "out"
    (run_id,) = [p.name for p in (out / "runs").iterdir()]
    assert f"run {run_id}: {len(CONCEPTS)} learned, 0 skipped, 0 failed" in stdout, stdout[-3000:]

    keys = sorted(p.relative_to(out).as_posix() for p in out.rglob("*") if p.is_file())
    normalised = [_normalised_key(k, run_id) for k in keys]
    assert len(set(normalised)) == len(normalised), f"two keys normalise to one: {normalised}"

    (metrics_file,) = out.glob("metrics/run_date=*/*.parquet")
    (composition_file,) = out.glob("composition_metrics/run_date=*/*.parquet")
    rows = pq.read_table(metrics_file).to_pylist()
    assert sorted(r["concept_id"] for r in rows) == sorted(CONCEPTS)
    assert {r["status"] for r in rows} == {"ok"}, rows
    digests = {r["concept_id"]: r["digest"] for r in rows}

    embeddings, training = {}, {}
    for concept_id, digest in sorted(digests.items()):
        published = out / "embeddings" / concept_id / digest
        assert published.is_dir(), f"{concept_id}'s digest {digest} has no published folder"
        files = {}
        for path in sorted(published.iterdir()):
            if path.suffix == ".safetensors":
                files[path.name] = _sha256(path.read_bytes())
            elif path.suffix == ".pt":
                files[path.name] = _sha256(_legacy_pt_normalised(path.read_bytes()))
        embeddings[concept_id] = files
        record = json.loads((published / "training.json").read_text(encoding="utf-8"))
        record.pop("train_seconds")
        training[concept_id] = record

    model = work / "model"
    model_files = sorted(p for p in model.rglob("*") if p.is_file())
    return {
        "inputs": {
            "model_files": {p.relative_to(model).as_posix(): _sha256(p.read_bytes()) for p in model_files},
            "clip_checkpoint": _sha256((work / "tiny-clip.pt").read_bytes()),
        },
        "concept_digests": digests,
        "output_keys": [k for k in normalised if not k.startswith(CACHE_PREFIXES)],
        "published_embeddings": embeddings,
        "training_records": training,
        "parquet_schemas": {
            "metrics": _schema(metrics_file),
            "embeddings_index": _schema(out / "embeddings_index" / "index.parquet"),
            "composition_metrics": _schema(composition_file),
        },
        CACHE_KEYS: [k for k in normalised if k.startswith(CACHE_PREFIXES)],
    }


def _dump(value: object) -> str:
    return json.dumps(value, indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def _regenerated_sections() -> set[str]:
    wanted = os.environ.get(REGENERATE, "").strip()
    if wanted in ("", "0"):
        return set()
    if wanted in ("1", "all"):
        return set(SECTIONS)
    names = {name.strip() for name in wanted.split(",") if name.strip()}
    unknown = names - set(SECTIONS)
    assert not unknown, f"{REGENERATE}: unknown section(s) {sorted(unknown)}; sections are {list(SECTIONS)}"
    return names


def test_small_catalog_run_matches_the_golden_file(tmp_path):
    work = tmp_path / "golden-run"
    work.mkdir()
    _prepare(work)
    stdout = _sstar(*LEARN_ARGS, work=work)
    seen = _observe(work, stdout)

    regenerate = _regenerated_sections()
    golden = json.loads(GOLDEN.read_text(encoding="utf-8")) if GOLDEN.is_file() else {}
    if regenerate:
        kept = {name: golden[name] for name in SECTIONS if name in golden and name not in regenerate}
        GOLDEN.write_text(_dump({"_about": ABOUT, **kept, **{name: seen[name] for name in regenerate}}))
    assert golden or regenerate, f"no golden file at {GOLDEN}: create it with {REGENERATE}=1"

    differences = []
    for name in SECTIONS:
        if name in regenerate:
            continue
        expected = golden.get(name)
        if expected != seen[name]:
            diff = difflib.unified_diff(
                _dump(expected).splitlines(),
                _dump(seen[name]).splitlines(),
                f"golden {name}",
                f"this run's {name}",
                lineterm="",
            )
            differences.append("\n".join(diff))
    if differences:
        pytest.fail(
            f"the catalog run differs from {GOLDEN.name} in {len(differences)} section(s):\n\n"
            + "\n\n".join(differences)
            + f"\n\nIf the change is intended, regenerate deliberately: {REGENERATE}=<section>[,<section>] or "
            f"{REGENERATE}=1 (every section), and say why in the commit.",
            pytrace=False,
        )
