"""A local directory as an :class:`~storage.objectstore.ObjectStore`.

Writes go to a hidden temp file in the target folder, are fsynced, then published with
``os.replace`` (``put``) or ``os.link`` (``put_once``, which fails if the name exists), so a
reader never sees a half-written file and a write-once object is never clobbered.
"""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Iterator
from pathlib import Path

from .errors import BackendError, NotFound
from .objectstore import ObjectStore, _validate_prefix, validate_key

__all__ = ["LocalStore", "TEMP_PREFIX"]

TEMP_PREFIX = ".sstar-tmp-"


class LocalStore(ObjectStore):
    """Objects are files under ``root``; keys are their ``/``-separated relative paths."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self._root = Path(root).expanduser().absolute()

    @property
    def root(self) -> Path:
        return self._root

    @property
    def uri(self) -> str:
        return str(self._root)

    def _path(self, key: str) -> Path:
        return self._root.joinpath(*validate_key(key).split("/"))

    def url(self, key: str) -> str:
        return str(self._path(key))

    def local_path(self, key: str) -> Path:
        return self._path(key)

    def list(self, prefix: str = "") -> Iterator[str]:
        _validate_prefix(prefix)
        # walk only the deepest folder the prefix pins down
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._root.joinpath(*folder.split("/")) if folder else self._root
        if not start.is_dir():
            return iter(())
        keys: list[str] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = base + name
                if key.startswith(prefix):
                    keys.append(key)
        keys.sort()
        return iter(keys)

    def get(self, key: str) -> bytes:
        path = self._path(key)
        try:
            return path.read_bytes()
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError):
            raise NotFound(f"no such object: {path}") from None
        except OSError as exc:
            raise BackendError(f"cannot read {path}: {exc.strerror or exc}") from None

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def delete(self, key: str) -> None:
        path = self._path(key)
        try:
            path.unlink()
        except (FileNotFoundError, NotADirectoryError):
            pass
        except OSError as exc:
            raise BackendError(f"cannot delete {path}: {exc.strerror or exc}") from None

    def _write_temp(self, path: Path, data: bytes) -> Path:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data for {path} must be bytes, got {type(data).__name__}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise BackendError(f"cannot create folder for {path}: a file is in the way") from None
        tmp = path.parent / f"{TEMP_PREFIX}{uuid.uuid4().hex}-{path.name}"[:255]
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
            with os.fdopen(fd, "wb") as handle:
                handle.write(data)
                handle.flush()
                os.fsync(handle.fileno())
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BackendError(f"cannot write {path}: {exc.strerror or exc}") from None
        return tmp

    def put(self, key: str, data: bytes) -> str:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.replace(tmp, path)
        except OSError as exc:
            tmp.unlink(missing_ok=True)
            raise BackendError(f"cannot write {path}: {exc.strerror or exc}") from None
        _fsync_dir(path.parent)
        return str(path)

    def put_once(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        tmp = self._write_temp(path, data)
        try:
            os.link(tmp, path)  # atomic create-if-absent of a complete file
        except FileExistsError:
            return False
        except OSError as exc:
            if exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise BackendError(
                    f"write-once put needs hard links, which the filesystem of {path.parent} does not support"
                ) from None
            raise BackendError(f"cannot write {path}: {exc.strerror or exc}") from None
        finally:
            tmp.unlink(missing_ok=True)
        _fsync_dir(path.parent)
        return True


def _fsync_dir(folder: Path) -> None:
    """Persist a rename/link in ``folder`` (best effort; not all platforms allow it)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
