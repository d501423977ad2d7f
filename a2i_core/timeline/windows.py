"""A recording heard window by window: the mapper's prediction for each encoder window (heard with its neighbours,
``timeline.context``), scored against the mapper's prompt bank and smoothed into events; and each event's own
conditioning, the mapper's answer to the event's windows heard as one clip."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from a2i_core.core.params import TimelineParams
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import predict_clips
from a2i_core.timeline.events import Event, segment, window_scores

PREDICT_BATCH = 512  # windows mapped at once: an hour of VGGish windows (3,750) in a few passes, memory bounded


@dataclass
class Windows:
    """What the timeline needs of a recording: its window embeddings and levels and the encoder's clock."""

    frames: np.ndarray  # (n, D): one embedding per encoder window
    levels_db: np.ndarray  # (n,)
    hop: float  # seconds between windows' starts
    seconds: float  # how long the recording is (as heard)


def window_pooled(artifact: MapperArtifact, frames: np.ndarray, context: int) -> np.ndarray:
    """The mapper's pooled prediction (n, P) for each window, heard with ``context // 2`` windows either side (fewer
    at the ends), as a clip of those windows."""
    half = context // 2
    n = len(frames)
    rows = []
    for first in range(0, n, PREDICT_BATCH):
        clips = [frames[max(0, i - half) : i + half + 1] for i in range(first, min(n, first + PREDICT_BATCH))]
        rows.append(predict_clips(artifact.mapper, clips)[0])  # (b, P)
    return np.concatenate(rows)


def label_windows(artifact: MapperArtifact, heard: Windows, cfg: TimelineParams) -> list[Event]:
    """The recording's events: every window scored against the prompt bank and smoothed (``events.segment``)."""
    pooled = window_pooled(artifact, heard.frames, cfg.context)  # (n, P)
    scores = window_scores(pooled, artifact.prompt_pooled, cfg.temperature)  # (n, K)
    return segment(scores, heard.levels_db, artifact.prompts, heard.hop, heard.seconds, cfg)


def event_windows(event: Event, hop: float, n: int) -> slice:
    """The windows an event covers (its boundaries lie on window starts); at least one."""
    first = min(n - 1, round(event.start / hop))
    return slice(first, max(first + 1, min(n, round(event.end / hop))))


def event_conditioning(artifact: MapperArtifact, heard: Windows, events: list[Event]
                       ) -> tuple[np.ndarray, np.ndarray | None]:
    """Each event's conditioning: the mapper's prediction for its windows heard as one clip, as training heard
    clips: pooled (E, P) and, for a tokens mapper, tokens (E, N, D)."""
    n = len(heard.frames)
    return predict_clips(artifact.mapper, [heard.frames[event_windows(e, heard.hop, n)] for e in events])
