"""What the last catalog scan learned about each concept, so the next scan needs only listings.

A content digest covers image *bytes*, but reading every image of a large catalog every night costs
what the catalog weighs. Listings already carry each object's size and ETag, so the state keeps, per
concept, the fingerprint of its images' listing entries next to the fingerprint of their content,
and the text of its ``concept.json`` next to that file's size and ETag. When a concept's listing
entries are unchanged, the next scan reuses the content fingerprint; when any changed, the concept's
own staging reads the bytes again (it must read them anyway) and records the new pair.

It also remembers what each concept's current result was learned *from* (:class:`Learned`: short
fingerprints of its images and its ``concept.json``, and the key of its :class:`Setup`, the model's and
the settings' fingerprints, which a whole run shares and the state holds once), so that a concept learned
again can be told apart as new, or changed in its images, its ``concept.json``, the model or the settings
(:mod:`storage.relearn`). A concept costs about 55 more bytes of JSON for this (25 compressed), a
setup three strings.

The state is one gzip-compressed JSON object under the output root (:data:`STATE_KEY`), replaced
atomically. It is only ever a cache: a missing, corrupt or foreign state (another catalog, another
version) is ignored, which costs one full read of the catalog and never a wrong skip. The learning
fingerprints are optional keys of the same version: a state written before them reads (a concept learned
again then says it has no earlier fingerprints), and a reader that predates them ignores them.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field, replace

from storage.errors import NotFound, StorageError
from storage.store.base import ObjectStore

__all__ = [
    "STATE_KEY",
    "MetaState",
    "ConceptState",
    "Setup",
    "Learned",
    "ScanState",
    "load_scan_state",
    "save_scan_state",
]

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
class Setup:
    """What a whole run learns with besides each concept's own files: the model's fingerprint
    (:func:`inversion.model.fingerprint.model_fingerprint`), the fingerprint of the learning settings
    that enter the digest, the model aside, and ``digest``, the fingerprint of both together as the
    concept digests take them (:func:`storage.catalog.settings_fingerprint`)."""

    model: str
    settings: str
    digest: str

    @property
    def key(self) -> str:
        """A short name of this setup, by which :class:`Learned` entries refer to it."""
        return hashlib.sha256(f"{self.model}\n{self.settings}".encode()).hexdigest()[:12]


@dataclass(frozen=True)
class Learned:
    """What a concept's current complete result was learned from: the first 16 hex digits of its images'
    content fingerprint and of its ``concept.json``'s (defaults applied), and its :attr:`Setup.key`."""

    images: str
    meta: str
    setup: str


@dataclass(frozen=True)
class ScanState:
    """What is known about the concepts of one catalog (``catalog`` is its URI): their images and
    their ``concept.json`` files; what each concept's current result was learned from (``learned``), the
    setups those refer to by key (``setups``), and the key of the setup of the scan that wrote the state
    (``setup``; ``None`` in a state written before setups were kept)."""

    catalog: str
    concepts: Mapping[str, ConceptState] = field(default_factory=dict)
    metas: Mapping[str, MetaState] = field(default_factory=dict)
    learned: Mapping[str, Learned] = field(default_factory=dict)
    setups: Mapping[str, Setup] = field(default_factory=dict)
    setup: str | None = None

    def merged(self, concepts: Mapping[str, ConceptState]) -> "ScanState":
        """This state with ``concepts`` added or replaced."""
        return replace(self, concepts={**self.concepts, **concepts})

    def with_learning(
        self, learned: Mapping[str, Learned], setup: Setup, earlier: Mapping[str, Setup] | None = None
    ) -> "ScanState":
        """This state remembering ``learned`` (replacing what it held) and ``setup`` as its scan's. Of the
        setups it holds, ``earlier`` ones and ``setup``, only those ``learned`` refers to and ``setup`` are kept."""
        known = {**(earlier or {}), **self.setups, setup.key: setup}
        used = {entry.setup for entry in learned.values()} | {setup.key}
        return replace(
            self, learned=dict(learned), setups={k: known[k] for k in sorted(used) if k in known}, setup=setup.key
        )

    def _key(self) -> tuple:
        return (
            self.catalog,
            dict(self.concepts),
            dict(self.metas),
            dict(self.learned),
            dict(self.setups),
            self.setup,
        )

    def to_bytes(self) -> bytes:
        body: dict = {
            "version": _VERSION,
            "catalog": self.catalog,
            "concepts": {cid: [s.listing, s.images] for cid, s in sorted(self.concepts.items())},
            "metas": {cid: [m.size, m.etag, m.text] for cid, m in sorted(self.metas.items())},
        }
        if self.setups or self.learned or self.setup is not None:
            body["setup"] = self.setup
            body["setups"] = {key: [s.model, s.settings, s.digest] for key, s in sorted(self.setups.items())}
            body["learned"] = {cid: [e.images, e.meta, e.setup] for cid, e in sorted(self.learned.items())}
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
            setups = {str(key): Setup(*(str(v) for v in values)) for key, values in body.get("setups", {}).items()}
            learned = {
                str(cid): Learned(str(images), str(meta), str(setup))
                for cid, (images, meta, setup) in body.get("learned", {}).items()
            }
            setup = body.get("setup")
            return cls(
                str(body["catalog"]), concepts, metas, learned, setups, str(setup) if setup is not None else None
            )
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
    if previous is not None and previous._key() == state._key():
        return False
    out.put(STATE_KEY, state.to_bytes())
    return True
