"""Model families: how each kind of Stable Diffusion turns a prompt into the UNet's conditioning.

* ``sd1`` — Stable Diffusion 1.x: one CLIP ViT-L text encoder (768-d); the UNet reads its last hidden
  state (after the final layer norm).
* ``sd2`` — Stable Diffusion 2.x: one OpenCLIP ViT-H text encoder (1024-d), stored by diffusers with its
  last layer removed, so its last hidden state *is* OpenCLIP's penultimate one; v-prediction, 768 px.
  The conditioning code is SD 1.x's; what differs (width, activation, padding token, prediction type,
  resolution) is data in the model folder.
* ``sdxl`` — SDXL: CLIP ViT-L (768-d) and OpenCLIP ViT-bigG (1280-d); the UNet reads both penultimate
  hidden states concatenated (2048-d), plus the bigG pooled projection and the micro-conditioning
  ``(original height, original width, crop top, crop left, target height, target width)``.

A learned word of an ``sdxl`` model has one set of vectors per text encoder. The trainer keeps them
as one parameter ``[N, 768 + 1280]`` (columns in text-encoder order; AdamW is element-wise, so this
equals two parameters), and :class:`PromptEncoder` hands each encoder its own columns.

:class:`PromptEncoder` is the one object the trainer and the renderer use for the text side: copies
of the tokenizers with the placeholder tokens added, the swapped-in embedding layers, prompt → UNet
conditioning, and prompt → pipeline arguments.
"""

from __future__ import annotations

import copy
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from PIL import Image

from inversion.embeddings.norms import VocabNorms, vocab_norms
from inversion.errors import EmbeddingFormatError, TokenError
from inversion.images import open_rgb
from inversion.model.info import Family
from inversion.text.tokens import (
    PlaceholderToken,
    cross_initial_vectors,
    initial_vectors,
    placeholder_embedding,
    register_token,
)

if TYPE_CHECKING:
    from inversion.embeddings.formats import LearnedEmbedding
    from inversion.model.components import DiffusionComponents


@dataclass(frozen=True)
class PromptEmbeds:
    """Encoded prompts: per-token hidden states ``[B, 77, D]`` and, for SDXL, the pooled projection ``[B, P]``."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None


def crop_conditioning(image: Image.Image, resolution: int, flipped: bool = False) -> tuple[int, int, int, int]:
    """SDXL's ``(original height, original width, crop top, crop left)`` of one training view.

    The view is ``image`` resized so its short side is ``resolution`` and centre-cropped to a square
    (:func:`inversion.images.center_crop_resize`); a mirrored view's crop is measured from the right.
    """
    width, height = image.size
    scale = resolution / min(width, height)
    top = max(0, round((height * scale - resolution) / 2))
    left = max(0, round((width * scale - resolution) / 2))
    if flipped:
        left = max(0, round(width * scale) - resolution - left)
    return height, width, top, left


class PromptEncoder:
    """The text side of one training or rendering call on ``components``.

    Holds private copies of the model's tokenizers (placeholder tokens are added to them, never to
    the shared model's), and encodes prompts the way the model's diffusers pipeline does.
    """

    def __init__(self, components: DiffusionComponents) -> None:
        self.components = components
        self.family: Family = components.family
        self.encoders = [components.text_encoder] + (
            [components.text_encoder_2] if components.text_encoder_2 is not None else []
        )
        self.tokenizers = [copy.deepcopy(components.tokenizer)] + (
            [copy.deepcopy(components.tokenizer_2)] if components.tokenizer_2 is not None else []
        )
        #: the width of each text encoder's token embedding, in order (the columns of a learned word)
        self.widths: tuple[int, ...] = tuple(int(e.get_input_embeddings().weight.shape[1]) for e in self.encoders)

    @property
    def width(self) -> int:
        """Columns of a learned word's joined vectors (the sum of :attr:`widths`)."""
        return sum(self.widths)

    @property
    def tokenizer(self):
        """The first tokenizer (every tokenizer tokenises a placeholder word to the same ids)."""
        return self.tokenizers[0]

    # -- placeholder words ---------------------------------------------------------------------------
    def register(self, token: str, num_vectors: int) -> PlaceholderToken:
        """Add ``token``'s N vector names to every tokenizer; they must get the same ids in each."""
        placeholders = [register_token(tokenizer, token, num_vectors) for tokenizer in self.tokenizers]
        if any(p.ids != placeholders[0].ids for p in placeholders):
            raise TokenError(
                f"{token} gets different ids in the model's tokenizers "
                f"({', '.join(str(p.ids) for p in placeholders)}); their vocabularies differ"
            )
        return placeholders[0]

    def initial_vectors(self, initializer: str, num_vectors: int, cross: bool = False) -> torch.Tensor:
        """Starting vectors ``[N, width]``: the initializer's embedding in each text encoder, side by side
        (``cross``: each encoder's output for it, Cross Initialization; :func:`cross_initial_vectors`)."""
        start = cross_initial_vectors if cross else initial_vectors
        return torch.cat(
            [
                start(encoder, tokenizer, initializer, num_vectors)
                for encoder, tokenizer in zip(self.encoders, self.tokenizers)
            ],
            dim=1,
        )

    def vocab_norms(self) -> tuple[VocabNorms, ...]:
        """Each text encoder's vocabulary row-norm statistics, in encoder order."""
        return tuple(vocab_norms(encoder.get_input_embeddings().weight) for encoder in self.encoders)

    def check(self, embedding: LearnedEmbedding) -> None:
        """Raise :class:`EmbeddingFormatError` unless ``embedding`` has one table per text encoder, of its width."""
        if embedding.widths != self.widths:
            raise EmbeddingFormatError(
                f"embedding {embedding.token} has vectors of width {'+'.join(map(str, embedding.widths))}, but "
                f"this {self.family} model's text encoders take {'+'.join(map(str, self.widths))}: "
                f"it was learned for another model"
            )

    @contextmanager
    def learned(self, placeholders: Sequence[PlaceholderToken], vectors: Sequence[torch.Tensor]) -> Iterator[None]:
        """Install the words: ``vectors[k]`` (``[N_k, width]``, may require grad) for ``placeholders[k]``.

        Each text encoder's token embedding is swapped for a layer that reads its own columns of the
        vectors; the shared model is restored on exit.
        """
        with ExitStack() as stack:
            start = 0
            for encoder, width in zip(self.encoders, self.widths):
                layer = stack.enter_context(placeholder_embedding(encoder))
                layer.set_vectors(list(placeholders), list(vectors), columns=slice(start, start + width))
                start += width
            yield

    # -- prompts -------------------------------------------------------------------------------------
    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Encode ``prompts`` exactly as the family's diffusers pipeline does (padded to 77 tokens)."""
        return self.encode_ids(
            [
                tokenizer(
                    list(prompts),
                    padding="max_length",
                    truncation=True,
                    max_length=tokenizer.model_max_length,
                    return_tensors="pt",
                ).input_ids
                for tokenizer in self.tokenizers
            ]
        )

    def encode_ids(self, token_ids: Sequence[torch.Tensor]) -> PromptEmbeds:
        """Encode tokenized prompts: ``token_ids[i]`` ``[B, 77]`` for text encoder i (as :meth:`encode` does
        after tokenizing; :mod:`inversion.text.weighting` tokenizes weighted prompts itself)."""
        states, pooled = [], None
        for ids, encoder in zip(token_ids, self.encoders):
            ids = ids.to(next(encoder.parameters()).device)
            if self.family != "sdxl":
                states.append(encoder(ids)[0])
                continue
            out = encoder(ids, output_hidden_states=True)
            if out[0].ndim == 2:  # the projection model (OpenCLIP bigG) gives the pooled embedding
                pooled = out[0]
            states.append(out.hidden_states[-2])
        return PromptEmbeds(torch.cat(states, dim=-1), pooled)

    def negative(self) -> PromptEmbeds:
        """The unconditional embeddings (batch 1) for classifier-free guidance, as the pipeline makes them
        without a negative prompt: the empty prompt, or zeros for SDXL (its ``force_zeros_for_empty_prompt``)."""
        empty = self.encode([""])
        if self.family == "sdxl":
            assert empty.pooled is not None
            return PromptEmbeds(torch.zeros_like(empty.hidden), torch.zeros_like(empty.pooled))
        return empty

    def unet_kwargs(
        self, embeds: PromptEmbeds, dtype: torch.dtype, time_ids: torch.Tensor | None = None
    ) -> dict[str, Any]:
        """Keyword arguments of the UNet call for ``embeds`` (SDXL also needs ``time_ids`` ``[B, 6]``)."""
        kwargs: dict[str, Any] = {"encoder_hidden_states": embeds.hidden.to(dtype)}
        if self.family == "sdxl":
            if embeds.pooled is None or time_ids is None:
                raise ValueError("an SDXL UNet needs the pooled text embedding and the micro-conditioning time ids")
            kwargs["added_cond_kwargs"] = {
                "text_embeds": embeds.pooled.to(dtype),
                "time_ids": time_ids.to(embeds.hidden.device, dtype),
            }
        return kwargs

    def pipeline_kwargs(self, embeds: PromptEmbeds, negative: PromptEmbeds) -> dict[str, Any]:
        """Keyword arguments of the family's diffusers pipeline call for precomputed embeddings
        (``negative`` of batch 1 is repeated to the batch of ``embeds``)."""
        batch = embeds.hidden.shape[0]
        kwargs: dict[str, Any] = {
            "prompt_embeds": embeds.hidden,
            "negative_prompt_embeds": negative.hidden.expand(batch, -1, -1),
        }
        if self.family == "sdxl":
            assert negative.pooled is not None
            kwargs.update(
                pooled_prompt_embeds=embeds.pooled, negative_pooled_prompt_embeds=negative.pooled.expand(batch, -1)
            )
        return kwargs

    def time_ids(self, files: Sequence[Path], resolution: int, flip: bool) -> torch.Tensor | None:
        """SDXL's micro-conditioning ``[V, 6]`` of the training views of ``files`` at ``resolution``: each
        image, then (with ``flip``) each mirror image, as the trainer caches them. ``None`` for the other families."""
        if self.family != "sdxl":
            return None
        images = [open_rgb(path) for path in files]
        views = [crop_conditioning(image, resolution) for image in images]
        if flip:
            views += [crop_conditioning(image, resolution, flipped=True) for image in images]
        return torch.tensor([[*view, resolution, resolution] for view in views], dtype=torch.float32)
