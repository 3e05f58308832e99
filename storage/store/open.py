"""Opening a store by URI: ``s3://bucket/prefix`` opens an :class:`~storage.store.s3.S3Store` (boto3, imported
only then), anything else — a plain path or ``file://`` URI — a :class:`~storage.store.local.LocalStore`.

This factory sits above both backends and the base (:mod:`storage.store.base`), which know nothing of it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import unquote, urlsplit

from storage.errors import InvalidKey, InvalidURI
from storage.store.base import ObjectStore, validate_key
from storage.store.local import LocalStore
from storage.store.settings import S3Settings

if TYPE_CHECKING:  # pragma: no cover
    import pyarrow.fs

_BUCKET_RE = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")


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
        from storage.store.s3 import S3Store

        assert parsed.bucket is not None
        return S3Store(parsed.bucket, parsed.prefix, s3 if s3 is not None else S3Settings.from_env())
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
