"""Where the frozen model runs: the one place that turns ``device`` and ``precision`` settings into torch objects.

Used by the trainer, the renderer, CLIP scoring and the benchmarks.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch

from inversion.errors import ConfigError

__all__ = ["DTYPES", "resolve_device", "resolve_dtype", "synchronize", "torch_threads"]

#: the dtype of each precision name (:data:`inversion.config.PRECISIONS`) of the frozen weights;
#: learned vectors are always fp32
DTYPES: dict[str, torch.dtype] = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_device(name: str | torch.device) -> torch.device:
    """``auto`` → the first CUDA device when one is present, else the CPU; other names as torch reads them.

    Raises :class:`ConfigError` for a name torch does not know or a CUDA device this machine lacks.
    """
    if isinstance(name, torch.device):
        device = name
    elif name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    else:
        try:
            device = torch.device(name)
        except (RuntimeError, TypeError) as exc:
            raise ConfigError(f"unknown device {name!r}: use auto, cpu or cuda[:N]") from exc
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device {name} requested but no CUDA device is available")
    return device


def resolve_dtype(precision: str, device: torch.device) -> torch.dtype:
    """The dtype of ``precision`` (``fp32``, ``bf16``, ``fp16``); fp16 only on CUDA."""
    if precision not in DTYPES:
        raise ConfigError(f"unknown precision {precision!r}: use one of {', '.join(DTYPES)}")
    if precision == "fp16" and device.type != "cuda":
        raise ConfigError("precision fp16 needs a CUDA device; use fp32 or bf16 on the CPU")
    return DTYPES[precision]


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on ``device`` (a no-op on the CPU), e.g. before reading a clock."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextmanager
def torch_threads(count: int) -> Iterator[None]:
    """Run the block with ``count`` intra-op CPU threads, then restore the caller's count.

    The thread count is process-wide and changes the order of float reductions, so code that sets it must
    give it back: a caller in the same process (a test, a flow task) would otherwise train with a
    different count and get results that differ in the last bits.
    """
    if count < 1:
        raise ConfigError(f"thread count must be at least 1, got {count}")
    before = torch.get_num_threads()
    torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(before)
