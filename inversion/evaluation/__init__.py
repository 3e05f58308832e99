"""inversion.evaluation: rendering prompts with learned words, and scoring the words with CLIP.

* :mod:`~inversion.evaluation.render` — :class:`~inversion.evaluation.render.Renderer` (a family's
  diffusers pipeline with learned words installed) and labelled grids;
* :mod:`~inversion.evaluation.clip` — CLIP models through open_clip, and our tiny test CLIP;
* :mod:`~inversion.evaluation.prompts` — the evaluation prompts and words-only captions;
* :mod:`~inversion.evaluation.scoring` — CLIP-I and CLIP-T of a word against a words-only baseline;
* :mod:`~inversion.evaluation.composition` — scoring one prompt that names several learned words;
* :mod:`~inversion.evaluation.score_files` — ``sstar score`` as a library call, files in and out.

May import: :mod:`inversion.text`, :mod:`inversion.embeddings`, :mod:`inversion.model`,
:mod:`inversion.config`, the base files and :mod:`common`; not :mod:`inversion.training` (its sibling)
nor the CLI.
"""
