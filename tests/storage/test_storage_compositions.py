"""Compositions storage (storage.compositions): the catalog's _compositions.json validated with one-line errors,
composition rows appended and read back as Parquet with the documented schema."""

from __future__ import annotations

import json
import re
from datetime import datetime, timezone
from pathlib import Path

import pyarrow as pa
import pytest

from storage.compositions import (
    COMPOSITIONS_FILE,
    COMPOSITIONS_SCHEMA,
    CompositionRow,
    append_compositions,
    parse_compositions,
    read_composition_rows,
    read_compositions,
)
from storage.errors import InvalidInput

REPO = Path(__file__).resolve().parents[2]
T0 = datetime(2025, 3, 1, 12, tzinfo=timezone.utc)


def test_parse_compositions_reads_prompts_and_their_concepts():
    specs = parse_compositions(
        json.dumps(
            [
                {"id": "mug-in-brand", "prompt": "a photo of {mug} in the style of ({brand-style}:0.8), {mug} again"},
            ]
        ).encode()
    )
    (spec,) = specs
    assert spec.composition_id == "mug-in-brand" and spec.concepts == ("mug", "brand-style")
    assert spec.filled({"mug": "<m>", "brand-style": "<b>"}) == "a photo of <m> in the style of (<b>:0.8), <m> again"


@pytest.mark.parametrize(
    "data, message",
    [
        (b"{not json", "not valid JSON"),
        (json.dumps({"id": "a"}).encode(), "expected a JSON list"),
        (
            json.dumps([{"id": "a", "prompt": "{x}", "extra": 1}]).encode(),
            "entry 0 must have exactly the keys id and prompt",
        ),
        (json.dumps([{"id": "../a", "prompt": "{x}"}]).encode(), "entry 0 has an invalid id '../a'"),
        (json.dumps([{"id": "a", "prompt": "{x}"}, {"id": "a", "prompt": "{y}"}]).encode(), "id 'a' appears twice"),
        (json.dumps([{"id": "a", "prompt": "no concept here"}]).encode(), "composition a's prompt names no concept"),
        (
            json.dumps([{"id": "a", "prompt": "a {not an id}"}]).encode(),
            "composition a names {not an id}, not a concept id",
        ),
    ],
)
def test_bad_compositions_files_are_one_line_naming_the_entry(data, message):
    with pytest.raises(InvalidInput) as caught:
        parse_compositions(data, "cat/_compositions.json")
    assert message in str(caught.value) and str(caught.value).startswith("cat/_compositions.json: ")
    assert "\n" not in str(caught.value)


def test_read_compositions_of_a_catalog_without_the_file_is_empty(tmp_path):
    assert read_compositions(str(tmp_path)) == []
    (tmp_path / COMPOSITIONS_FILE).write_text(json.dumps([{"id": "c", "prompt": "a {x}"}]))
    assert [s.composition_id for s in read_compositions(str(tmp_path))] == ["c"]


def test_rows_round_trip_through_parquet(tmp_path):
    out = str(tmp_path / "out")
    assert read_composition_rows(out).num_rows == 0
    uri = append_compositions(
        out,
        [
            CompositionRow(
                run_id="run-a",
                composition_id="c1",
                prompt="a {x} and {y}",
                status="ok",
                concepts=("x", "y"),
                key="0123456789abcdef",
                digests=("d1", "d2"),
                image_similarities=(0.5, 0.25),
                min_image_similarity=0.25,
                text_similarity=0.3,
                grid_uri="s3://b/g.png",
                created_at=T0,
            ),
            CompositionRow(
                run_id="run-a",
                composition_id="c2",
                prompt="a {z}",
                status="failed",
                concepts=("z",),
                error="concept z failed: bad images",
                created_at=T0,
            ),
        ],
    )
    assert re.search(r"composition_metrics/run_date=2025-03-01/run-a-[0-9a-f]{8}\.parquet$", uri)
    rows = {r["composition_id"]: r for r in read_composition_rows(out).to_pylist()}
    assert rows["c1"]["image_similarities"] == [0.5, 0.25] and rows["c1"]["digests"] == ["d1", "d2"]
    assert rows["c1"]["run_date"].isoformat() == "2025-03-01"
    assert rows["c2"]["status"] == "failed" and rows["c2"]["image_similarities"] is None
    with pytest.raises(InvalidInput, match="one run on one date"):
        append_compositions(
            out,
            [
                CompositionRow(run_id="run-a", composition_id="c", prompt="{x}", status="ok", concepts=("x",)),
                CompositionRow(run_id="run-b", composition_id="c", prompt="{x}", status="ok", concepts=("x",)),
            ],
        )


_DOC_TYPES = {
    "string": pa.string(),
    "date32": pa.date32(),
    "float64": pa.float64(),
    "list<string>": pa.list_(pa.string()),
    "list<float64>": pa.list_(pa.float64()),
    "timestamp[us, UTC]": pa.timestamp("us", tz="UTC"),
}


def test_readme_documents_the_compositions_schema():
    text = (REPO / "README.md").read_text()
    block = text.split("<!-- compositions-schema", 1)[1].split("<!-- /compositions-schema -->", 1)[0]
    rows = re.findall(r"^\| `(\w+)` \| ([^|]+?) \| (yes|no) \|", block, flags=re.M)
    documented = [(name, _DOC_TYPES[kind], nullable == "yes") for name, kind, nullable in rows]
    assert documented == [(f.name, f.type, f.nullable) for f in COMPOSITIONS_SCHEMA]
