"""Tasks that read the catalog: discover concepts, and stage one concept's validated images locally.

A catalog run scans with the state the previous scan left under ``<out>/`` (see
:mod:`storage.scanstate`): concepts whose objects did not change get their digest from listings
alone; a changed concept comes back pending and its own staging reads its images, once, to finish
its digest — and, when a complete result already exists for it (identical bytes re-uploaded),
stops there without decoding anything.

Staging also writes a small copy of the images it decoded, side by side in one JPEG
(:data:`~common.filenames.TRAINING_STRIP_FILENAME`, :func:`write_training_strip`), into the work folder;
it is published with the result, and the run report shows it beside the renders.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from PIL import Image
from prefect import get_run_logger, task

from common.filenames import TRAINING_STRIP_FILENAME
from inversion.model.fingerprint import model_fingerprint
from inversion.model.info import tokenizer_vocabulary
from inversion.text.placeholders import token_collisions, vocabulary_clash
from storage.catalog import CatalogScan, discover_catalog, read_concept, settings_fingerprint
from storage.images import ingest_concept, write_pngs
from storage.relearn import Reason, relearn_summary, relearning
from storage.results import ResultStore
from storage.scanstate import ConceptState, ScanState, Setup, load_scan_state, save_scan_state
from storage.store.open import open_store
from tasks.records import ConceptRecord, StagedConcept
from tasks.retry import RETRY
from tasks.settings import LearnSettings

#: the training-image strip: each image scaled to this height (and at most twice as wide), the first
#: :data:`STRIP_MAX_IMAGES` side by side, 2 px apart; a JPEG of a few tens of KB
STRIP_HEIGHT = 80
STRIP_MAX_IMAGES = 12
_STRIP_GAP = 2


def write_training_strip(images: Sequence[Image.Image], path: Path) -> Path:
    """Save the first :data:`STRIP_MAX_IMAGES` of ``images`` as one JPEG strip :data:`STRIP_HEIGHT` pixels
    high (each keeps its aspect, capped at twice as wide as high) to ``path``."""
    thumbs = []
    for image in images[:STRIP_MAX_IMAGES]:
        width = min(2 * STRIP_HEIGHT, max(1, round(image.width * STRIP_HEIGHT / max(1, image.height))))
        thumbs.append(image.convert("RGB").resize((width, STRIP_HEIGHT), Image.Resampling.LANCZOS, reducing_gap=3.0))
    strip = Image.new("RGB", (sum(t.width for t in thumbs) + _STRIP_GAP * (len(thumbs) - 1), STRIP_HEIGHT), "white")
    left = 0
    for thumb in thumbs:
        strip.paste(thumb, (left, 0))
        left += thumb.width + _STRIP_GAP
    strip.save(path, format="JPEG", quality=80, optimize=True)
    return path


def learning_identity(learn: LearnSettings) -> dict:
    """The learning settings as the digest sees them: the model by its content
    (:func:`inversion.model.fingerprint.model_fingerprint`), not by its path."""
    return {**learn.digest_settings(), "model": model_fingerprint(learn.model)}


@dataclass(frozen=True)
class ScanResult:
    """What a catalog scan found: usable concepts (some pending; those to learn say why, ``relearn``),
    ``(concept_id, reason)`` for concepts that cannot be learned at all, and the scan states before and after
    (after: with what each concept's complete result was learned from, and this run's model and settings)."""

    records: list[ConceptRecord]
    unusable: list[tuple[str, str]]
    state: ScanState
    previous: ScanState
    done: dict[str, frozenset[str]] = field(default_factory=dict)


def _vocabulary_problem(vocabulary: frozenset[str], record: ConceptRecord, model: str) -> str | None:
    taken = vocabulary_clash(record.token, record.vectors, vocabulary)
    if taken:
        return (
            f"token {taken} is already a word of {model}'s vocabulary (the tokenizer ignores case); "
            f"set a new word in concept.json, such as <{record.token.strip('<>')}-1>"
        )
    return None


def _collision_problems(records: list[ConceptRecord]) -> dict[str, str]:
    """Concept id → why its token cannot be told apart from other concepts' (naming them)."""
    by_id = {r.concept_id: r for r in records}
    clashes = token_collisions({r.concept_id: (r.token, r.vectors) for r in records})
    return {
        concept_id: "token {} collides with {} (the tokenizer ignores case, and a word of N vectors also "
        "uses <t>_1 … <t>_N-1); give each concept its own word in concept.json".format(
            by_id[concept_id].token, ", ".join(f"{other}'s {by_id[other].token}" for other in others)
        )
        for concept_id, others in clashes.items()
    }


def _relearning(
    scan: CatalogScan, identity: Mapping[str, Any], previous: ScanState, done: Mapping[str, frozenset[str]] | None
) -> tuple[dict[str, tuple[Reason, ...]], ScanState]:
    """Why each concept to learn is learned (:func:`storage.relearn.relearning`), and the scan's state with what
    each current result was learned from. Without an output (``done`` is ``None``) nothing is known: no reasons."""
    state = scan.state if scan.state is not None else ScanState(previous.catalog)
    if done is None:
        return {}, state
    settings = settings_fingerprint({k: v for k, v in identity.items() if k != "model"})
    setup = Setup(str(identity["model"]), settings, settings_fingerprint(identity))
    keep = {p.concept_id for p in scan.problems}
    return relearning(scan.specs, state, previous, done, setup, keep)


@task(name="scan-catalog", **RETRY)
def scan_catalog(
    catalog_uri: str, learn: LearnSettings, concept_ids: list[str] | None = None, out_uri: str | None = None
) -> ScanResult:
    """Discover the concepts of the catalog (all, or only ``concept_ids``) from listings.

    With ``out_uri`` the previous scan's state is read from there, and the completed results are
    listed once (``done``: concept id → digests). Changed or new concepts come back pending
    (``digest=None``) for :func:`stage_concept`, which reads their images anyway. Only when there is
    no state at all (a first run, or a lost one) are the concepts that have some completed result
    read here, in parallel: most of them are skippable, and one full scan beats a task per concept.
    Tokens the pipeline cannot carry (see :func:`storage.catalog.token_problem`), that the
    model's vocabulary already holds, or that two concepts share (ignoring case, as the tokenizer
    does; :func:`inversion.text.placeholders.token_collisions`) make their concepts unusable here, before
    any GPU time is spent; colliding concepts name each other.

    With ``out_uri``, each record to learn says why (``relearn``: new, images, ``concept.json``, model or
    settings changed; :mod:`storage.relearn`), and the state remembers what each complete result was learned from.
    """
    store = open_store(catalog_uri)
    previous = load_scan_state(open_store(out_uri), store.uri) if out_uri else ScanState(store.uri)
    done = ResultStore.open(out_uri).completed() if out_uri else {}
    lost = out_uri is not None and not previous.concepts
    identity = learning_identity(learn)
    scan = discover_catalog(
        store,
        identity,
        concept_ids=concept_ids,
        previous=previous,
        read_changed=(lambda concept_id: concept_id in done) if lost else False,
        vectors=learn.vectors,
    )
    why, state = _relearning(scan, identity, previous, done if out_uri else None)
    vocabulary = tokenizer_vocabulary(learn.model)
    candidates = [ConceptRecord.of(spec, learn.vectors, why.get(spec.concept_id, ())) for spec in scan.specs]
    collisions = _collision_problems(candidates)
    records: list[ConceptRecord] = []
    fatal: dict[str, list[str]] = {}
    for record in candidates:
        problem = _vocabulary_problem(vocabulary, record, learn.model) or collisions.get(record.concept_id)
        if problem:
            fatal.setdefault(record.concept_id, []).append(f"{record.spec.meta_key or record.concept_id}: {problem}")
        else:
            records.append(record)
    usable = {r.concept_id for r in records}
    for scan_problem in scan.problems:
        if scan_problem.concept_id not in usable:
            fatal.setdefault(scan_problem.concept_id, []).append(str(scan_problem))
    pending = sum(r.digest is None for r in records)
    get_run_logger().info(
        "catalog %s: %d concept(s) (%d changed since the last scan), %d unusable; to learn: %s",
        catalog_uri,
        len(records),
        pending,
        len(fatal),
        relearn_summary(r.relearn_reason for r in records) or "none",
    )
    return ScanResult(
        records, [(cid, "; ".join(reasons)) for cid, reasons in sorted(fatal.items())], state, previous, done
    )


@task(name="remember-scan", **RETRY)
def remember_scan(out_uri: str, state: ScanState, previous: ScanState, staged: Iterable[StagedConcept] = ()) -> bool:
    """Store the scan state for the next run, with what staging learned about changed concepts;
    nothing is written when it did not change."""
    learned = {s.record.concept_id: s.scan for s in staged if s.scan is not None}
    return save_scan_state(open_store(out_uri), state.merged(learned), previous)


def stage_concept(
    catalog_uri: str, record: ConceptRecord, work_root: str, done_digests: Iterable[str] = ()
) -> StagedConcept:
    """Read the concept's images once, finish its digest from their bytes, then decode and validate
    them and write them as PNGs into a local work folder.

    When ``done_digests`` (digests with a complete result) holds the digest, nothing is decoded and
    the concept comes back ``done``. Unusable files are reported; a concept with no usable image
    comes back with ``error`` set. Beside the images, the work folder gets their strip
    (:func:`write_training_strip`), which publishing takes with the result.
    """
    store = open_store(catalog_uri)
    read = read_concept(store, record.spec)
    record = replace(record, spec=read.spec)  # with the digest of the bytes read
    scan: ConceptState | None = read.state
    work_dir = Path(work_root) / f"{record.concept_id}-{record.digest or 'unread'}"
    image_dir = work_dir / "images"
    if record.digest is not None and record.digest in set(done_digests):
        record = replace(record, relearn=())  # identical bytes re-uploaded: not learned again after all
        return StagedConcept(record, str(work_dir), str(image_dir), len(read.data), done=True, scan=scan)
    shutil.rmtree(image_dir, ignore_errors=True)  # a retried attempt starts clean
    ingested = ingest_concept(store, read.spec, data=read.data)
    problems = tuple(f"{p.file}: {p.reason}" for p in (*read.problems, *ingested.problems) if p.file)
    if not ingested.usable:
        return StagedConcept(
            record,
            str(work_dir),
            str(image_dir),
            0,
            problems,
            error=f"no usable image ({'; '.join(problems) or 'no images'})",
            scan=scan,
        )
    write_pngs(ingested.images, image_dir)
    write_training_strip([image for _, image in ingested.images], work_dir / TRAINING_STRIP_FILENAME)
    logger = get_run_logger()
    for problem in problems:
        logger.warning("%s: skipped %s", record.concept_id, problem)
    return StagedConcept(record, str(work_dir), str(image_dir), len(ingested.images), problems, scan=scan)
