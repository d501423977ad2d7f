"""How a film's conditioning moves: frame counts and times, easing, spherical interpolation, the frame plan around
event boundaries, and blending per-segment keys into per-frame conditioning a batch at a time."""

from __future__ import annotations

import numpy as np
import pytest

from a2i_core.core.errors import A2IError
from a2i_core.timeline.motion import FramePlan, blend, ease, frame_count, frame_plan, frame_times, slerp


def test_frame_count_rounds_and_is_at_least_one() -> None:
    assert frame_count(10.0, 24) == 240
    assert frame_count(2.3, 1) == 2
    assert frame_count(2.6, 1) == 3
    assert frame_count(0.0, 8) == 1  # a recording shorter than a frame still has one
    assert frame_count(3600.0, 1) == 3600


@pytest.mark.parametrize(("duration", "fps"), [(1.0, 0), (1.0, -2), (1.0, float("nan")), (1.0, float("inf")),
                                               (-1.0, 8), (float("inf"), 8)])
def test_frame_count_refuses_impossible_films(duration: float, fps: float) -> None:
    with pytest.raises(A2IError, match="film"):
        frame_count(duration, fps)


@pytest.mark.parametrize(("duration", "fps"), [(3.0, 8), (2.34, 1), (2.6, 1), (0.01, 4), (7.77, 29.97)])
def test_frame_times_are_centres_inside_the_recording(duration: float, fps: float) -> None:
    times = frame_times(duration, fps)
    assert times.shape == (frame_count(duration, fps),)
    assert times.min() >= 0 and times.max() <= duration
    if len(times) > 1:
        np.testing.assert_allclose(np.diff(times), 1 / fps)
        assert times[0] == pytest.approx(0.5 / fps)


def test_ease_is_a_clipped_monotone_smoothstep() -> None:
    assert ease(0.0) == 0 and ease(1.0) == 1 and ease(0.5) == 0.5
    assert ease(-3.0) == 0 and ease(7.0) == 1
    x = np.linspace(0, 1, 101)
    assert (np.diff(ease(x)) > 0).all()
    assert ease(0.01) < 0.01 and ease(0.99) > 0.99  # slow out, slow in


def test_slerp_is_exact_at_both_ends() -> None:
    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(5, 7)).astype(np.float32), rng.normal(size=(5, 7)).astype(np.float32)
    np.testing.assert_array_equal(slerp(a, b, np.zeros(5)), a)
    np.testing.assert_array_equal(slerp(a, b, np.ones(5)), b)
    assert slerp(a, b, 0.3).dtype == np.float32


def test_slerp_turns_along_the_circle_and_interpolates_norms_linearly() -> None:
    a, b = np.array([2.0, 0.0]), np.array([0.0, 4.0])
    half = slerp(a, b, 0.5)
    np.testing.assert_allclose(np.linalg.norm(half), 3.0)  # lerp of the norms
    np.testing.assert_allclose(half / 3.0, [np.sqrt(0.5), np.sqrt(0.5)])  # 45 degrees, not the chord's midpoint
    third = slerp(a, b, 1 / 3)
    np.testing.assert_allclose(np.arctan2(third[1], third[0]), np.pi / 6)  # constant angular speed


def test_slerp_of_parallel_rows_is_linear_and_finite() -> None:
    a = np.array([1.0, 2.0, 3.0])
    for b in (a, 3 * a, a + 1e-12):
        np.testing.assert_allclose(slerp(a, b, 0.25), 0.75 * a + 0.25 * b)


def test_slerp_of_opposite_rows_keeps_its_length_and_stays_finite() -> None:
    a = np.array([1.0, 0.0, 0.0])
    path = np.stack([slerp(a, -a, w) for w in np.linspace(0, 1, 11)])
    assert np.isfinite(path).all()
    np.testing.assert_allclose(np.linalg.norm(path, axis=1), 1.0)  # never through zero (a blank conditioning)
    np.testing.assert_array_equal(path[-1], -a)
    assert np.abs(np.diff(path, axis=0)).max() < 0.35  # a smooth half turn, no jump


def test_slerp_with_zero_rows_and_one_dimension_falls_back_to_lerp() -> None:
    zero, b = np.zeros(4), np.array([1.0, 2.0, 2.0, 0.0])
    np.testing.assert_allclose(slerp(zero, b, 0.5), 0.5 * b)
    np.testing.assert_allclose(slerp(np.array([1.0]), np.array([-1.0]), 0.25), [0.5])
    with pytest.raises(ValueError, match="shape"):
        slerp(np.zeros((2, 3)), np.zeros((3, 3)), 0.5)


def test_slerp_broadcasts_one_weight_per_row_over_token_sequences() -> None:
    rng = np.random.default_rng(1)
    a, b = rng.normal(size=(3, 4, 8)), rng.normal(size=(3, 4, 8))  # (frames, tokens, D)
    w = np.array([0.0, 0.5, 1.0])[:, None]  # (frames, 1) against rows (frames, tokens)
    out = slerp(a, b, w)
    np.testing.assert_array_equal(out[0], a[0])
    np.testing.assert_array_equal(out[2], b[2])
    np.testing.assert_allclose(out[1, 2], slerp(a[1, 2], b[1, 2], 0.5))  # each token row on its own


STARTS, ENDS = np.array([0.0, 4.0, 10.0]), np.array([4.0, 10.0, 12.0])


def _position(plan: FramePlan) -> np.ndarray:
    """Where each frame is along the keyframes: segment index plus the way to the next one."""
    return plan.left + plan.weight * (plan.right - plan.left)


def test_frames_inside_events_hold_their_keyframe() -> None:
    plan = frame_plan(np.array([0.1, 2.0, 7.0, 11.5]), STARTS, ENDS, ease_seconds=2.0)
    np.testing.assert_array_equal(plan.left, [0, 0, 1, 2])
    np.testing.assert_array_equal(plan.left, plan.right)
    np.testing.assert_array_equal(plan.weight, 0.0)


def test_a_boundary_is_half_way_and_the_ease_is_continuous_and_monotone() -> None:
    times = np.linspace(0, 12, 12001)
    plan = frame_plan(times, STARTS, ENDS, ease_seconds=2.0)
    at = {4.0: 0, 10.0: 1}
    for boundary, seg in at.items():
        i = int(np.argmin(np.abs(times - boundary)))
        assert (plan.left[i], plan.right[i], plan.weight[i]) == (seg, seg + 1, 0.5)
    position = _position(plan)
    assert (np.diff(position) >= 0).all()  # never back
    assert np.abs(np.diff(position)).max() < 0.01  # no jump anywhere (steps of 1 ms)
    moving = (plan.weight > 0) & (plan.weight < 1)
    assert times[moving].min() == pytest.approx(3.0, abs=2e-3)  # ease_seconds / 2 before the first boundary
    assert times[moving].max() == pytest.approx(11.0, abs=2e-3)  # and after the last one


def test_a_segment_shorter_than_the_ease_reaches_its_keyframe_without_jumps() -> None:
    starts, ends = np.array([0.0, 5.0, 5.4, 9.0]), np.array([5.0, 5.4, 9.0, 10.0])
    times = np.linspace(0, 10, 10001)
    plan = frame_plan(times, starts, ends, ease_seconds=3.0)
    position = _position(plan)
    assert (np.diff(position) >= 0).all()
    assert np.abs(np.diff(position)).max() < 0.01
    middle = int(np.argmin(np.abs(times - 5.2)))
    assert position[middle] == pytest.approx(1.0)  # the short event's own keyframe is shown, at its middle
    # And the blended conditioning never jumps either.
    keys = np.random.default_rng(2).normal(size=(4, 16))
    frames = blend(keys, plan)
    assert np.linalg.norm(np.diff(frames, axis=0), axis=1).max() < 0.05 * np.linalg.norm(keys, axis=1).mean()


def test_no_ease_cuts_at_the_boundary() -> None:
    plan = frame_plan(np.array([3.999, 4.0, 4.001]), STARTS, ENDS, ease_seconds=0.0)
    np.testing.assert_array_equal(plan.left, [0, 0, 1])
    np.testing.assert_array_equal(plan.right, [0, 1, 1])
    np.testing.assert_array_equal(plan.weight, [0.0, 0.5, 0.0])


def test_times_outside_the_recording_hold_the_ends() -> None:
    plan = frame_plan(np.array([-1.0, 13.0]), STARTS, ENDS, ease_seconds=2.0)
    assert list(plan.left) == [0, 2] and list(plan.right) == [0, 2] and list(plan.weight) == [0, 0]


def test_one_segment_holds_everywhere() -> None:
    plan = frame_plan(frame_times(5.0, 4), np.array([0.0]), np.array([5.0]), ease_seconds=2.0)
    assert (plan.left == 0).all() and (plan.right == 0).all() and (plan.weight == 0).all()


@pytest.mark.parametrize(("starts", "ends", "match"), [
    ([0.0, 5.0], [4.0, 10.0], "tile"),  # a gap
    ([0.0, 3.0], [4.0, 10.0], "tile"),  # an overlap
    ([0.0, 4.0], [4.0, 4.0], "empty"),
    ([0.0, 4.0], [4.0, 2.0], "empty"),
    ([], [], "S >= 1"),
    ([0.0, float("nan")], [4.0, 10.0], "finite"),
])
def test_segments_that_do_not_tile_are_refused(starts: list, ends: list, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        frame_plan(np.array([1.0]), np.array(starts), np.array(ends), ease_seconds=1.0)


@pytest.mark.parametrize("ease_seconds", [-1.0, float("nan"), float("inf")])
def test_an_impossible_ease_is_refused(ease_seconds: float) -> None:
    with pytest.raises(A2IError, match="ease_seconds"):
        frame_plan(np.array([1.0]), STARTS, ENDS, ease_seconds)


def test_blend_gives_keyframes_inside_events_and_slerps_between() -> None:
    rng = np.random.default_rng(3)
    keys = rng.normal(size=(3, 6)).astype(np.float32)  # pooled (S, P)
    times = frame_times(12.0, 4)
    plan = frame_plan(times, STARTS, ENDS, ease_seconds=2.0)
    frames = blend(keys, plan)
    assert frames.shape == (len(times), 6) and frames.dtype == np.float32
    held = plan.weight == 0
    np.testing.assert_array_equal(frames[held], keys[plan.left[held]])
    i = int(np.flatnonzero(plan.weight > 0)[0])
    np.testing.assert_allclose(frames[i], slerp(keys[plan.left[i]], keys[plan.right[i]], plan.weight[i]), rtol=1e-6)


def test_blend_of_a_batch_equals_the_same_frames_of_the_whole() -> None:
    rng = np.random.default_rng(4)
    keys = rng.normal(size=(3, 5, 8))  # tokens (S, N, D)
    plan = frame_plan(frame_times(12.0, 8), STARTS, ENDS, ease_seconds=3.0)
    whole = blend(keys, plan)
    assert whole.shape == (96, 5, 8)
    for batch in (slice(20, 40), np.array([0, 31, 32, 95])):
        np.testing.assert_array_equal(blend(keys, plan.take(batch)), whole[batch])
    np.testing.assert_array_equal(blend(keys, tuple(p[10:12] for p in plan)), whole[10:12])  # any 3-tuple
