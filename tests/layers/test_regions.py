"""Regions denoised under their own sound: one sound under a mask of ones is the pipeline's own image, each half of a
two-region image is its own sound's, and masks that do not fit are refused."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2i_core.core.errors import A2IError
from a2i_core.diffusion.prompt_embeddings import encode
from a2i_core.diffusion.render import RenderSettings, render_iter
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.layers.answer import Layer
from a2i_core.layers.compose import arrange, region_masks
from a2i_core.layers.regions import render_regions

CPU = torch.device("cpu")
SIZE, SEED = 64, 3
SETTINGS = RenderSettings(steps=2, guidance=4.0, size=SIZE, seed=0, batch_size=1)
ONES = np.ones((1, SIZE, SIZE), np.float32)


@pytest.fixture(scope="module")
def model(tiny_sd3_dir) -> dict:
    """The image side of the tiny SD3, the empty prompt, and two conditionings that draw clearly different images:
    random ones at the scale of real prompts (the tiny model's prompts differ by a few grey levels only)."""
    pooled, sequence = encode(load_sd3(tiny_sd3_dir, "text", CPU), ["an image of a dog", ""], 8)
    pooled, sequence = np.asarray(pooled), np.asarray(sequence, np.float32)  # (2, P), (2, L, D)
    rng = np.random.default_rng(1)
    conds = [(rng.normal(0, pooled.std(), pooled.shape[1]).astype(np.float32),
              rng.normal(0, sequence.std(), sequence.shape[1:]).astype(np.float32)) for _ in range(2)]
    return {"pipe": load_sd3(tiny_sd3_dir, "image", CPU), "empty_pooled": pooled[1], "empty_sequence": sequence[1],
            "conds": conds}


def _regions(model: dict, conds, masks, settings: RenderSettings = SETTINGS) -> np.ndarray:
    image = render_regions(model["pipe"], conds, masks, model["empty_pooled"], model["empty_sequence"], settings, CPU,
                           torch.float32, SEED)
    return np.asarray(image, np.int16)


def _pipeline(model: dict, cond, settings: RenderSettings = SETTINGS) -> np.ndarray:
    pooled, sequence = cond
    (_, image), = render_iter(model["pipe"], pooled[None], lambda idx: sequence[None], model["empty_pooled"],
                              model["empty_sequence"], settings, CPU, torch.float32, seeds=[SEED])
    return np.asarray(image, np.int16)


@pytest.mark.parametrize("guidance", [4.0, 1.0])  # 1: the pipeline runs no unconditional branch
def test_one_sound_under_a_mask_of_ones_is_the_pipelines_image(model, guidance):
    settings = RenderSettings(steps=3, guidance=guidance, size=SIZE, seed=0, batch_size=1)
    ours, theirs = _regions(model, model["conds"][:1], ONES, settings), _pipeline(model, model["conds"][0], settings)
    assert np.abs(ours - theirs).max() == 0


def test_dynamic_shifting_timesteps_are_the_pipelines(model, monkeypatch):
    from diffusers import FlowMatchEulerDiscreteScheduler

    pipe = model["pipe"]
    monkeypatch.setattr(pipe, "scheduler",
                        FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, use_dynamic_shifting=True))
    assert np.abs(_regions(model, model["conds"][:1], ONES) - _pipeline(model, model["conds"][0])).max() == 0


def test_a_sound_with_a_mask_of_zeros_changes_nothing(model):
    masks = np.stack([ONES[0], np.zeros_like(ONES[0])])
    alone = _regions(model, model["conds"][:1], ONES)
    assert np.abs(_regions(model, model["conds"], masks) - alone).max() <= 1  # a 3-row batch may round differently


def test_each_half_is_its_own_sounds_image(model):
    a, b = (_regions(model, [cond], ONES) for cond in model["conds"])
    assert np.abs(a - b).mean() > 5  # the two sounds draw clearly different images
    masks = region_masks(arrange([Layer("a", 0, 0.6), Layer("b", 1, 0.4)], "score"), SIZE, SIZE, 0.0)
    both = _regions(model, model["conds"], masks)
    half = SIZE // 2
    left_a, left_b = (np.abs(both[:, :half] - x[:, :half]).mean() for x in (a, b))
    right_a, right_b = (np.abs(both[:, half:] - x[:, half:]).mean() for x in (a, b))
    # The shared latent lets each half feel the other (attention spans the whole image), so not equal, but close.
    assert left_a < 0.6 * left_b and right_b < 0.6 * right_a


def test_the_order_of_the_sounds_does_not_matter(model):
    masks = region_masks(arrange([Layer("a", 0, 1), Layer("b", 1, 1)], "score"), SIZE, SIZE, 0.1)
    forward = _regions(model, model["conds"], masks)
    assert np.abs(_regions(model, model["conds"][::-1], masks[::-1].copy()) - forward).max() <= 1


@pytest.mark.parametrize("masks", [
    np.ones((1, 32, 32), np.float32),  # another size
    np.ones((1, SIZE, SIZE // 2), np.float32),  # not square
    np.full((2, SIZE, SIZE), 0.5, np.float32),  # two masks for one sound
    np.ones(SIZE, np.float32),  # not even an image
])
def test_masks_of_the_wrong_shape_are_refused_in_one_line(model, masks):
    with pytest.raises(A2IError, match=r"shape .* need \(1, 64, 64\)") as err:
        _regions(model, model["conds"][:1], masks)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("masks", [
    np.full((2, SIZE, SIZE), 0.6, np.float32),  # sums to 1.2
    np.stack([np.full((SIZE, SIZE), 1.5, np.float32), np.full((SIZE, SIZE), -0.5, np.float32)]),  # negative
    np.full((2, SIZE, SIZE), np.nan, np.float32),
])
def test_masks_that_do_not_share_each_pixel_are_refused_in_one_line(model, masks):
    with pytest.raises(A2IError, match="sum to 1") as err:
        _regions(model, model["conds"], masks)
    assert "\n" not in str(err.value)


def test_sequences_of_different_lengths_are_refused(model):
    (pooled, sequence), other = model["conds"]
    with pytest.raises(A2IError, match="differ in shape"):
        _regions(model, [(pooled, sequence[:-1]), other], np.full((2, SIZE, SIZE), 0.5, np.float32))


def _shifted(model: dict, conds, masks, centres) -> np.ndarray:
    image = render_regions(model["pipe"], conds, masks, model["empty_pooled"], model["empty_sequence"], SETTINGS, CPU,
                           torch.float32, SEED, centres)
    return np.asarray(image, np.int16)


def test_a_sound_centred_in_the_middle_sees_the_latents_unshifted(model):
    assert np.array_equal(_shifted(model, model["conds"][:1], ONES, [(0.5, 0.5)]),
                          _regions(model, model["conds"][:1], ONES))


def test_a_sound_off_centre_sees_its_own_view(model):
    # Its view of the latents is rolled to bring its centre to the middle: another image than the unshifted one
    # (the same noise seen from another place), and every sound must say where its centre is.
    moved = _shifted(model, model["conds"][:1], ONES, [(0.25, 0.5)])
    assert moved.shape == (SIZE, SIZE, 3) and np.abs(moved - _regions(model, model["conds"][:1], ONES)).mean() > 1
    with pytest.raises(A2IError, match="1 centres for 2 sounds"):
        _shifted(model, model["conds"], np.full((2, SIZE, SIZE), 0.5, np.float32), [(0.5, 0.5)])
