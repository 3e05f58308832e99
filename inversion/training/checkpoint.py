"""The training checkpoint format: one safetensors file per concept, written every ``checkpoint_every`` steps.

Tensors: ``vectors`` (the learned vectors, fp32), the AdamW moments ``exp_avg`` and ``exp_avg_sq``
(zeros before the first step) and ``rng_state`` (the concept's random generator); a run with an
``init_mode`` or ``norm_mode`` other than the default also saves ``anchor`` (the vectors at step 0) and
``norm_target`` (each text encoder's norm in ``vocab`` mode, :mod:`inversion.training.vector_modes`). Metadata:
``sstar_checkpoint`` (the format version) and ``state``, a JSON object with ``step``, ``adam_step``,
``losses``, ``seconds``, ``token``, ``num_vectors``, ``initializer``, ``train_config`` (the
:meth:`TrainConfig.to_dict` of the run that wrote it) and ``stopping`` (the stopping rule's
:class:`~inversion.training.stopping.StopState`; absent in checkpoints written before it existed). Enough to
continue exactly where it stopped.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open
from safetensors.torch import load_file, save_file

from common.atomic import atomic_write
from common.filenames import CHECKPOINT_FILENAME
from inversion.config import TrainConfig
from inversion.errors import ConfigError, InputError

__all__ = [
    "CHECKPOINT_FILENAME",
    "CHECKPOINT_VERSION",
    "RESUMABLE_CHANGES",
    "Checkpoint",
    "read_checkpoint",
    "write_checkpoint",
]

CHECKPOINT_VERSION = "1"
#: training settings that may differ between a checkpoint and the run resuming it
RESUMABLE_CHANGES = frozenset({"steps", "checkpoint_every", "device", "compile", "stop"})
_TENSORS = ("vectors", "exp_avg", "exp_avg_sq", "rng_state")
_OPTIONAL_TENSORS = ("anchor", "norm_target")


@dataclass(frozen=True)
class Checkpoint:
    """A concept's saved training state, as :func:`read_checkpoint` found it."""

    path: Path
    tensors: dict[str, torch.Tensor]  # see the module docstring
    state: dict[str, Any]

    @property
    def token(self) -> str:
        return str(self.state["token"])

    @property
    def num_vectors(self) -> int:
        return int(self.state["num_vectors"])

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def vectors(self) -> torch.Tensor:
        """The learned vectors at :attr:`step`, ``[num_vectors, dim]`` fp32."""
        return self.tensors["vectors"]

    def check_resumable(self, token: str, num_vectors: int, config: TrainConfig) -> None:
        """Raise :class:`ConfigError` unless a run of ``token`` with ``config`` may continue from here.

        The token, its number of vectors and every setting outside :data:`RESUMABLE_CHANGES` must match
        (a setting the checkpoint predates counts as its default).
        """
        if self.token != token or self.num_vectors != num_vectors:
            raise ConfigError(
                f"checkpoint {self.path} is for {self.token} with {self.num_vectors} vector(s), "
                f"not {token} with {num_vectors}"
            )
        saved, current = {**TrainConfig().to_dict(), **self.state["train_config"]}, config.to_dict()
        changed = sorted(k for k in current if k not in RESUMABLE_CHANGES and saved.get(k) != current[k])
        if changed:
            k = changed[0]
            raise ConfigError(f"cannot resume {self.path}: {k} was {saved.get(k)!r}, now {current[k]!r}")


def write_checkpoint(path: Path, tensors: Mapping[str, torch.Tensor], state: Mapping[str, Any]) -> Path:
    """Write a checkpoint atomically: ``tensors`` must hold the four named in the module docstring, and may
    hold the optional ones."""
    if not set(_TENSORS) <= set(tensors) <= {*_TENSORS, *_OPTIONAL_TENSORS}:
        raise ValueError(
            f"checkpoint tensors must be {', '.join(_TENSORS)} (and optionally {', '.join(_OPTIONAL_TENSORS)}); "
            f"got {', '.join(sorted(tensors))}"
        )
    contiguous = {name: tensor.detach().cpu().contiguous() for name, tensor in tensors.items()}
    metadata = {"sstar_checkpoint": CHECKPOINT_VERSION, "state": json.dumps(dict(state))}
    atomic_write(path, lambda tmp: save_file(contiguous, str(tmp), metadata=metadata))
    return Path(path)


def read_checkpoint(path: str | Path) -> Checkpoint:
    """Read a checkpoint written by :func:`write_checkpoint`; a one-line :class:`InputError` if it is not one."""
    path = Path(path)
    try:
        with safe_open(str(path), framework="pt") as handle:
            metadata = handle.metadata() or {}
        tensors = load_file(str(path))
    except Exception as exc:  # noqa: BLE001 - missing, truncated or not safetensors at all
        raise InputError(f"cannot read checkpoint {path}: {exc}") from exc
    if metadata.get("sstar_checkpoint") != CHECKPOINT_VERSION:
        raise InputError(f"{path} is not an sstar checkpoint of version {CHECKPOINT_VERSION}")
    return Checkpoint(path, tensors, json.loads(metadata["state"]))
