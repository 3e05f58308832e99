"""How a learned word's vectors start and move: ``init_mode`` and ``norm_mode`` of :class:`TrainConfig`.

Both change only the vectors' path; the files stay the standard ones every client loads.

* ``init_mode="cross"`` — Cross Initialization (Pang et al., CVPR 2024, arXiv 2312.15905): each vector
  starts at the text encoder's output for the initializer, fed back as an input embedding
  (:meth:`inversion.text.encoder.PromptEncoder.initial_vectors` with ``cross``), and the loss gains a
  weak pull back to that start, :data:`CROSS_PULL_WEIGHT` × the mean L2 distance per text encoder (the
  paper's weight and form).
* ``norm_mode="vocab"`` — Directional Textual Inversion (ICLR 2026, arXiv 2512.13672): every vector's
  norm is held at its text encoder's mean vocabulary row norm and only its direction is learned. Before
  each optimizer step the gradient gains the von Mises–Fisher prior's constant term ``-κ μ``
  (:data:`VMF_KAPPA`; ``μ`` the start's direction) and loses its radial part (the tangent projection);
  after it each vector is put back on its sphere. The step itself stays AdamW (DTI uses a row-normalised
  SGD), so a checkpoint's optimizer state resumes the same way in every mode.

The *anchor* (the vectors at step 0, after the start is put on the sphere in ``vocab`` mode) and the
*norm targets* (one per text encoder) are saved in checkpoints, so a resumed run is exact.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from inversion.config import TrainConfig
    from inversion.text.encoder import PromptEncoder

#: weight of Cross Initialization's pull of the vectors towards their start (the paper's 1e-5)
CROSS_PULL_WEIGHT = 1e-5
#: concentration of DTI's von Mises–Fisher prior around the start's direction (the paper's κ = 1e-4)
VMF_KAPPA = 1e-4


def _columns(widths: Sequence[int]) -> list[slice]:
    """The column range of each text encoder in a word's joined vectors."""
    bounds, start = [], 0
    for width in widths:
        bounds.append(slice(start, start + width))
        start += width
    return bounds


def on_spheres(vectors: torch.Tensor, widths: Sequence[int], targets: torch.Tensor) -> torch.Tensor:
    """``vectors`` ``[N, sum(widths)]`` with each encoder's part of each row scaled to its target norm."""
    parts = [
        vectors[:, cols] / vectors[:, cols].norm(dim=1, keepdim=True) * float(target)
        for cols, target in zip(_columns(widths), targets.tolist())
    ]
    return torch.cat(parts, dim=1)


def cross_pull(vectors: torch.Tensor, anchor: torch.Tensor, widths: Sequence[int]) -> torch.Tensor:
    """Cross Initialization's regulariser: :data:`CROSS_PULL_WEIGHT` × the mean L2 distance of the vectors
    to their start, summed over the text encoders (a scalar with the vectors' gradient)."""
    anchor = anchor.to(vectors.device)
    distances = [(vectors[:, cols] - anchor[:, cols]).norm(dim=1).mean() for cols in _columns(widths)]
    return CROSS_PULL_WEIGHT * torch.stack(distances).sum()


@torch.no_grad()
def tangent_gradient(vectors: torch.Tensor, anchor: torch.Tensor, widths: Sequence[int]) -> None:
    """Turn ``vectors.grad`` into DTI's direction gradient, in place: add the vMF prior's ``-κ μ`` and
    remove, per encoder and vector, the component along the vector (what a renormalisation undoes anyway)."""
    grad = vectors.grad
    if grad is None:
        return
    anchor = anchor.to(vectors.device)
    for cols in _columns(widths):
        prior = torch.nn.functional.normalize(anchor[:, cols], dim=1)
        part = grad[:, cols] - VMF_KAPPA * prior
        direction = torch.nn.functional.normalize(vectors[:, cols], dim=1)
        grad[:, cols] = part - (part * direction).sum(dim=1, keepdim=True) * direction


@torch.no_grad()
def renormalise(vectors: torch.Tensor, widths: Sequence[int], targets: torch.Tensor) -> None:
    """Put each vector of each encoder back on its sphere (the retraction after an optimizer step), in place."""
    vectors.copy_(on_spheres(vectors, widths, targets))


@dataclass
class VectorModes:
    """One concept's ``init_mode`` and ``norm_mode`` state: its anchor and its norm targets (both ``None`` in
    the default modes, which then change nothing: no extra loss, no projection, no checkpoint tensors)."""

    widths: tuple[int, ...]
    cross: bool = False
    anchor: torch.Tensor | None = None  # [N, sum(widths)], the vectors at step 0
    norm_target: torch.Tensor | None = None  # [len(widths)], vocab mode only

    @classmethod
    def start(
        cls, text: PromptEncoder, initializer: str, num_vectors: int, config: TrainConfig
    ) -> tuple[torch.Tensor, VectorModes]:
        """A concept's starting vectors ``[N, sum(widths)]`` and its modes' state."""
        cross = config.init_mode == "cross"
        start = text.initial_vectors(initializer, num_vectors, cross=cross)
        if config.norm_mode != "vocab":
            return start, cls(text.widths, cross, start.clone() if cross else None)
        target = torch.tensor([stats.mean for stats in text.vocab_norms()], dtype=torch.float32)
        start = on_spheres(start, text.widths, target)
        return start, cls(text.widths, cross, start.clone(), target)

    def penalty(self, vectors: torch.Tensor) -> torch.Tensor | None:
        """The term the modes add to the concept's loss (Cross Initialization's pull), or ``None``."""
        return cross_pull(vectors, self.anchor, self.widths) if self.cross and self.anchor is not None else None

    def before_step(self, vectors: torch.Tensor) -> None:
        """``vocab``: make the gradient DTI's tangent direction gradient."""
        if self.norm_target is not None and self.anchor is not None:
            tangent_gradient(vectors, self.anchor, self.widths)

    def after_step(self, vectors: torch.Tensor) -> None:
        """``vocab``: put the vectors back on their spheres."""
        if self.norm_target is not None:
            renormalise(vectors, self.widths, self.norm_target)

    def tensors(self) -> dict[str, torch.Tensor]:
        """What a checkpoint keeps of the modes (nothing in the default modes)."""
        kept = {"anchor": self.anchor, "norm_target": self.norm_target}
        return {name: tensor for name, tensor in kept.items() if tensor is not None}

    def restore(self, tensors: dict[str, torch.Tensor]) -> None:
        """Take the anchor and norm targets a checkpoint saved (a resumed run continues from those exactly)."""
        self.anchor = tensors.get("anchor", self.anchor)
        self.norm_target = tensors.get("norm_target", self.norm_target)
