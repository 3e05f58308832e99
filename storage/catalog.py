"""The input catalog: one folder per concept, holding its images and an optional ``concept.json``.

Layout::

    <catalog>/<concept_id>/*.jpg|*.jpeg|*.png|*.webp   (extension case-insensitive)
    <catalog>/<concept_id>/concept.json               (optional)

:func:`discover_catalog` turns a store into :class:`ConceptSpec` s plus :class:`ConceptProblem`
s (a bad concept is reported, never stops the others). Each spec carries a content digest over
its image bytes, its metadata and the learning settings: a scheduled run compares digests to
find what is new or changed. With the state of the previous scan (:mod:`storage.scanstate`) a
scan reads only listings for concepts whose objects did not change; a changed concept's images
are read once, by :func:`read_concept`.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from functools import partial
from typing import Any

from common.digest import canonical_digest
from storage.errors import InvalidConcept, InvalidInput, StorageError
from storage.scanstate import ConceptState, MetaState, ScanState
from storage.store.base import ObjectInfo, ObjectStore

__all__ = [
    "IMAGE_EXTENSIONS",
    "CONCEPT_FILE",
    "PROPERTIES",
    "DIGEST_LENGTH",
    "ConceptMeta",
    "ConceptSpec",
    "ConceptProblem",
    "CatalogScan",
    "ConceptRead",
    "MAX_META_BYTES",
    "MAX_IMAGE_BYTES",
    "token_problem",
    "validate_concept_id",
    "settings_fingerprint",
    "images_fingerprint",
    "listing_fingerprint",
    "digest_of",
    "concept_digest",
    "read_concept",
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
MAX_META_BYTES = 64 * 1024
MAX_IMAGE_BYTES = 64 * 1024 * 1024  # a 50 MP phone JPEG is ~25 MB


def token_problem(token: object) -> str | None:
    """Why ``token`` cannot be a placeholder word the pipeline carries, or ``None``.

    Any printable word is fine (``<café-猫>`` included): the tokenizer adds it as one token and file
    names are derived from it safely. Refused: empty or longer than 64 characters, whitespace of any
    kind, and control, format (zero-width), private-use, surrogate or unassigned code points, which a
    prompt cannot show or carry. Whether the word is already in a model's vocabulary is checked
    against that model's tokenizer, not here.
    """
    if not isinstance(token, str) or not token:
        return "it is empty"
    if len(token) > 64:
        return f"it has {len(token)} characters"
    for ch in token:
        category = unicodedata.category(ch)
        if ch.isspace() or category.startswith("Z"):
            return f"it contains whitespace (U+{ord(ch):04X})"
        if category.startswith("C"):
            return f"it contains the invisible or control character U+{ord(ch):04X}"
    return None


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
        problem = token_problem(self.token)
        if problem:
            raise InvalidConcept(
                "token must be one word (1-64 chars, no spaces, no control or invisible characters), "
                f"got {self.token!r}: {problem}"
            )
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
        initializer = (
            initializer if initializer is not None else class_name if class_name is not None else DEFAULT_WORD[prop]
        )
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
        if len(raw) > MAX_META_BYTES:
            raise InvalidConcept(f"{CONCEPT_FILE} is larger than {MAX_META_BYTES} bytes")
        try:
            data = json.loads(raw.decode("utf-8-sig"))
        except UnicodeDecodeError:
            raise InvalidConcept(f"{CONCEPT_FILE} is not UTF-8 text") from None
        except json.JSONDecodeError as exc:
            raise InvalidConcept(
                f"{CONCEPT_FILE} is not valid JSON: {exc.msg} at line {exc.lineno} column {exc.colno}"
            ) from None
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
    """A concept ready to ingest: id, metadata, image keys (relative to the catalog root, sorted)
    and the content digest.

    ``digest`` is ``None`` while the concept is *pending*: some image changed since the last scan, so
    its content is not known yet; :func:`read_concept` (run by the concept's own staging, which reads
    the images anyway) computes it. ``settings`` is the fingerprint of the learning settings, the
    digest's third input, so the digest can be finished without them.
    """

    concept_id: str
    meta: ConceptMeta
    images: tuple[str, ...]
    digest: str | None
    meta_key: str | None = None
    settings: str = ""

    @property
    def pending(self) -> bool:
        return self.digest is None


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
    """The result of :func:`discover_catalog`: usable concepts, every problem found, and the
    :class:`~storage.scanstate.ScanState` of what this scan knows (to save for the next one)."""

    specs: tuple[ConceptSpec, ...]
    problems: tuple[ConceptProblem, ...] = field(default=())
    state: ScanState | None = None

    def by_id(self) -> dict[str, ConceptSpec]:
        return {spec.concept_id: spec for spec in self.specs}

    def problems_for(self, concept_id: str) -> list[ConceptProblem]:
        return [p for p in self.problems if p.concept_id == concept_id]


@dataclass(frozen=True)
class ConceptRead:
    """A concept's images, read once: their bytes by key, the spec with its digest computed over
    the readable ones, files that could not be read, and the scan state entry to remember (``None``
    when some image could not be read, so the next scan reads the concept again)."""

    spec: ConceptSpec
    data: Mapping[str, bytes]
    problems: tuple[ConceptProblem, ...]
    state: ConceptState | None


def _digest(value: Any, what: str, length: int | None = None) -> str:
    """:func:`common.digest.canonical_digest`, its complaint about a value not JSON-like an :class:`InvalidInput`."""
    try:
        return canonical_digest(value, length, what)
    except ValueError as exc:
        raise InvalidInput(str(exc)) from None


def settings_fingerprint(learning_settings: Mapping[str, Any] | None) -> str:
    """SHA-256 of the learning settings (a JSON-like mapping, canonical: key order does not matter)."""
    return _digest(dict(learning_settings or {}), "learning settings")


def images_fingerprint(content_hashes: Mapping[str, str]) -> str:
    """SHA-256 over a concept's image names (relative to its folder) and their content SHA-256s."""
    return _digest(sorted([name, sha] for name, sha in content_hashes.items()), "image hashes")


def listing_fingerprint(entries: Iterable[tuple[str, int, str]]) -> str:
    """SHA-256 over a concept's image listing entries ``(name, size, etag)``."""
    return _digest(sorted([n, int(s), str(e)] for n, s, e in entries), "image listing")


def digest_of(images: str, meta: ConceptMeta | Mapping[str, Any], settings: str) -> str:
    """The content digest from :func:`images_fingerprint`, the metadata and :func:`settings_fingerprint`."""
    meta_dict = meta.to_dict() if isinstance(meta, ConceptMeta) else dict(meta)
    payload = {"v": 2, "images": images, "meta": meta_dict, "settings": settings}
    return _digest(payload, "learning settings and metadata", DIGEST_LENGTH)


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
    hashes = {name: hashlib.sha256(data).hexdigest() for name, data in image_bytes.items()}
    return digest_of(images_fingerprint(hashes), meta, settings_fingerprint(learning_settings))


def _is_image(name: str) -> bool:
    return name.lower().endswith(IMAGE_EXTENSIONS)


def read_concept(store: ObjectStore, spec: ConceptSpec, *, max_workers: int = 4) -> ConceptRead:
    """Read every image of ``spec`` once and finish its digest from their bytes.

    Each read also reports the size and ETag of exactly the bytes it returned, so the state entry
    pairs a listing with the content it really had. Unreadable files become problems; the digest
    covers the readable images (``None`` when there is none).
    """
    prefix = f"{spec.concept_id}/"

    def load(key: str) -> tuple[str, tuple[bytes, ObjectInfo] | str]:
        """``key`` with its bytes and their object info, or with the reason it cannot be read."""
        try:
            return key, store.get_with_info(key)
        except StorageError as exc:
            return key, f"cannot read: {exc}"

    with ThreadPoolExecutor(max_workers=max(1, min(max_workers, len(spec.images) or 1))) as pool:
        results = list(pool.map(load, spec.images))
    read = {key: outcome for key, outcome in results if not isinstance(outcome, str)}
    data = {key: body for key, (body, _) in read.items()}
    problems = [ConceptProblem(spec.concept_id, key, outcome) for key, outcome in results if isinstance(outcome, str)]
    if not data:
        problems.append(ConceptProblem(spec.concept_id, None, "no readable image"))
        return ConceptRead(replace(spec, digest=None), {}, tuple(problems), None)
    hashes = {key.removeprefix(prefix): hashlib.sha256(body).hexdigest() for key, body in data.items()}
    images = images_fingerprint(hashes)
    listing = listing_fingerprint((info.key.removeprefix(prefix), info.size, info.etag) for _, info in read.values())
    state = ConceptState(listing, images) if not problems else None
    digest = digest_of(images, spec.meta, spec.settings)
    return ConceptRead(replace(spec, images=tuple(sorted(data)), digest=digest), data, tuple(problems), state)


@dataclass(frozen=True)
class _FolderEntries:
    """A concept folder's listing entries sorted by what they are."""

    images: tuple[ObjectInfo, ...]  # images within the size limit, by key
    meta: ObjectInfo | None  # ``concept.json``, if present
    ignored: tuple[ConceptProblem, ...]  # nested folders, non-images, images over the size limit


@dataclass(frozen=True)
class _ConceptScan:
    """What scanning one concept folder found: its spec (``None`` when it cannot be learned), its
    problems, and what the scan state remembers of its ``concept.json`` and of its images."""

    spec: ConceptSpec | None
    problems: tuple[ConceptProblem, ...]
    meta_state: MetaState | None = None
    state: ConceptState | None = None


def _group_listing(
    store: ObjectStore, concept_ids: Iterable[str] | None
) -> tuple[dict[str, list[ObjectInfo]], list[ConceptProblem]]:
    """Step 1 of a scan: list the catalog (or only the requested concepts' folders) and group the
    entries by concept folder; files at the root are not concepts. Invalid requested ids are problems."""
    problems: list[ConceptProblem] = []
    if concept_ids is None:
        entries: Iterable[ObjectInfo] = store.list_info()
    else:
        if isinstance(concept_ids, str):
            raise InvalidInput(f"concept_ids must be a collection of ids, not the string {concept_ids!r}")
        entries = []
        for concept_id in dict.fromkeys(concept_ids):
            try:
                validate_concept_id(concept_id)
            except InvalidConcept as exc:
                problems.append(ConceptProblem(concept_id, None, str(exc)))
                continue
            entries.extend(store.list_info(f"{concept_id}/"))
    groups: dict[str, list[ObjectInfo]] = {}
    for entry in entries:
        concept_id, _, rest = entry.key.partition("/")
        if rest:  # files at the catalog root (README, …) are not concepts
            groups.setdefault(concept_id, []).append(entry)
    return groups, problems


def _classify_entries(concept_id: str, entries: list[ObjectInfo]) -> _FolderEntries:
    """Step 2 of a concept's scan, from the listing alone: its images, its ``concept.json`` and what is
    ignored (reported, not disqualifying). Hidden files (``.name``) are skipped silently."""
    images: list[ObjectInfo] = []
    meta: ObjectInfo | None = None
    ignored: list[ConceptProblem] = []
    for entry in sorted(entries, key=lambda e: e.key):
        name = entry.key.partition("/")[2]
        if name.rsplit("/", 1)[-1].startswith("."):
            continue
        if "/" in name:
            ignored.append(ConceptProblem(concept_id, entry.key, "ignored: nested folders are not scanned"))
        elif name == CONCEPT_FILE:
            meta = entry
        elif not _is_image(name):
            reason = f"ignored: not an image ({', '.join(IMAGE_EXTENSIONS)})"
            ignored.append(ConceptProblem(concept_id, entry.key, reason))
        elif entry.size > MAX_IMAGE_BYTES:
            reason = f"ignored: {entry.size} bytes is more than the {MAX_IMAGE_BYTES}-byte limit"
            ignored.append(ConceptProblem(concept_id, entry.key, reason))
        else:
            images.append(entry)
    return _FolderEntries(tuple(images), meta, tuple(ignored))


def _read_meta(
    store: ObjectStore, known: ScanState, concept_id: str, entry: ObjectInfo | None
) -> tuple[bytes | None, MetaState | None]:
    """Step 3 of a concept's scan: ``concept.json``'s bytes (``None``: absent) and what to remember of it
    (a cached copy when its listing entry is unchanged: no read)."""
    if entry is None:
        return None, None
    if entry.size > MAX_META_BYTES:
        raise InvalidConcept(f"{CONCEPT_FILE} is {entry.size} bytes, larger than {MAX_META_BYTES}")
    cached = known.metas.get(concept_id)
    if cached is not None and (cached.size, cached.etag) == (entry.size, entry.etag):
        return cached.text.encode("utf-8"), cached
    raw, info = store.get_with_info(entry.key)
    try:
        return raw, MetaState(info.size, info.etag, raw.decode("utf-8"))
    except UnicodeDecodeError:
        return raw, None  # not text: parsing reports it; nothing to remember


def _scan_concept(
    store: ObjectStore,
    concept_id: str,
    entries: list[ObjectInfo],
    *,
    known: ScanState,
    settings: str,
    read_changed: bool | Callable[[str], bool],
    vectors: int | None = None,
) -> _ConceptScan:
    """Scan one concept folder: validate its id, sort its entries, parse its metadata, then find its digest
    from the previous scan (listing unchanged), from its images' bytes (``read_changed``) or not yet."""
    # 1. the id and the entries
    try:
        validate_concept_id(concept_id)
    except InvalidConcept as exc:
        return _ConceptScan(None, (ConceptProblem(concept_id, None, str(exc)),))
    folder = _classify_entries(concept_id, entries)
    # 2. the metadata: a bad file is remembered all the same, so that an unchanged one is not read again
    meta_key = folder.meta.key if folder.meta else None
    meta_state = None
    try:
        raw, meta_state = _read_meta(store, known, concept_id, folder.meta)
        meta = ConceptMeta.from_json(concept_id, raw)
        if vectors is not None and vectors != meta.vectors:  # the run's override: the digest staging finishes with
            meta = replace(meta, vectors=vectors)
    except InvalidConcept as exc:
        return _ConceptScan(None, (*folder.ignored, ConceptProblem(concept_id, meta_key, str(exc))), meta_state)
    except StorageError as exc:
        return _ConceptScan(None, (*folder.ignored, ConceptProblem(concept_id, meta_key, f"cannot read: {exc}")))
    if not folder.images:
        reason = f"no images ({', '.join(IMAGE_EXTENSIONS)}) in the concept folder"
        return _ConceptScan(None, (*folder.ignored, ConceptProblem(concept_id, None, reason)), meta_state)
    # 3. the digest: from the last scan when the images' listing is unchanged, else read the images (or leave it)
    spec = ConceptSpec(concept_id, meta, tuple(e.key for e in folder.images), None, meta_key, settings)
    listing = listing_fingerprint((e.key.partition("/")[2], e.size, e.etag) for e in folder.images)
    last = known.concepts.get(concept_id)
    if last is not None and last.listing == listing:
        return _ConceptScan(
            replace(spec, digest=digest_of(last.images, meta, settings)), folder.ignored, meta_state, last
        )
    if not (read_changed(concept_id) if callable(read_changed) else read_changed):
        return _ConceptScan(spec, folder.ignored, meta_state)
    read = read_concept(store, spec)
    found = (*folder.ignored, *read.problems)
    return _ConceptScan(read.spec if read.spec.digest else None, found, meta_state, read.state)


def discover_catalog(
    store: ObjectStore,
    learning_settings: Mapping[str, Any] | None = None,
    *,
    concept_ids: Iterable[str] | None = None,
    previous: ScanState | None = None,
    read_changed: bool | Callable[[str], bool] = True,
    max_workers: int = 8,
    vectors: int | None = None,
) -> CatalogScan:
    """Scan ``store`` (the catalog root) for concepts.

    Objects are classified from the listing; sizes are checked against their limits
    (:data:`MAX_META_BYTES`, :data:`MAX_IMAGE_BYTES`) from the listing, before any read. Invalid
    concept ids, bad metadata, concepts without images and unreadable files become
    :class:`ConceptProblem` s. Hidden files (``.name``) are ignored; other non-image files and
    nested folders are reported but do not disqualify the concept.

    ``previous`` is the state the last scan left (see :mod:`storage.scanstate`): a concept whose
    images' listing entries are unchanged gets its digest without reading any image, and an
    unchanged ``concept.json`` is not read again. The images of the other concepts are read here
    (``read_changed``, the default; a callable decides per concept id) or left to the caller: their
    specs come back pending (``digest=None``) for :func:`read_concept`.

    ``concept_ids`` limits the scan to those concepts: only their folders are listed and read,
    so learning one concept of a large catalog costs one listing, not a download of the catalog.
    A requested id with no files is simply absent from the result.

    ``vectors`` (the run's vector-count override) replaces each concept's own count in its metadata, so the
    digest found here is the one staging finishes and the result is published under.
    """
    # 1. list the catalog (or the requested folders) and group the entries by concept
    groups, problems = _group_listing(store, concept_ids)
    # 2. the settings fingerprint, validated once up front, and what the last scan learned
    settings = settings_fingerprint(learning_settings)
    known = previous if previous is not None else ScanState(store.uri)
    # 3. scan the concepts in parallel (each reads what its listing says changed)
    scan_one = partial(_scan_concept, store, known=known, settings=settings, read_changed=read_changed, vectors=vectors)
    found = sorted(groups)
    with ThreadPoolExecutor(max_workers=max(1, max_workers)) as pool:
        scans = dict(zip(found, pool.map(scan_one, found, (groups[cid] for cid in found))))
    # 4. gather the specs, the problems and the new scan state, in concept order
    specs = tuple(scan.spec for scan in scans.values() if scan.spec is not None)
    problems.extend(problem for scan in scans.values() for problem in scan.problems)
    metas = {cid: scan.meta_state for cid, scan in scans.items() if scan.meta_state is not None}
    concepts = {cid: scan.state for cid, scan in scans.items() if scan.state is not None}
    return CatalogScan(specs, tuple(problems), ScanState(known.catalog, concepts, metas))
