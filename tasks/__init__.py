"""The Prefect tasks of a learning run, and the small records they hand one another.

The flows (:mod:`flows`) import these modules without torch: the ML code is imported inside the task
bodies. Each task is named as its function is, in kebab case (``stage_concept`` → ``stage-concept``).

Modules:

* :mod:`tasks.settings` — the run's typed settings (``LearnSettings``, ``EvalSettings``, ``RunSettings``).
* :mod:`tasks.records` — what crosses task boundaries: a concept as discovered, staged, inverted, scored.
* :mod:`tasks.preflight` — fail in seconds, before any training, when the inputs or outputs are not usable.
* :mod:`tasks.ingest` — scan the catalog's listings; stage one concept's images locally.
* :mod:`tasks.invert` — the GPU task: learn a queue of concepts in packs.
* :mod:`tasks.score` — render and score the learned words against their words-only baselines.
* :mod:`tasks.baselines` — the output's cache of words-only baseline renders.
* :mod:`tasks.compose` — render and score one composition of learned words.
* :mod:`tasks.publish` — publish a concept's files write-once; metrics rows and the embeddings index.
* :mod:`tasks.model_cache` — the diffusion model, renderer and CLIP, loaded once per worker process.
* :mod:`tasks.concurrency` — the Prefect global concurrency limit guarding GPU work.
* :mod:`tasks.retry` — which failures are retried (transient storage and network errors only).
"""
