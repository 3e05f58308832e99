"""Two ``sstar`` commands on one Prefect home, each with its own local ephemeral server, as a user runs
them: the first is killed with SIGKILL (its server too) while it holds the GPU slot; the second frees
the dead holder's slot within seconds. This needs the leases in files under ``PREFECT_HOME`` (the CLI's
default): in the first server's memory they die with it, and no later server can give the slot back."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO_ROOT
from tests.flows.sstar_cli import run_python
from tests.waiting import wait_until

pytestmark = pytest.mark.slow

#: a command holding the slot of the limit argv[1] inside a flow run until killed (prints ``held``)
_HOLDER = """
import sys, time
from flows.prefect_setup import apply_cli_defaults
apply_cli_defaults()
from prefect import flow
from tasks.concurrency import ensure_gpu_limit, gpu_slot

@flow(name="slot-holder")
def hold(name: str) -> None:
    ensure_gpu_limit(name, 1)
    with gpu_slot(name, wait_timeout=60):
        print("held", flush=True)
        time.sleep(600)

hold(sys.argv[1])
"""

#: the next command: takes the slot of argv[1] (waiting at most 60 s) and prints how long that took
_TAKER = """
import sys, time
from flows.prefect_setup import apply_cli_defaults
apply_cli_defaults()
from tasks.concurrency import _limit_id, gpu_slot

_limit_id(sys.argv[1])  # the local server up before the clock starts
started = time.monotonic()
with gpu_slot(sys.argv[1], wait_timeout=60):
    print("took the slot after", round(time.monotonic() - started, 1), flush=True)
"""


def test_the_next_command_frees_the_slot_of_a_killed_one(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env |= {"PREFECT_HOME": str(tmp_path / "prefect-home"), "PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    log = tmp_path / "holder.log"
    with open(log, "w") as out:
        holder = subprocess.Popen(
            [sys.executable, "-c", _HOLDER, "sstar-gpu"],
            env=env,
            cwd=tmp_path,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        wait_until(
            lambda: "held" in log.read_text(),
            300,
            "the first command to hold the slot",
            abort=lambda: holder.poll() is not None and log.read_text()[-3000:],
        )
    finally:
        os.killpg(holder.pid, signal.SIGKILL)  # the command and its local server
        holder.wait()

    done = run_python(_TAKER, "sstar-gpu", env=env, cwd=tmp_path, timeout=400)
    assert done.returncode == 0, (done.stdout + done.stderr)[-3000:]
    waited = float(done.stdout.split("took the slot after")[1].split()[0])
    assert waited < 10, f"the killed command's slot took {waited} s to free"
