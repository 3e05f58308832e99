"""Prefect settings the ``sstar`` CLI needs to work on a fresh machine, applied only where the user set none.

On a brand-new Prefect home the local ephemeral server first migrates a new SQLite database; on a
busy 2-core machine that takes about 30 s, longer than Prefect's default 20 s startup timeout, so
the first ``sstar demo`` failed with "Timed out while attempting to connect to ephemeral Prefect API
server". :func:`apply_cli_defaults` raises that timeout, turns analytics off, shortens the wait of
a task refused a GPU slot (:data:`SLOT_WAIT_S`) and keeps concurrency leases in files under
``PREFECT_HOME`` (:data:`LEASE_STORAGE`) — each only when the user has not set it anywhere
Prefect reads settings from (environment, ``.env``, ``prefect.toml``, ``pyproject.toml``, the active
profile): a user's own setting always wins.

Call it before the first flow run of the process; the ephemeral server subprocess inherits the
environment it sets.

:func:`start_local_server` starts that server in a process group of its own, so that a signal to the
command's group leaves it up until the signalled run has recorded its end (:mod:`flows.stopping`).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

#: seconds the CLI waits for the ephemeral server (Prefect's own default is 20)
EPHEMERAL_STARTUP_TIMEOUT_S = 180

#: the longest a task refused a GPU slot sleeps before asking again (Prefect's server default is 30 s: it
#: tells a refused task to wait the limit's average occupancy, capped there; GPU tasks hold the slot for
#: minutes, so a queued scoring task slept ~30 s after the slot freed — 28 s of a 118 s toy-world
#: catalog run. A deployed server takes the same setting: deployments/README.md)
SLOT_WAIT_S = 1
SLOT_WAIT_VARIABLE = "PREFECT_SERVER_CONCURRENCY_MAXIMUM_CONCURRENCY_SLOT_WAIT_SECONDS"

#: where the server keeps the leases of concurrency slots. Prefect's default keeps them in the server's
#: memory while the slot counts live in its database: each ``sstar`` command starts its own local server,
#: so a slot held by a killed command could never be freed by the next one (and a restart leaked every
#: held slot). In files under ``PREFECT_HOME`` every command on that home sees every lease, and
#: ``tasks.slot_holders`` frees a dead holder's slot through them.
LEASE_STORAGE = "prefect.server.concurrency.lease_storage.filesystem"
LEASE_STORAGE_VARIABLE = "PREFECT_SERVER_CONCURRENCY_LEASE_STORAGE"

#: ``(environment variable, section path in prefect's settings, field, value)`` of each default
_PREFECT_DEFAULTS: tuple[tuple[str, tuple[str, ...], str, str], ...] = (
    (
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS",
        ("server", "ephemeral"),
        "startup_timeout_seconds",
        str(EPHEMERAL_STARTUP_TIMEOUT_S),
    ),
    ("PREFECT_SERVER_ANALYTICS_ENABLED", ("server",), "analytics_enabled", "false"),
    (
        SLOT_WAIT_VARIABLE,
        ("server", "concurrency"),
        "maximum_concurrency_slot_wait_seconds",
        str(SLOT_WAIT_S),
    ),
    (LEASE_STORAGE_VARIABLE, ("server", "concurrency"), "lease_storage", LEASE_STORAGE),
)


def apply_cli_defaults() -> dict[str, str]:
    """Set the CLI's Prefect defaults in ``os.environ`` where the user has set nothing; return those set.

    ``DO_NOT_TRACK`` (read only from the environment, when ``prefect`` is imported) is set first;
    then Prefect's resolved settings say which of its fields the user set, by any source.
    """
    applied = {}
    if "DO_NOT_TRACK" not in os.environ:
        os.environ["DO_NOT_TRACK"] = applied["DO_NOT_TRACK"] = "1"

    from prefect.context import refresh_global_settings_context
    from prefect.settings import Settings

    settings = Settings()  # every source Prefect reads, resolved now
    for variable, path, field, value in _PREFECT_DEFAULTS:
        section = settings
        for name in path:
            section = getattr(section, name)
        if variable not in os.environ and field not in section.model_fields_set:
            os.environ[variable] = applied[variable] = value
    if len(applied) > ("DO_NOT_TRACK" in applied):
        refresh_global_settings_context()  # prefect read its settings at import, before these existed
    return applied


#: what Prefect's ``RuntimeError`` says when its local ephemeral server did not answer in time
EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"


def ephemeral_timeout_message() -> str:
    """One line for a user whose local Prefect server did not start in time: the limit in force and the
    two settings that fix it (Prefect itself raises a bare ``RuntimeError`` with a traceback)."""
    from prefect.settings import get_current_settings

    limit = get_current_settings().server.ephemeral.startup_timeout_seconds
    return (
        f"the local Prefect server did not start within {limit} s; raise "
        "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS, or set PREFECT_API_URL to a running Prefect server"
    )


def start_local_server() -> None:
    """Start the local ephemeral Prefect server now, when the command uses one, in a process group of its own.

    Prefect starts it in the command's process group, so a Ctrl-C at the terminal or a SIGTERM to the
    group (systemd, a batch scheduler) stopped the server at once, and the signalled run, stopping in
    order (:mod:`flows.stopping`), could no longer record its end: its flow run stayed Running. In its own
    group the server outlives the run's last API call and is stopped by the command on its way out
    (Prefect's ``atexit``); on Linux it also gets SIGTERM when the command dies without stopping it
    (``PR_SET_PDEATHSIG``: SIGKILL, a forced exit), as it did in the command's group.
    """
    from prefect.settings import get_current_settings

    settings = get_current_settings()
    if settings.api.url or not settings.server.ephemeral.enabled:
        return
    _own_group_server().start()


def _own_group_server() -> Any:
    """Prefect's ephemeral server (the one instance its clients use) started in a process group of its own."""
    import functools
    import subprocess
    from types import SimpleNamespace

    from prefect.server.api import server as prefect_server

    class OwnGroupServer(prefect_server.SubprocessASGIServer):
        def _run_uvicorn_command(self) -> subprocess.Popen[Any]:
            # Prefect's command line and environment in a session (so a process group) of its own: its module's
            # `subprocess` is swapped for the call, made in the main thread before any flow runs
            popen = functools.partial(subprocess.Popen, start_new_session=True, preexec_fn=_dies_with(os.getpid()))
            prefect_server.subprocess = SimpleNamespace(Popen=popen)  # type: ignore[assignment]
            try:
                return super()._run_uvicorn_command()
            finally:
                prefect_server.subprocess = subprocess

    return OwnGroupServer()


def _dies_with(parent: int) -> Callable[[], None] | None:
    """A ``preexec_fn`` that has the child get SIGTERM when ``parent`` dies (Linux); None elsewhere."""
    if not sys.platform.startswith("linux"):
        return None
    import ctypes
    import signal

    prctl = ctypes.CDLL(None, use_errno=True).prctl
    pr_set_pdeathsig = 1

    def preexec() -> None:
        prctl(pr_set_pdeathsig, signal.SIGTERM)
        if os.getppid() != parent:  # the parent died before prctl: nothing would signal us
            os._exit(1)

    return preexec
