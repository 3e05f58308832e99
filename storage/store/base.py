"""The object-store interface: :class:`ObjectStore`, :class:`ObjectInfo` and the key rules. It knows no backend;
:mod:`storage.store.open` picks one by URI. Keys are ``/``-separated paths
relative to the store's root and are validated (no ``..``, no absolute paths, no backslashes).

Every ``put`` is atomic (readers see the old object or the new one, never half of it) and
``put_once`` is write-once: it creates the object only if it does not exist yet, so a retried
or concurrent writer can never clobber an output.
"""

from __future__ import annotations

import abc
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

from storage.errors import InvalidKey

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "validate_prefix",
    "validate_key",
    "join_key",
]

_MAX_KEY_BYTES = 900  # S3 allows 1024; keep headroom for the store prefix


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
