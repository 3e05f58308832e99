"""storage.store: where bytes live — one interface, a local and an S3 backend, and the factory above them.

* :mod:`storage.store.base` — :class:`~storage.store.base.ObjectStore` (the interface every backend
  keeps: write-once puts, listings with sizes and ETags) and key validation; it knows no backend.
* :mod:`storage.store.local` — a directory on a local filesystem.
* :mod:`storage.store.s3` — an S3 (or S3-compatible) bucket through boto3.
* :mod:`storage.store.settings` — :class:`~storage.store.settings.S3Settings`: endpoint, region, credentials, retries.
* :mod:`storage.store.open` — :func:`~storage.store.open.open_store` (a backend by URI) and
  :func:`~storage.store.open.pyarrow_filesystem` for reading Parquet from the same place.
"""
