"""Placeholder tokens: adding a new word with N vectors to a tokenizer and text encoder (CLIP or T5).

A token ``<t>`` with N vectors becomes the added tokens ``<t>``, ``<t>_1``, …, ``<t>_{N-1}`` — the
naming diffusers' ``load_textual_inversion`` uses, so its pipelines expand ``<t>`` in a prompt to
all N tokens by themselves. For training, :func:`expand_token` does the same expansion.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch

from inversion.errors import TokenError
from inversion.text.placeholders import vector_names  # the names live with the torch-free word checks


@dataclass(frozen=True)
class PlaceholderToken:
    """A placeholder word installed in a tokenizer: its vector names and their token ids."""

    token: str
    names: tuple[str, ...]
    ids: tuple[int, ...]

    @property
    def num_vectors(self) -> int:
        return len(self.ids)


def expand_token(text: str, token: str, num_vectors: int) -> str:
    """Replace each whole-word ``token`` in ``text`` by its N vector names separated by spaces."""
    if num_vectors == 1:
        return text
    left = r"(?<![\w])" if re.match(r"\w", token[0]) else ""
    right = r"(?![\w])" if re.match(r"\w", token[-1]) else r"(?!_\d)"
    pattern = re.compile(left + re.escape(token) + right)
    return pattern.sub(" ".join(vector_names(token, num_vectors)), text)


def initializer_ids(tokenizer, initializer: str) -> list[int]:
    """Token ids of ``initializer`` without the start/end tokens; a clear error if there are none."""
    ids = tokenizer(initializer, add_special_tokens=False).input_ids
    if not ids:
        raise TokenError(f"initializer {initializer!r} tokenises to nothing; use a plain word such as 'cat'")
    return list(ids)


def initial_vectors(text_encoder, tokenizer, initializer: str, num_vectors: int) -> torch.Tensor:
    """Starting vectors ``[num_vectors, dim]`` (fp32) from the embeddings of the initializer's tokens.

    With one vector and a multi-token initializer (``"teddy bear"``) the vector is their mean; with
    several vectors, vector i takes token ``i mod k`` of the k initializer tokens.
    """
    ids = initializer_ids(tokenizer, initializer)
    table = text_encoder.get_input_embeddings().weight.detach().float().cpu()
    return _spread(table[torch.tensor(ids)], num_vectors)


def cross_initial_vectors(text_encoder, tokenizer, initializer: str, num_vectors: int) -> torch.Tensor:
    """Cross Initialization's starting vectors ``[num_vectors, dim]`` (fp32): the text encoder's output
    (``last_hidden_state``) at the initializer's token positions of ``<bos> initializer <eos>`` (T5, which has
    no start token: ``initializer </s>``), fed back as input embeddings. Spread over the vectors as
    :func:`initial_vectors` spreads the rows.

    No padding is needed: CLIP's causal attention lets no position before ``<eos>`` see what follows, and T5
    reads just the initializer and its end token.
    """
    ids = initializer_ids(tokenizer, initializer)
    start = [] if tokenizer.bos_token_id is None else [tokenizer.bos_token_id]
    prompt = torch.tensor([[*start, *ids, tokenizer.eos_token_id]])
    with torch.no_grad():
        hidden = text_encoder(prompt.to(next(text_encoder.parameters()).device)).last_hidden_state
    return _spread(hidden[0, len(start) : len(start) + len(ids)].detach().float().cpu(), num_vectors)


def _spread(rows: torch.Tensor, num_vectors: int) -> torch.Tensor:
    """One vector: the mean of ``rows``; several: vector i is row ``i mod k``."""
    if num_vectors == 1:
        return rows.mean(dim=0, keepdim=True).clone()
    return torch.stack([rows[i % len(rows)] for i in range(num_vectors)]).clone()


def register_token(tokenizer, token: str, num_vectors: int) -> PlaceholderToken:
    """Add ``token``'s N vector names to ``tokenizer``; a clear error if one is already in the vocabulary."""
    names = vector_names(token, num_vectors)
    vocab = tokenizer.get_vocab()
    taken = [name for name in names if name in vocab]
    if taken:
        raise TokenError(
            f"token {taken[0]} is already in the vocabulary; choose a new word such as <{token.strip('<>')}-1>"
        )
    if tokenizer.add_tokens(list(names)) != len(names):
        raise TokenError(f"tokenizer refused some of the tokens {', '.join(names)}")
    ids = tuple(tokenizer.convert_tokens_to_ids(list(names)))
    for name, token_id in zip(names, ids):
        if tokenizer(name, add_special_tokens=False).input_ids != [token_id]:
            raise TokenError(f"token {name} does not tokenise to a single id; choose a word like <my-thing>")
    return PlaceholderToken(token, names, ids)


class PlaceholderEmbedding(torch.nn.Module):
    """A token-embedding layer that looks up frozen rows and substitutes learned vectors for placeholder ids.

    The base table is never modified (so it stays bit-identical), and ids past its end are allowed:
    they are the placeholders added to a copy of the tokenizer.
    """

    def __init__(self, base: torch.nn.Embedding) -> None:
        super().__init__()
        self.base = base
        self.vectors: list[torch.Tensor] = []
        self._ids: list[int] = []
        self._columns = slice(None)
        self.register_buffer("_slot", torch.empty(0, dtype=torch.long), persistent=False)

    @property
    def weight(self) -> torch.Tensor:  # transformers reads .weight for dtype/device and size checks
        return self.base.weight

    def set_vectors(
        self, placeholders: list[PlaceholderToken], vectors: list[torch.Tensor], columns: slice = slice(None)
    ) -> None:
        """Use ``vectors[k][:, columns]`` (``[N_k, dim]``, may require grad) for the ids of ``placeholders[k]``.

        ``columns`` picks this encoder's part of vectors that serve several text encoders (SDXL).
        """
        ids = [i for p in placeholders for i in p.ids]
        size = max([self.base.num_embeddings - 1, *ids]) + 1
        slot = torch.full((size,), -1, dtype=torch.long)
        slot[torch.tensor(ids, dtype=torch.long)] = torch.arange(len(ids))
        self._slot = slot.to(self.base.weight.device)
        self._ids = ids
        self._columns = columns
        self.vectors = list(vectors)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        frozen = self.base(input_ids.clamp(max=self.base.num_embeddings - 1))
        if not self._ids:
            return frozen
        slot = self._slot[input_ids]
        table = torch.cat(self.vectors)[:, self._columns].to(dtype=frozen.dtype, device=frozen.device)
        learned = table[slot.clamp(min=0)]
        return torch.where((slot >= 0).unsqueeze(-1), learned, frozen)


def token_embedding_owner(text_encoder) -> tuple[torch.nn.Module, str]:
    """The module holding the text encoder's token embedding and the attribute it is under: CLIP's
    ``text_model.embeddings.token_embedding``, T5's ``encoder.embed_tokens`` (what its encoder stack reads;
    ``shared`` is the same table)."""
    if getattr(text_encoder.config, "model_type", None) == "t5":
        return text_encoder.encoder, "embed_tokens"
    owner = getattr(getattr(text_encoder, "text_model", text_encoder), "embeddings", None)
    if owner is None or not hasattr(owner, "token_embedding"):
        raise TokenError(
            f"{type(text_encoder).__name__} is neither a CLIP- nor a T5-style text encoder (no token embedding)"
        )
    return owner, "token_embedding"


@contextmanager
def placeholder_embedding(text_encoder) -> Iterator[PlaceholderEmbedding]:
    """Temporarily swap the text encoder's token embedding for a :class:`PlaceholderEmbedding`."""
    owner, name = token_embedding_owner(text_encoder)
    original = getattr(owner, name)
    base = original.base if isinstance(original, PlaceholderEmbedding) else original
    if not isinstance(base, torch.nn.Embedding):
        raise TokenError(f"{type(text_encoder).__name__}'s {name} is a {type(base).__name__}, not an Embedding")
    layer = PlaceholderEmbedding(base)
    setattr(owner, name, layer)
    try:
        yield layer
    finally:
        setattr(owner, name, original)


def encode_text(tokenizer, text_encoder, prompts: list[str]) -> torch.Tensor:
    """Per-token hidden states ``[B, 77, dim]`` of ``prompts`` (padded to the model's max length)."""
    ids = tokenizer(
        prompts, padding="max_length", truncation=True, max_length=tokenizer.model_max_length, return_tensors="pt"
    ).input_ids
    device = next(text_encoder.parameters()).device
    return text_encoder(ids.to(device))[0]
