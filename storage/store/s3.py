"""An S3 bucket prefix as an :class:`~storage.store.base.ObjectStore` (boto3).

Retries are botocore's standard mode (throttling, 5xx and dropped connections); bodies carry a
``Content-MD5`` so the server rejects a corrupted upload; write-once puts use
``IfNoneMatch="*"`` and compare-and-swap puts ``IfMatch=<ETag read>`` (S3 conditional writes, also
implemented by most S3-compatible stores and by moto). A conditional put whose reply was lost is retried
by botocore and then fails its precondition against its own first write: ``put_if`` re-reads the object
and counts it as written when the stored bytes are its own.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import time
from collections.abc import Iterable, Iterator
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError, PartialCredentialsError

from storage.errors import BackendError, NotFound, StorageError
from storage.store.base import ObjectInfo, ObjectStore, validate_key, validate_prefix
from storage.store.settings import S3Settings

__all__ = ["S3Store"]

log = logging.getLogger(__name__)

_MISSING_CODES = {"404", "NoSuchKey", "NotFound"}
_BODY_READ_ATTEMPTS = 4
_CONFLICT_ATTEMPTS = 6
# What a boto3 call raises: a service error response, or a client-side failure (connection,
# timeout, dropped or short body, credentials, configuration).
_BOTO_ERRORS = (BotoCoreError, ClientError)


class S3Store(ObjectStore):
    """Objects under ``s3://bucket/prefix/``; keys are relative to the prefix."""

    def __init__(
        self, bucket: str, prefix: str = "", settings: S3Settings | None = None, *, client: Any = None
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self._root = f"{self.prefix}/" if self.prefix else ""
        self.settings = settings if settings is not None else S3Settings.from_env()
        self._client = client

    @property
    def client(self) -> Any:
        """The boto3 client (created on first use; thread-safe)."""
        if self._client is None:
            try:
                self._client = self.settings.s3_client()
            except (BotoCoreError, ValueError) as exc:  # unknown profile, bad config; bad endpoint URL
                raise BackendError(f"cannot create S3 client for {self.uri}: {type(exc).__name__}: {exc}") from None
        return self._client

    @property
    def uri(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    def _key(self, key: str) -> str:
        return self._root + validate_key(key)

    def url(self, key: str) -> str:
        return f"s3://{self.bucket}/{self._key(key)}"

    # -- reading -----------------------------------------------------------------------------

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        return self._list(self._root + prefix)

    def _list(self, full_prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        start = len(self._root)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full_prefix):
                for item in page.get("Contents", ()):
                    key = item["Key"]
                    if not key.endswith("/"):  # skip "folder" placeholder objects
                        yield ObjectInfo(key[start:], int(item.get("Size", 0)), _etag(item.get("ETag")))
        except _BOTO_ERRORS as exc:
            raise _translate(exc, "list", f"s3://{self.bucket}/{full_prefix}") from None

    def get(self, key: str) -> bytes:
        return self.get_with_info(key)[0]

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        full = self._key(key)
        for attempt in range(1, _BODY_READ_ATTEMPTS + 1):
            try:
                response = self.client.get_object(Bucket=self.bucket, Key=full)
            except _BOTO_ERRORS as exc:
                raise _translate(exc, "get", self.url(key)) from None
            try:
                data = response["Body"].read()
            except (*_BOTO_ERRORS, OSError) as exc:  # connection dropped mid-body: botocore does not retry that
                if attempt == _BODY_READ_ATTEMPTS:
                    raise _translate(exc, "get", self.url(key)) from None
                log.debug("retrying read of %s after %s", self.url(key), type(exc).__name__)
                time.sleep(0.05 * 2**attempt)
                continue
            expected = response.get("ContentLength")
            if expected is None or expected == len(data):
                return data, ObjectInfo(key, len(data), _etag(response.get("ETag")))
            if attempt == _BODY_READ_ATTEMPTS:
                raise BackendError(f"short read of {self.url(key)}: {len(data)} of {expected} bytes")
        raise AssertionError("unreachable")  # pragma: no cover

    def exists(self, key: str) -> bool:
        try:
            self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        except _BOTO_ERRORS as exc:
            if _code(exc) in _MISSING_CODES:
                return False
            raise _translate(exc, "head", self.url(key)) from None
        return True

    # -- writing -----------------------------------------------------------------------------

    def _put_args(self, key: str, data: bytes) -> dict[str, Any]:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data for {self.url(key)} must be bytes, got {type(data).__name__}")
        data = bytes(data)
        md5 = base64.b64encode(hashlib.md5(data).digest()).decode("ascii")  # noqa: S324 - integrity, not security
        return {"Bucket": self.bucket, "Key": self._key(key), "Body": data, "ContentMD5": md5}

    def put(self, key: str, data: bytes) -> str:
        args = self._put_args(key, data)
        try:
            self.client.put_object(**args)
        except _BOTO_ERRORS as exc:
            raise _translate(exc, "put", self.url(key)) from None
        return self.url(key)

    def put_once(self, key: str, data: bytes) -> bool:
        args = self._put_args(key, data)
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                self.client.put_object(IfNoneMatch="*", **args)
                return True
            except _BOTO_ERRORS as exc:
                code = _code(exc)
                if code in ("PreconditionFailed", "412"):
                    return False
                if code not in ("ConditionalRequestConflict", "409"):
                    raise _translate(exc, "put_once", self.url(key)) from None
            # 409: a concurrent conditional write to this key is in flight; ask again, the
            # answer becomes 412 (it won) or 200 (it failed and we win)
            time.sleep(0.05 * 2**attempt)
        log.info("put_once of %s kept conflicting with a concurrent writer; treating it as lost", self.url(key))
        return False

    def put_if(self, key: str, data: bytes, etag: str | None) -> ObjectInfo | None:
        args = self._put_args(key, data)
        condition = {"IfNoneMatch": "*"} if etag is None else {"IfMatch": f'"{etag}"'}
        for attempt in range(1, _CONFLICT_ATTEMPTS + 1):
            try:
                response = self.client.put_object(**condition, **args)
                return ObjectInfo(key, len(args["Body"]), _etag(response.get("ETag")))
            except _BOTO_ERRORS as exc:
                code = _code(exc)
                if code in ("PreconditionFailed", "412"):
                    return self._written_before(key, args["Body"])
                if code in _MISSING_CODES and etag is not None:  # IfMatch on a deleted object
                    return None
                if code not in ("ConditionalRequestConflict", "409"):
                    raise _translate(exc, "put_if", self.url(key)) from None
            time.sleep(0.05 * 2**attempt)  # 409: a concurrent conditional write is in flight
        return None

    def _written_before(self, key: str, data: bytes) -> ObjectInfo | None:
        """After a 412: the stored object's info if it holds exactly ``data`` (our own earlier try whose reply
        was lost, or a writer that wrote the same bytes), else ``None`` (another writer won)."""
        try:
            stored, info = self.get_with_info(key)
        except NotFound:
            return None
        return info if stored == data else None

    def delete(self, key: str) -> None:
        try:
            self.client.delete_object(Bucket=self.bucket, Key=self._key(key))
        except _BOTO_ERRORS as exc:
            if _code(exc) in _MISSING_CODES:
                return
            raise _translate(exc, "delete", self.url(key)) from None

    def delete_many(self, keys: Iterable[str]) -> int:
        batch: list[dict[str, str]] = []
        count = 0

        def flush() -> None:
            if not batch:
                return
            try:
                response = self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": batch, "Quiet": True})
            except _BOTO_ERRORS as exc:
                raise _translate(exc, "delete", self.uri) from None
            errors = response.get("Errors") or []
            if errors:
                first = errors[0]
                raise BackendError(
                    f"delete failed for {len(errors)} object(s) under {self.uri}, "
                    f"e.g. {first.get('Key')!r}: {first.get('Code')}"
                )
            batch.clear()

        for key in keys:
            batch.append({"Key": self._key(key)})
            count += 1
            if len(batch) == 1000:
                flush()
        flush()
        return count


def _etag(value: str | None) -> str:
    """An ETag as listings and GETs both report it, without its quotes."""
    return (value or "").strip('"')


def _code(exc: BaseException) -> str | None:
    response = getattr(exc, "response", None)
    if isinstance(response, dict):
        error = response.get("Error") or {}
        code = error.get("Code")
        if code:
            return str(code)
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        if status:
            return str(status)
    return None


def _translate(exc: Exception, op: str, where: str) -> StorageError:
    """A :class:`StorageError` for a boto3/botocore exception (message without credentials)."""
    code = _code(exc)
    if code in _MISSING_CODES:
        return NotFound(f"no such object: {where}")
    if code == "NoSuchBucket":
        return NotFound(f"no such bucket for {where}")
    if isinstance(exc, (NoCredentialsError, PartialCredentialsError)):
        return BackendError(f"S3 {op} of {where} failed: no AWS credentials found (env, profile or metadata)")
    if code is not None:
        response = getattr(exc, "response", {}) or {}
        status = (response.get("ResponseMetadata") or {}).get("HTTPStatusCode")
        message = (response.get("Error") or {}).get("Message") or ""
        return BackendError(f"S3 {op} of {where} failed: {code} (HTTP {status}) {message}".rstrip())
    return BackendError(f"S3 {op} of {where} failed: {type(exc).__name__}: {exc}")
