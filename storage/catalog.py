"""The input catalog: one folder per concept, holding its images and an optional ``concept.json``.

Layout::

    <catalog>/<concept_id>/*.jpg|*.jpeg|*.png|*.webp   (extension case-insensitive)
    <catalog>/<concept_id>/concept.json               (optional)

:func:`discover_catalog` turns a store into :class:`ConceptSpec` s plus :class:`ConceptProblem`
s (a bad concept is reported, never stops the others). Each spec carries a content digest over
its image bytes, its metadata and the learning settings: a scheduled run compares digests to
find what is new or changed.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from .errors import InvalidConcept, InvalidInput, StorageError
from .objectstore import ObjectStore

__all__ = [
    "IMAGE_EXTENSIONS",
    "CONCEPT_FILE",
    "PROPERTIES",
    "DIGEST_LENGTH",
    "ConceptMeta",
    "ConceptSpec",
    "ConceptProblem",
    "CatalogScan",
    "validate_concept_id",
    "concept_digest",
    "discover_catalog",
]

IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".webp")
CONCEPT_FILE = "concept.json"
PROPERTIES = ("object", "style")
DEFAULT_WORD = {"object": "object", "style": "painting"}
DIGEST_LENGTH = 16
MAX_VECTORS = 64
_CONCEPT_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_KNOWN_KEYS = ("initializer", "property", "vectors", "class", "captions", "token")
_MAX_META_BYTES = 64 * 1024


def validate_concept_id(concept_id: str) -> str:
    """``concept_id`` if it is safe as a folder/key/file name, else :class:`InvalidConcept`."""
    if not isinstance(concept_id, str) or not _CONCEPT_ID_RE.match(concept_id) or ".." in concept_id:
        raise InvalidConcept(
            f"invalid concept id {concept_id!r}: use 1-128 of A-Z a-z 0-9 . _ -, "
            "starting with a letter or digit, without '..'"
        )
    return concept_id


@dataclass(frozen=True)
class ConceptMeta:
    """What to learn for a concept (``concept.json`` with defaults applied).

    Attributes:
        token: placeholder word; default ``<concept_id>``. One word, no whitespace.
        initializer: word/phrase whose embedding initialises the new vector(s); default the
            ``class``, else ``"object"`` for objects / ``"painting"`` for styles.
        class_name: the concept's class (``"class"`` in JSON); default the initializer.
        property: ``"object"`` (default) or ``"style"`` — selects the training templates.
        vectors: number of embedding vectors, 1..64; default 1.
        captions: human-written descriptions of the concept in words only (e.g.
            ``"a fluffy ginger cat"``), rendered as the words-only baseline the learned word is
            scored against; default empty = ``"a photo of a <class>"``.
    """

    token: str
    initializer: str
    class_name: str
    property: str = "object"
    vectors: int = 1
    captions: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if not isinstance(self.token, str) or not self.token or len(self.token) > 64 or re.search(r"\s", self.token):
            raise InvalidConcept(f"token must be one word (1-64 chars, no spaces), got {self.token!r}")
        for name in ("initializer", "class_name"):
            value = getattr(self, name)
            if not isinstance(value, str) or not value.strip() or len(value) > 200:
                label = "class" if name == "class_name" else name
                raise InvalidConcept(f"{label} must be a non-empty string (max 200 chars), got {value!r}")
        if self.property not in PROPERTIES:
            raise InvalidConcept(f"property must be one of {', '.join(PROPERTIES)}, got {self.property!r}")
        if not isinstance(self.vectors, int) or isinstance(self.vectors, bool) or not 1 <= self.vectors <= MAX_VECTORS:
            raise InvalidConcept(f"vectors must be an integer in 1..{MAX_VECTORS}, got {self.vectors!r}")
        if isinstance(self.captions, str) or not all(isinstance(c, str) for c in self.captions):
            raise InvalidConcept(f"captions must be a list of strings, got {self.captions!r}")
        object.__setattr__(self, "captions", tuple(self.captions))
        for caption in self.captions:
            if not caption.strip() or len(caption) > 300:
                raise InvalidConcept(f"each caption must be a non-empty description (max 300 chars), got {caption!r}")
            if self.token in caption:
                raise InvalidConcept(f"caption {caption!r} contains the token {self.token}; captions are words only")

    @classmethod
    def defaults(cls, concept_id: str) -> "ConceptMeta":
        """The metadata of a concept without ``concept.json``."""
        return cls.from_dict(concept_id, {})

    @classmethod
    def from_dict(cls, concept_id: str, data: Mapping[str, Any]) -> "ConceptMeta":
        """Apply the defaults to a parsed ``concept.json`` object (unknown keys are errors)."""
        if not isinstance(data, Mapping):
            raise InvalidConcept(f"{CONCEPT_FILE} must hold a JSON object, got {type(data).__name__}")
        unknown = sorted(set(data) - set(_KNOWN_KEYS))
        if unknown:
            raise InvalidConcept(f"unknown key(s) {', '.join(map(repr, unknown))} (allowed: {', '.join(_KNOWN_KEYS)})")
        prop = data.get("property", "object")
        if prop not in PROPERTIES:
            raise InvalidConcept(f"property must be one of {', '.join(PROPERTIES)}, got {prop!r}")
        initializer = data.get("initializer")
        class_name = data.get("class")
        initializer = initializer if initializer is not None else class_name if class_name is not None else DEFAULT_WORD[prop]
        class_name = class_name if class_name is not None else initializer
        captions = data.get("captions", ())
        if not isinstance(captions, (list, tuple)):
            raise InvalidConcept(f"captions must be a list of strings, got {captions!r}")
        return cls(
            token=data.get("token", f"<{concept_id}>"),
            initializer=initializer,
            class_name=class_name,
            property=prop,
            vectors=data.get("vectors", 1),
            captions=tuple(captions),
        )

    @classmethod
    def from_json(cls, concept_id: str, raw: bytes | None) -> "ConceptMeta":
        """Parse ``concept.json`` bytes (``None`` = file absent → defaults)."""
        if raw is None:
            return cls.defaults(concept_id)
        if len(raw) > _MAX_META_BYTES:
            raise InvalidConcept(f"{CONCEPT_FILE} is larger than {_MAX_META_BYTES} bytes")
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise InvalidConcept(f"{CONCEPT_FILE} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise InvalidConcept(f"{CONCEPT_FILE} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}") from None
        return cls.from_dict(concept_id, data)

    def to_dict(self) -> dict[str, Any]:
        """The ``concept.json`` form, every default spelled out."""
        return {
            "token": self.token,
            "initializer": self.initializer,
            "class": self.class_name,
            "property": self.property,
            "vectors": self.vectors,
            "captions": list(self.captions),
        }


@dataclass(frozen=True)
class ConceptSpec:
    """A concept ready to ingest: id, metadata, image keys (relative to the catalog root,
    sorted) and the content digest."""

    concept_id: str
    meta: ConceptMeta
    images: tuple[str, ...]
    digest: str
    meta_key: str | None = None


@dataclass(frozen=True)
class ConceptProblem:
    """Why a concept or one of its files cannot be used. ``file`` is a key relative to the
    catalog root, or ``None`` when the problem concerns the whole concept."""

    concept_id: str
    file: str | None
    reason: str

    def __str__(self) -> str:
        where = self.file or self.concept_id
        return f"{where}: {self.reason}"


@dataclass(frozen=True)
class CatalogScan:
    """The result of :func:`discover_catalog`: usable concepts and every problem found."""

    specs: tuple[ConceptSpec, ...]
    problems: tuple[ConceptProblem, ...] = field(default=())

    def by_id(self) -> dict[str, ConceptSpec]:
        return {spec.concept_id: spec for spec in self.specs}

    def problems_for(self, concept_id: str) -> list[ConceptProblem]:
        return [p for p in self.problems if p.concept_id == concept_id]


def _canonical_json(value: Any, what: str) -> str:
    def check(v: Any) -> None:
        if isinstance(v, float) and not math.isfinite(v):
            raise InvalidInput(f"{what} must not contain NaN or infinity")
        if isinstance(v, Mapping):
            for k, item in v.items():
                if not isinstance(k, str):
                    raise InvalidInput(f"{what} keys must be strings, got {k!r}")
                check(item)
        elif isinstance(v, (list, tuple)):
            for item in v:
                check(item)
        elif not (v is None or isinstance(v, (str, int, float, bool))):
            raise InvalidInput(f"{what} must be JSON-like (str/int/float/bool/None/list/dict), got {type(v).__name__}")

    check(value)
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def concept_digest(
    image_bytes: Mapping[str, bytes],
    meta: ConceptMeta | Mapping[str, Any],
    learning_settings: Mapping[str, Any] | None = None,
) -> str:
    """A short hex digest (``DIGEST_LENGTH`` chars of SHA-256) identifying a concept's content.

    It covers the image file names (keys of ``image_bytes``; pass names relative to the
    concept folder) and bytes, the metadata with its defaults applied, and the learning
    settings (a JSON-like mapping, compared canonically so key order does not matter). Any
    change to an image, ``concept.json`` or a setting changes it; nothing else does.
    """
    meta_dict = meta.to_dict() if isinstance(meta, ConceptMeta) else dict(meta)
    images = [[name, hashlib.sha256(data).hexdigest()] for name, data in sorted(image_bytes.items())]
    payload = {
        "v": 1,
        "images": images,
        "meta": meta_dict,
        "settings": dict(learning_settings or {}),
    }
    text = _canonical_json(payload, "learning settings and metadata")
    return hashlib.sha256(text.encode("utf-8")).hexdigest()[:DIGEST_LENGTH]


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def discover_catalog(
    store: ObjectStore,
    learning_settings: Mapping[str, Any] | None = None,
    *,
    concept_ids: Iterable[str] | None = None,
    max_workers: int = 8,
) -> CatalogScan:
    """Scan ``store`` (the catalog root) for concepts.

    Reads every concept's ``concept.json`` and image bytes (to compute the digest; images are
    decoded later by :func:`storage.images.ingest_concept`). Invalid concept ids, bad
    metadata, concepts without images and unreadable files become :class:`ConceptProblem` s.
    Hidden files (``.name``) are ignored; other non-image files and nested folders are
    reported but do not disqualify the concept.

    ``concept_ids`` limits the scan to those concepts: only their folders are listed and read,
    so learning one concept of a large catalog costs one listing, not a download of the catalog.
    A requested id with no files is simply absent from the result.
    """
    groups: dict[str, list[str]] = {}
    problems: list[ConceptProblem] = []
    if concept_ids is None:
        keys: Iterable[str] = store.list()
    else:
        if isinstance(concept_ids, str):
            raise InvalidInput(f"concept_ids must be a collection of ids, not the string {concept_ids!r}")
        keys = []
        for concept_id in dict.fromkeys(concept_ids):
            try:
                validate_concept_id(concept_id)
            except InvalidConcept as exc:
                problems.append(ConceptProblem(concept_id, None, str(exc)))
                continue
            keys.extend(store.list(f"{concept_id}/"))
    for key in keys:
        concept_id, _, rest = key.partition("/")
        if not rest:
            continue  # files at the catalog root (README, …) are not concepts
        groups.setdefault(concept_id, []).append(rest)

    def scan(concept_id: str, names: list[str]) -> tuple[ConceptSpec | None, list[ConceptProblem]]:
        found: list[ConceptProblem] = []
        try:
            validate_concept_id(concept_id)
        except InvalidConcept as exc:
            return None, [ConceptProblem(concept_id, None, str(exc))]
        images: list[str] = []
        meta_key = None
        for name in sorted(names):
            base = name.rsplit("/", 1)[-1]
            if base.startswith("."):
                continue
            if "/" in name:
                found.append(ConceptProblem(concept_id, f"{concept_id}/{name}", "ignored: nested folders are not scanned"))
            elif name == CONCEPT_FILE:
                meta_key = f"{concept_id}/{name}"
            elif _is_image(name):
                images.append(name)
            else:
                found.append(ConceptProblem(
                    concept_id, f"{concept_id}/{name}", f"ignored: not an image ({', '.join(IMAGE_EXTENSIONS)})"
                ))
        try:
            meta = ConceptMeta.from_json(concept_id, store.get(meta_key) if meta_key else None)
        except InvalidConcept as exc:
            return None, [*found, ConceptProblem(concept_id, meta_key, str(exc))]
        except StorageError as exc:
            return None, [*found, ConceptProblem(concept_id, meta_key, f"cannot read: {exc}")]
        if not images:
            return None, [*found, ConceptProblem(
                concept_id, None, f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the concept folder"
            )]
        data: dict[str, bytes] = {}
        for name in images:
            try:
                data[name] = store.get(f"{concept_id}/{name}")
            except StorageError as exc:
                found.append(ConceptProblem(concept_id, f"{concept_id}/{name}", f"cannot read: {exc}"))
        if not data:
            return None, [*found, ConceptProblem(concept_id, None, "no readable image")]
        digest = concept_digest(data, meta, learning_settings)
        keys = tuple(f"{concept_id}/{name}" for name in sorted(data))
        return ConceptSpec(concept_id, meta, keys, digest, meta_key), found

    # validate the settings once, up front, so a bad mapping fails loudly rather than per concept
    _canonical_json(dict(learning_settings or {}), "learning settings")
    specs: list[ConceptSpec] = []
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        for spec, found in pool.map(lambda item: scan(*item), sorted(groups.items())):
            problems.extend(found)
            if spec is not None:
                specs.append(spec)
    return CatalogScan(tuple(specs), tuple(problems))
