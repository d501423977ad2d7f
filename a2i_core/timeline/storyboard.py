"""The storyboard: one keyframe per event, drawn from the event's own conditioning, and a sheet of them with each
event's times and label under its frame. Every keyframe starts from the same noise (the seed), as the film's frames
do, so a keyframe is the picture the film holds while its event lasts."""

from __future__ import annotations

import textwrap
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

from a2i_core.diffusion.fills import SequenceFill, fill_sequence
from a2i_core.diffusion.images import SHEET_CELL, save_png
from a2i_core.diffusion.render import RenderSettings, render_iter
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.timeline.events import Event

SHEET_COLUMNS = 6  # keyframes per line of the sheet
# Keyframes on the sheet: an hour of audio can hold hundreds of events, and a sheet of them all would be hundreds of
# MB to draw and no use to look at; every keyframe is in keyframes/ whatever their number.
MAX_SHEET = 120
CAPTION_HEIGHT = 50  # three lines of text under each keyframe: its times and score, its label on two


def clock(seconds: float) -> str:
    """A time as a player shows it: 7.7 -> 0:07.7, 3725.25 -> 1:02:05.2."""
    tenths = round(seconds * 10)
    whole, tenth = divmod(tenths, 10)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return (f"{hours}:{minutes:02d}:{secs:02d}.{tenth}" if hours else f"{minutes}:{secs:02d}.{tenth}")


def caption(event: Event) -> tuple[str, str]:
    """What is said of a keyframe: its times and score, and its label."""
    return f"{clock(event.start)}-{clock(event.end)}  {event.score:.2f}", str(event.label)


def draw_keyframes(pipe, artifact: MapperArtifact, pooled: np.ndarray, tokens: np.ndarray | None,
                   fill: SequenceFill, settings: RenderSettings, device, dtype) -> Iterator[tuple[int, Image.Image]]:
    """(index, image) for each row of ``pooled`` (E, P) (and ``tokens`` (E, N, D)), in order, a batch at a time
    (an hour holds hundreds of events), every one from the noise of ``settings.seed``, with the sequence positions
    the mapper does not predict filled by ``fill``."""
    fills = fill.rows(pooled, artifact.empty_sequence, artifact.prompt_pooled, artifact.prompt_sequences)

    def sequences(indices: list[int]) -> np.ndarray:  # (B, L, D)
        return np.stack([fill_sequence(fills(i), None if tokens is None else tokens[i]) for i in indices])

    yield from render_iter(pipe, pooled.astype(np.float32), sequences, artifact.empty_pooled,
                           artifact.empty_sequence, settings, device, dtype, seeds=[settings.seed] * len(pooled),
                           desc="keyframes")


def thumbnail(image: Image.Image, cell: int = SHEET_CELL) -> Image.Image:
    """A keyframe as the sheet shows it: all the sheet keeps of it."""
    return image.convert("RGB").resize((cell, cell))


def storyboard_sheet(images: list[Image.Image], events: list[Event], cell: int = SHEET_CELL,
                     columns: int = SHEET_COLUMNS) -> Image.Image:
    """The keyframes in time order, ``columns`` to a line, each with its event's times and label beneath."""
    lines = max(1, -(-len(images) // columns))
    width = cell * min(columns, max(1, len(images)))
    sheet = Image.new("RGB", (width, lines * (cell + CAPTION_HEIGHT)), "white")
    draw = ImageDraw.Draw(sheet)
    for k, (image, event) in enumerate(zip(images, events, strict=True)):
        x, y = (k % columns) * cell, (k // columns) * (cell + CAPTION_HEIGHT)
        sheet.paste(thumbnail(image, cell), (x, y))
        times, label = caption(event)
        draw.text((x + 4, y + cell + 3), times, fill="black")
        for line, text in enumerate(textwrap.wrap(label, cell // 6, max_lines=2, placeholder="...")):
            draw.text((x + 4, y + cell + 18 + 14 * line), text, fill="black")
    return sheet


def keyframe_name(k: int, event: Event) -> str:
    """A keyframe's file name: its order and start time (labels come from data and never name a file)."""
    return f"{k:03d}_{event.start:09.3f}s.png"


def save_storyboard(images: list[Image.Image], events: list[Event], folder: Path) -> Path:
    """The sheet, written whole; returns its path."""
    path = folder / "storyboard.png"
    save_png(storyboard_sheet(images, events), path)
    return path
