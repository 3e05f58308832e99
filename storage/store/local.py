"""A local directory as an :class:`~storage.store.base.ObjectStore`.

Writes go through :func:`common.atomic.atomic_write`: a hidden temp file in the target folder,
fsynced, then published with ``os.replace`` (``put``) or ``os.link`` (``put_once``, which fails if
the name exists), so a reader never sees a half-written file and a write-once object is never
clobbered. Listings skip the temp files (names starting with :data:`TEMP_PREFIX`).

Conditional writes (``put_if``, ``update``) hold an exclusive ``flock`` on the object's folder across the
check and the rename (a lock on the folder itself, so no lock file is left in the output), so two processes
on one host never both replace the version they read; each conditional write moves the file's modification
time forward, so its ETag always changes.
"""

from __future__ import annotations

import errno
import fcntl
import os
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from common.atomic import TEMP_PREFIX, atomic_write, atomic_write_bytes
from storage.errors import BackendError, NotFound
from storage.store.base import ObjectInfo, ObjectStore, validate_key, validate_prefix

__all__ = ["LocalStore", "TEMP_PREFIX"]


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

    def list_info(self, prefix: str = "") -> Iterator[ObjectInfo]:
        validate_prefix(prefix)
        # walk only the deepest folder the prefix pins down
        folder = prefix.rsplit("/", 1)[0] if "/" in prefix else ""
        start = self._root.joinpath(*folder.split("/")) if folder else self._root
        if not start.is_dir():
            return iter(())
        found: list[ObjectInfo] = []
        for dirpath, dirnames, filenames in os.walk(start):
            dirnames[:] = [d for d in dirnames if not d.startswith(TEMP_PREFIX)]
            rel = Path(dirpath).relative_to(self._root).as_posix()
            base = "" if rel == "." else rel + "/"
            for name in filenames:
                if name.startswith(TEMP_PREFIX):
                    continue
                key = base + name
                if key.startswith(prefix):
                    try:
                        stat = os.stat(os.path.join(dirpath, name))
                    except FileNotFoundError:  # deleted while listing
                        continue
                    found.append(_info(key, stat))
        found.sort(key=lambda info: info.key)
        return iter(found)

    def get(self, key: str) -> bytes:
        return self.get_with_info(key)[0]

    def get_with_info(self, key: str) -> tuple[bytes, ObjectInfo]:
        path = self._path(key)
        try:
            with open(path, "rb") as handle:
                stat = os.fstat(handle.fileno())
                return handle.read(), _info(key, stat)
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

    def _publish(self, key: str, data: bytes, *, exclusive: bool) -> tuple[Path, bool]:
        path = self._path(key)
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data for {path} must be bytes, got {type(data).__name__}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
        except (FileExistsError, NotADirectoryError):
            raise BackendError(f"cannot create folder for {path}: a file is in the way") from None
        try:
            return path, atomic_write_bytes(path, data, exclusive=exclusive)
        except OSError as exc:
            if exclusive and exc.errno in (errno.EPERM, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EXDEV):
                raise BackendError(
                    f"write-once put needs hard links, which the filesystem of {path.parent} does not support"
                ) from None
            raise BackendError(f"cannot write {path}: {exc.strerror or exc}") from None

    def put(self, key: str, data: bytes) -> str:
        path, _ = self._publish(key, data, exclusive=False)
        return str(path)

    def put_once(self, key: str, data: bytes) -> bool:
        return self._publish(key, data, exclusive=True)[1]

    def put_if(self, key: str, data: bytes, etag: str | None) -> ObjectInfo | None:
        with self._locked(key):
            try:
                current = _info(key, os.stat(self._path(key))).etag
            except FileNotFoundError:
                current = None
            return self._replace(key, data) if current == etag else None

    def update(self, key: str, merge: Callable[[bytes | None], bytes | None]) -> bytes | None:
        """Read, merge and replace under the object's lock: nobody else can change it in between."""
        with self._locked(key):
            try:
                current: bytes | None = self.get(key)
            except NotFound:
                current = None
            new = merge(current)
            if new is None or new == current:
                return current
            self._replace(key, new)
            return new

    @contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        """An exclusive lock on ``key``'s folder (conditional writes of the objects in it take turns)."""
        path = self._path(key)
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
        except OSError as exc:
            raise BackendError(f"cannot lock {path}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing lets the lock go

    def _replace(self, key: str, data: bytes) -> ObjectInfo:
        """Atomically replace ``key`` (its lock held) with a modification time later than the old file's."""
        path = self._path(key)
        try:
            old = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            old = 0
        stamp = max(time.time_ns(), old + 1_000_000)

        def write(tmp: Path) -> None:
            tmp.write_bytes(data)
            os.utime(tmp, ns=(stamp, stamp))

        try:
            atomic_write(path, write)
            return _info(key, os.stat(path))
        except OSError as exc:
            raise BackendError(f"cannot write {path}: {exc.strerror or exc}") from None


def _info(key: str, stat: os.stat_result) -> ObjectInfo:
    """Size and modification time stand in for an ETag: a rewrite changes at least one of them."""
    return ObjectInfo(key, stat.st_size, f"mtime:{stat.st_mtime_ns}")
