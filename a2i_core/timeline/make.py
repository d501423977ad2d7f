"""One recording made into its timeline, storyboard and (optionally) film: what `a2i timeline`, the app's timeline
tab and the timeline stage each call.

The parts (the audio encoder, the mapper and SD3's image side, loaded once on one device) come as an
:class:`Engine`: `a2i_core.serve.generate.SoundToImage` is one, and nothing here imports it.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from PIL import Image

from a2i_core.core.audio_io import claimed_seconds
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.files import atomic_dir, hold_folder
from a2i_core.core.params import TimelineParams
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.images import save_image
from a2i_core.diffusion.render import RenderSettings
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.timeline.events import Event, write_csv, write_vtt
from a2i_core.timeline.film import check_length, make_film
from a2i_core.timeline.storyboard import MAX_SHEET, draw_keyframes, keyframe_name, save_storyboard, thumbnail
from a2i_core.timeline.windows import Windows, event_conditioning, label_windows

log = logging.getLogger(__name__)
FILM_NAME = "film.mp4"
LOCK_NAME = ".timeline.lock"
BUSY = "another timeline is being made in this folder right now; wait for it to finish or choose another folder"
PREVIEW_NAME = "film.webp"


class Engine(Protocol):
    artifact: MapperArtifact
    encoder: Any  # an a2i_core.audio.encoder.AudioEncoder
    pipe: Any  # SD3's transformer, VAE and scheduler
    device: torch.device
    dtype: torch.dtype
    max_seconds: float | None  # a recording is heard up to here

    def hear(self, path: Path, levels: list[np.ndarray] | None = None) -> Any: ...


@dataclass
class Timeline:
    """What was made of one recording, and where."""

    events: list[Event]
    seconds: float
    folder: Path
    keyframes: list[Path] = field(default_factory=list)  # one per labelled event, in time order
    storyboard: Path | None = None
    film: Path | None = None
    preview: Path | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def labelled(self) -> list[Event]:
        return [e for e in self.events if e.label is not None]


def listen(engine: Engine, path: Path) -> tuple[Windows, list[str]]:
    """The recording's window embeddings and levels (streamed: memory does not grow with its length), and notes."""
    levels: list[np.ndarray] = []
    heard = engine.hear(path, levels)
    encoder = engine.encoder
    windows = Windows(heard.frames, np.concatenate(levels), encoder.step / encoder.sample_rate, heard.seconds)
    return windows, list(heard.notes)


def check_claimed_length(path: Path, cfg: TimelineParams, max_seconds: float | None) -> None:
    """Refuse, in one line, a film longer than ``timeline.max_frames`` by what the file's header claims (heard up to
    ``max_seconds``): before anything is loaded or decoded. A file that claims nothing is judged once heard."""
    claimed = claimed_seconds(path)
    if claimed is not None:
        check_length(claimed if max_seconds is None else min(claimed, max_seconds), cfg)


def make_timeline(engine: Engine, path: Path, out: Path, cfg: TimelineParams, settings: RenderSettings,
                  fill: SequenceFill, film: bool = True, preview: bool = False, used: dict | None = None,
                  frames_root: Path | None = None, world: World = SOLO) -> Timeline:
    """``out``/timeline.csv and timeline.vtt, keyframes/ (one PNG per event, ``used`` and its event in its text) and
    storyboard.png, and with ``film`` film.mp4 (and with ``preview`` film.webp). A film longer than the cap is
    refused before anything is drawn. The film's frames are kept in ``frames_root`` (default: beside the film)
    until it is whole: a rerun after an interruption renders only the missing ones."""
    if film:  # what the header claims, before an hour is decoded; what was heard, after
        check_claimed_length(path, cfg, engine.max_seconds)
    # One timeline per folder at a time: a second one into the same folder is refused before it writes anything.
    with hold_folder(out, LOCK_NAME, BUSY) if world.is_main else contextlib.nullcontext():
        return _make(engine, path, out, cfg, settings, fill, film, preview, used or {}, frames_root, world)


def _make(engine: Engine, path: Path, out: Path, cfg: TimelineParams, settings: RenderSettings, fill: SequenceFill,
          film: bool, preview: bool, used: dict, frames_root: Path | None, world: World) -> Timeline:
    windows, notes = listen(engine, path)
    if film:
        check_length(windows.seconds, cfg)
    artifact = engine.artifact
    events = label_windows(artifact, windows, cfg)
    labelled = [e for e in events if e.label is not None]
    result = Timeline(events, windows.seconds, out, notes=notes)
    if world.is_main:
        write_csv(events, out / "timeline.csv")
        write_vtt(events, out / "timeline.vtt")
    if not labelled:
        result.notes.append("no event was heard with confidence: the timeline holds no labelled event (see "
                            "timeline.min_score and timeline.silence_db)")
        pooled, tokens = np.zeros((0, artifact.empty_pooled.shape[0]), np.float32), None
    else:
        pooled, tokens = event_conditioning(artifact, windows, labelled)  # (E, P), (E, N, D)
        if world.is_main:
            images = draw_keyframes(engine.pipe, artifact, pooled, tokens, fill, settings, engine.device,
                                    engine.dtype)
            result.keyframes, thumbnails = save_keyframes(images, labelled, out / "keyframes", used, settings.seed)
            result.storyboard = save_storyboard(thumbnails, labelled[: len(thumbnails)], out)
            if len(labelled) > MAX_SHEET:
                result.notes.append(f"the storyboard shows the first {MAX_SHEET} of {len(labelled)} keyframes; "
                                    "every one is in keyframes/")
    if film:
        result.film = out / FILM_NAME
        result.preview = out / PREVIEW_NAME if preview else None
        make_film(engine.pipe, artifact, events, pooled, tokens, fill, settings, engine.device, engine.dtype,
                  windows.seconds, cfg, path, result.film, result.preview, frames_root, world)
    return result


def save_keyframes(images: Iterator[tuple[int, Image.Image]], events: list[Event], folder: Path, used: dict,
                   seed: int) -> tuple[list[Path], list[Image.Image]]:
    """Each keyframe as a PNG as it is drawn, its text holding the settings, its seed and its event (as generate's
    PNGs do), the folder replaced whole (no keyframe of an earlier run stays); returns the paths and the sheet's
    thumbnails (the first MAX_SHEET): no more than one batch of full-size keyframes is ever held."""
    names = [keyframe_name(k, event) for k, event in enumerate(events)]
    thumbnails = []
    with atomic_dir(folder) as tmp:
        for k, image in images:
            event = events[k]
            event_text = {"start": event.start, "end": event.end, "label": event.label, "score": round(event.score, 4)}
            save_image(image, tmp / names[k], {**used, "event": event_text}, seed)
            if k < MAX_SHEET:
                thumbnails.append(thumbnail(image))
    return [folder / name for name in names], thumbnails
