"""A PostgreSQL cluster of the tests' own, for Prefect servers backed by PostgreSQL as in production.

Debian's package (``apt-get install -y postgresql``; ``.ci/run`` installs it where missing), started
without systemd: ``initdb`` and ``pg_ctl`` from ``/usr/lib/postgresql/<version>/bin`` on a data folder
in a fresh temporary folder, as the ``postgres`` user when the tests run as root (PostgreSQL refuses
root), on a free port of 127.0.0.1 with trust authentication. Each Prefect server gets a database of
its own (:meth:`Postgres.new_database`), so tests never see each other's flow runs.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest

#: where Debian installs each major version's server programs
DEBIAN_BINARIES = "/usr/lib/postgresql/*/bin"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _binaries() -> Path:
    """The newest installed version's ``bin`` folder; fails the test with one line when there is none."""
    found = sorted(glob.glob(DEBIAN_BINARIES), key=lambda p: int(Path(p).parent.name.split(".")[0]))
    if not found:
        pytest.fail(f"PostgreSQL is not installed (no {DEBIAN_BINARIES}): apt-get install -y postgresql")
    return Path(found[-1])


def _as_owner() -> list[str]:
    """The command prefix that runs a PostgreSQL program as its owner: ``postgres`` when we are root."""
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


@dataclass(frozen=True)
class Postgres:
    """A running cluster: ``port`` on 127.0.0.1, superuser ``postgres``, no password."""

    binaries: Path
    port: int

    def new_database(self, name: str) -> str:
        """Create database ``name``; its SQLAlchemy URL for Prefect (``postgresql+asyncpg://``)."""
        subprocess.run(
            [str(self.binaries / "createdb"), "-h", "127.0.0.1", "-p", str(self.port), "-U", "postgres", name],
            check=True,
            capture_output=True,
        )
        return f"postgresql+asyncpg://postgres@127.0.0.1:{self.port}/{name}"


@contextmanager
def running_postgres() -> Iterator[Postgres]:
    """Initialise a cluster in a new temporary folder, start it, and stop and delete it at exit."""
    binaries, port = _binaries(), free_port()
    folder = Path(tempfile.mkdtemp(prefix="sstar-postgres-"))  # not under pytest's root-only tmp folders
    data, log = folder / "data", folder / "postgres.log"
    if os.geteuid() == 0:
        shutil.chown(folder, "postgres", "postgres")
    owner = _as_owner()
    subprocess.run(
        [*owner, str(binaries / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust", "-E", "UTF8"],
        check=True,
        capture_output=True,
    )
    options = f"-p {port} -k {folder} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    started = subprocess.run(
        [*owner, str(binaries / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(data), "-l", str(log), "-o", options],
        capture_output=True,
        text=True,
    )
    if started.returncode != 0:
        tail = log.read_text()[-1500:] if log.exists() else started.stderr
        shutil.rmtree(folder, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {tail}")
    try:
        yield Postgres(binaries, port)
    finally:
        subprocess.run(
            [*owner, str(binaries / "pg_ctl"), "stop", "-D", str(data), "-m", "immediate", "-w"], capture_output=True
        )
        shutil.rmtree(folder, ignore_errors=True)
