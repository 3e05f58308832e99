"""inversion.embeddings: learned words as files, and new words made from them.

* :mod:`~inversion.embeddings.formats` — :class:`~inversion.embeddings.formats.LearnedEmbedding` and the
  files it is written to and read from (diffusers, AUTOMATIC1111, kohya, SDXL, SD 3, Flux);
* :mod:`~inversion.embeddings.families` — which keys each client reads from SDXL's, SD 3's and Flux's single
  files (torch-free);
* :mod:`~inversion.embeddings.merge` — a new word from learned words (weighted sum, slerp, concatenation).

May import: :mod:`inversion.config`, :mod:`inversion.model`, the base files and :mod:`common`; not text,
training, evaluation or the CLI (a file is read and written without a tokenizer).
"""
