"""Publishing a file all-or-nothing: write a unique hidden temp file beside it, fsync, then rename or link.

A reader never sees a half-written file, two writers of the same path never share a temp file, and a
failed write leaves nothing behind (the temp file is removed, the target untouched).
"""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from pathlib import Path

__all__ = ["TEMP_PREFIX", "atomic_write", "atomic_write_bytes"]

#: name prefix of in-flight temp files (listings skip names that start with it)
TEMP_PREFIX = ".sstar-tmp-"


def atomic_write(path: str | os.PathLike[str], write: Callable[[Path], object], *, exclusive: bool = False) -> bool:
    """Create ``path`` from what ``write(temp_path)`` writes, atomically; parent folders are created.

    ``write`` receives an empty temp file in the target folder and fills it (by path, so that
    ``torch.save``, ``safetensors.save_file`` or ``Image.save`` can be used directly). The file is then
    fsynced and published: replacing ``path`` (default), or with ``exclusive=True`` only if ``path``
    does not exist yet (a hard link, so an existing file is never clobbered). Returns whether the file
    was published (always ``True`` unless ``exclusive`` found ``path`` taken). Any error propagates
    after the temp file is removed.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}"[:255]
    try:
        os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644))
        write(tmp)
        _fsync(tmp)
        if exclusive:
            try:
                os.link(tmp, path)
            except FileExistsError:
                return False
        else:
            os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    _fsync(path.parent, best_effort=True)
    return True


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes, *, exclusive: bool = False) -> bool:
    """:func:`atomic_write` of ``data``."""
    return atomic_write(path, lambda tmp: tmp.write_bytes(data), exclusive=exclusive)


def _fsync(path: Path, best_effort: bool = False) -> None:
    """Flush ``path`` (a file, or a folder to persist a rename in it) to disk."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        if best_effort:
            return
        raise
    try:
        os.fsync(fd)
    except OSError:
        if not best_effort:
            raise
    finally:
        os.close(fd)
