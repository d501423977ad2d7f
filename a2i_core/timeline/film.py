"""The film: one frame every 1/fps seconds, its conditioning moving from event to event's keyframe conditioning
(held while an event lasts, eased across each boundary: ``motion``), every frame from the same starting noise so the
picture evolves instead of jumping; the frames are written to a folder as they are made (a rerun renders only the
missing ones, across processes as render does) and streamed into an MP4 with the recording's audio (``video``).
A stretch with no event is drawn from the empty prompt: what the model draws when it hears nothing."""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import shutil
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from a2i_core.core.distributed import SOLO, World
from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.files import atomic_path
from a2i_core.core.params import TimelineParams
from a2i_core.diffusion.fills import SequenceFill, fill_sequence
from a2i_core.diffusion.render import RenderSettings, render_iter
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.timeline.events import Event
from a2i_core.timeline.motion import blend, frame_count, frame_plan, frame_times
from a2i_core.timeline.video import FrameFolder, encode_film, preview
from a2i_core.timeline.warm import render_film_frames

log = logging.getLogger(__name__)
DIGEST_FILE = "inputs.sha256"  # in the frames folder: what its frames were made from
LATENT_FILE = "last_latent.safetensors"  # a warm film's last frame's latent, to resume from
BLEND_CHUNK = 256  # frames whose conditioning is interpolated at once (an hour at 4 frames/s is 14,400)


def check_length(seconds: float, cfg: TimelineParams) -> int:
    """The film's frame count, or one line before any work when it is more than ``timeline.max_frames``."""
    n = frame_count(seconds, cfg.fps)
    if n > cfg.max_frames:
        raise A2IError(f"a film of {seconds:,.1f} s at {cfg.fps:g} frames/s is {n:,} frames, more than "
                       f"timeline.max_frames ({cfg.max_frames:,}): lower the frame rate or raise the cap")
    return n


def segment_keys(artifact: MapperArtifact, events: list[Event], pooled: np.ndarray, tokens: np.ndarray | None
                 ) -> tuple[np.ndarray, np.ndarray | None]:
    """One key per segment of the timeline (S = len(events)): a labelled event's own conditioning (``pooled``,
    ``tokens``: one row per labelled event, in order), a stretch with no event the empty prompt's."""
    rows = iter(range(len(pooled)))
    keys, token_keys = [], []
    for event in events:
        if event.label is None:
            keys.append(artifact.empty_pooled)
            if tokens is not None:
                token_keys.append(artifact.empty_sequence[: tokens.shape[1]])
        else:
            row = next(rows)
            keys.append(pooled[row])
            if tokens is not None:
                token_keys.append(tokens[row])
    return (np.stack(keys).astype(np.float32),  # (S, P)
            np.stack(token_keys).astype(np.float32) if tokens is not None else None)  # (S, N, D)


def inputs_digest(keys: np.ndarray, token_keys: np.ndarray | None, events: list[Event], context: dict) -> str:
    """What every frame of a film is made from: reused frames must come from the very same inputs."""
    digest = hashlib.sha256(json.dumps(context, sort_keys=True).encode())
    digest.update(json.dumps([[e.start, e.end] for e in events]).encode())
    for array in (keys, token_keys):
        if array is not None:
            digest.update(np.ascontiguousarray(array, np.float32).tobytes())
    return digest.hexdigest()


def forget_other_frames(folder: Path, digest: str) -> None:
    """Delete the frames in ``folder`` made from other inputs (another recording, other settings), under the lock."""
    record = folder / DIGEST_FILE
    if record.is_file() and record.read_text().strip() == digest:
        return
    stale = sorted(folder.glob("frame_*.png"))
    if stale:
        log.info("%s: %d frames made from other inputs: starting the film over", folder, len(stale))
    for path in stale:
        path.unlink()
    record.write_text(digest + "\n")


def render_warm(pipe, artifact: MapperArtifact, frame_pooled: np.ndarray, sequences, settings: RenderSettings,
                device, dtype, strength: float, frames: FrameFolder, todo: list[int]) -> None:
    """The missing frames, each from the previous frame's latent noised to ``strength`` (``warm``): resumed from the
    first missing frame when the latent of the frame before it was kept, else from the film's start."""
    if not todo:
        return
    start, previous = todo[0], None
    kept = frames.folder / LATENT_FILE
    if start > 0 and kept.is_file():
        try:
            stored = load_file(str(kept))
            if int(stored["index"].item()) == start - 1:
                previous = stored["latent"]  # its shape and values are checked by render_film_frames
        except Exception as err:  # a damaged or foreign file: only a restart is lost
            log.warning("%s: unreadable (%s): a warm film restarts from its first frame", kept, first_line(err))
    if start > 0 and previous is None:
        log.info("%s: no latent of frame %d kept: a warm film restarts from its first frame", frames.folder, start - 1)
        start = 0
    for i, image, latent in render_film_frames(pipe, frame_pooled, sequences, artifact.empty_pooled,
                                               artifact.empty_sequence, settings, device, dtype, settings.seed,
                                               strength, start=start, previous_latent=previous):
        frames.save(i, image)
        with atomic_path(kept) as tmp:  # after the frame: a kill between the two redraws one frame, no worse
            save_file({"latent": latent.contiguous(), "index": torch.tensor(i)}, str(tmp))


def make_film(pipe, artifact: MapperArtifact, events: list[Event], pooled: np.ndarray, tokens: np.ndarray | None,
              fill: SequenceFill, settings: RenderSettings, device, dtype, seconds: float, cfg: TimelineParams,
              audio: Path, out: Path, preview_path: Path | None = None, frames_dir: Path | None = None,
              world: World = SOLO) -> dict:
    """Render the film's missing frames into ``frames_dir`` (default ``<out>.frames`` beside it) and, on the main
    process, encode them with ``audio`` into ``out``; the frames go once the film is whole. Returns a report."""
    n = check_length(seconds, cfg)
    keys, token_keys = segment_keys(artifact, events, pooled, tokens)
    times = frame_times(seconds, cfg.fps)  # (n,)
    plan = frame_plan(times, np.array([e.start for e in events]), np.array([e.end for e in events]),
                      cfg.ease_seconds)
    frame_pooled = np.empty((n, keys.shape[1]), np.float32)  # (n, P): slerp's float64 temporaries, a chunk at a time
    for first in range(0, n, BLEND_CHUNK):
        chunk = slice(first, min(n, first + BLEND_CHUNK))
        frame_pooled[chunk] = blend(keys, plan.take(chunk))
    fills = fill.rows(frame_pooled, artifact.empty_sequence, artifact.prompt_pooled, artifact.prompt_sequences)

    def sequences(indices: list[int]) -> np.ndarray:  # (B, L, D): the batch's frames only
        heads = None if token_keys is None else blend(token_keys, plan.take(np.asarray(indices)))
        return np.stack([fill_sequence(fills(i), None if heads is None else heads[k])
                         for k, i in enumerate(indices)])

    context = {"settings": asdict(settings), "fill": asdict(fill), "fps": cfg.fps, "ease": cfg.ease_seconds,
               "warm": cfg.warm_strength, "seconds": seconds}
    folder = frames_dir if frames_dir is not None else out.parent / f"{out.name}.frames"
    folder.mkdir(parents=True, exist_ok=True)
    frames = FrameFolder(folder, n, size=(settings.size, settings.size))  # a frame of another size is redrawn
    # One film per folder at a time (a second `a2i timeline` into the same place is refused); the other processes
    # of a torchrun render their own frames under the main one's lock.
    with frames.lock() if world.is_main else contextlib.nullcontext():
        if world.is_main:
            forget_other_frames(folder, inputs_digest(keys, token_keys, events, context))
        world.barrier()
        todo = frames.missing()
        log.info("film %s: %d frames x %d steps = %s denoising steps%s; %d frames already made", out.name, n,
                 settings.steps, f"{n * settings.steps:,}", " (each on a doubled batch: guidance)"
                 if settings.guidance > 1 else "", n - len(todo))
        if cfg.warm_strength > 0:
            if world.is_main:  # each frame starts from the one before: in order, on one process
                render_warm(pipe, artifact, frame_pooled, sequences, settings, device, dtype, cfg.warm_strength,
                            frames, todo)
        else:
            done = set(range(n)) - set(todo)
            for i, image in render_iter(pipe, frame_pooled, sequences, artifact.empty_pooled,
                                        artifact.empty_sequence, settings, device, dtype, seeds=[settings.seed] * n,
                                        world=world, skip=done, desc="film"):
                frames.save(i, image)
        world.barrier()
        if world.is_main:
            encode_film(frames, cfg.fps, audio, out)
            if preview_path is not None:
                preview(frames, preview_path, cfg.fps, width=min(settings.size, 256))
    world.barrier()
    if world.is_main:
        shutil.rmtree(folder, ignore_errors=True)
    return {"frames": n, "fps": cfg.fps, "rendered": len(todo), "reused": n - len(todo)}
