"""The results layout: published embeddings (write-once, completed by ``_SUCCESS``) and a
resumable checkpoint area.

Layout under the output root::

    embeddings/<concept_id>/<digest>/<file>        learned_embeds.safetensors, <token>.pt,
                                                   grid PNG(s), scores.json … (write-once)
    embeddings/<concept_id>/<digest>/_SUCCESS      JSON manifest, written last (write-once)
    checkpoints/<concept_id>/<digest>/<name>       overwritable, cleared after publishing

Readers and the skip-if-done check trust a result only once ``_SUCCESS`` exists. Every file
is put with write-once semantics: retrying a publish with identical bytes is a no-op, while a
different writer's bytes are never overwritten.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timezone

from common.filenames import SUCCESS_FILENAME
from storage.catalog import validate_concept_id
from storage.errors import AlreadyExists, InvalidInput, NotFound, StorageError
from storage.store.base import ObjectStore, validate_key
from storage.store.open import open_store
from storage.store.settings import S3Settings

__all__ = ["FileEntry", "ResultManifest", "PublishedResult", "ResultStore", "check_run_id"]

EMBEDDINGS = "embeddings"
CHECKPOINTS = "checkpoints"
_DIGEST_RE = re.compile(r"^[0-9a-f]{8,64}$")
_FILE_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=-]{0,199}$")
_RUN_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


def _check_digest(digest: str) -> str:
    if not isinstance(digest, str) or not _DIGEST_RE.match(digest):
        raise InvalidInput(f"digest must be 8-64 lowercase hex characters, got {digest!r}")
    return digest


def _check_name(name: str, what: str = "file name") -> str:
    if not isinstance(name, str) or not _FILE_RE.match(name) or name == SUCCESS_FILENAME or ".." in name:
        raise InvalidInput(
            f"{what} must be a plain name (letters, digits, . _ - + =, starting with a letter or digit; "
            f"not {SUCCESS_FILENAME!r}), got {name!r}"
        )
    return name


def check_run_id(run_id: str) -> str:
    """``run_id`` if it is safe inside keys and file names, else :class:`InvalidInput`."""
    if not isinstance(run_id, str) or not _RUN_ID_RE.match(run_id):
        raise InvalidInput(f"run_id must be 1-128 of A-Z a-z 0-9 . _ -, got {run_id!r}")
    return run_id


@dataclass(frozen=True)
class FileEntry:
    size: int
    sha256: str


@dataclass(frozen=True)
class ResultManifest:
    """The content of ``_SUCCESS``: what was published, by which run, when."""

    concept_id: str
    digest: str
    run_id: str
    created_at: str  # ISO-8601 UTC
    files: Mapping[str, FileEntry]

    def to_json(self) -> bytes:
        body = {
            "version": 1,
            "concept_id": self.concept_id,
            "digest": self.digest,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "files": {name: {"size": e.size, "sha256": e.sha256} for name, e in sorted(self.files.items())},
        }
        return (json.dumps(body, indent=2, sort_keys=True) + "\n").encode("utf-8")

    @classmethod
    def from_json(cls, raw: bytes, where: str) -> "ResultManifest":
        try:
            body = json.loads(raw)
            files = {name: FileEntry(int(e["size"]), str(e["sha256"])) for name, e in body["files"].items()}
            return cls(
                str(body["concept_id"]), str(body["digest"]), str(body["run_id"]), str(body["created_at"]), files
            )
        except (ValueError, KeyError, TypeError, AttributeError) as exc:
            raise StorageError(f"corrupt manifest {where}: {type(exc).__name__}: {exc}") from None


@dataclass(frozen=True)
class PublishedResult:
    """Where a published result lives. ``created`` is ``False`` when an identical result was
    already complete (an idempotent retry)."""

    concept_id: str
    digest: str
    prefix_uri: str
    uris: Mapping[str, str]
    manifest_uri: str
    manifest: ResultManifest
    created: bool


def _file_entries(concept_id: str, digest: str, files: Mapping[str, bytes]) -> dict[str, FileEntry]:
    """The manifest's entry of each file to publish; :class:`InvalidInput` for no files, a bad name or non-bytes."""
    if not files:
        raise InvalidInput(f"nothing to publish for {concept_id}/{digest}: files is empty")
    entries: dict[str, FileEntry] = {}
    for name, data in files.items():
        _check_name(name)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise InvalidInput(f"file {name!r} must be bytes, got {type(data).__name__}")
        entries[name] = _entry(bytes(data))
    return entries


def _entry(data: bytes) -> FileEntry:
    return FileEntry(len(data), hashlib.sha256(data).hexdigest())


class ResultStore:
    """Publishing and checkpointing embeddings in an output :class:`ObjectStore`."""

    def __init__(self, store: ObjectStore) -> None:
        self.store = store

    @classmethod
    def open(cls, out_uri: str, s3: S3Settings | None = None) -> "ResultStore":
        return cls(open_store(out_uri, s3))

    # -- published results -------------------------------------------------------------------

    def prefix(self, concept_id: str, digest: str) -> str:
        """``embeddings/<concept_id>/<digest>`` (a key prefix, no trailing slash)."""
        return f"{EMBEDDINGS}/{validate_concept_id(concept_id)}/{_check_digest(digest)}"

    def key(self, concept_id: str, digest: str, name: str) -> str:
        if name != SUCCESS_FILENAME:
            _check_name(name)
        return validate_key(f"{self.prefix(concept_id, digest)}/{name}")

    def uri(self, concept_id: str, digest: str, name: str) -> str:
        """Full location of one published file."""
        return self.store.url(self.key(concept_id, digest, name))

    def is_complete(self, concept_id: str, digest: str) -> bool:
        """Whether the result was published completely (``_SUCCESS`` exists)."""
        return self.store.exists(self.key(concept_id, digest, SUCCESS_FILENAME))

    def read_manifest(self, concept_id: str, digest: str) -> ResultManifest | None:
        """The ``_SUCCESS`` manifest, or ``None`` if the result is not complete."""
        key = self.key(concept_id, digest, SUCCESS_FILENAME)
        try:
            raw = self.store.get(key)
        except NotFound:
            return None
        return ResultManifest.from_json(raw, self.store.url(key))

    def completed_digests(self, concept_id: str) -> list[str]:
        """Digests of ``concept_id`` with a complete result."""
        return sorted(self.completed(concept_id).get(concept_id, ()))

    def completed(self, concept_id: str | None = None) -> dict[str, frozenset[str]]:
        """Concept id → digests with a complete result, from ONE paginated listing of
        ``embeddings/`` (or of ``embeddings/<concept_id>/``): no request per concept."""
        base = f"{EMBEDDINGS}/{validate_concept_id(concept_id)}/" if concept_id is not None else f"{EMBEDDINGS}/"
        found: dict[str, set[str]] = {}
        for key in self.store.list(base):
            parts = key.split("/")
            if len(parts) == 4 and parts[3] == SUCCESS_FILENAME:
                found.setdefault(parts[1], set()).add(parts[2])
        return {cid: frozenset(digests) for cid, digests in found.items()}

    def verify(self, concept_id: str, digest: str) -> list[str]:
        """Files of a complete result whose size/hash differ from the manifest (empty = intact)."""
        manifest = self.read_manifest(concept_id, digest)
        if manifest is None:
            raise NotFound(f"no complete result at {self.store.url(self.prefix(concept_id, digest))}")
        bad = []
        for name, entry in manifest.files.items():
            try:
                if _entry(self.store.get(self.key(concept_id, digest, name))) != entry:
                    bad.append(name)
            except NotFound:
                bad.append(name)
        return sorted(bad)

    def publish(
        self,
        concept_id: str,
        digest: str,
        files: Mapping[str, bytes],
        run_id: str,
        *,
        replace_incomplete: bool = False,
    ) -> PublishedResult:
        """Write ``files`` (name → bytes) under :meth:`prefix`, then the ``_SUCCESS`` manifest.

        Each file is written once: an existing file with the same bytes is accepted (retry of
        an interrupted publish), one with different bytes raises
        :class:`~storage.errors.AlreadyExists` — unless ``replace_incomplete`` is set and no
        ``_SUCCESS`` exists yet, in which case the leftovers of an earlier, never completed
        attempt are overwritten (only safe when no other writer can be publishing the same
        concept/digest, e.g. a retry of the same task). If the result is already complete
        with the same content, nothing is written and ``created`` is ``False``.
        """
        # 1. check the names and the bytes, and hash every file
        validate_concept_id(concept_id)
        _check_digest(digest)
        check_run_id(run_id)
        entries = _file_entries(concept_id, digest, files)
        # 2. already complete: the same content is a no-op, other content a conflict
        existing = self.read_manifest(concept_id, digest)
        if existing is not None:
            return self._settle(concept_id, digest, entries, existing)
        # 3. every file, write-once
        for name in sorted(files):
            self._put_file(concept_id, digest, name, bytes(files[name]), entries[name], replace_incomplete)
        # 4. the manifest last: it makes the result complete
        manifest = ResultManifest(
            concept_id, digest, run_id, datetime.now(timezone.utc).isoformat(timespec="milliseconds"), entries
        )
        if self.store.put_once(self.key(concept_id, digest, SUCCESS_FILENAME), manifest.to_json()):
            return self._result(concept_id, digest, manifest, created=True)
        # someone completed it first (or our own earlier attempt whose reply got lost)
        existing = self.read_manifest(concept_id, digest)
        if existing is None:  # pragma: no cover - _SUCCESS vanished right after the 412
            raise StorageError(f"{self.uri(concept_id, digest, SUCCESS_FILENAME)} disappeared while publishing")
        return self._settle(concept_id, digest, entries, existing)

    def _put_file(
        self, concept_id: str, digest: str, name: str, data: bytes, entry: FileEntry, replace_incomplete: bool
    ) -> None:
        """Write one file of a result once; an existing file with the same bytes is kept (a retry), one with other
        bytes is overwritten only with ``replace_incomplete`` while the result is incomplete, else a conflict."""
        key = self.key(concept_id, digest, name)
        if self.store.put_once(key, data):
            return
        try:
            same = _entry(self.store.get(key)) == entry
        except NotFound:  # deleted in between: try once more
            same = self.store.put_once(key, data)
        if same:
            return
        if replace_incomplete and not self.is_complete(concept_id, digest):
            self.store.put(key, data)
            return
        raise AlreadyExists(
            f"{self.store.url(key)} already exists with different content "
            "(another writer is publishing this concept/digest, or an earlier attempt left it; "
            "pass replace_incomplete=True on a retry)"
        )

    def _settle(
        self, concept_id: str, digest: str, entries: Mapping[str, FileEntry], existing: ResultManifest
    ) -> PublishedResult:
        if dict(existing.files) != dict(entries):
            raise AlreadyExists(
                f"{self.store.url(self.prefix(concept_id, digest))} was already published by run "
                f"{existing.run_id} with different content"
            )
        return self._result(concept_id, digest, existing, created=False)

    def _result(self, concept_id: str, digest: str, manifest: ResultManifest, *, created: bool) -> PublishedResult:
        return PublishedResult(
            concept_id=concept_id,
            digest=digest,
            prefix_uri=self.store.url(self.prefix(concept_id, digest)),
            uris={name: self.uri(concept_id, digest, name) for name in sorted(manifest.files)},
            manifest_uri=self.uri(concept_id, digest, SUCCESS_FILENAME),
            manifest=manifest,
            created=created,
        )

    # -- checkpoints ---------------------------------------------------------------------------

    def checkpoint_prefix(self, concept_id: str, digest: str) -> str:
        return f"{CHECKPOINTS}/{validate_concept_id(concept_id)}/{_check_digest(digest)}"

    def _checkpoint_key(self, concept_id: str, digest: str, name: str) -> str:
        return f"{self.checkpoint_prefix(concept_id, digest)}/{_check_name(name, 'checkpoint name')}"

    def put_checkpoint(self, concept_id: str, digest: str, name: str, data: bytes) -> str:
        """Store (or atomically replace) a checkpoint file; returns its URI."""
        return self.store.put(self._checkpoint_key(concept_id, digest, name), data)

    def get_checkpoint(self, concept_id: str, digest: str, name: str) -> bytes | None:
        """A checkpoint file's bytes, or ``None`` if there is none."""
        try:
            return self.store.get(self._checkpoint_key(concept_id, digest, name))
        except NotFound:
            return None

    def list_checkpoints(self, concept_id: str, digest: str) -> list[str]:
        """Names of the stored checkpoint files."""
        base = self.checkpoint_prefix(concept_id, digest) + "/"
        return [k[len(base) :] for k in self.store.list(base)]

    def clear_checkpoints(self, concept_id: str, digest: str) -> int:
        """Delete every checkpoint of ``concept_id``/``digest``; returns how many."""
        base = self.checkpoint_prefix(concept_id, digest) + "/"
        return self.store.delete_many(list(self.store.list(base)))
