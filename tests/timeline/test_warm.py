"""Film frames with the starting noise fixed: full frames are render_iter's pixels, warm-started frames run only the
steps their strength leaves, in order, and a film resumed from a stored latent is the uninterrupted one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2i_core.core.errors import A2IError
from a2i_core.diffusion.prompt_embeddings import encode
from a2i_core.diffusion.render import RenderSettings, render_iter
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.timeline.warm import render_film_frames, transformer_calls, warm_steps

CPU = torch.device("cpu")
SEED, FRAMES = 7, 5
LATENT = (8, 8, 8)  # the tiny SD3's latent at 32 px: 8 channels, a quarter of the side
SETTINGS = RenderSettings(steps=4, guidance=4.0, size=32, seed=123, batch_size=3)


@pytest.fixture(scope="module")
def film(tiny_sd3_dir) -> dict:
    """A pipeline and a film's conditioning: a dog's prompt moving linearly to a bell's over FRAMES frames."""
    pooled, sequence = encode(load_sd3(tiny_sd3_dir, "text", CPU), ["an image of a dog", "an image of a bell", ""], 8)
    pooled, sequence = np.asarray(pooled), np.asarray(sequence, np.float32)  # (3, P), (3, L, D)
    weight = np.linspace(0, 1, FRAMES, dtype=np.float32)[:, None]  # (n, 1)
    frames_pooled = (1 - weight) * pooled[0] + weight * pooled[1]  # (n, P)
    frames_sequence = (1 - weight[:, :, None]) * sequence[0] + weight[:, :, None] * sequence[1]  # (n, L, D)
    return {"pipe": load_sd3(tiny_sd3_dir, "image", CPU), "pooled": frames_pooled,
            "sequences": lambda idx: frames_sequence[idx], "empty_pooled": pooled[2], "empty_sequence": sequence[2]}


def _frames(film: dict, strength: float, **kwargs) -> list[tuple[int, np.ndarray, torch.Tensor]]:
    out = render_film_frames(film["pipe"], film["pooled"], film["sequences"], film["empty_pooled"],
                             film["empty_sequence"], SETTINGS, CPU, torch.float32, SEED, strength, **kwargs)
    return [(i, np.asarray(image, np.int16), latent) for i, image, latent in out]


def test_full_frames_are_render_iters_pixels_for_one_fixed_seed(film):
    settings = RenderSettings(SETTINGS.steps, SETTINGS.guidance, SETTINGS.size, SETTINGS.seed, batch_size=1)
    reference = render_iter(film["pipe"], film["pooled"], film["sequences"], film["empty_pooled"],
                            film["empty_sequence"], settings, CPU, torch.float32, seeds=[SEED] * FRAMES)
    frames = _frames(film, 0.0)
    assert [i for i, _, _ in frames] == list(range(FRAMES))
    for (i, image, latent), (j, expected) in zip(frames, reference, strict=True):
        assert i == j and np.array_equal(image, np.asarray(expected, np.int16))
        assert latent.shape == LATENT and latent.dtype == torch.float32
    # The conditioning moves the picture: frames are not one image repeated.
    assert np.abs(frames[0][1] - frames[-1][1]).mean() > 1


def test_warm_frames_run_only_the_steps_their_strength_leaves(film):
    calls: list[int] = []  # rows of each transformer call
    hook = film["pipe"].transformer.register_forward_hook(
        lambda module, args, kwargs, output: calls.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)
    try:
        per_frame = []
        for _ in _frames_lazily(film, 0.5):
            per_frame.append(list(calls))
            calls.clear()
    finally:
        hook.remove()
    assert per_frame[0] == [2] * 4  # the first frame in full: 4 steps, prompt and empty prompt as 2 rows each
    assert all(rows == [2] * 2 for rows in per_frame[1:])  # then 4 * 0.5 = 2 steps a frame
    assert transformer_calls(4, 0.5, 4.0) == sum(per_frame[1]) == 4
    assert transformer_calls(4, 0.0, 4.0) == sum(per_frame[0]) == 8


def _frames_lazily(film: dict, strength: float):
    return render_film_frames(film["pipe"], film["pooled"], film["sequences"], film["empty_pooled"],
                              film["empty_sequence"], SETTINGS, CPU, torch.float32, SEED, strength)


@pytest.mark.parametrize(("steps", "strength", "guidance", "calls"), [
    (8, 0.0, 5.0, 16), (8, 0.3, 5.0, 6), (8, 0.5, 5.0, 8), (8, 0.7, 5.0, 12), (8, 1.0, 5.0, 16), (8, 0.5, 1.0, 4),
    (8, 0.125, 5.0, 2), (28, 0.3, 7.0, 18)])
def test_transformer_calls_per_frame(steps, strength, guidance, calls):
    assert transformer_calls(steps, strength, guidance) == calls


def test_warm_frames_differ_from_full_ones_and_strength_one_is_a_full_frame_again(film):
    full, warm, whole = _frames(film, 0.0), _frames(film, 0.5), _frames(film, 1.0)
    assert np.array_equal(warm[0][1], full[0][1])  # the first frame is always full
    assert all(not np.array_equal(w[1], f[1]) for w, f in zip(warm[1:], full[1:], strict=True))
    # Noised all the way back with the film's own fixed noise, a warm frame is the full frame.
    assert all(np.array_equal(a[1], b[1]) for a, b in zip(whole, full, strict=True))


def test_a_resumed_warm_film_is_the_uninterrupted_one(film):
    whole = _frames(film, 0.5)
    resumed = _frames(film, 0.5, start=3, previous_latent=whole[2][2].clone())
    assert [i for i, _, _ in resumed] == [3, 4]
    for (i, image, latent), (j, expected, expected_latent) in zip(resumed, whole[3:], strict=True):
        assert i == j and np.array_equal(image, expected) and torch.equal(latent, expected_latent)
    # The stored latent matters: resuming from another frame's gives other pixels.
    other = _frames(film, 0.5, start=3, previous_latent=whole[0][2])
    assert not np.array_equal(other[0][1], whole[3][1])
    assert _frames(film, 0.5, start=FRAMES, previous_latent=whole[-1][2]) == []


def test_a_resumed_full_film_needs_no_latent(film):
    resumed = _frames(film, 0.0, start=3)
    assert [i for i, _, _ in resumed] == [3, 4]
    assert np.array_equal(resumed[0][1], _frames(film, 0.0)[3][1])


@pytest.mark.parametrize("strength", [-0.1, 1.5, float("nan"), float("inf"), "0.5", True, None, 1e-20])
def test_hostile_strengths_are_one_line_errors(film, strength):
    # 1e-20 of 4 steps rounds to no step at all (any larger strength runs at least one).
    with pytest.raises(A2IError, match="strength"):
        _frames(film, strength)


@pytest.mark.parametrize("start", [-1, FRAMES + 1, 1.5])
def test_a_start_outside_the_film_is_an_error(film, start):
    with pytest.raises(A2IError, match="start frame"):
        _frames(film, 0.0, start=start)


@pytest.mark.parametrize(("latent", "message"), [
    (None, "none was given"), (np.zeros(LATENT, np.float32), "none was given"),
    (torch.zeros(16, 8, 8), r"shape \(16, 8, 8\)"), (torch.zeros(1, *LATENT), "shape"),
    (torch.full(LATENT, float("nan")), "NaN"), (torch.full(LATENT, float("inf")), "infinity")])
def test_resuming_a_warm_film_from_a_bad_latent_is_an_error(film, latent, message):
    with pytest.raises(A2IError, match=message):
        _frames(film, 0.5, start=2, previous_latent=latent)


def test_warm_steps_follow_diffusers_image_to_image_rule(tiny_sd3_dir):
    from diffusers import StableDiffusion3Img2ImgPipeline

    pipe = StableDiffusion3Img2ImgPipeline.from_pipe(load_sd3(tiny_sd3_dir, "image", CPU))
    for steps in (4, 8, 28):
        for strength in (0.2, 0.3, 0.5, 0.7, 1.0):
            pipe.scheduler.set_timesteps(steps)
            assert len(pipe.get_timesteps(steps, strength, CPU)[0]) == warm_steps(steps, strength)


@pytest.mark.e2e  # a subprocess that fits a tiny SD3 (about 10 s): with the other benchmark scripts' runs
def test_film_warm_start_benchmark_runs_tiny():
    import re
    import subprocess
    import sys

    from tests.conftest import ROOT

    result = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "film_warm_start.py"), "--tiny"],
                            capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {float(m[0]): m[1:] for m in re.findall(
        r"^\| ([0-9.]+) \| (\d+) \| ([0-9.]+) \| [0-9.]+ \| ([0-9.]+) / [0-9.]+ \| [0-9.]+ / [0-9.]+ \| "
        r"([0-9.]+) / [0-9.]+ \| \d+% \|$", result.stdout, flags=re.M)}
    assert sorted(rows) == [0.0, 0.3, 0.5, 0.7]
    frames = int(re.search(r"(\d+) frames:", result.stdout).group(1))
    for strength, (warm, film_mean, _, _) in rows.items():
        assert int(warm) == transformer_calls(4, strength, 5.0)  # --tiny renders 4 steps at guidance 5
        # Measured with a hook: the first frame in full, every later one warm.
        assert float(film_mean) == pytest.approx((8 + (frames - 1) * int(warm)) / frames, abs=0.01)
    # Full frames from fixed noise: a held keyframe is the very same picture, and it is its own full render.
    assert rows[0.0][2] == "0.0000" and rows[0.0][3] == "0.0000"
