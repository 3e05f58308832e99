"""The object-store interface: :class:`ObjectStore`, :class:`ObjectInfo` and the key rules. It knows no backend;
:mod:`storage.store.open` picks one by URI. Keys are ``/``-separated paths
relative to the store's root and are validated (no ``..``, no absolute paths, no backslashes).

Every ``put`` is atomic (readers see the old object or the new one, never half of it) and
``put_once`` is write-once: it creates the object only if it does not exist yet, so a retried
or concurrent writer can never clobber an output. ``put_if`` is a compare-and-swap on the object's
ETag and ``update`` the read-modify-write built on it: objects that several runs rewrite (the
embeddings index, the dashboard state, claims) lose no writer's change when runs overlap.
"""

from __future__ import annotations

import abc
import random
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.errors import InvalidKey, NotFound, UpdateConflict

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "validate_prefix",
    "validate_key",
    "join_key",
]

_MAX_KEY_BYTES = 900  # S3 allows 1024; keep headroom for the store prefix
#: how long :meth:`ObjectStore.update` keeps retrying against concurrent writers, and how often at most
UPDATE_DEADLINE_S = 120.0
UPDATE_ATTEMPTS = 40


def validate_key(key: str, *, what: str = "key") -> str:
    """``key`` if it is a safe relative object key, else :class:`InvalidKey`.

    A key is ``/``-separated, non-empty, relative, without empty, ``.`` or ``..`` segments,
    backslashes or control characters.
    """
    if not isinstance(key, str) or not key:
        raise InvalidKey(f"{what} must be a non-empty string, got {key!r}")
    if "\\" in key:
        raise InvalidKey(f"{what} must not contain backslashes: {key!r}")
    if key.startswith("/"):
        raise InvalidKey(f"{what} must be relative, got {key!r}")
    if any(ord(c) < 32 or ord(c) == 127 for c in key):
        raise InvalidKey(f"{what} must not contain control characters: {key!r}")
    if len(key.encode("utf-8")) > _MAX_KEY_BYTES:
        raise InvalidKey(f"{what} is longer than {_MAX_KEY_BYTES} bytes: {key[:60]!r}…")
    for part in key.split("/"):
        if part in ("", ".", ".."):
            raise InvalidKey(f"{what} must not contain empty, '.' or '..' segments: {key!r}")
    return key


def validate_prefix(prefix: str) -> str:
    """A listing prefix: ``""`` or a key, optionally ending with ``/``."""
    if prefix == "":
        return prefix
    validate_key(prefix[:-1] if prefix.endswith("/") else prefix, what="prefix")
    return prefix


def join_key(*parts: str) -> str:
    """Join key segments with ``/`` and validate the result."""
    return validate_key("/".join(p.strip("/") for p in parts if p.strip("/")))


@dataclass(frozen=True)
class ObjectInfo:
    """What a listing says about one object, without reading it.

    ``etag`` changes whenever the object's bytes are replaced: the S3 ETag (quotes stripped), or for a
    local file ``mtime:<st_mtime_ns>`` (with ``size``, the local analogue of an ETag).
    """

    key: str
    size: int
    etag: str


class ObjectStore(abc.ABC):
    """A flat namespace of immutable-ish byte objects under a root (a bucket prefix or a folder)."""

    @property
    @abc.abstractmethod
    def uri(self) -> str:
        """The store's root: ``s3://bucket/prefix`` or an absolute local path."""

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys starting with ``prefix`` (relative to the root), in lexicographic order, all pages."""
        return (info.key for info in self.list_info(prefix))

    @abc.abstractmethod
    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Like :meth:`list`, with each object's size and ETag as the listing reports them."""

    @abc.abstractmethod
    def get(self, key: str) -> bytes:
        """The object's bytes; :class:`~storage.errors.NotFound` if absent."""

    @abc.abstractmethod
    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        """The object's bytes and the size/ETag of exactly those bytes (from the same read)."""

    @abc.abstractmethod
    def put(self, key: str, data: bytes) -> str:
        """Create or atomically replace the object; returns :meth:`url` of it."""

    @abc.abstractmethod
    def put_once(self, key: str, data: bytes) -> bool:
        """Create the object only if absent; never half-writes or overwrites.

        ``True`` if this call created it, ``False`` if an object already existed (or a concurrent
        writer won). On S3 a create whose reply was lost and then retried also reports ``False``:
        compare the stored bytes when the difference matters (``ResultStore.publish`` does)."""

    @abc.abstractmethod
    def put_if(self, key: str, data: bytes, etag: str | None) -> ObjectInfo | None:
        """Compare-and-swap: write ``data`` only if the object's current ETag is ``etag`` (``None``: only if
        the object is absent). Returns what was written, or ``None`` when another writer changed the object
        first. A write whose reply was lost and whose retry then failed its precondition counts as written
        when the stored bytes are ``data``."""

    def update(self, key: str, merge: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read-modify-write of ``key`` that loses no concurrent writer's change: ``merge(current bytes or None)``
        gives the new bytes (``None`` or the same bytes: nothing to write). On a lost race the object is read
        and merged again, after a random pause, until :data:`UPDATE_ATTEMPTS` tries or
        :data:`UPDATE_DEADLINE_S` seconds (then :class:`~storage.errors.UpdateConflict`). Returns the bytes
        stored when it returned. ``merge`` may run several times: it must be a pure function of its input."""
        started = time.monotonic()
        for attempt in range(1, UPDATE_ATTEMPTS + 1):
            try:
                current, info = self.get_with_info(key)
                etag: str | None = info.etag
            except NotFound:
                current, etag = None, None
            new = merge(current)
            if new is None or new == current or self.put_if(key, new, etag) is not None:
                return current if new is None else new
            if time.monotonic() - started > UPDATE_DEADLINE_S:
                break
            time.sleep(random.uniform(0, min(2.0, 0.02 * 2**attempt)))  # noqa: S311 - jitter, not security
        raise UpdateConflict(
            f"gave up updating {self.url(key)} after {attempt} tries in {time.monotonic() - started:.0f} s: "
            "other writers kept changing it"
        )

    @abc.abstractmethod
    def exists(self, key: str) -> bool:
        """Whether the object exists."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Delete the object; deleting an absent object is not an error."""

    @abc.abstractmethod
    def url(self, key: str) -> str:
        """The full location of ``key``: ``s3://bucket/prefix/key`` or an absolute path."""

    def local_path(self, key: str) -> Path | None:
        """The local file behind ``key`` (``None`` for remote stores)."""
        return None

    def delete_many(self, keys: Iterable[str]) -> int:
        """Delete every key; returns how many were requested."""
        count = 0
        for key in keys:
            self.delete(key)
            count += 1
        return count

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.uri!r})"
