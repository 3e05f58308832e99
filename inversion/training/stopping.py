"""When a concept has learned its word: the stopping rule of the trainer.

Two policies (``TrainConfig.stop``):

* ``fixed`` — train to the step cap (``TrainConfig.steps``, ``--max-steps``).
* ``plateau`` — every ``stop_every`` steps, measure the concept's **held-out denoising loss**: the
  training loss of its current vectors on a fixed set of ``stop_samples`` noised examples of its own
  images (fixed views, templates, noise and timesteps, drawn once from a generator of its own, so
  the training stream is untouched and the loss is a deterministic function of the vectors).
  Stop once ``stop_patience`` checks in a row failed to improve on the best loss so far by more
  than ``stop_min_delta`` (relative), and never before ``stop_min_steps``. The cap still holds.

The signal was chosen by measurement in the toy world (``bench/quality/README.md``): it falls while
the word's hue is being learned and flattens where the oracle's hue error does; the check costs
``stop_samples`` UNet forwards (no backward) every ``stop_every`` steps.

:class:`StopState` is the rule's whole state; it goes into the checkpoint so a resumed run stops
exactly where an uninterrupted one would.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from inversion.config import PlateauRule

#: why a concept stopped training (``TrainResult.stop_reason``, the metrics' ``stop_reason``)
StopReason = Literal["max_steps", "plateau"]
MAX_STEPS: StopReason = "max_steps"
PLATEAU: StopReason = "plateau"

#: the held-out examples are drawn from a generator seeded with the concept's seed plus this, so
#: they never coincide with the training stream (seeded with the concept's seed alone)
HELD_OUT_SEED_OFFSET = 0x5EED


@dataclass
class StopState:
    """The plateau rule's memory for one concept: every held-out loss measured, the best one, and
    whether (and why) the concept has stopped."""

    history: list[tuple[int, float]] = field(default_factory=list)  # (step, held-out loss)
    best: float | None = None
    best_step: int = 0
    stale_checks: int = 0  # checks since the last improvement
    reason: StopReason | None = None

    def observe(self, step: int, loss: float, rule: PlateauRule) -> bool:
        """Record the held-out ``loss`` after ``step``; return True (and set :attr:`reason`) when the
        loss has plateaued."""
        self.history.append((step, float(loss)))
        if self.best is None or loss < self.best * (1.0 - rule.min_delta):
            self.best, self.best_step, self.stale_checks = float(loss), step, 0
        else:
            self.stale_checks += 1
        if step >= rule.min_steps and self.stale_checks >= rule.patience:
            self.reason = PLATEAU
        return self.reason == PLATEAU

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready state (for the checkpoint)."""
        return {
            "history": [list(h) for h in self.history],
            "best": self.best,
            "best_step": self.best_step,
            "stale_checks": self.stale_checks,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any] | None) -> StopState:
        """The state :meth:`to_dict` wrote (a checkpoint from before stopping existed: a fresh state)."""
        if not data:
            return cls()
        return cls(
            [(int(s), float(v)) for s, v in data["history"]],
            data["best"],
            int(data["best_step"]),
            int(data["stale_checks"]),
            data["reason"],
        )
