"""The line above which a learned word counts as blown up, shared by ``sstar inspect`` and the HTML pages.

:mod:`inversion.embeddings.norms` measures a word's ``norm_ratio`` (its largest vector norm over its text
encoder's vocabulary mean norm); ``sstar inspect`` flags it, and so do the run report and the dashboard
(:mod:`reports`), which may not import the ML core: so the line lives here, once.
"""

from __future__ import annotations

__all__ = ["BLOWN_UP_RATIO", "blown_up"]

#: A word whose largest vector norm exceeds this many times its encoder's vocabulary mean norm is blown
#: up. Measured with ``python -m bench.norms`` (bench/norms.json; the toy world's 4 held-out words, plain
#: TI, 200 steps): no vocabulary row passes 1.8x its mean (toy world 1.80x, a random-weight tiny CLIP
#: 1.66x); the words start at 1.4x and end at 3.8-4.0x at the default learning rate (5e-3), at 22-28x at
#: 5e-2 and at 188-230x at 5e-1, with the same final loss (0.052-0.063) at all three: the extra length
#: buys nothing. 10x sits clearly apart from both the vocabulary and the default words (2.5x above them)
#: and flags the inflated ones (2.2x below the least of them). SD vocabularies were not measured here.
BLOWN_UP_RATIO = 10.0


def blown_up(ratio: float) -> bool:
    """Whether a word whose norm ratio (``inversion.embeddings.norms.norm_ratio``) is ``ratio`` counts as blown
    up (:data:`BLOWN_UP_RATIO`)."""
    return ratio > BLOWN_UP_RATIO
