"""sstar merge (inversion.embeddings.merge): weighted sum, slerp and concatenation, every format written with the
parents and weights in its metadata, and clear refusals."""

from __future__ import annotations

import json
import math

import pytest
import torch

from flows.cli import main
from inversion.embeddings.formats import (
    LearnedEmbedding,
    load_embedding,
    read_metadata,
    save_a1111,
    save_diffusers,
    save_sdxl,
)
from inversion.embeddings.merge import MERGE_METADATA_KEY, Parent, merge_embeddings, merge_files, parse_source
from inversion.errors import ConfigError, EmbeddingFormatError
from tests.inversion.test_formats import a1111_safe_check


def _emb(token: str, rows: list[list[float]], widths=None) -> LearnedEmbedding:
    return LearnedEmbedding(token, torch.tensor(rows, dtype=torch.float32), widths)


def test_sum_is_the_weighted_sum_of_matched_vectors():
    a = _emb("<a>", [[1.0, 0.0, 2.0], [0.0, 1.0, 0.0]])
    b = _emb("<b>", [[3.0, 1.0, 0.0], [1.0, 1.0, 1.0]])
    merged = merge_embeddings([Parent(a, 0.25), Parent(b, 0.75)], "<ab>", "sum")
    assert merged.token == "<ab>"
    torch.testing.assert_close(merged.vectors, torch.tensor([[2.5, 0.75, 0.5], [0.75, 1.0, 0.75]]))


def test_slerp_follows_the_great_circle_and_interpolates_lengths():
    a = _emb("<a>", [[2.0, 0.0]])
    b = _emb("<b>", [[0.0, 4.0]])
    for t in (0.0, 0.25, 0.5, 1.0):
        merged = merge_embeddings([Parent(a, 1 - t), Parent(b, t)], "<ab>", "slerp").vectors[0]
        angle = math.atan2(merged[1].item(), merged[0].item())
        assert angle == pytest.approx(t * math.pi / 2, abs=1e-5)  # a quarter circle, evenly
        assert merged.norm().item() == pytest.approx((1 - t) * 2 + t * 4, rel=1e-5)
    # weights are normalised: 1 and 3 is t = 0.75
    torch.testing.assert_close(
        merge_embeddings([Parent(a, 1), Parent(b, 3)], "<x>", "slerp").vectors,
        merge_embeddings([Parent(a, 0.25), Parent(b, 0.75)], "<x>", "slerp").vectors,
    )


def test_slerp_of_sdxl_words_interpolates_each_encoder_on_its_own():
    a = _emb("<a>", [[1.0, 0.0, 5.0, 0.0, 0.0]], widths=(2, 3))
    b = _emb("<b>", [[0.0, 1.0, 0.0, 0.0, 5.0]], widths=(2, 3))
    merged = merge_embeddings([Parent(a, 0.5), Parent(b, 0.5)], "<ab>", "slerp")
    assert merged.widths == (2, 3)
    s = math.sqrt(0.5)
    torch.testing.assert_close(merged.vectors, torch.tensor([[s, s, 5 * s, 0.0, 5 * s]]))


def test_concat_stacks_the_parents_scaled_by_their_weights():
    a = _emb("<a>", [[1.0, 2.0]])
    b = _emb("<b>", [[3.0, 4.0], [5.0, 6.0]])
    merged = merge_embeddings([Parent(a, 1.0), Parent(b, 0.5)], "<ab>", "concat")
    torch.testing.assert_close(merged.vectors, torch.tensor([[1.0, 2.0], [1.5, 2.0], [2.5, 3.0]]))


def test_refusals_name_the_parents():
    a = _emb("<a>", [[1.0, 2.0]])
    b = _emb("<b>", [[3.0, 4.0], [5.0, 6.0]])
    with pytest.raises(EmbeddingFormatError, match=r"a.pt has 1 vector\(s\) but b.pt 2: sum matches vectors"):
        merge_embeddings([Parent(a, 1, "a.pt"), Parent(b, 1, "b.pt")], "<ab>", "sum")
    with pytest.raises(EmbeddingFormatError, match="a.pt and c.pt were learned for different model families"):
        merge_embeddings([Parent(a, 1, "a.pt"), Parent(_emb("<c>", [[1.0, 2.0, 3.0]]), 1, "c.pt")], "<ab>", "concat")
    with pytest.raises(ConfigError, match="slerp interpolates between two words, got 3"):
        merge_embeddings([Parent(a, 1), Parent(a, 1), Parent(a, 1)], "<x>", "slerp")
    with pytest.raises(ConfigError, match="slerp weights must be >= 0"):
        merge_embeddings([Parent(a, -1), Parent(a, 1)], "<x>", "slerp")
    with pytest.raises(ConfigError, match="mode must be one of sum, slerp, concat"):
        merge_embeddings([Parent(a, 1)], "<x>", "mean")  # type: ignore[arg-type]


def test_parse_source():
    assert parse_source("a.safetensors:0.5") == ("a.safetensors", 0.5)
    assert parse_source("b.pt") == ("b.pt", 1.0)
    assert parse_source("C:/words/b.pt") == ("C:/words/b.pt", 1.0)
    assert parse_source("dir:x/b.pt:-2") == ("dir:x/b.pt", -2.0)


def test_merge_command_writes_every_format_with_parents_and_weights(tmp_path, capsys):
    a_path = save_diffusers(_emb("<a>", [[1.0, 0.0, 0.0, 0.0]]), tmp_path / "a" / "learned_embeds.safetensors")
    b_path = save_a1111(_emb("<x>", [[0.0, 1.0, 0.0, 0.0]]), tmp_path / "b.pt")  # token <b>, from the file stem
    out = tmp_path / "ab"
    code = main(["merge", "--from", f"{a_path}:0.5", "--from", f"{b_path}:0.5", "--token", "<ab>", "--out", str(out)])
    assert code == 0, capsys.readouterr().err
    written = sorted(p.name for p in out.iterdir())
    assert written == ["ab.pt", "learned_embeds.safetensors"]
    for name in written:
        word = load_embedding(out / name)
        assert word.token == "<ab>"
        torch.testing.assert_close(word.vectors, torch.tensor([[0.5, 0.5, 0.0, 0.0]]))
        record = json.loads(read_metadata(out / name)[MERGE_METADATA_KEY])
        assert record["mode"] == "sum" and record["token"] == "<ab>"
        assert [(p["file"], p["token"], p["weight"]) for p in record["parents"]] == [
            (str(a_path), "<a>", 0.5),
            (str(b_path), "<b>", 0.5),
        ]
        assert all(len(p["sha256"]) == 64 for p in record["parents"])
    a1111_safe_check(out / "ab.pt")  # the metadata keeps the .pt loadable by the UI


def test_merge_of_sdxl_words_writes_the_sdxl_formats(tmp_path):
    a = save_sdxl(_emb("<a>", [[1.0, 0.0, 1.0, 0.0, 0.0]], widths=(2, 3)), tmp_path / "a.safetensors")
    b = save_sdxl(_emb("<b>", [[0.0, 1.0, 0.0, 1.0, 0.0]], widths=(2, 3)), tmp_path / "b.safetensors")
    files = merge_files([(a, 1.0), (b, 1.0)], "<ab>", tmp_path / "out", "concat")
    assert set(files) == {"diffusers", "diffusers_2", "sdxl"}
    for path in files.values():
        assert MERGE_METADATA_KEY in read_metadata(path)
    word = load_embedding(files["sdxl"])
    assert word.widths == (2, 3) and word.num_vectors == 2


def test_merge_refuses_two_parents_with_one_token_and_writes_nothing(tmp_path, capsys):
    a = save_diffusers(_emb("<a>", [[1.0, 0.0]]), tmp_path / "one" / "learned_embeds.safetensors")
    b = save_diffusers(_emb("<a>", [[0.0, 1.0]]), tmp_path / "two" / "learned_embeds.safetensors")
    code = main(["merge", "--from", str(a), "--from", str(b), "--token", "<ab>", "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and str(a) in err and str(b) in err
    assert not (tmp_path / "out").exists()
