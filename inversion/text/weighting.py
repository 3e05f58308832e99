"""Word strengths in prompts, with the meaning AUTOMATIC1111-style UIs give them.

A prompt may weight any part of itself, most usefully a learned word: ``a photo of (<my-mug>:0.7)``.
The syntax is A1111's attention syntax:

* ``(text:w)`` — strength ``w`` (any decimal, e.g. ``0.5``, ``1.5``);
* ``(text)`` — × 1.1, ``[text]`` — ÷ 1.1; brackets nest and multiply (``((text))`` = × 1.21);
* ``\\(`` ``\\)`` ``\\[`` ``\\]`` ``\\\\`` — literal characters; an unmatched ``)`` or ``]`` is literal
  text, and a bracket left open weights everything after it.

What a strength does (A1111's "Original" emphasis, its default): every part of the prompt is
tokenized on its own, and each token carries its part's strength (every vector of a multi-vector
word carries its word's). The text encoder encodes the tokens as usual — strengths never enter it —
and then its output ``z`` (``[77, D]``, one row per token position) is multiplied row by row by the
strengths (1.0 at the start, end and padding positions), and rescaled as a whole so that its mean
over all elements equals the unweighted output's mean::

    z_w = (z * m[:, None]) * (mean(z) / mean(z * m[:, None]))

For SDXL, SD 3 and Flux each text encoder's hidden states are weighted and rescaled on their own (as A1111
does per embedder; T5's too, before SD 3 joins them), then joined as the family joins them; pooled vectors
are left as encoded. So on Flux, whose CLIP-L gives only its pooled vector, a strength acts through T5 alone.
T5 reads each part tokenized on its own as well, which may split words differently from the whole prompt.

Where sstar differs from A1111: the mean is taken per prompt (A1111 takes it over the batch of
distinct prompts it encodes together, which is the same for one prompt); a prompt past 75 tokens is
truncated (A1111 starts a second 75-token chunk); token positions and padding are those of the
diffusers pipeline (for SD 2.x A1111 puts the end token after the padding). Prompt editing
(``[a:b:step]``), alternation and ``BREAK`` are not supported. A prompt without any weight syntax
is encoded exactly as the diffusers pipeline encodes it.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from inversion.errors import InputError

if TYPE_CHECKING:
    from inversion.text.encoder import PromptEmbeds, PromptEncoder

#: A1111's factor of ``(text)``; ``[text]`` divides by it
ROUND_BRACKET = 1.1

_ATTENTION = re.compile(
    r"""
\\\(|\\\)|\\\[|\\\]|\\\\|\\|   # escapes, and a lone backslash
\(|\[|                         # opening brackets
:\s*([+-]?[.\d]+)\s*\)|        # ":weight)" closes a round bracket with that weight
\)|\]|                         # closing brackets
[^\\()\[\]:]+|                 # plain text
:                              # a colon that is not a weight
""",
    re.VERBOSE,
)


@dataclass(frozen=True)
class Segment:
    """A part of a prompt and its strength."""

    text: str
    weight: float


def parse_weights(prompt: str) -> tuple[Segment, ...]:
    """Split ``prompt`` into parts with their strengths (A1111's attention syntax; module docstring).

    Neighbouring parts of equal strength are joined; an empty prompt is one empty part of weight 1.
    A weight that is not a number (``(x:1.2.3)``) is a one-line :class:`InputError` naming it.
    """
    parts: list[list] = []  # [text, weight], mutable while brackets close
    round_open: list[int] = []
    square_open: list[int] = []

    def multiply(start: int, factor: float) -> None:
        for part in parts[start:]:
            part[1] *= factor

    for match in _ATTENTION.finditer(prompt):
        piece, weight = match.group(0), match.group(1)
        if piece.startswith("\\") and len(piece) == 2:
            parts.append([piece[1], 1.0])
        elif piece == "(":
            round_open.append(len(parts))
        elif piece == "[":
            square_open.append(len(parts))
        elif weight is not None and round_open:
            try:
                factor = float(weight)
            except ValueError:
                raise InputError(f"strength {weight!r} in prompt {prompt!r} is not a number") from None
            multiply(round_open.pop(), factor)
        elif piece == ")" and round_open:
            multiply(round_open.pop(), ROUND_BRACKET)
        elif piece == "]" and square_open:
            multiply(square_open.pop(), 1 / ROUND_BRACKET)
        else:
            parts.append([piece, 1.0])
    for start in round_open:
        multiply(start, ROUND_BRACKET)
    for start in square_open:
        multiply(start, 1 / ROUND_BRACKET)
    joined: list[list] = []
    for text, weight in parts:
        if joined and joined[-1][1] == weight:
            joined[-1][0] += text
        else:
            joined.append([text, weight])
    return tuple(Segment(text, float(weight)) for text, weight in joined) or (Segment("", 1.0),)


def plain_text(prompt: str) -> str:
    """``prompt`` without its weight syntax (what CLIP's text side should read for text similarity)."""
    return "".join(segment.text for segment in parse_weights(prompt))


def is_weighted(prompt: str) -> bool:
    """Whether any part of ``prompt`` carries a strength other than 1."""
    return any(segment.weight != 1.0 for segment in parse_weights(prompt))


def weighted_ids(tokenizer, segments: Sequence[Segment], length: int | None = None) -> tuple[list[int], list[float]]:
    """Token ids and per-position strengths of one prompt, laid out as the diffusers pipeline pads it.

    Each part is tokenized on its own (as A1111 does); the ids are ``[start] + parts + [end]`` padded with the
    tokenizer's pad token to ``length`` (default its ``model_max_length``), the parts cut to fit; T5 has no
    start token. Start, end and padding get 1.0.
    """
    ids: list[int] = []
    weights: list[float] = []
    for segment in segments:
        part = tokenizer(segment.text, add_special_tokens=False).input_ids if segment.text else []
        ids += part
        weights += [segment.weight] * len(part)
    length = int(tokenizer.model_max_length) if length is None else length
    start = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    room = length - len(start) - 1
    ids, weights = ids[:room], weights[:room]
    ids = [*start, *ids, tokenizer.eos_token_id]
    weights = [1.0] * len(start) + [*weights, 1.0]
    padding = length - len(ids)
    return ids + [tokenizer.pad_token_id] * padding, weights + [1.0] * padding


def emphasize(hidden: torch.Tensor, multipliers: torch.Tensor) -> torch.Tensor:
    """A1111's rule on one text encoder's output: ``hidden`` ``[B, T, D]`` times ``multipliers`` ``[B, T]``
    position by position, each prompt then rescaled to its unweighted mean (computed in float32)."""
    z = hidden.float()
    weighted = z * multipliers.to(z.device, torch.float32).unsqueeze(-1)
    original = z.mean(dim=(1, 2), keepdim=True)
    rescaled = weighted * (original / weighted.mean(dim=(1, 2), keepdim=True))
    return rescaled.to(hidden.dtype)


def encode_weighted(text: PromptEncoder, prompts: Sequence[str]) -> PromptEmbeds:
    """Encode ``prompts`` with their strengths: :meth:`PromptEncoder.encode` when none is weighted
    (the diffusers pipeline's encoding, unchanged), else the rule of the module docstring."""
    parsed = [parse_weights(prompt) for prompt in prompts]
    if all(segment.weight == 1.0 for segments in parsed for segment in segments):
        return text.encode(["".join(s.text for s in segments) for segments in parsed])
    layouts = [
        [weighted_ids(tokenizer, segments, length) for segments in parsed]
        for tokenizer, length in zip(text.tokenizers, text.lengths)
    ]
    sides = text.encode_sides([torch.tensor([ids for ids, _ in layout]) for layout in layouts])
    weighted = [
        (emphasize(states, torch.tensor([weights for _, weights in layout])), pooled)
        for (states, pooled), layout in zip(sides, layouts)
    ]
    return text.join(weighted)
