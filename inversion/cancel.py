"""Stopping a run on SIGTERM or Ctrl-C at its next safe point, in every thread.

Python delivers signals to the main thread only, while a run's GPU work goes on in the threads of
its task runner: without this, a signalled ``sstar learn`` kept training until SIGKILL. The command's
signal handler calls :func:`request_stop`; the long loops call :func:`check_stop` between units of work
— the trainer before each optimizer step (so the last uploaded checkpoint stays the one a re-run
resumes from), the renderer before each denoising step, the tasks before their work and the flows
between tasks. :class:`Cancelled` derives from :class:`BaseException`, like ``KeyboardInterrupt``: no
``except Exception`` that turns a concept's failure into a ``failed`` row catches it, and Prefect
records a crash rather than retrying it. Process-wide and torch-free, so the coordinator can use it.
"""

from __future__ import annotations

import threading


class Cancelled(BaseException):
    """The run was asked to stop (SIGTERM, Ctrl-C); raised at the next safe point of each thread."""


_requested = threading.Event()
_reason: list[str] = []


def request_stop(reason: str) -> bool:
    """Ask every thread of the process to stop at its next :func:`check_stop`, saying ``reason`` (e.g.
    ``SIGTERM``); True when this is the first request since :func:`clear_stop`."""
    if _requested.is_set():
        return False
    _reason.append(reason)
    _requested.set()
    return True


def stop_requested() -> str | None:
    """The reason of the pending stop request, or None."""
    return _reason[0] if _requested.is_set() else None


def check_stop() -> None:
    """Raise :class:`Cancelled` when a stop was requested."""
    if _requested.is_set():
        raise Cancelled(f"stopped on {_reason[0]}")


def clear_stop() -> None:
    """Forget a stop request (a process that runs again after one, e.g. a test)."""
    _requested.clear()
    _reason.clear()
