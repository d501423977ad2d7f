"""Rendered pictures as files: PNGs written whole with their settings as text chunks, and the contact sheet."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from a2i_core.core.files import atomic_path

SHEET_CELL = 160  # pixels per contact-sheet image
SHEET_LABEL_WIDTH = 180  # the sound's label, left of its images
SETTINGS_KEY = "a2i"  # the PNG text chunk holding what made an image (read back by ``png_text``)


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: list[str], cell: int = SHEET_CELL) -> Image.Image:
    """A grid: one row per sound (its label, then one image per column), with a header naming the columns."""
    label_width, header = SHEET_LABEL_WIDTH, 24
    sheet = Image.new("RGB", (label_width + cell * len(columns), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((label_width + c * cell + 4, 6), name, fill="black")
    for r, (label, images) in enumerate(rows):
        y = header + r * cell
        draw.text((6, y + cell // 2 - 6), label[:28], fill="black")
        for c, image in enumerate(images):
            sheet.paste(image.convert("RGB").resize((cell, cell)), (label_width + c * cell, y))
    return sheet


def save_png(image, path: str | Path, text: dict[str, str] | None = None) -> None:
    """Write ``image`` whole or not at all; ``text`` goes into the PNG's tEXt chunks (read back by ``png_text``)."""
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def save_image(image, path: str | Path, used: dict[str, Any], seed: int) -> None:
    """One image as a PNG, written whole or not at all, with ``used`` (the settings that made it: the app's, `a2i
    generate`'s, a keyframe's) and its seed in its text: the image can be made again from the file alone."""
    save_png(image, path, text={SETTINGS_KEY: json.dumps({**used, "seed": seed})})


def png_text(path: str | Path) -> dict[str, str]:
    """The tEXt chunks of a PNG without decoding its pixels; empty when it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            return {k: v for k, v in image.info.items() if isinstance(v, str)}
    except (OSError, SyntaxError, ValueError):
        return {}
