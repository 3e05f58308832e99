"""The first ``sstar`` command on a fresh machine: a brand-new Prefect home, whose ephemeral server must
first migrate a new database (about 30 s on a busy 2-core machine, past Prefect's default 20 s startup
timeout). The CLI raises that timeout itself, unless the user set one."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import write_shape_images
from tests.flows.sstar_cli import learn_argv, run_python

pytestmark = pytest.mark.slow

SSTAR = Path(sys.executable).with_name("sstar")  # the installed entry point, as a user runs it
FILE_LEASES = "prefect.server.concurrency.lease_storage.filesystem"
MEMORY_LEASES = "prefect.server.concurrency.lease_storage.memory"


def _fresh_env(prefect_home: Path, **extra: str) -> dict[str, str]:
    """This process's environment without any Prefect or tracking setting, and a new Prefect home."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_") and k != "DO_NOT_TRACK"}
    return {**env, "PREFECT_HOME": str(prefect_home), "PYTHONUNBUFFERED": "1", **extra}


def _apply_defaults(tmp_path: Path, env: dict[str, str]) -> dict:
    """Run :func:`flows.prefect_setup.apply_cli_defaults` in a fresh process; what it set and what Prefect sees."""
    code = (
        "import json\n"
        "from flows.prefect_setup import apply_cli_defaults\n"
        "applied = apply_cli_defaults()\n"
        "from prefect.settings import get_current_settings\n"
        "s = get_current_settings().server\n"
        "print(json.dumps({'applied': applied, 'timeout': s.ephemeral.startup_timeout_seconds,"
        " 'analytics': s.analytics_enabled, 'slot_wait': s.concurrency.maximum_concurrency_slot_wait_seconds,"
        " 'leases': s.concurrency.lease_storage}))\n"
    )
    done = run_python(code, env=env, cwd=tmp_path, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


def test_defaults_apply_where_the_user_set_nothing(tmp_path):
    seen = _apply_defaults(tmp_path, _fresh_env(tmp_path / "home"))
    assert seen["applied"] == {
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "180",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
        "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE": FILE_LEASES,
    }
    assert seen["timeout"] == 180 and seen["analytics"] is False and seen["slot_wait"] == 1
    assert seen["leases"] == FILE_LEASES


def test_the_users_environment_wins(tmp_path):
    env = _fresh_env(
        tmp_path / "home",
        PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="7",
        DO_NOT_TRACK="0",
        PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE=MEMORY_LEASES,
    )
    seen = _apply_defaults(tmp_path, env)
    assert seen["applied"] == {
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS": "1",
    }
    assert seen["timeout"] == 7 and seen["leases"] == MEMORY_LEASES


def test_the_users_profile_wins(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    (home / "profiles.toml").write_text(
        'active = "mine"\n\n[profiles.mine]\nPREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS = 9\n'
        "PREFECT_SERVER_ANALYTICS_ENABLED = true\n"
        "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS = 5\n"
        f'PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE = "{MEMORY_LEASES}"\n'
    )
    seen = _apply_defaults(tmp_path, _fresh_env(home))
    assert seen["applied"] == {"DO_NOT_TRACK": "1"}
    assert seen["timeout"] == 9 and seen["analytics"] is True and seen["slot_wait"] == 5
    assert seen["leases"] == MEMORY_LEASES


def test_sstar_learn_passes_on_a_brand_new_prefect_home(tiny_model_dir, tmp_path):
    """The real CLI, in its own process, with nothing configured: the ephemeral server migrates a new
    database (PREFECT_HOME/prefect.db did not exist) and the run still ends with exit 0."""
    from inversion.evaluation.clip import write_tiny_clip

    assert SSTAR.is_file(), f"the sstar entry point is not installed next to {sys.executable}"
    clip = write_tiny_clip(tmp_path / "clip" / "tiny.pt")
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("a photo of {}\n")
    catalog, out, home = tmp_path / "catalog", tmp_path / "out", tmp_path / "prefect-home"
    write_shape_images(catalog / "red-square", count=2)
    (catalog / "red-square" / "concept.json").write_text(json.dumps({"initializer": "square"}))
    assert not home.exists()

    argv = learn_argv(
        catalog,
        out,
        tiny_model_dir,
        tiny_clip=clip,
        steps=1,
        batch_size=1,
        samples=1,
        render_steps=1,
        prompts=prompts,
        device="cpu",
        workers=1,
    )
    done = subprocess.run(
        [str(SSTAR), *argv],
        env=_fresh_env(home),
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    assert done.returncode == 0, (done.stdout + done.stderr)[-4000:]
    assert "1 learned, 0 skipped, 0 failed" in done.stdout
    assert (home / "prefect.db").is_file(), "the run did not use the fresh Prefect home"


def test_a_server_that_does_not_start_in_time_is_one_line(tiny_model_dir, tmp_path):
    """The user's own timeout is too short for a new database: exit 2 with one line naming the settings
    that fix it — not Prefect's traceback — and nothing written."""
    from inversion.evaluation.clip import write_tiny_clip

    clip = write_tiny_clip(tmp_path / "clip" / "tiny.pt")
    catalog, out = tmp_path / "catalog", tmp_path / "out"
    write_shape_images(catalog / "red-square", count=2)
    argv = learn_argv(catalog, out, tiny_model_dir, tiny_clip=clip, steps=1, device="cpu")
    env = _fresh_env(tmp_path / "prefect-home", PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS="1")
    done = subprocess.run(
        [str(SSTAR), *argv], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=300, check=False
    )
    errors = [line for line in done.stderr.splitlines() if line.startswith("sstar: error:")]
    assert done.returncode == 2, (done.stdout + done.stderr)[-4000:]
    assert errors == [
        "sstar: error: the local Prefect server did not start within 1 s; raise "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a running Prefect server"
    ], done.stderr[-4000:]
    assert "Traceback" not in done.stderr, done.stderr[-4000:]
    assert not out.exists()
