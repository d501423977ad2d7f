"""timeline: the test split's clips end to end (seeded, with known boundaries: ``timeline.recordings``), each made
into a timeline and storyboard as `a2i timeline` makes them (and the first ``timeline.eval.films`` into a film),
scored the sound-event-detection field's way (sed_eval: segment-based F1 at ``segment_seconds``, event-based F1
with an onset collar), with the keyframes' zero-shot accuracy under CLIP and the films' flicker (frame-to-frame
change inside the film's events against across their boundaries)."""

from __future__ import annotations

import logging
import shutil
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image

from a2i_core.core.audio_io import SAMPLE_RATE
from a2i_core.core.devices import resolve_device
from a2i_core.core.distributed import SOLO, World
from a2i_core.core.files import atomic_dir, atomic_path, write_json
from a2i_core.core.params import RenderParams, TimelineParams
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.image_scores import ClipScorer, zero_shot_correct
from a2i_core.diffusion.render import RenderSettings
from a2i_core.pipeline.clips import test_clips
from a2i_core.serve.generate import SoundToImage
from a2i_core.timeline.events import Event, read_csv
from a2i_core.timeline.make import Timeline, make_timeline
from a2i_core.timeline.recordings import build_recordings, save_recording, usable_clips
from a2i_core.timeline.scoring import flicker, sed_metrics
from a2i_core.timeline.video import film_frames

log = logging.getLogger(__name__)
# What metrics/timeline.json holds (`dvc exp show` compares them); the counts behind them go to the report.
HEADLINE = ("segment_f1", "event_f1", "keyframes_zero_shot_top1", "flicker_inside", "flicker_across")


def build_set(cfg: TimelineParams, candidates: Path, audio: Path, recordings: Path) -> str | None:
    """The evaluation recordings, written whole into ``recordings``/<name>/ (audio.wav, reference.csv); or, when the
    test split cannot make one (a small folder of your own: fewer than two classes with clips long enough), none,
    and the reason: a timeline needs known boundaries between different sounds, and the rest of the pipeline must
    not stop for want of them."""
    clips = test_clips(candidates, audio)
    by_class, _ = usable_clips(clips, cfg.eval, SAMPLE_RATE)
    reason = None
    if len(by_class) < 2:
        reason = (f"the test split has clips of {len(by_class)} class(es) at least {cfg.eval.short_seconds:g} s long "
                  "with one label each, and a recording of known boundaries needs two")
        log.warning("timeline: no evaluation recordings: %s; its metrics are null", reason)
    built = [] if reason else build_recordings(clips, cfg.eval, SAMPLE_RATE)
    with atomic_dir(recordings) as tmp:
        for recording in built:
            save_recording(recording, tmp / recording.name)
    return reason


def keyframe_truth(timeline: Timeline, reference: list[Event]) -> list[str | None]:
    """For each keyframe (labelled event), the reference label it overlaps most (None: it lies in a gap)."""
    truth = []
    for event in timeline.labelled:
        overlap = {}
        for ref in reference:
            if ref.label is not None:
                shared = min(event.end, ref.end) - max(event.start, ref.start)
                if shared > 0:
                    overlap[ref.label] = overlap.get(ref.label, 0.0) + shared
        truth.append(max(overlap, key=overlap.get) if overlap else None)
    return truth


def timed_frames(path: Path, fps: float) -> Iterator[tuple[float, np.ndarray]]:
    """(time, frame) of a film as a viewer sees it, one frame in memory at a time."""
    for i, frame in enumerate(film_frames(path)):
        yield (i + 0.5) / fps, frame


def timeline_eval(cfg: TimelineParams, render: RenderParams, clip_device: str, candidates: Path, audio: Path,
                  mapper_dir: Path, audio_encoder: Path, sd3: Path, clip: Path, recordings: Path, out: Path,
                  metrics: Path, report: Path, scores: Path, world: World = SOLO) -> dict | None:
    """Build the recordings, make each one's timeline (and films), score them; the main process writes ``metrics``
    (the headline numbers), ``report`` (every number, the counts behind them) and ``scores`` (a line per
    recording). Films' frames wait in ``.<out>.frames`` beside ``out`` (DVC empties ``out`` before a rerun): an
    interrupted film resumes from them."""
    staging = out.parent / f".{out.name}.tmp"  # written here, renamed to ``out`` when whole
    frames = out.parent / f".{out.name}.frames"
    skipped = None
    if world.is_main:
        shutil.rmtree(staging, ignore_errors=True)  # keyframes are cheap; films resume from ``frames``
        skipped = build_set(cfg, candidates, audio, recordings)
    world.barrier()
    names = sorted(p.name for p in recordings.iterdir() if p.is_dir())
    made = {}
    if names:
        engine = SoundToImage.from_pretrained(mapper_dir, audio_encoder, sd3, world.device(render.device),
                                              render.dtype)
        settings, fill = RenderSettings.from_params(render), SequenceFill.from_params(render)
        for k, name in enumerate(names):
            made[name] = make_timeline(engine, recordings / name / "audio.wav", staging / name, cfg, settings, fill,
                                       film=k < cfg.eval.films, preview=k == 0, used={"recording": name},
                                       frames_root=frames / name, world=world)
    if not world.is_main:
        return None
    if made:
        full, table = score(cfg, made, recordings, clip, clip_device, engine.artifact.prompts)
    else:
        full, table = {key: None for key in HEADLINE} | {"recordings": 0, "skipped": skipped}, pd.DataFrame()
    staging.mkdir(parents=True, exist_ok=True)
    if out.exists():
        shutil.rmtree(out)
    staging.rename(out)
    write_json(metrics, {key: full[key] for key in HEADLINE})
    write_json(report, full)
    with atomic_path(scores) as tmp:
        table.to_csv(tmp, index=False)
    return full


def score(cfg: TimelineParams, made: dict[str, Timeline], recordings: Path, clip: Path, clip_device: str,
          prompts: list[str]) -> tuple[dict, pd.DataFrame]:
    """The headline metrics and a line per recording."""
    references = {name: read_csv(recordings / name / "reference.csv") for name in made}
    estimated = {name: t.events for name, t in made.items()}
    report = sed_metrics(references, estimated, cfg.segment_seconds, cfg.collar_seconds)
    scorer = ClipScorer(clip, resolve_device(clip_device))
    prompt_emb = scorer.embed_prompts(prompts)  # (K, d)
    rows, correct = [], []
    for name, timeline in made.items():
        per = sed_metrics({name: references[name]}, {name: timeline.events}, cfg.segment_seconds,
                          cfg.collar_seconds)
        truth = keyframe_truth(timeline, references[name])
        hits = []
        if timeline.keyframes:
            image_emb = scorer.embed_images([Image.open(p).convert("RGB") for p in timeline.keyframes])  # (E, d)
            known = np.array([prompts.index(t) if t in prompts else -1 for t in truth])
            hits = [bool(h) and k >= 0 for h, k in zip(zero_shot_correct(image_emb, prompt_emb, np.maximum(known, 0)),
                                                     known, strict=True)]
        correct += hits
        row = {"recording": name, "seconds": round(timeline.seconds, 3), "reference_events": per["reference_events"],
               "events": per["estimated_events"], "segment_f1": per["segment_f1"], "event_f1": per["event_f1"],
               "keyframes": len(hits), "keyframes_correct": int(sum(hits))}
        if timeline.film is not None:
            boundaries = [e.start for e in timeline.events[1:]]
            row |= {f"flicker_{k}": v for k, v in flicker(timed_frames(timeline.film, cfg.fps), boundaries).items()}
        rows.append(row)
    table = pd.DataFrame(rows)
    report["keyframes_zero_shot_top1"] = float(np.mean(correct)) if correct else None
    report["keyframes"] = len(correct)
    films = table.dropna(subset=["flicker_inside"]) if "flicker_inside" in table else table.iloc[:0]
    for kind in ("inside", "across"):
        report[f"flicker_{kind}"] = float(films[f"flicker_{kind}"].mean()) if len(films) else None
    report["chance_zero_shot_top1"] = 1 / len(prompts)
    return report, table
