"""Why a concept is learned again: new, or its images, its ``concept.json``, the model or the settings changed.

A concept is learned when its digest has no complete result. The digest hashes its images, its metadata and
the learning settings with the model's fingerprint in them, so it cannot say which of them moved. The scan
state remembers, per concept, what its current result was learned from (:class:`~storage.scanstate.Learned`,
refreshed by every scan that finds the concept's digest complete), and the run's
:class:`~storage.scanstate.Setup` once; :func:`relearning` compares those with what the scan sees now.

A model upgrade changes every digest, so every concept says ``model changed`` and the night costs what the
catalog's first night cost. A concept whose result predates these fingerprints says
``unknown (no earlier fingerprints)``; one with no complete result at all is ``new`` (also when an earlier
run failed it).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Mapping
from typing import Literal, get_args

from common.digest import canonical_digest
from storage.catalog import ConceptMeta, ConceptSpec, digest_of
from storage.errors import InvalidConcept, InvalidInput
from storage.scanstate import Learned, ScanState, Setup

__all__ = ["Reason", "REASONS", "SEPARATOR", "format_reasons", "meta_fingerprint", "relearn_summary", "relearning"]

#: why a concept is learned again; several may hold at once (joined with :data:`SEPARATOR`)
Reason = Literal[
    "new",
    "images changed",
    "concept.json changed",
    "model changed",
    "settings changed",
    "unknown (no earlier fingerprints)",
    "earlier result missing",
]
REASONS: tuple[Reason, ...] = get_args(Reason)
SEPARATOR = " + "
_SHORT = 16


def format_reasons(reasons: Iterable[Reason]) -> str | None:
    """The metrics' ``relearn_reason``: the reasons in :data:`REASONS` order joined by :data:`SEPARATOR`;
    ``None`` for none (a concept not learned again)."""
    found = set(reasons)
    return SEPARATOR.join(r for r in REASONS if r in found) or None


def relearn_summary(reasons: Iterable[str | None]) -> str:
    """One line counting why concepts are learned, most first: ``12 new, 3 images changed, 985 model changed``
    (``None`` entries, concepts not learned again, are not counted; empty when none is left)."""
    counts = Counter(r for r in reasons if r)
    return ", ".join(f"{n} {reason}" for reason, n in sorted(counts.items(), key=lambda c: (-c[1], c[0])))


def meta_fingerprint(meta: ConceptMeta) -> str:
    """A short fingerprint of a concept's metadata, its defaults applied."""
    return canonical_digest(meta.to_dict(), _SHORT, "concept metadata")


def _reasons(
    spec: ConceptSpec, images: str | None, last: Learned | None, was: Setup | None, now: Setup, learned_before: bool
) -> tuple[Reason, ...]:
    """Why ``spec`` (no complete result for its digest) is learned: ``images`` is its images' fingerprint
    (``None`` while unread: its listing changed), ``last`` and ``was`` what its current result was learned
    from, ``learned_before`` whether it has a complete result at any digest."""
    if last is None:
        return ("unknown (no earlier fingerprints)",) if learned_before else ("new",)
    found: list[Reason] = []
    if images is None or images[:_SHORT] != last.images:
        found.append("images changed")
    if meta_fingerprint(spec.meta) != last.meta:
        found.append("concept.json changed")
    if was is None:
        found.append("unknown (no earlier fingerprints)")
    else:
        if was.model != now.model:
            found.append("model changed")
        if was.settings != now.settings:
            found.append("settings changed")
    return tuple(found) or ("earlier result missing",)


def _learned_last_run(previous: ScanState, concept_id: str, done: frozenset[str]) -> Learned | None:
    """What the last run learned the concept from, when it did: the digest of what that run's scan saw (its
    images, its ``concept.json``, its setup; all in ``previous``) has a complete result now. ``None`` otherwise."""
    setup, seen = previous.setups.get(previous.setup or ""), previous.concepts.get(concept_id)
    if setup is None or seen is None or not done:
        return None
    text = previous.metas[concept_id].text if concept_id in previous.metas else None
    try:
        meta = ConceptMeta.from_json(concept_id, text.encode("utf-8") if text is not None else None)
        digest = digest_of(seen.images, meta, setup.digest)
    except (InvalidConcept, InvalidInput):
        return None
    return Learned(seen.images[:_SHORT], meta_fingerprint(meta), setup.key) if digest in done else None


def relearning(
    specs: Iterable[ConceptSpec],
    state: ScanState,
    previous: ScanState,
    done: Mapping[str, Iterable[str]],
    setup: Setup,
    keep: Iterable[str] = (),
) -> tuple[dict[str, tuple[Reason, ...]], ScanState]:
    """Why each concept of ``specs`` whose digest has no complete result in ``done`` (concept id → digests)
    is learned, and ``state`` (this scan's) remembering what each concept's current result was learned from.

    ``previous`` is the last scan's state, ``setup`` this run's. A concept whose digest is complete now was
    learned from what this scan sees; one the last run learned, from what the last scan saw (found by its
    digest among the complete ones, so nothing is written after learning); any other keeps its entry, so a
    concept whose learning failed still says why it was learned at first. Entries of concepts that left the
    catalog are dropped; those of ``keep`` (concepts found but unusable this time) are kept."""
    reasons: dict[str, tuple[Reason, ...]] = {}
    learned: dict[str, Learned] = {cid: previous.learned[cid] for cid in keep if cid in previous.learned}
    for spec in specs:
        cid = spec.concept_id
        entry = state.concepts.get(cid) if spec.digest is not None else None
        images = entry.images if entry is not None else None
        complete = frozenset(done.get(cid, ()))
        if spec.digest is not None and spec.digest in complete and images is not None:
            learned[cid] = Learned(images[:_SHORT], meta_fingerprint(spec.meta), setup.key)
            continue
        last = _learned_last_run(previous, cid, complete) or previous.learned.get(cid)
        if last is not None:
            learned[cid] = last
        if spec.digest is None or spec.digest not in complete:
            reasons[cid] = _reasons(
                spec, images, last, previous.setups.get(last.setup) if last else None, setup, bool(complete)
            )
    return reasons, state.with_learning(learned, setup, previous.setups)
