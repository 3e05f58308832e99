"""Claims: a concept that two overlapping catalog runs both want to learn is trained by one of them at a time.

Before training a concept a run writes ``<out>/claims/<concept_id>/<digest>.json`` write-once (its run id,
host, pid and that process's start time, and an expiry). A second run that finds the claim of a live run
does not train the concept: it waits for that run's result, and the published result becomes its
``skipped`` row ("already published" is success). The claim goes when the concept is published or has
failed; a holder that died (on this host: its pid gone or reused) or stopped renewing its claim (every
third of :data:`CLAIM_TTL_S`; the expiry judges holders on other hosts) loses it to the next run, by a
compare-and-swap on the claim object, so two takers never both win. No lock server: only the output store.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import threading
import time
from dataclasses import asdict, dataclass
from typing import Any

from storage.errors import NotFound, StorageError
from storage.store.base import ObjectStore
from storage.store.open import open_store
from tasks.slot_holders import pid_exists, process_start_time

log = logging.getLogger(__name__)

CLAIMS = "claims"
#: seconds a claim lives without renewal; its holder renews it every third of that while it holds it
CLAIM_TTL_S = 600.0


def claim_key(concept_id: str, digest: str) -> str:
    return f"{CLAIMS}/{concept_id}/{digest}.json"


@dataclass(frozen=True)
class Claim:
    """Who is training one concept's content now, and until when the claim holds without renewal."""

    concept_id: str
    digest: str
    run_id: str
    host: str
    pid: int
    started: int | None  # the process's start time (clock ticks after boot): a reused pid has another
    expires_at: float  # seconds since the epoch

    def to_json(self) -> bytes:
        return json.dumps(asdict(self), sort_keys=True).encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes) -> Claim | None:
        """The claim in ``raw``; ``None`` for bytes that are no claim (then it is treated as dead)."""
        try:
            return cls(**json.loads(raw))
        except (ValueError, TypeError):
            return None

    def is_dead(self) -> bool:
        """Expired, or held by a process of this host that is gone (or whose pid now names another process)."""
        if time.time() > self.expires_at:
            return True
        if self.host != socket.gethostname():
            return False
        if not pid_exists(self.pid):
            return True
        started = process_start_time(self.pid)
        return self.started is not None and started is not None and started != self.started

    def describe(self) -> str:
        return f"run {self.run_id} (pid {self.pid} on {self.host})"


class Claims:
    """One run's claims in one output store. As a context manager it renews them on a thread and, on exit,
    lets go of any it still holds."""

    def __init__(self, out_uri: str, run_id: str, *, ttl_s: float = CLAIM_TTL_S, store: ObjectStore | None = None):
        self.store = store or open_store(out_uri)
        self.run_id, self.ttl_s = run_id, ttl_s
        self.held: set[tuple[str, str]] = set()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._renewer: threading.Thread | None = None

    def _mine(self, concept_id: str, digest: str) -> Claim:
        pid = os.getpid()
        host, started = socket.gethostname(), process_start_time(pid)
        return Claim(concept_id, digest, self.run_id, host, pid, started, time.time() + self.ttl_s)

    def take(self, concept_id: str, digest: str) -> Claim | None:
        """Claim ``concept_id``'s ``digest`` for this run: ``None`` when it is ours now (new, ours already, or
        taken over from a dead holder), else the live claim of another run."""
        key, other = claim_key(concept_id, digest), None
        for _ in range(3):
            if self.store.put_once(key, self._mine(concept_id, digest).to_json()):
                return self._took(concept_id, digest)
            try:
                raw, info = self.store.get_with_info(key)
            except NotFound:  # released in between: try again
                continue
            other = Claim.from_json(raw)
            if other is not None and other.run_id == self.run_id:
                return self._took(concept_id, digest)
            if other is not None and not other.is_dead():
                return other
            if self.store.put_if(key, self._mine(concept_id, digest).to_json(), info.etag) is not None:
                log.info("took over the claim on %s/%s from %s", concept_id, digest, other and other.describe())
                return self._took(concept_id, digest)
        return other  # the claim kept changing hands: someone alive holds it

    def _took(self, concept_id: str, digest: str) -> Claim | None:
        """Record the claim as this run's; ``None`` (what :meth:`take` returns for "ours")."""
        with self._lock:
            self.held.add((concept_id, digest))
        return None

    def holder(self, concept_id: str, digest: str) -> Claim | None:
        """The live claim of another run on ``concept_id``'s ``digest``, if there is one."""
        try:
            claim = Claim.from_json(self.store.get(claim_key(concept_id, digest)))
        except NotFound:
            return None
        return claim if claim is not None and claim.run_id != self.run_id and not claim.is_dead() else None

    def release(self, concept_id: str, digest: str | None) -> None:
        """Let go of this run's claim on the concept (published, or failed); a claim not ours is left alone."""
        with self._lock:
            if (concept_id, digest) not in self.held:
                return
            self.held.discard((concept_id, digest))
        assert digest is not None
        key = claim_key(concept_id, digest)
        try:
            claim = Claim.from_json(self.store.get(key))
            if claim is None or claim.run_id == self.run_id:
                self.store.delete(key)
        except NotFound:
            pass
        except StorageError as exc:  # it expires on its own
            log.warning("claim %s not released (%s); it expires %.0f s after its last renewal", key, exc, self.ttl_s)

    def renew(self) -> None:
        """Move the expiry of every claim this run holds forward (compare-and-swap: a claim another run took
        over after this one expired stays theirs)."""
        with self._lock:
            held = sorted(self.held)
        for concept_id, digest in held:
            renewed = self._mine(concept_id, digest).to_json()

            def merge(stored: bytes | None, renewed: bytes = renewed) -> bytes | None:
                claim = Claim.from_json(stored) if stored is not None else None
                return renewed if claim is not None and claim.run_id == self.run_id else None

            try:
                self.store.update(claim_key(concept_id, digest), merge)
            except StorageError as exc:
                log.warning("claim on %s/%s not renewed: %s", concept_id, digest, exc)

    def _renew_until_stopped(self) -> None:
        while not self._stop.wait(self.ttl_s / 3):
            self.renew()

    def __enter__(self) -> Claims:
        self._renewer = threading.Thread(target=self._renew_until_stopped, name="sstar-claims", daemon=True)
        self._renewer.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._stop.set()
        if self._renewer is not None:
            self._renewer.join(timeout=30)
        with self._lock:
            held = sorted(self.held)
        for concept_id, digest in held:
            self.release(concept_id, digest)
