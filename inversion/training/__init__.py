"""inversion.training: learning a concept's word, with every model weight frozen.

* :mod:`~inversion.training.trainer` — the training loop, for one concept or a pack sharing each UNet
  step (:func:`~inversion.training.trainer.train_concepts`);
* :mod:`~inversion.training.stopping` — when a concept has learned its word (the plateau rule's state);
* :mod:`~inversion.training.checkpoint` — the checkpoint file, for an exact ``--resume``;
* :mod:`~inversion.training.templates` — the neutral prompt templates the word is learned in.

May import: :mod:`inversion.text`, :mod:`inversion.embeddings`, :mod:`inversion.model`,
:mod:`inversion.config`, the base files and :mod:`common`; not :mod:`inversion.evaluation` (its sibling)
nor the CLI.
"""
