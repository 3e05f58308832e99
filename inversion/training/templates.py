"""Neutral prompt templates used while learning a word (the method's idea: captions that say nothing
about the concept except that it is there). ``{}`` stands for the placeholder token. Our own wording."""

from __future__ import annotations

OBJECT_TEMPLATES: tuple[str, ...] = (
    "a photo of {}",
    "a photo of a {}",
    "a photograph of the {}",
    "a close-up photo of {}",
    "a cropped photo of the {}",
    "a clear photo of {}",
    "a bright photo of the {}",
    "a dim photo of the {}",
    "a picture of {}",
    "an image showing {}",
    "a snapshot of the {}",
    "a good photo of {}",
    "a large {} in a photo",
    "a small {} in a photo",
    "a photo of one {}",
    "a nice photo of the {}",
)

STYLE_TEMPLATES: tuple[str, ...] = (
    "a painting in the style of {}",
    "an artwork in the style of {}",
    "a picture in the style of {}",
    "an illustration in the style of {}",
    "a rendition in the style of {}",
    "a small painting in the style of {}",
    "a large painting in the style of {}",
    "a cropped painting in the style of {}",
    "a bright painting in the style of {}",
    "a dark painting in the style of {}",
    "an image made in the style of {}",
    "a drawing in the style of {}",
)


def templates_for(property: str) -> tuple[str, ...]:
    """The training templates for an ``object`` or a ``style`` concept."""
    return STYLE_TEMPLATES if property == "style" else OBJECT_TEMPLATES
