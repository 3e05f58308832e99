"""The catalog coordinator never imports torch (issue 11: its peak RSS must stay under 1 GiB).

Importing torch and the libraries built on it costs the coordinator ~0.9 GiB and seconds before it
does anything; only the GPU tasks' bodies need them. Checked in fresh interpreters, since this test
session itself has long imported torch.
"""

from __future__ import annotations

import json
import os
import subprocess

from tests.conftest import write_shape_images
from tests.flows.sstar_cli import learn_argv, run_python

HEAVY = ("torch", "diffusers", "transformers", "open_clip")
COORDINATOR = (
    "flows.learn",
    "flows.cli",
    "reports.run_page",
    "reports.dashboard",
    "flows.compositions",
    "tasks.ingest",
    "tasks.publish",
    "tasks.preflight",
    "tasks.invert",
    "tasks.score",
    "tasks.compose",
    "storage",
    "inversion.model.info",
    "inversion.text.placeholders",
    "common.filenames",
)


def _python(code: str, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return run_python(code, *args, env={**os.environ, **(env or {})})


def test_coordinator_modules_do_not_import_torch():
    code = (
        f"import sys; import {', '.join(COORDINATOR)}; "
        f"loaded = [m for m in {HEAVY!r} if m in sys.modules]; assert not loaded, loaded"
    )
    done = _python(code)
    assert done.returncode == 0, done.stderr[-2000:]


def test_the_check_itself_sees_torch():
    """The same check fails for a module that does import torch (so the test above can fail)."""
    done = _python(
        f"import sys; import inversion.training.trainer; assert not any(m in sys.modules for m in {HEAVY!r})"
    )
    assert done.returncode != 0 and "AssertionError" in done.stderr


NOOP_LEARN = f"""
import json, sys
from flows.cli import main
code = main(sys.argv[1:])
print("RESULT " + json.dumps({{"code": code, "loaded": [m for m in {HEAVY!r} if m in sys.modules]}}))
"""


def test_noop_learn_does_not_import_torch(prefect_harness, tiny_model_dir, tmp_path, monkeypatch):
    """``sstar learn`` over a catalog whose concepts all have results: every concept skipped, exit 0,
    and neither torch nor the libraries on it were imported (the family, the tokenizer's words and
    the model's fingerprint come from its files)."""
    from prefect.settings import PREFECT_API_URL

    from storage.store.open import open_store
    from tasks.settings import LearnSettings
    from tests.flows.seeding import seed_learned_output

    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_shape_images(catalog / "red", 2, (200, 40, 40))
    write_shape_images(catalog / "blue", 2, (40, 40, 200), seed=1)
    monkeypatch.setenv("SSTAR_CACHE_DIR", str(tmp_path / "cache"))  # model fingerprints: seeding's and the run's
    seed_learned_output(open_store(str(catalog)), open_store(str(out)), LearnSettings(model=str(tiny_model_dir)))
    done = _python(
        NOOP_LEARN,
        *learn_argv(catalog, out, tiny_model_dir),
        env={"PREFECT_API_URL": str(PREFECT_API_URL.value())},
    )
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert lines, done.stderr[-3000:]
    result = json.loads(lines[0].removeprefix("RESULT "))
    assert "2 skipped" in done.stdout and result["code"] == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert result["loaded"] == [], f"a no-op run imported {result['loaded']}"
