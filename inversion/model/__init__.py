"""inversion.model: the frozen diffusion model, from its JSON files to its loaded components.

* :mod:`~inversion.model.info` — what a model says about itself in its JSON files: its family (``sd1``,
  ``sd2``, ``sdxl``) and its tokenizers' words (torch-free: the catalog coordinator reads it);
* :mod:`~inversion.model.fingerprint` — the model's identity by content, for concept digests (torch-free);
* :mod:`~inversion.model.components` — :class:`~inversion.model.components.DiffusionComponents`, loading
  them from a diffusers folder or hub id, and back into a diffusers pipeline;
* :mod:`~inversion.model.zoo` — random-weight models built locally, for tests, benchmarks and the demo;
* :mod:`~inversion.model.vocab` — the real CLIP BPE vocabulary, built offline from open_clip's copy.

May import: the base files (:mod:`inversion.errors`, ...) and :mod:`common`; no other wing, nor
:mod:`inversion.config`.
"""
