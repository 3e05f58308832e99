"""common.atomic: a file appears whole or not at all, concurrent writers never share a temp file."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from common.atomic import TEMP_PREFIX, atomic_write, atomic_write_bytes


def test_writes_creates_folders_and_replaces(tmp_path: Path) -> None:
    target = tmp_path / "a" / "b" / "file.bin"
    assert atomic_write_bytes(target, b"one") is True
    assert atomic_write_bytes(target, b"two") is True
    assert target.read_bytes() == b"two"
    assert [p.name for p in target.parent.iterdir()] == ["file.bin"]


def test_exclusive_never_clobbers(tmp_path: Path) -> None:
    target = tmp_path / "once"
    assert atomic_write_bytes(target, b"first", exclusive=True) is True
    assert atomic_write_bytes(target, b"second", exclusive=True) is False
    assert target.read_bytes() == b"first"
    assert [p.name for p in tmp_path.iterdir()] == ["once"]


def test_a_failed_write_leaves_nothing_behind(tmp_path: Path) -> None:
    target = tmp_path / "file.txt"
    target.write_text("old")

    def half_then_fail(tmp: Path) -> None:
        tmp.write_text("half")
        raise RuntimeError("disk on fire")

    with pytest.raises(RuntimeError, match="disk on fire"):
        atomic_write(target, half_then_fail)
    assert target.read_text() == "old"
    assert [p.name for p in tmp_path.iterdir()] == ["file.txt"]


def test_the_writer_gets_a_hidden_temp_file_beside_the_target(tmp_path: Path) -> None:
    seen: list[Path] = []
    atomic_write(tmp_path / "x.json", lambda tmp: (seen.append(tmp), tmp.write_text("{}")))
    assert seen[0].parent == tmp_path and seen[0].name.startswith(TEMP_PREFIX) and seen[0].name.endswith("x.json")
    assert not seen[0].exists()


def test_concurrent_writers_of_one_path_each_publish_a_whole_file(tmp_path: Path) -> None:
    """Two writers in flight at once (a fixed temp name would let one truncate the other's file)."""
    target = tmp_path / "scores.json"
    both_writing = threading.Barrier(2)
    temps: list[Path] = []

    def writer(payload: bytes) -> None:
        def write(tmp: Path) -> None:
            temps.append(tmp)
            with tmp.open("wb") as handle:
                handle.write(payload[:3])
                both_writing.wait(timeout=10)  # both temp files are open and half-written here
                handle.write(payload[3:])

        atomic_write(target, write)

    payloads = [b"A" * 1000, b"B" * 1000]
    threads = [threading.Thread(target=writer, args=(p,)) for p in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(set(temps)) == 2
    assert target.read_bytes() in payloads
    assert [p.name for p in tmp_path.iterdir()] == ["scores.json"]
