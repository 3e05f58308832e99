"""Errors raised by the ML core.

Every error a user can cause derives from :class:`SstarError`; its message is one line that names
the input at fault, so the CLI can print it instead of a traceback. Every error pickles with its
fields intact (Prefect and process pools send them between processes).
"""

from __future__ import annotations

from typing import Any


class SstarError(Exception):
    """Base class of the errors a user can cause (bad input, bad config, a run that diverged)."""


class ConfigError(SstarError, ValueError):
    """A configuration value is out of range or inconsistent."""


class InputError(SstarError):
    """An input (model folder, image folder, embedding file) is missing or unusable."""


class TokenError(SstarError, ValueError):
    """A placeholder token or its initializer cannot be used with this tokenizer."""


class EmbeddingFormatError(SstarError):
    """An embedding file is not in a format we can read."""


class TrainingDivergedError(SstarError):
    """The loss became NaN or infinite; the embedding learned so far is not trustworthy."""

    def __init__(self, token: str, step: int, loss: float) -> None:
        super().__init__(f"training of {token} diverged: loss is {loss} at step {step} (try a lower --lr)")
        self.token = token
        self.step = step
        self.loss = loss

    def __reduce__(self) -> tuple[Any, ...]:
        # rebuilt from the fields, not from the message (``args``), so that pickling round-trips
        # (Prefect results, process pools)
        return type(self), (self.token, self.step, self.loss), self.__dict__
