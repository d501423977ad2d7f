"""How well timelines match their references, the sound-event-detection field's way (sed_eval, DCASE's reference
toolbox: segment-based and event-based F1 and error rate), and how much a film flickers inside events against
across their boundaries.
"""

from __future__ import annotations

import math
import warnings
from bisect import bisect_right
from collections.abc import Iterable
from types import ModuleType

import numpy as np

from a2i_core.core.errors import A2IError, printable
from a2i_core.timeline.events import Event

# DCASE's event-based offset collar: the onset collar, or this share of the reference event's length if longer.
OFFSET_LENGTH_SHARE = 0.2


def sed_metrics(reference: dict[str, list[Event]], estimated: dict[str, list[Event]], segment_seconds: float,
                collar_seconds: float) -> dict:
    """Segment-based F1 and error rate (``segment_seconds`` segments) and event-based F1 and error rate (onset
    collar ``collar_seconds``; offset collar the same or 20 % of the event's length), over all recordings.

    Both dicts map a recording's name to its events; "no event" spans are not events. An undefined measure (no
    reference events) is None.
    """
    _check_metric_inputs(reference, estimated, segment_seconds, collar_seconds)
    sed_eval = _sed_eval()
    labels = sorted({e.label for events in (*reference.values(), *estimated.values()) for e in events if e.label})
    segments = sed_eval.sound_event.SegmentBasedMetrics(labels, time_resolution=float(segment_seconds))
    events = sed_eval.sound_event.EventBasedMetrics(labels, t_collar=float(collar_seconds),
                                                    percentage_of_length=OFFSET_LENGTH_SHARE)
    for name in sorted(reference):
        ref, est = _as_sed(name, reference[name]), _as_sed(name, estimated[name])
        length = max((e.end for e in (*reference[name], *estimated[name])), default=0.0)  # the recording's length
        segments.evaluate(ref, est, evaluated_length_seconds=length)
        events.evaluate(ref, est)
    return _summary(segments, events, reference, estimated)


def _check_metric_inputs(reference: dict[str, list[Event]], estimated: dict[str, list[Event]],
                         segment_seconds: float, collar_seconds: float) -> None:
    if set(reference) != set(estimated):
        odd = sorted(set(reference) ^ set(estimated))[0]
        side = "a reference" if odd in reference else "an estimate"
        raise A2IError(f"timeline metrics: recording {printable(odd)!r} has only {side}: score the same recordings")
    if not (math.isfinite(segment_seconds) and segment_seconds > 0):
        raise A2IError(f"timeline metrics: segment_seconds must be > 0, got {segment_seconds}")
    if not (math.isfinite(collar_seconds) and collar_seconds > 0):
        raise A2IError(f"timeline metrics: collar_seconds must be > 0 for event-based F1, got {collar_seconds}")


def _sed_eval() -> ModuleType:
    with warnings.catch_warnings():
        # dcase_util imports pkg_resources, whose deprecation warning says nothing about a2i.
        warnings.filterwarnings("ignore", message=".*pkg_resources", category=UserWarning)
        import sed_eval
    return sed_eval


def _as_sed(name: str, events: list[Event]) -> list[dict]:
    return [{"filename": name, "event_label": e.label, "onset": e.start, "offset": e.end} for e in events if e.label]


def _summary(segments: object, events: object, reference: dict[str, list[Event]],
             estimated: dict[str, list[Event]]) -> dict:
    by_segment, by_event = segments.results_overall_metrics(), events.results_overall_metrics()
    counts = {side: sum(e.label is not None for events_ in events_by_name.values() for e in events_)
              for side, events_by_name in (("reference", reference), ("estimated", estimated))}
    rated = counts["reference"] > 0  # an error rate is per reference event: sed_eval divides by a tiny number
    return {
        "segment_f1": _defined(by_segment["f_measure"]["f_measure"]),
        "segment_error_rate": _defined(by_segment["error_rate"]["error_rate"]) if rated else None,
        "event_f1": _defined(by_event["f_measure"]["f_measure"]),
        "event_error_rate": _defined(by_event["error_rate"]["error_rate"]) if rated else None,
        "recordings": len(reference),
        "reference_events": counts["reference"],
        "estimated_events": counts["estimated"],
    }


def _defined(value: float) -> float | None:
    """sed_eval's NaN (nothing to measure) as None: NaN is not JSON."""
    value = float(value)
    return None if math.isnan(value) else value


def flicker(frames: Iterable[tuple[float, np.ndarray]], boundaries: list[float]) -> dict:
    """Mean absolute change (0..1) between consecutive frames, for pairs inside one event and pairs across a
    boundary (a boundary at time b separates a frame before b from one at or after b). Frames are (time, HxWx3
    uint8) in time order and are read one at a time: a film is never held whole."""
    edges = sorted(boundaries)
    sums, counts = [0.0, 0.0], [0, 0]  # [inside, across]
    previous: tuple[float, np.ndarray] | None = None
    for index, (time, frame) in enumerate(frames):
        frame = _checked_frame(index, time, frame, previous)
        if previous is not None:
            across = bisect_right(edges, previous[0]) != bisect_right(edges, time)
            sums[across] += float(np.abs(frame - previous[1]).mean()) / 255
            counts[across] += 1
        previous = (time, frame)
    return {"inside": sums[0] / counts[0] if counts[0] else None,
            "across": sums[1] / counts[1] if counts[1] else None,
            "pairs_inside": counts[0], "pairs_across": counts[1]}


def _checked_frame(index: int, time: float, frame: np.ndarray,
                   previous: tuple[float, np.ndarray] | None) -> np.ndarray:
    """The frame as int16 (differences of uint8 would wrap), once its time, type and shape are checked."""
    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
        raise A2IError(f"flicker: frame {index} must be HxWx3 uint8, got {frame.dtype} {frame.shape}")
    if not math.isfinite(time) or (previous is not None and time <= previous[0]):
        raise A2IError(f"flicker: frame {index} at {time} s is not after the previous frame: frames must be in order")
    if previous is not None and frame.shape != previous[1].shape:
        raise A2IError(f"flicker: frame {index} is {frame.shape}, the previous one {previous[1].shape}")
    return frame.astype(np.int16)
