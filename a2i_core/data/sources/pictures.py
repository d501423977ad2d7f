"""Simple procedural pictures, one per prompt: how the synthetic classes look (their clips' reference frames) and
what the offline profile's tiny SD3 learns to draw.

Each of the synthetic sound classes gets a picture a person would name (a siren's red and blue light bar, blue
rain streaks, a clock face, ...), each on its own background colour so that even a blurry rendering keeps its
class. A prompt is matched by keyword; any other prompt gets a pattern drawn from its sha256, so every prompt set
has distinct, reproducible pictures. Shapes are laid out in unit coordinates and drawn at any size.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable

import numpy as np
from PIL import Image, ImageDraw

Box = tuple[float, float, float, float]  # (x0, y0, x1, y1) in unit coordinates
Painter = Callable[["Canvas"], None]
SUPERSAMPLE = 2  # drawn at twice the size, then box-filtered down: smooth edges, the same at every size


class Canvas:
    """A square PIL drawing surface addressed in unit coordinates, so one layout serves every size."""

    def __init__(self, size: int, background: tuple[int, int, int]) -> None:
        self.size = size * SUPERSAMPLE
        self.image = Image.new("RGB", (self.size, self.size), background)
        self.draw = ImageDraw.Draw(self.image)

    def _px(self, box: Box) -> list[float]:
        return [v * self.size for v in box]

    def rect(self, box: Box, fill: tuple[int, int, int]) -> None:
        self.draw.rectangle(self._px(box), fill=fill)

    def ellipse(self, box: Box, fill: tuple[int, int, int] | None = None,
                outline: tuple[int, int, int] | None = None, width: float = 0.0) -> None:
        self.draw.ellipse(self._px(box), fill=fill, outline=outline, width=max(1, round(width * self.size)))

    def polygon(self, points: list[tuple[float, float]], fill: tuple[int, int, int]) -> None:
        self.draw.polygon([(x * self.size, y * self.size) for x, y in points], fill=fill)

    def line(self, points: list[tuple[float, float]], fill: tuple[int, int, int], width: float) -> None:
        self.draw.line([(x * self.size, y * self.size) for x, y in points], fill=fill,
                       width=max(1, round(width * self.size)))


def _siren(c: Canvas) -> None:
    # A police light bar: red left, blue right, on a dark car roof.
    c.rect((0.05, 0.62, 0.95, 0.95), (40, 40, 60))
    c.rect((0.08, 0.30, 0.48, 0.56), (235, 20, 20))
    c.rect((0.52, 0.30, 0.92, 0.56), (20, 60, 240))


def _bell(c: Canvas) -> None:
    # A golden bell (dome, flared body, clapper) on purple.
    c.ellipse((0.30, 0.12, 0.70, 0.45), fill=(240, 190, 30))
    c.polygon([(0.30, 0.30), (0.70, 0.30), (0.85, 0.78), (0.15, 0.78)], fill=(240, 190, 30))
    c.ellipse((0.42, 0.74, 0.58, 0.90), fill=(120, 70, 10))


def _rain(c: Canvas) -> None:
    # Light blue diagonal streaks over a slate street.
    for i in range(-3, 7):
        x = i * 0.18
        c.line([(x, 0.0), (x + 0.35, 1.0)], fill=(120, 190, 255), width=0.06)


def _engine(c: Canvas) -> None:
    # An engine block: a dark grey body with three silver cylinders, on orange.
    c.rect((0.15, 0.45, 0.85, 0.85), (60, 60, 60))
    for i in range(3):
        x = 0.22 + i * 0.21
        c.rect((x, 0.18, x + 0.14, 0.48), (200, 200, 210))


def _birds(c: Canvas) -> None:
    # A tree (brown trunk, green crown) under a sky, a yellow bird on it.
    c.rect((0.44, 0.55, 0.56, 1.0), (110, 70, 30))
    c.ellipse((0.12, 0.08, 0.88, 0.68), fill=(30, 150, 40))
    c.ellipse((0.60, 0.22, 0.78, 0.36), fill=(255, 230, 0))


def _dog(c: Canvas) -> None:
    # A brown dog in profile (body, head, legs, dark ear) on a pale ground.
    brown = (140, 80, 30)
    c.ellipse((0.15, 0.40, 0.70, 0.70), fill=brown)
    c.ellipse((0.58, 0.22, 0.88, 0.50), fill=brown)
    for x in (0.22, 0.34, 0.50, 0.60):
        c.rect((x, 0.62, x + 0.07, 0.88), brown)
    c.ellipse((0.60, 0.22, 0.70, 0.40), fill=(50, 30, 10))


def _drums(c: Canvas) -> None:
    # A bass drum (white head, red rim) between two yellow cymbals, on teal.
    c.ellipse((0.25, 0.40, 0.75, 0.90), fill=(245, 245, 245), outline=(220, 30, 60), width=0.07)
    c.ellipse((0.02, 0.18, 0.32, 0.30), fill=(250, 210, 40))
    c.ellipse((0.68, 0.18, 0.98, 0.30), fill=(250, 210, 40))


def _clock(c: Canvas) -> None:
    # A clock face with a rim and two hands, on dark green.
    c.ellipse((0.12, 0.12, 0.88, 0.88), fill=(250, 250, 240), outline=(20, 20, 20), width=0.05)
    c.line([(0.5, 0.5), (0.5, 0.2)], fill=(20, 20, 20), width=0.05)
    c.line([(0.5, 0.5), (0.72, 0.6)], fill=(20, 20, 20), width=0.05)


# (keywords, background, painter); the first entry with a keyword in the prompt wins, so "police car siren" is
# a siren even though "car" is also an engine's word.
KNOWN: list[tuple[tuple[str, ...], tuple[int, int, int], Painter]] = [
    (("siren", "police"), (15, 15, 20), _siren),
    (("bell", "church"), (80, 30, 110), _bell),
    (("rain",), (60, 70, 85), _rain),
    (("engine", "motor"), (240, 130, 30), _engine),
    (("bird",), (150, 210, 250), _birds),
    (("dog", "bark"), (235, 225, 190), _dog),
    (("drum",), (20, 120, 120), _drums),
    (("clock", "tick"), (20, 70, 40), _clock),
]


def _keyword_match(prompt: str) -> tuple[tuple[int, int, int], Painter] | None:
    words = prompt.lower()
    for keywords, background, painter in KNOWN:
        if any(k in words for k in keywords):
            return background, painter
    return None


def _hashed(prompt: str) -> tuple[tuple[int, int, int], Painter]:
    """A background and three coloured squares or discs drawn from the prompt's sha256: distinct for distinct
    prompts, the same on every machine."""
    seed = int.from_bytes(hashlib.sha256(prompt.encode()).digest()[:8], "little")
    rng = np.random.default_rng(seed)

    def colour() -> tuple[int, int, int]:
        r, g, b = (int(v) for v in rng.integers(0, 256, 3))
        return r, g, b

    background = colour()
    shapes = []
    for _ in range(3):
        x, y = (float(v) for v in rng.uniform(0.05, 0.6, 2))
        extent = float(rng.uniform(0.25, 0.4))
        shapes.append((bool(rng.integers(0, 2)), (x, y, x + extent, y + extent), colour()))

    def paint(c: Canvas) -> None:
        for disc, box, fill in shapes:
            if disc:
                c.ellipse(box, fill=fill)
            else:
                c.rect(box, fill)

    return background, paint


def picture(prompt: str, size: int) -> Image.Image:
    """The prompt's picture, ``size`` x ``size`` RGB: the same pixels on every call."""
    background, paint = _keyword_match(prompt) or _hashed(prompt)
    canvas = Canvas(size, background)
    paint(canvas)
    return canvas.image.resize((size, size), Image.Resampling.BOX)


def picture_array(prompt: str, size: int) -> np.ndarray:
    """The picture as float32 (3, size, size) in [-1, 1], the range SD3's VAE works in."""
    pixels = np.asarray(picture(prompt, size), np.float32) / 127.5 - 1.0  # (size, size, 3)
    return np.ascontiguousarray(pixels.transpose(2, 0, 1))
