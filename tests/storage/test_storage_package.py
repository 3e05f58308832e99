"""Package-level guarantees: no torch, an empty package namespace, picklable one-line errors."""

from __future__ import annotations

import pickle
import subprocess
import sys

import pytest

from storage.errors import AlreadyExists, InvalidURI, NotFound, StorageError

from .helpers import SECRET_KEY


def test_storage_never_imports_torch() -> None:
    code = (
        "import sys, storage, storage.catalog, storage.images, storage.store.local, storage.metrics, "
        "storage.store.base, storage.results, storage.store.s3, storage.store.settings\n"
        "bad = sorted(m for m in ('torch', 'diffusers', 'transformers', 'open_clip') if m in sys.modules)\n"
        "assert not bad, bad\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


def test_importing_the_packages_imports_none_of_their_modules() -> None:
    """``storage`` and ``storage.store`` are maps (docstrings): a caller imports the module it uses, so
    importing the package never pulls a backend (boto3), pyarrow or Pillow."""
    code = (
        "import sys, storage, storage.store\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('storage.') and m != 'storage.store')\n"
        "heavy = sorted(m for m in ('boto3', 'pyarrow', 'PIL') if m in sys.modules)\n"
        "assert not loaded and not heavy, (loaded, heavy)\n"
        "assert not [n for n in vars(storage) if not n.startswith('_') and n != 'store'], vars(storage)\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)


@pytest.mark.parametrize("cls", [StorageError, NotFound, AlreadyExists, InvalidURI])
def test_errors_pickle_and_stay_on_one_line(cls, aws_env) -> None:
    error = cls(f"first line\n  second line with {SECRET_KEY}")
    assert str(error) == "first line second line with ***"
    clone = pickle.loads(pickle.dumps(error))
    assert type(clone) is cls and str(clone) == str(error)
    assert isinstance(error, StorageError)
