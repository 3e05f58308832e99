"""One object-store interface, two backends, chosen by URI.

``s3://bucket/prefix`` opens an :class:`~storage.s3.S3Store` (boto3), anything else — a plain
path or ``file://`` URI — a :class:`~storage.local.LocalStore`. Keys are ``/``-separated paths
relative to the store's root and are validated (no ``..``, no absolute paths, no backslashes).

Every ``put`` is atomic (readers see the old object or the new one, never half of it) and
``put_once`` is write-once: it creates the object only if it does not exist yet, so a retried
or concurrent writer can never clobber an output.
"""

from __future__ import annotations

import abc
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from .errors import InvalidKey, InvalidURI
from .settings import S3Settings

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.fs

__all__ = [
    "ObjectInfo",
    "ObjectStore",
    "ParsedURI",
    "open_store",
    "parse_uri",
    "pyarrow_filesystem",
    "validate_key",
    "join_key",
]

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
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


def _validate_prefix(prefix: str) -> str:
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


@dataclass(frozen=True)
class ParsedURI:
    """A storage URI split into backend and location."""

    scheme: str  # "s3" or "file"
    bucket: str | None = None
    prefix: str = ""  # S3 key prefix without slashes at either end
    path: Path | None = None  # absolute local path


def parse_uri(uri: str | Path) -> ParsedURI:
    """Split ``uri`` into backend and location; :class:`InvalidURI` if it cannot be used."""
    if isinstance(uri, Path):
        return ParsedURI("file", path=uri.expanduser().absolute())
    if not isinstance(uri, str) or not uri.strip():
        raise InvalidURI(f"storage URI must be a non-empty string, got {uri!r}")
    uri = uri.strip()
    if "://" not in uri:
        return ParsedURI("file", path=Path(uri).expanduser().absolute())
    parts = urlsplit(uri)
    scheme = parts.scheme.lower()
    if scheme == "file":
        if parts.netloc not in ("", "localhost"):
            raise InvalidURI(f"file URI must be file:///absolute/path, got {uri!r}")
        return ParsedURI("file", path=Path(unquote(parts.path)).absolute())
    if scheme == "s3":
        bucket = parts.netloc
        if "@" in bucket:
            raise InvalidURI("s3 URI must not contain credentials (user:password@)")
        if not _BUCKET_RE.match(bucket) or ".." in bucket:
            raise InvalidURI(f"s3 URI needs a valid bucket name (3-63 chars a-z 0-9 . -), got {uri!r}")
        if parts.query or parts.fragment:
            raise InvalidURI(f"s3 URI must not have a query or fragment: {uri!r}")
        prefix = parts.path.strip("/")
        if prefix:
            try:
                validate_key(prefix, what="s3 prefix")
            except InvalidKey as exc:
                raise InvalidURI(f"bad s3 URI {uri!r}: {exc}") from None
        return ParsedURI("s3", bucket=bucket, prefix=prefix)
    raise InvalidURI(f"unsupported storage URI scheme {scheme!r} in {uri!r} (use s3:// or a local path)")


def open_store(uri: str | Path, s3: S3Settings | None = None) -> ObjectStore:
    """The store for ``uri``: ``s3://bucket/prefix`` → S3 (``s3`` settings, default
    :meth:`S3Settings.from_env`), a path or ``file://`` URI → local directory."""
    parsed = parse_uri(uri)
    if parsed.scheme == "s3":
        from .s3 import S3Store

        assert parsed.bucket is not None
        return S3Store(parsed.bucket, parsed.prefix, s3 if s3 is not None else S3Settings.from_env())
    from .local import LocalStore

    assert parsed.path is not None
    return LocalStore(parsed.path)


def pyarrow_filesystem(uri: str | Path, s3: S3Settings | None = None) -> "tuple[pyarrow.fs.FileSystem, str]":
    """``(filesystem, path)`` for reading/writing ``uri`` with pyarrow.

    For S3 the filesystem gets the endpoint explicitly (``endpoint_override``); ``path`` is
    ``bucket/prefix``. For local URIs it is a :class:`pyarrow.fs.LocalFileSystem` and the
    absolute path.
    """
    from pyarrow import fs

    parsed = parse_uri(uri)
    if parsed.scheme == "s3":
        settings = s3 if s3 is not None else S3Settings.from_env()
        path = f"{parsed.bucket}/{parsed.prefix}" if parsed.prefix else str(parsed.bucket)
        return settings.pyarrow_filesystem(), path
    assert parsed.path is not None
    return fs.LocalFileSystem(), str(parsed.path)
