"""A toy world where Textual Inversion quality is measurable (issue 6).

Procedural images of one coloured shape on a plain background, captioned by a small grammar that
names only *coarse* hue bins (:mod:`bench.world.generate`); an exact oracle that measures an
image's hue, background and size (:mod:`bench.world.oracle`); a tiny latent diffusion model and a
tiny CLIP trained on that world (:mod:`bench.world.train`). Held-out concepts sit half-way between
two hue words, so no caption can name them exactly: a learned word can beat the best caption.
"""
