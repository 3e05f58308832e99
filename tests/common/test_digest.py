"""The one content-key recipe: its exact bytes (the concept digests depend on them) and what it refuses."""

from __future__ import annotations

import hashlib

import pytest

from common.digest import canonical_digest, canonical_json


def test_canonical_json_sorts_keys_drops_whitespace_and_keeps_utf8() -> None:
    value = {"b": [1, 2.5, None, True], "a": {"z": "猫", "y": (3,)}}
    assert canonical_json(value) == '{"a":{"y":[3],"z":"猫"},"b":[1,2.5,null,true]}'.encode()
    assert canonical_json({"a": 1, "b": 2}) == canonical_json({"b": 2, "a": 1})


def test_canonical_digest_is_the_sha256_of_the_canonical_json_cut_to_length() -> None:
    full = hashlib.sha256(b'{"k":"v"}').hexdigest()
    assert canonical_digest({"k": "v"}) == full
    assert canonical_digest({"k": "v"}, 16) == full[:16]


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ({"x": float("nan")}, "settings must not contain NaN or infinity"),
        ([float("inf")], "settings must not contain NaN or infinity"),
        ({1: "x"}, "settings keys must be strings, got 1"),
        ({"x": object()}, "settings must be JSON-like (str/int/float/bool/None/list/dict), got object"),
    ],
)
def test_values_that_could_hash_apart_are_refused(value: object, message: str) -> None:
    with pytest.raises(ValueError) as caught:
        canonical_digest(value, what="settings")
    assert str(caught.value) == message
