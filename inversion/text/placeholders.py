"""Placeholder words as names, without torch: what a scan checks before any GPU time is spent.

A token ``<t>`` with N vectors is carried by the added words ``<t>``, ``<t>_1``, …, ``<t>_{N-1}``
(:func:`vector_names`, diffusers' naming). CLIP's tokenizer lowercases a prompt before it matches
added words, so ``<Cat>`` and ``<cat>`` are one word to it: a learned word must not share a
vector name, ignoring case, with a word of the model's vocabulary (:func:`vocabulary_clash`) or with
another concept's word of the same catalog (:func:`token_collisions`).
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import lru_cache

from inversion.errors import TokenError

__all__ = ["vector_names", "vocabulary_clash", "token_collisions"]


def vector_names(token: str, num_vectors: int) -> tuple[str, ...]:
    """``<t>``, ``<t>_1``, … — the names of the N tokens that carry a multi-vector embedding."""
    if num_vectors < 1:
        raise TokenError(f"{token} needs at least 1 vector, got {num_vectors}")
    return (token,) + tuple(f"{token}_{i}" for i in range(1, num_vectors))


def _matched(name: str) -> str:
    """The form in which the tokenizer matches ``name`` (it lowercases the prompt first)."""
    return name.lower()


@lru_cache(maxsize=4)
def _matched_vocabulary(vocabulary: frozenset[str]) -> frozenset[str]:
    return frozenset(_matched(word) for word in vocabulary)


def vocabulary_clash(token: str, num_vectors: int, vocabulary: frozenset[str]) -> str | None:
    """The first of ``token``'s vector names the tokenizer would read as a word of ``vocabulary``
    (compared ignoring case), or ``None``. The vocabulary's matched forms are computed once per
    vocabulary, not per call: a scan checks every concept against the same one."""
    known = _matched_vocabulary(vocabulary)
    return next((name for name in vector_names(token, num_vectors) if _matched(name) in known), None)


def token_collisions(words: Mapping[str, tuple[str, int]]) -> dict[str, tuple[str, ...]]:
    """Which words of one catalog the tokenizer cannot tell apart.

    ``words`` maps a concept id to its ``(token, vectors)``. Two concepts collide when some vector
    name of one equals one of the other's, ignoring case (``<Cat>``/``<cat>``, or ``<a>`` with two
    vectors and ``<a>_1``). Returns every colliding concept id → the ids it collides with (sorted);
    concepts that collide with none are absent.
    """
    owners: dict[str, set[str]] = {}
    for concept_id, (token, num_vectors) in words.items():
        for name in vector_names(token, num_vectors):
            owners.setdefault(_matched(name), set()).add(concept_id)
    clashes: dict[str, set[str]] = {}
    for ids in owners.values():
        if len(ids) > 1:
            for concept_id in ids:
                clashes.setdefault(concept_id, set()).update(ids - {concept_id})
    return {concept_id: tuple(sorted(others)) for concept_id, others in sorted(clashes.items())}
