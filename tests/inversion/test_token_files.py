"""File names derived from tokens (issue 11, defect 3): any printable token yields a name the result
store accepts, stable and distinct per token; plain tokens keep their spelling (A1111's trigger word)."""

from __future__ import annotations

import pytest

from inversion.embeddings.formats import a1111_filename
from storage.results import ResultStore

TOKENS = ["<my-cat>", "<café-猫>", "<猫>", "<a+b>", "<a-b>", "<MyCat>", "Ω", "_x", "<" + "é" * 60 + ">"]


def test_every_token_gets_a_publishable_distinct_stable_name(tmp_path) -> None:
    names = {token: a1111_filename(token) for token in TOKENS}
    assert len(set(names.values())) == len(TOKENS)
    assert names == {token: a1111_filename(token) for token in TOKENS}
    results = ResultStore.open(str(tmp_path / "out"))
    published = results.publish("c", "0123456789abcdef", {name: token.encode() for token, name in names.items()}, "r")
    assert set(published.manifest.files) == set(names.values())


@pytest.mark.parametrize(("token", "name"), [("<my-cat>", "my-cat.pt"), ("<a.b_c>", "a.b_c.pt"), ("sks", "sks.pt")])
def test_plain_tokens_keep_their_spelling(token: str, name: str) -> None:
    assert a1111_filename(token) == name
