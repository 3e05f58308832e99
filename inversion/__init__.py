"""inversion: the ML core of Textual Inversion (plain Python and torch; no storage, no Prefect).

It learns a new word for a concept with a frozen Stable-Diffusion-style model, writes it in the formats
diffusers and AUTOMATIC1111 load, renders prompts with it and scores it with CLIP. Five wings and a few
base files, bottom-up; each may import only what lies below it (and :mod:`common`), which the
``layers`` contract in ``pyproject.toml`` enforces:

1. base files, imported by every wing:

   * :mod:`inversion.errors` — the one-line, picklable user errors (:class:`~inversion.errors.SstarError`);
     imports nothing of ours.
   * :mod:`inversion.cancel` — stopping a run at its next safe point (SIGTERM, Ctrl-C) in every thread;
     imports nothing of ours.
   * :mod:`inversion.fields` — settings declared once (validation, CLI flag, flow parameter);
   * :mod:`inversion.device` — ``device`` / ``precision`` settings as torch objects;
   * :mod:`inversion.images` — a concept's training images, read and prepared for the VAE.

2. :mod:`inversion.model` — the frozen diffusion model: its files, family, fingerprint and loading;
   beside it, independent of it, :mod:`inversion.config` — the validated settings of a run (what to
   learn, how, how to score), torch-free.
3. :mod:`inversion.embeddings` — learned-word files (diffusers, A1111, kohya, SDXL) and merging words.
4. :mod:`inversion.text` — prompts into the UNet's conditioning: placeholder tokens, word strengths.
5. :mod:`inversion.training` and :mod:`inversion.evaluation`, independent siblings — learning the
   word; rendering and scoring it.
6. :mod:`inversion.cli` — the ML commands of ``sstar`` (argparse only), on top.

This file imports nothing, so importing one torch-free module (``inversion.model.info``,
``inversion.config``) does not import torch.
"""
