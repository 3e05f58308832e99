"""The exceptions raised by :mod:`storage`, and the redaction applied to every message.

Everything raised on purpose by this package is a :class:`StorageError`. Messages name the
offending URI, key, file or setting, never a credential: :func:`redact` scrubs anything that
looks like an AWS secret before it reaches an exception, a log record or an artifact.
"""

from __future__ import annotations

import os
import re

__all__ = [
    "StorageError",
    "InvalidInput",
    "InvalidURI",
    "InvalidKey",
    "InvalidSettings",
    "InvalidConcept",
    "InvalidImage",
    "NotFound",
    "AlreadyExists",
    "BackendError",
    "UpdateConflict",
    "redact",
    "register_secret",
]


class StorageError(Exception):
    """Base class of every error raised on purpose by :mod:`storage`."""

    def __init__(self, message: str) -> None:
        super().__init__(_one_line(redact(message)))


class InvalidInput(StorageError, ValueError):
    """An argument, setting, URI, key or input file is not acceptable."""


class InvalidURI(InvalidInput):
    """A storage URI cannot be parsed or names an unsupported scheme."""


class InvalidKey(InvalidInput):
    """An object key is unsafe (absolute, ``..``, backslash, empty segment…)."""


class InvalidSettings(InvalidInput):
    """An :class:`~storage.store.settings.S3Settings` field is invalid."""


class InvalidConcept(InvalidInput):
    """A concept id or a ``concept.json`` is invalid."""


class InvalidImage(InvalidInput):
    """An image cannot be decoded, is truncated or exceeds the pixel limit."""


class NotFound(StorageError, LookupError):
    """The object, bucket or result does not exist."""


class AlreadyExists(StorageError):
    """A write-once object already exists with different content."""


class BackendError(StorageError):
    """The object store failed (after retries) or refused the request."""


class UpdateConflict(StorageError):
    """A read-modify-write kept losing to concurrent writers until its retries or deadline ran out."""


def _one_line(text: str) -> str:
    return re.sub(r"\s*[\r\n]+\s*", " ", text).strip()


_SECRET_ENV = ("AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN", "AWS_SECURITY_TOKEN")
_PATTERNS = (
    # access key ids (AKIA… long-term, ASIA… temporary)
    re.compile(r"\b(?:AKIA|ASIA|AROA|AIDA)[A-Z0-9]{12,}\b"),
    # key=value / key: value pairs whose name says they are secret
    re.compile(
        r"(?i)((?:aws_)?(?:secret(?:_access)?_key|session_token|security_token|secret|password)"
        r"[\"']?\s*[=:]\s*[\"']?)[^\s\"',;&]+"
    ),
    # signatures in presigned URLs / Authorization headers
    re.compile(r"(?i)((?:X-Amz-Signature|X-Amz-Security-Token|X-Amz-Credential|Signature)=)[^&\s\"']+"),
    # userinfo in URLs: scheme://user:pass@host
    re.compile(r"(?i)(\b[a-z][a-z0-9+.-]*://)[^/\s@:]+:[^/\s@]+@"),
)
_extra_secrets: set[str] = set()


def register_secret(value: str | None) -> None:
    """Make :func:`redact` scrub ``value`` wherever it appears (used for explicit credentials)."""
    if value and len(value) >= 4:
        _extra_secrets.add(value)


def redact(text: str) -> str:
    """``text`` with credentials replaced by ``***``.

    Scrubs the secret values currently in the environment, secrets registered through explicit
    :class:`~storage.store.settings.S3Settings`, access key ids, ``secret=…``-style pairs, presigned
    URL signatures and ``user:password@`` in URLs.
    """
    text = str(text)
    secrets = set(_extra_secrets)
    secrets.update(v for k in _SECRET_ENV if (v := os.environ.get(k)) and len(v) >= 4)
    for secret in sorted(secrets, key=len, reverse=True):
        text = text.replace(secret, "***")
    text = _PATTERNS[0].sub("***", text)
    text = _PATTERNS[1].sub(r"\1***", text)
    text = _PATTERNS[2].sub(r"\1***", text)
    text = _PATTERNS[3].sub(r"\1***@", text)
    return text
