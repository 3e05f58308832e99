"""Settings added after a catalog was learned re-learn nothing at their defaults, and re-learn at any other value."""

from __future__ import annotations

import pytest

from storage.catalog import settings_fingerprint
from tasks.settings import LearnSettings

#: computed with the tree before init_mode and norm_mode existed (commit 0ab7951)
BEFORE = {
    "868395f169c3e674eff28b62e16ee0c488522107ae0f70ed0f70cc7803a1ad6f": {"model": "toy"},
    "04b2ceba6018e853967cdb63077e41ce7ec92c5e36ba3186629ee91f7a18922a": {
        "model": "/m/sd15",
        "steps": 300,
        "vectors": 2,
        "lr": 0.01,
    },
}


@pytest.mark.parametrize(("digest", "values"), list(BEFORE.items()))
def test_new_settings_at_their_defaults_keep_the_digest(digest, values):
    assert settings_fingerprint(LearnSettings(**values).digest_settings()) == digest
    explicit = LearnSettings(**values, init_mode="word", norm_mode="free")
    assert settings_fingerprint(explicit.digest_settings()) == digest


@pytest.mark.parametrize("change", [{"init_mode": "cross"}, {"norm_mode": "vocab"}])
def test_another_value_changes_the_digest(change):
    digests = {settings_fingerprint(LearnSettings(model="toy", **change).digest_settings()), *BEFORE}
    assert len(digests) == len(BEFORE) + 1
