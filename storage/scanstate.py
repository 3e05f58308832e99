"""What the last catalog scan learned about each concept, so the next scan needs only listings.

A content digest covers image *bytes*, but reading every image of a large catalog every night costs
what the catalog weighs. Listings already carry each object's size and ETag, so the state keeps, per
concept, the fingerprint of its images' listing entries next to the fingerprint of their content,
and the text of its ``concept.json`` next to that file's size and ETag. When a concept's listing
entries are unchanged, the next scan reuses the content fingerprint; when any changed, the concept's
own staging reads the bytes again (it must read them anyway) and records the new pair.

The state is one gzip-compressed JSON object under the output root (:data:`STATE_KEY`), replaced
atomically. It is only ever a cache: a missing, corrupt or foreign state (another catalog, another
version) is ignored, which costs one full read of the catalog and never a wrong skip.
"""

from __future__ import annotations

import gzip
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from storage.errors import NotFound, StorageError
from storage.store.base import ObjectStore

__all__ = ["STATE_KEY", "MetaState", "ConceptState", "ScanState", "load_scan_state", "save_scan_state"]

log = logging.getLogger(__name__)

STATE_KEY = "state/catalog-scan.json.gz"
_VERSION = 1


@dataclass(frozen=True)
class MetaState:
    """A ``concept.json`` as last read: its listing entry (size, ETag) and its text."""

    size: int
    etag: str
    text: str


@dataclass(frozen=True)
class ConceptState:
    """A concept's images as last read: ``listing`` fingerprints their (name, size, ETag) entries,
    ``images`` their (name, content SHA-256) pairs."""

    listing: str
    images: str


@dataclass(frozen=True)
class ScanState:
    """What is known about the concepts of one catalog (``catalog`` is its URI): their images and
    their ``concept.json`` files."""

    catalog: str
    concepts: Mapping[str, ConceptState] = field(default_factory=dict)
    metas: Mapping[str, MetaState] = field(default_factory=dict)

    def merged(self, concepts: Mapping[str, ConceptState]) -> "ScanState":
        """This state with ``concepts`` added or replaced."""
        return ScanState(self.catalog, {**self.concepts, **concepts}, self.metas)

    def to_bytes(self) -> bytes:
        body = {
            "version": _VERSION,
            "catalog": self.catalog,
            "concepts": {cid: [s.listing, s.images] for cid, s in sorted(self.concepts.items())},
            "metas": {cid: [m.size, m.etag, m.text] for cid, m in sorted(self.metas.items())},
        }
        text = json.dumps(body, separators=(",", ":"), ensure_ascii=False)
        return gzip.compress(text.encode("utf-8"), compresslevel=6, mtime=0)

    @classmethod
    def from_bytes(cls, raw: bytes) -> "ScanState":
        """Parse :meth:`to_bytes` output; :class:`StorageError` when it is not a state of this version."""
        try:
            body = json.loads(gzip.decompress(raw).decode("utf-8"))
            if body.get("version") != _VERSION:
                raise ValueError(f"version {body.get('version')!r}, expected {_VERSION}")
            concepts = {}
            for cid, (listing, images) in body["concepts"].items():
                if not (isinstance(listing, str) and isinstance(images, str)):
                    raise ValueError(f"bad entry for {cid!r}")
                concepts[str(cid)] = ConceptState(listing, images)
            metas = {
                str(cid): MetaState(int(size), str(etag), str(text))
                for cid, (size, etag, text) in body["metas"].items()
            }
            return cls(str(body["catalog"]), concepts, metas)
        except (OSError, EOFError, ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(f"not a catalog scan state: {type(exc).__name__}: {exc}") from None


def load_scan_state(out: ObjectStore, catalog_uri: str) -> ScanState:
    """The state the last scan of ``catalog_uri`` left in ``out``; empty (a full scan follows) when
    there is none, it is unreadable, or it belongs to another catalog."""
    empty = ScanState(catalog_uri, {})
    try:
        state = ScanState.from_bytes(out.get(STATE_KEY))
    except NotFound:
        return empty
    except StorageError as exc:
        log.warning("ignoring the catalog scan state %s (%s); this scan reads every image", out.url(STATE_KEY), exc)
        return empty
    if state.catalog != catalog_uri:
        log.info(
            "the scan state in %s is for %s, not %s; this scan reads every image",
            out.url(STATE_KEY),
            state.catalog,
            catalog_uri,
        )
        return empty
    return state


def save_scan_state(out: ObjectStore, state: ScanState, previous: ScanState | None = None) -> bool:
    """Atomically replace the stored state with ``state``; skipped (``False``) when it equals ``previous``."""
    if previous is not None and (previous.catalog, dict(previous.concepts), dict(previous.metas)) == (
        state.catalog,
        dict(state.concepts),
        dict(state.metas),
    ):
        return False
    out.put(STATE_KEY, state.to_bytes())
    return True
