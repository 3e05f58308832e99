"""storage: catalogs in, embeddings and Parquet metrics out — on a local directory or S3 (no torch).

This package imports nothing itself: import what you use from the module that defines it.

* :mod:`storage.errors` — :class:`~storage.errors.StorageError` and its subclasses; :func:`~storage.errors.redact`.
* :mod:`storage.store` — the object stores: the interface (:mod:`~storage.store.base`), the local and S3
  backends, their settings and :func:`~storage.store.open.open_store`, which picks one by URI.
* :mod:`storage.catalog` — concept discovery, metadata defaults, content digests.
* :mod:`storage.scanstate` — what the last scan learned, so the next one needs only listings.
* :mod:`storage.images` — image validation and normalisation, ingest, materialising PNGs.
* :mod:`storage.results` — write-once publishing completed by a ``_SUCCESS`` manifest; checkpoints.
* :mod:`storage.runfiles` — the per-run Parquet files shared by the metrics and the compositions.
* :mod:`storage.metrics` — the Parquet metrics dataset, the embeddings index, the status vocabulary.
* :mod:`storage.compositions` — the catalog's compositions in, composition rows out.
"""
