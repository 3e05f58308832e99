"""inversion.text: how a prompt, learned words included, becomes the UNet's conditioning.

* :mod:`~inversion.text.placeholders` — placeholder words as names (``<t>``, ``<t>_1``, ...) and their
  clashes with a vocabulary, torch-free (a scan checks them before any GPU time);
* :mod:`~inversion.text.tokens` — adding a word with N vectors to a tokenizer and text encoder (CLIP or T5);
* :mod:`~inversion.text.encoder` — :class:`~inversion.text.encoder.PromptEncoder`: each family's text
  encoders, with learned words installed;
* :mod:`~inversion.text.weighting` — word strengths in prompts, with AUTOMATIC1111's meaning.

May import: :mod:`inversion.embeddings`, :mod:`inversion.model`, :mod:`inversion.config`, the base
files and :mod:`common`; not training, evaluation or the CLI.
"""
