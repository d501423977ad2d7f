"""How a film's conditioning moves: which frames a recording becomes, and for each frame which events' keyframes it
shows and how far it has moved from the one to the next.

Each event (a segment of the timeline) has one keyframe conditioning. A frame inside an event holds that keyframe;
a frame within ``ease_seconds / 2`` of a boundary is on its way from the one keyframe to the next, eased (slow out,
slow in) and exactly half way at the boundary itself. Embeddings move by spherical interpolation: a straight line
between two embeddings passes through shorter vectors than either, which SD3 draws as a washed-out picture.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np

from a2i_core.core.errors import A2IError

PARALLEL_SIN = 1e-6  # below this sine of the angle between two rows, slerp's division is noise: lerp instead
TILING_TOLERANCE_S = 1e-6  # how far one segment's end may be from the next one's start


class FramePlan(NamedTuple):
    """Per frame: the segment it moves from, the segment it moves to, and how far (0: all ``left``, 1: all
    ``right``). A frame held on one segment has ``left == right`` and weight 0."""

    left: np.ndarray  # (n,) int64
    right: np.ndarray  # (n,) int64
    weight: np.ndarray  # (n,) float64 in [0, 1]

    def take(self, frames: slice | np.ndarray) -> FramePlan:
        """The plan of some of the frames (a slice or indices), for blending a batch at a time."""
        return FramePlan(self.left[frames], self.right[frames], self.weight[frames])


def frame_count(duration: float, fps: float) -> int:
    """How many frames a film of ``duration`` seconds has at ``fps``: the nearest whole number, at least one."""
    _check_film(duration, fps)
    return max(1, round(duration * fps))


def frame_times(duration: float, fps: float) -> np.ndarray:
    """(n,) the time in the recording each frame shows: the centre of its 1/fps on screen, never past the end."""
    n = frame_count(duration, fps)
    # (i + 0.5) / fps <= duration whenever n is the rounded count; only a recording shorter than half a frame (n
    # forced to 1) would put its one frame past the end.
    return np.minimum((np.arange(n) + 0.5) / fps, duration)


def _check_film(duration: float, fps: float) -> None:
    if not (math.isfinite(duration) and duration >= 0):
        raise A2IError(f"a film's duration must be a finite number of seconds >= 0, got {duration}")
    if not (math.isfinite(fps) and fps > 0):
        raise A2IError(f"a film's frame rate must be a finite number > 0, got {fps}")


def ease(x: np.ndarray | float) -> np.ndarray:
    """Smoothstep: 0 at 0, 1 at 1, 0.5 at 0.5, flat at both ends; ``x`` clipped to [0, 1]."""
    x = np.clip(np.asarray(x, dtype=np.float64), 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


def slerp(a: np.ndarray, b: np.ndarray, w: np.ndarray | float) -> np.ndarray:
    """Rows of ``a`` and ``b`` (..., P) moved ``w`` (..., broadcast against the rows) of the way from a to b: the
    direction along the great circle, the norm linearly. Exactly ``a`` where w == 0 and ``b`` where w == 1.

    Rows that are (nearly) parallel, or where either is zero, are interpolated linearly (the same path, without
    dividing by a vanishing sine); (nearly) opposite rows turn through a fixed perpendicular direction rather than
    through zero. The result has the inputs' floating dtype (float64 for integers).
    """
    a, b = np.asarray(a), np.asarray(b)
    if a.shape != b.shape:
        raise ValueError(f"slerp needs rows of one shape, got {a.shape} and {b.shape}")
    dtype = np.result_type(a.dtype, b.dtype, np.float32)
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    w = np.broadcast_to(np.asarray(w, dtype=np.float64), a.shape[:-1])[..., None]  # (..., 1)
    na = np.linalg.norm(a64, axis=-1, keepdims=True)  # (..., 1)
    nb = np.linalg.norm(b64, axis=-1, keepdims=True)
    nonzero = (na > 0) & (nb > 0)
    ua = np.divide(a64, na, out=np.zeros_like(a64), where=nonzero)  # (..., P) unit rows, 0 where a row is zero
    ub = np.divide(b64, nb, out=np.zeros_like(b64), where=nonzero)
    # The angle from the chord and its complement: exact near 0 and near pi, where arccos of a dot product is not.
    omega = 2 * np.arctan2(np.linalg.norm(ua - ub, axis=-1, keepdims=True),
                           np.linalg.norm(ua + ub, axis=-1, keepdims=True))  # (..., 1) in [0, pi]
    sin = np.sin(omega)
    curved = nonzero & (sin > PARALLEL_SIN)
    safe_sin = np.where(curved, sin, 1.0)
    direction = (np.sin((1 - w) * omega) * ua + np.sin(w * omega) * ub) / safe_sin
    opposite = nonzero & (sin <= PARALLEL_SIN) & (omega > np.pi / 2) & (a.shape[-1] > 1)
    if opposite.any():
        half_turn = np.pi * w
        direction = np.where(opposite, np.cos(half_turn) * ua + np.sin(half_turn) * _perpendicular(ua), direction)
    moved = direction * ((1 - w) * na + w * nb)
    linear = (1 - w) * a64 + w * b64
    out = np.where(curved | opposite, moved, linear)
    out = np.where(w == 0, a64, np.where(w == 1, b64, out))
    return out.astype(dtype)


def _perpendicular(u: np.ndarray) -> np.ndarray:
    """Unit rows perpendicular to the unit rows ``u`` (..., P), P >= 2: the coordinate axis least along each row,
    made orthogonal to it (deterministic, so a film's frames do not depend on a random choice)."""
    axis = np.zeros_like(u)
    np.put_along_axis(axis, np.argmin(np.abs(u), axis=-1)[..., None], 1.0, axis=-1)
    perp = axis - np.sum(axis * u, axis=-1, keepdims=True) * u
    norm = np.linalg.norm(perp, axis=-1, keepdims=True)
    return np.divide(perp, norm, out=np.zeros_like(perp), where=norm > 0)


def frame_plan(times: np.ndarray, starts: np.ndarray, ends: np.ndarray, ease_seconds: float) -> FramePlan:
    """Each frame's (left segment, right segment, weight) for segments (S,) tiling the recording in order.

    A frame holds its own segment's keyframe, except within ``ease_seconds / 2`` of a boundary, where it moves
    eased from the earlier segment's keyframe to the later one's: weight 0.5 exactly at the boundary, continuous
    in time and rising monotonically across it. A segment shorter than ``ease_seconds`` gives each of its two
    boundaries half of itself, so its keyframe is reached (at its middle) and nothing jumps. ``ease_seconds`` 0
    cuts at the boundaries. Times outside the segments hold the first or last one.
    """
    times = np.asarray(times, dtype=np.float64)  # (n,)
    starts, ends = _check_segments(starts, ends)  # (S,), (S,)
    if not (math.isfinite(ease_seconds) and ease_seconds >= 0):
        raise A2IError(f"ease_seconds must be a finite number >= 0, got {ease_seconds}")
    last = len(starts) - 1
    seg = np.clip(np.searchsorted(starts, times, side="right") - 1, 0, last)  # (n,) the segment each time is in
    half = np.minimum(ease_seconds / 2, (ends - starts) / 2)[seg]  # (n,) each side's ease within that segment
    since_start, to_end = times - starts[seg], ends[seg] - times
    # Left half of a boundary's ease (this segment -> the next): x from 0 up to 0.5 at the boundary.
    leaving = (seg < last) & (to_end < half)
    # Right half (the previous segment -> this one): x from 0.5 at the boundary up to 1. A time exactly on a
    # boundary belongs here (searchsorted "right"), which also gives a cut (half 0) its 0.5.
    arriving = (seg > 0) & ((since_start < half) | (since_start == 0))
    x = np.zeros_like(times)
    x = np.where(leaving, 0.5 - 0.5 * _ratio(to_end, half), x)
    x = np.where(arriving, 0.5 + 0.5 * _ratio(since_start, half), x)
    left = np.where(arriving, seg - 1, seg).astype(np.int64)
    right = np.where(leaving, seg + 1, seg).astype(np.int64)
    weight = np.where(leaving | arriving, ease(x), 0.0)
    return FramePlan(left, right, weight)


def _ratio(num: np.ndarray, den: np.ndarray) -> np.ndarray:
    return np.divide(num, den, out=np.zeros_like(num), where=den > 0)


def _check_segments(starts: np.ndarray, ends: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    starts, ends = np.asarray(starts, dtype=np.float64), np.asarray(ends, dtype=np.float64)
    if starts.ndim != 1 or starts.shape != ends.shape or len(starts) == 0:
        raise ValueError(f"segments need starts and ends of one shape (S,), S >= 1; got {starts.shape}, {ends.shape}")
    if not (np.isfinite(starts).all() and np.isfinite(ends).all()):
        raise ValueError("segment times must be finite")
    short = np.flatnonzero(ends <= starts)
    if short.size:
        k = short[0]
        raise ValueError(f"segment {k} is empty or reversed: {starts[k]:g} s to {ends[k]:g} s")
    gaps = np.flatnonzero(np.abs(starts[1:] - ends[:-1]) > TILING_TOLERANCE_S)
    if gaps.size:
        k = gaps[0]
        raise ValueError(f"segments must tile the recording: segment {k} ends at {ends[k]:g} s, "
                         f"segment {k + 1} starts at {starts[k + 1]:g} s")
    return starts, ends


def blend(keys: np.ndarray, plan: tuple[np.ndarray, np.ndarray, np.ndarray]) -> np.ndarray:
    """Per-frame conditioning from per-segment keys (S, ...): pooled (S, P) or tokens (S, N, D), each row slerped.
    Returns (n, ...) for the plan's n frames; give it ``plan.take(batch)`` to hold only a batch of frames at once."""
    keys = np.asarray(keys)
    left, right, weight = (np.asarray(p) for p in plan)
    if keys.ndim < 2:
        raise ValueError(f"keys must be (S, ..., P), got shape {keys.shape}")
    weight = weight.reshape(weight.shape + (1,) * (keys.ndim - 2))  # (n, 1, ...) against rows (n, ...)
    return slerp(keys[left], keys[right], weight)  # (n, ...) like keys[0]
