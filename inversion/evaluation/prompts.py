"""Evaluation prompts for scoring a learned word. Our own wording.

``{}`` marks where the word goes: the learned token, the concept's class word (for text
similarity) or a caption's noun phrase (for the words-only baseline). Object prompts keep the
article outside ``{}`` ("a photo of a {} on the beach"), so a token, a class word ("cat") and a
described phrase ("fluffy ginger cat") all read naturally. Style prompts end "in the style of {}".

Three kinds of prompt, after the method's evaluation: recontextualisation (the concept somewhere
new), restyling (the concept in another medium) and property change (the concept altered).
"""

from __future__ import annotations

import re
from pathlib import Path

from inversion.errors import InputError

PLACEHOLDER = "{}"

OBJECT_RECONTEXTUALISATION: tuple[str, ...] = (
    "a photo of a {} on the beach",
    "a photo of a {} in the snow",
    "a photo of a {} on a wooden kitchen table",
    "a photo of a {} in a forest clearing",
    "a photo of a {} on a city street at night",
)
OBJECT_RESTYLING: tuple[str, ...] = (
    "an oil painting of a {}",
    "a watercolor painting of a {}",
    "a pencil sketch of a {}",
)
OBJECT_PROPERTY_CHANGE: tuple[str, ...] = (
    "a photo of a red {}",
    "a photo of a shiny {}",
    "a photo of a {} made of glass",
)
OBJECT_PROMPTS: tuple[str, ...] = OBJECT_RECONTEXTUALISATION + OBJECT_RESTYLING + OBJECT_PROPERTY_CHANGE

STYLE_PROMPTS: tuple[str, ...] = (
    "a painting of a harbour in the style of {}",
    "a painting of a mountain village in the style of {}",
    "a portrait of an old man in the style of {}",
    "a still life of fruit in the style of {}",
    "a city street in the rain in the style of {}",
    "a cat asleep on a windowsill in the style of {}",
    "a lighthouse at dawn in the style of {}",
    "a forest path in autumn in the style of {}",
    "a bicycle leaning against a wall in the style of {}",
    "a bowl of soup on a table in the style of {}",
)


def default_prompts(property: str) -> tuple[str, ...]:
    """The default evaluation prompts for an ``object`` or a ``style`` concept."""
    return STYLE_PROMPTS if property == "style" else OBJECT_PROMPTS


def fill(prompt: str, phrase: str) -> str:
    """``prompt`` with every ``{}`` replaced by ``phrase`` (other braces are left alone)."""
    return prompt.replace(PLACEHOLDER, phrase)


def check_prompts(prompts: tuple[str, ...] | list[str], source: str = "prompts") -> tuple[str, ...]:
    """Validate a prompt set: non-empty, every prompt non-blank and containing ``{}``."""
    prompts = tuple(prompts)
    if not prompts:
        raise InputError(f"{source}: no prompts")
    for number, prompt in enumerate(prompts, 1):
        if not prompt.strip():
            raise InputError(f"{source}: prompt {number} is empty")
        if PLACEHOLDER not in prompt:
            raise InputError(f"{source}: prompt {number} {prompt!r} lacks {{}} where the word goes")
    return prompts


def load_prompts(path: Path) -> tuple[str, ...]:
    """Read a prompt file: one prompt per line, each containing ``{}``; blank lines and ``#`` comments skipped."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise InputError(f"prompts file not found: {path}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise InputError(f"cannot read prompts file {path}: {exc}") from exc
    prompts = []
    for number, line in enumerate(text.splitlines(), 1):
        prompt = line.strip()
        if not prompt or prompt.startswith("#"):
            continue
        if PLACEHOLDER not in prompt:
            raise InputError(f"{path}, line {number}: prompt {prompt!r} lacks {{}} where the word goes")
        prompts.append(prompt)
    if not prompts:
        raise InputError(f"prompts file {path} holds no prompts")
    return tuple(prompts)


def default_captions(initializer: str, property: str = "object") -> list[str]:
    """The words-only description of a concept when its metadata gives none.

    ``a photo of a {initializer}`` for objects, ``a painting in the style of {initializer}`` for styles.
    """
    if property == "style":
        return [f"a painting in the style of {initializer}"]
    return [f"a photo of a {initializer}"]


_OBJECT_LEAD = re.compile(
    r"^(?:(?:a|an|the)\s+)?(?:(?:close-up|good|clear|cropped)\s+)?"
    r"(?:photo|photograph|picture|image|snapshot)\s+of(?:\s+|$)",
    re.IGNORECASE,
)
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
_STYLE_LEAD = re.compile(r"^.*?\bin\s+the\s+style\s+of(?:\s+|$)", re.IGNORECASE)


def caption_phrase(caption: str, property: str = "object") -> str:
    """The part of a caption that stands in for the token in an evaluation prompt.

    Objects: the noun phrase without a leading "a photo of" and article — "a photo of a fluffy
    ginger cat" → "fluffy ginger cat" (the prompts supply the article). Styles: what follows
    "in the style of" — "a painting in the style of van gogh" → "van gogh".
    """
    phrase = " ".join(caption.split()).rstrip(".")
    if property == "style":
        phrase = _STYLE_LEAD.sub("", phrase)
    else:
        phrase = _ARTICLE.sub("", _OBJECT_LEAD.sub("", phrase))
    if not phrase.strip():
        raise InputError(f"caption {caption!r} leaves no words to describe the concept")
    return phrase.strip()
