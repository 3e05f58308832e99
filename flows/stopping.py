"""SIGTERM and Ctrl-C end ``sstar learn`` and ``sstar demo`` in seconds, with the flow run's end recorded.

Signals reach only the main thread, while a run's training goes on in its task runner's threads: before
this, SIGTERM stopped nothing but the local Prefect server. :class:`StopOnSignals` turns the first
SIGTERM or SIGINT into a stop request (:mod:`inversion.cancel`) that the trainer, the renderer, the
tasks and the flows check between their steps; the flow run then ends Crashed (its task runs too),
each GPU slot is given back by its context manager on the way out, finished concepts stay published
and unfinished ones keep their uploaded checkpoints and get no row. The command exits 130 (SIGINT) or
143 (SIGTERM). A second signal, or :data:`STOP_GRACE_S` without the run unwinding (a thread inside a
long call with no check, e.g. a download), ends the process at once with the same status.

During a flow Prefect's own SIGTERM handler raises ``TerminationSignal`` in the main thread;
:func:`stop_tasks_on_interrupt` turns that (and ``KeyboardInterrupt``) into a stop request for the task
threads before the task runner waits for them, and Prefect calls the handler installed here afterwards.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

from inversion.cancel import clear_stop, request_stop, stop_requested

#: seconds a signalled command may take to stop by itself before it exits anyway (the issue allows 30)
STOP_GRACE_S = 25.0

_SIGNALS = (signal.SIGINT, signal.SIGTERM)


def stop_exit_status() -> int | None:
    """128 + the signal that stopped the run (130 SIGINT, 143 SIGTERM), or None when none did."""
    reason = stop_requested()
    return None if reason is None else 128 + int(signal.Signals[reason])


class StopOnSignals:
    """While active (in the main thread), SIGTERM and SIGINT ask the run to stop; see the module docstring."""

    def __init__(self, grace_s: float = STOP_GRACE_S) -> None:
        self.grace_s = grace_s
        self.previous: dict[int, Any] = {}
        self.signals = 0
        self.timer: threading.Timer | None = None

    def __enter__(self) -> StopOnSignals:
        global _active
        clear_stop()
        if threading.current_thread() is not threading.main_thread():  # signals reach the main thread only
            return self
        self.previous = {sig: signal.signal(sig, self._handle) for sig in _SIGNALS}
        _active = self
        return self

    def __exit__(self, *exc_info: object) -> None:
        global _active
        _active = None
        for sig, handler in self.previous.items():
            signal.signal(sig, handler)
        if self.timer is not None:
            self.timer.cancel()

    def stop(self, name: str) -> None:
        """Ask the run to stop on the signal ``name``; the first time, say so and arm the deadline."""
        if not request_stop(name) or self.timer is not None:
            return
        print(
            f"sstar: {name}: stopping at the next step (at most {self.grace_s:.0f} s; send it again to exit now); "
            "unfinished concepts keep their checkpoints",
            file=sys.stderr,
            flush=True,
        )
        self.timer = threading.Timer(self.grace_s, self._exit_now, args=("the run did not stop in time",))
        self.timer.daemon = True
        self.timer.start()

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        # Prefect's handler, during a flow, calls this one once after its own (on its way out): not a second signal
        self.signals += 1
        if self.signals > 1:
            self._exit_now(f"{signal.Signals(signum).name} again")
        self.stop(signal.Signals(signum).name)

    def _exit_now(self, why: str) -> None:
        print(f"sstar: {why}: exiting now", file=sys.stderr, flush=True)
        os._exit(stop_exit_status() or 1)


#: the :class:`StopOnSignals` in force in this process (the ``sstar`` command's), if any
_active: StopOnSignals | None = None


@contextmanager
def stop_tasks_on_interrupt() -> Iterator[None]:
    """Wrap the body of a task runner's ``with``: an interrupt of the flow's thread (Prefect's
    ``TerminationSignal`` on SIGTERM, ``KeyboardInterrupt``) asks its task threads to stop too, so that
    the runner's exit, which waits for them, returns within a step."""
    from prefect.exceptions import TerminationSignal

    try:
        yield
    except (TerminationSignal, KeyboardInterrupt) as exc:
        name = signal.Signals(exc.signal).name if isinstance(exc, TerminationSignal) else signal.SIGINT.name
        if _active is not None:
            _active.stop(name)  # also arms the command's deadline
        else:
            request_stop(name)
        raise
