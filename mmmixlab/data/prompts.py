"""Zero-shot prompt templates (ULIP/CLIP style) and human-readable class names."""

from __future__ import annotations

import re

__all__ = ["PROMPT_TEMPLATES", "class_prompts", "display_name"]

PROMPT_TEMPLATES: list[str] = [
    "a point cloud model of a {}.",
    "a 3D model of a {}.",
    "a point cloud of a {}.",
    "a 3D rendering of a {}.",
    "a rendering of the {}.",
    "there is a {} in the scene.",
    "there is the {} in the scene.",
    "a photo of a {} in the scene.",
    "a photo of the {} in the scene.",
    "a photo of one {} in the scene.",
    "a good photo of a {}.",
    "a cropped photo of the {}.",
    "a photo of the small {}.",
    "a photo of the large {}.",
    "itap of a {}.",
    "a low resolution 3D model of a {}.",
]

_ARTICLE = re.compile(r"\b([Aa]) (?=[aeiouAEIOU])")


def display_name(name: str) -> str:
    """Human-readable class name: ``flower_pot`` -> ``flower pot``."""
    if not isinstance(name, str) or not name.strip():
        raise ValueError(f"class name must be a non-empty string, got {name!r}")
    return " ".join(re.split(r"[_\-\s]+", name.strip()))


def fix_articles(text: str) -> str:
    """``a orange cup`` -> ``an orange cup`` (the standalone article only)."""
    return _ARTICLE.sub(lambda m: m.group(1) + "n ", text)


def class_prompts(class_name: str, templates: list[str] | None = None) -> list[str]:
    """All prompt templates filled with the display name of ``class_name``."""
    name = display_name(class_name)
    templates = PROMPT_TEMPLATES if templates is None else templates
    return [fix_articles(t.format(name)) for t in templates]
