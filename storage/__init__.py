"""storage: catalogs in, embeddings and Parquet metrics out — on a local directory or S3.

Modules (none imports torch):

* :mod:`storage.errors` — :class:`StorageError` and its subclasses; :func:`redact`.
* :mod:`storage.store.settings` — :class:`S3Settings` (endpoint, region, credentials, retries).
* :mod:`storage.store.base` — :class:`ObjectStore`, :func:`open_store`, :func:`pyarrow_filesystem`;
  backends :mod:`storage.store.local` and :mod:`storage.store.s3`.
* :mod:`storage.catalog` — concept discovery, metadata defaults, content digests.
* :mod:`storage.images` — image validation/normalisation, ingest, materialising PNGs.
* :mod:`storage.results` — write-once publishing with ``_SUCCESS`` manifests, checkpoints.
* :mod:`storage.metrics` — the Parquet metrics dataset and the embeddings index.
"""

from storage.errors import (
    AlreadyExists,
    BackendError,
    InvalidConcept,
    InvalidImage,
    InvalidInput,
    InvalidKey,
    InvalidSettings,
    InvalidURI,
    NotFound,
    StorageError,
)
from storage.store.base import ObjectStore
from storage.store.open import open_store, pyarrow_filesystem
from storage.store.settings import S3Settings

__all__ = [
    "AlreadyExists",
    "BackendError",
    "InvalidConcept",
    "InvalidImage",
    "InvalidInput",
    "InvalidKey",
    "InvalidSettings",
    "InvalidURI",
    "NotFound",
    "StorageError",
    "ObjectStore",
    "S3Settings",
    "open_store",
    "pyarrow_filesystem",
]
