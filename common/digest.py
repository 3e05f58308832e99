"""The one recipe for a content key: canonical JSON, then SHA-256.

A concept's digest decides whether it is learned again, the baseline cache key whether a words-only
rendering is reused, a composition's key whether it is rendered again. All of them hash a JSON-like
value, so they share one spelling of it: keys sorted, no whitespace, UTF-8 kept as is, and only
JSON-like values (no NaN or infinity, string keys) so that two equal values can never hash apart.
This recipe is the one the concept digests always used: changing it re-learns every catalog.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Mapping
from typing import Any

__all__ = ["canonical_digest", "canonical_json"]


def _check_json_like(value: Any, what: str) -> None:
    """Raise :class:`ValueError` (naming ``what``) unless ``value`` is JSON-like and finite."""
    if isinstance(value, float) and not math.isfinite(value):
        raise ValueError(f"{what} must not contain NaN or infinity")
    if isinstance(value, Mapping):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"{what} keys must be strings, got {key!r}")
            _check_json_like(item, what)
    elif isinstance(value, (list, tuple)):
        for item in value:
            _check_json_like(item, what)
    elif not (value is None or isinstance(value, (str, int, float, bool))):
        raise ValueError(f"{what} must be JSON-like (str/int/float/bool/None/list/dict), got {type(value).__name__}")


def canonical_json(value: Any, what: str = "value") -> bytes:
    """``value`` as canonical JSON (UTF-8): sorted keys, no whitespace, non-ASCII kept; :class:`ValueError`
    (naming ``what``) for anything not JSON-like, a non-string key, NaN or infinity."""
    _check_json_like(value, what)
    text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    return text.encode("utf-8")


def canonical_digest(value: Any, length: int | None = None, what: str = "value") -> str:
    """The SHA-256 hex digest of :func:`canonical_json` of ``value``, cut to its first ``length`` digits."""
    return hashlib.sha256(canonical_json(value, what)).hexdigest()[:length]
