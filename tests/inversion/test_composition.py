"""Composition scoring (inversion.evaluation.composition) and its key (tasks.compose): tokens become class words
for CLIP's text side, every named word is scored against its own concept,
and the key follows prompt and concept digests."""

from __future__ import annotations

import pytest
import torch

from inversion.embeddings.formats import LearnedEmbedding
from inversion.errors import InputError
from inversion.evaluation.composition import Word, class_prompt, score_composition


def _word(token: str, class_word: str) -> Word:
    return Word(LearnedEmbedding(token, torch.zeros(1, 4)), class_word, torch.ones(1, 8))


def test_class_prompt_replaces_tokens_and_their_vector_names_and_drops_strengths():
    words = [_word("<mug>", "mug"), _word("<brand>", "painting")]
    assert (
        class_prompt("a (<mug>:0.7) in the style of <brand> <brand>_1", words)
        == "a mug in the style of painting painting"
    )


def test_a_prompt_missing_a_word_is_refused_before_rendering():
    with pytest.raises(InputError, match="does not contain the token <brand>"):
        score_composition(None, None, "a photo of <mug>", [_word("<mug>", "mug"), _word("<brand>", "x")], [0])


def test_composition_key_follows_the_prompt_and_the_concept_digests():
    from storage.catalog import ConceptMeta, ConceptSpec
    from storage.compositions import CompositionSpec
    from tasks.compose import LearnedConcept, composition_key
    from tasks.records import ConceptRecord
    from tasks.settings import EvalSettings, LearnSettings

    def concept(cid: str, digest: str) -> LearnedConcept:
        return LearnedConcept(ConceptRecord(ConceptSpec(cid, ConceptMeta(f"<{cid}>", cid, cid), (), digest)), digest)

    learn, evaluation = LearnSettings(model="m"), EvalSettings()
    spec = CompositionSpec("c", "a {a} and {b}", ("a", "b"))
    base = composition_key(spec, [concept("a", "1" * 16), concept("b", "2" * 16)], learn, evaluation)
    assert base == composition_key(spec, [concept("a", "1" * 16), concept("b", "2" * 16)], learn, evaluation)
    assert base != composition_key(spec, [concept("a", "1" * 16), concept("b", "3" * 16)], learn, evaluation)
    assert base != composition_key(
        CompositionSpec("c", "a {a} or {b}", ("a", "b")),
        [concept("a", "1" * 16), concept("b", "2" * 16)],
        learn,
        evaluation,
    )
    assert base != composition_key(
        spec, [concept("a", "1" * 16), concept("b", "2" * 16)], learn, EvalSettings(samples=evaluation.samples + 1)
    )
