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
* ``sd3`` — SD 3 / 3.5: CLIP-L (768-d), OpenCLIP bigG (1280-d) and T5-XXL (4096-d), as diffusers'
  ``StableDiffusion3Pipeline.encode_prompt`` joins them: both CLIP penultimate hidden states side by side
  (77 tokens), zero-padded to T5's width, then T5's last hidden state (:data:`T5_LENGTHS` tokens) after them
  along the token axis; the pooled vector is both CLIP projections side by side (768 + 1280).
* ``flux`` — Flux.1: CLIP-L gives only the pooled vector (its ``pooler_output``); the sequence the
  transformer attends to is T5's last hidden state (:data:`T5_LENGTHS` tokens), with all-zero text ids.

A learned word of a model with several text encoders has one set of vectors per text encoder, T5 included.
The trainer keeps them as one parameter ``[N, sum(widths)]`` (columns in text-encoder order, e.g.
``768 + 1280 + 4096`` for SD 3; AdamW is element-wise, so this equals one parameter per encoder), and
:class:`PromptEncoder` hands each encoder its own columns. The word's vector names are added to every
tokenizer (the T5 one too), where they may get different ids.

:class:`PromptEncoder` is the one object the trainer and the renderer use for the text side: copies
of the tokenizers with the placeholder tokens added, the swapped-in embedding layers, prompt → UNet
conditioning, and prompt → pipeline arguments. diffusers' SD 3 pipeline has no embedding loader, so every
family renders from embeddings built here (``prompt_embeds`` / ``pooled_prompt_embeds``).
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


#: T5's sequence length per family: the default ``max_sequence_length`` of the family's diffusers pipeline
T5_LENGTHS: dict[Family, int] = {"sd3": 256, "flux": 512}


@dataclass(frozen=True)
class PromptEmbeds:
    """Encoded prompts: what the denoiser attends to, ``[B, T, D]`` (77 CLIP tokens; SD 3: 77 + 256, Flux: 512
    T5 tokens), and, for SDXL / SD 3 / Flux, the pooled vector ``[B, P]``."""

    hidden: torch.Tensor
    pooled: torch.Tensor | None = None


#: one text encoder's output for a batch: its per-token hidden states as the family reads them (CLIP's last
#: or penultimate layer, T5's last) and its pooled vector (``None`` where the family does not use one)
SideOutput = tuple[torch.Tensor, torch.Tensor | None]


def _is_t5(encoder: Any) -> bool:
    return getattr(encoder.config, "model_type", None) == "t5"


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


def text_widths(components: DiffusionComponents) -> tuple[int, ...]:
    """The width of each text encoder's token embedding, in order (the columns of a learned word)."""
    return tuple(int(encoder.get_input_embeddings().weight.shape[1]) for _, encoder in components.text_sides)


def check_fits(components: DiffusionComponents, embedding: LearnedEmbedding) -> None:
    """Raise :class:`EmbeddingFormatError` unless ``embedding`` has one table per text encoder of
    ``components``, of its width (no tokenizer is copied: a :class:`PromptEncoder` need not be built)."""
    widths = text_widths(components)
    if embedding.widths != widths:
        raise EmbeddingFormatError(
            f"embedding {embedding.token} has vectors of width {'+'.join(map(str, embedding.widths))}, but "
            f"this {components.family} model's text encoders take {'+'.join(map(str, widths))}: "
            f"it was learned for another model"
        )


class PromptEncoder:
    """The text side of one training or rendering call on ``components``.

    Holds private copies of the model's tokenizers (placeholder tokens are added to them, never to
    the shared model's), and encodes prompts the way the model's diffusers pipeline does.
    """

    def __init__(self, components: DiffusionComponents) -> None:
        self.components = components
        self.family: Family = components.family
        self.encoders = [encoder for _, encoder in components.text_sides]
        self.tokenizers = [copy.deepcopy(tokenizer) for tokenizer, _ in components.text_sides]
        #: the width of each text encoder's token embedding, in order (the columns of a learned word)
        self.widths: tuple[int, ...] = text_widths(components)
        #: the tokens each text encoder reads a prompt as (CLIP: its 77; T5: :data:`T5_LENGTHS`)
        self.lengths: tuple[int, ...] = tuple(
            T5_LENGTHS[self.family] if _is_t5(e) else int(t.model_max_length)
            for t, e in zip(self.tokenizers, self.encoders)
        )
        self._registered: dict[str, tuple[PlaceholderToken, ...]] = {}  # token → its placeholder per tokenizer

    @property
    def width(self) -> int:
        """Columns of a learned word's joined vectors (the sum of :attr:`widths`)."""
        return sum(self.widths)

    @property
    def tokenizer(self):
        """The first tokenizer (CLIP-L's)."""
        return self.tokenizers[0]

    # -- placeholder words ---------------------------------------------------------------------------
    def register(self, token: str, num_vectors: int) -> PlaceholderToken:
        """Add ``token``'s N vector names to every tokenizer (T5's too) and return the first tokenizer's
        placeholder; :meth:`learned` finds each tokenizer's own ids (T5's differ from CLIP's) by the token."""
        placeholders = tuple(register_token(tokenizer, token, num_vectors) for tokenizer in self.tokenizers)
        self._registered[token] = placeholders
        return placeholders[0]

    def placeholders(self, token: str) -> tuple[PlaceholderToken, ...]:
        """``token``'s placeholder in each tokenizer, in encoder order (:class:`TokenError` if not registered)."""
        if token not in self._registered:
            raise TokenError(f"{token} is not registered with this prompt encoder")
        return self._registered[token]

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
        check_fits(self.components, embedding)

    @contextmanager
    def learned(self, placeholders: Sequence[PlaceholderToken], vectors: Sequence[torch.Tensor]) -> Iterator[None]:
        """Install the words: ``vectors[k]`` (``[N_k, width]``, may require grad) for ``placeholders[k]``.

        Each text encoder's token embedding is swapped for a layer that reads its own columns of the
        vectors at its own tokenizer's ids (T5 included); the shared model is restored on exit.
        """
        with ExitStack() as stack:
            start = 0
            for index, (encoder, width) in enumerate(zip(self.encoders, self.widths)):
                layer = stack.enter_context(placeholder_embedding(encoder))
                own = [self.placeholders(p.token)[index] if p.token in self._registered else p for p in placeholders]
                layer.set_vectors(own, list(vectors), columns=slice(start, start + width))
                start += width
            yield

    # -- prompts -------------------------------------------------------------------------------------
    def tokenize(self, prompts: Sequence[str]) -> list[torch.Tensor]:
        """Each tokenizer's ids of ``prompts``, ``[B, length]``, padded as the family's pipeline pads them."""
        return [
            tokenizer(
                list(prompts), padding="max_length", truncation=True, max_length=length, return_tensors="pt"
            ).input_ids
            for tokenizer, length in zip(self.tokenizers, self.lengths)
        ]

    def encode(self, prompts: Sequence[str]) -> PromptEmbeds:
        """Encode ``prompts`` exactly as the family's diffusers pipeline does (its ``encode_prompt``)."""
        return self.encode_ids(self.tokenize(prompts))

    def encode_ids(self, token_ids: Sequence[torch.Tensor]) -> PromptEmbeds:
        """Encode tokenized prompts: ``token_ids[i]`` ``[B, lengths[i]]`` for text encoder i (as :meth:`encode` does
        after tokenizing; :mod:`inversion.text.weighting` tokenizes weighted prompts itself)."""
        return self.join(self.encode_sides(token_ids))

    def encode_sides(self, token_ids: Sequence[torch.Tensor]) -> list[SideOutput]:
        """Each text encoder's own output for its ids (before :meth:`join` puts them together)."""
        sides: list[SideOutput] = []
        for ids, encoder in zip(token_ids, self.encoders):
            ids = ids.to(next(encoder.parameters()).device)
            if _is_t5(encoder) or self.family in ("sd1", "sd2"):
                sides.append((encoder(ids)[0], None))
            elif self.family == "flux":  # CLIP-L: only its pooled output is read
                out = encoder(ids)
                sides.append((out.last_hidden_state, out.pooler_output))
            else:  # SDXL, SD 3: penultimate states; a projection model's first output is its pooled vector
                out = encoder(ids, output_hidden_states=True)
                sides.append((out.hidden_states[-2], out[0] if out[0].ndim == 2 else None))
        return sides

    def join(self, sides: Sequence[SideOutput]) -> PromptEmbeds:
        """The conditioning of the family's denoiser from its text encoders' outputs (module docstring)."""
        states = [state for state, _ in sides]
        pooled = [vector for _, vector in sides if vector is not None]
        if self.family in ("sd1", "sd2"):
            return PromptEmbeds(states[0])
        if self.family == "sdxl":
            return PromptEmbeds(torch.cat(states, dim=-1), pooled[-1] if pooled else None)
        if self.family == "flux":
            return PromptEmbeds(states[1], pooled[0])
        clip = torch.cat(states[:2], dim=-1)
        clip = torch.nn.functional.pad(clip, (0, states[2].shape[-1] - clip.shape[-1]))
        return PromptEmbeds(torch.cat([clip, states[2]], dim=-2), torch.cat(pooled, dim=-1))

    def negative(self) -> PromptEmbeds:
        """The unconditional embeddings (batch 1) for classifier-free guidance, as the pipeline makes them
        without a negative prompt: the empty prompt (SD 1.x / 2.x / 3), or zeros for SDXL (its
        ``force_zeros_for_empty_prompt``). Flux has none (its guidance is distilled); :meth:`pipeline_kwargs`
        leaves it out there."""
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

    def transformer_kwargs(self, embeds: PromptEmbeds, dtype: torch.dtype) -> dict[str, Any]:
        """The text side of an SD 3 or Flux transformer call for ``embeds``: the sequence, the pooled vector
        and, for Flux, its text ids (all zeros ``[T, 3]``, as ``FluxPipeline.encode_prompt`` makes them)."""
        if embeds.pooled is None:
            raise ValueError(f"a {self.family} transformer needs the pooled text embedding")
        kwargs: dict[str, Any] = {
            "encoder_hidden_states": embeds.hidden.to(dtype),
            "pooled_projections": embeds.pooled.to(dtype),
        }
        if self.family == "flux":
            kwargs["txt_ids"] = torch.zeros(embeds.hidden.shape[1], 3, device=embeds.hidden.device, dtype=dtype)
        return kwargs

    def pipeline_kwargs(self, embeds: PromptEmbeds, negative: PromptEmbeds) -> dict[str, Any]:
        """Keyword arguments of the family's diffusers pipeline call for precomputed embeddings
        (``negative`` of batch 1 is repeated to the batch of ``embeds``; Flux takes no negative)."""
        batch = embeds.hidden.shape[0]
        if self.family == "flux":
            return {"prompt_embeds": embeds.hidden, "pooled_prompt_embeds": embeds.pooled}
        kwargs: dict[str, Any] = {
            "prompt_embeds": embeds.hidden,
            "negative_prompt_embeds": negative.hidden.expand(batch, -1, -1),
        }
        if self.family in ("sdxl", "sd3"):
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
