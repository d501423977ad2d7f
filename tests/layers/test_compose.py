"""Each sound's conditioning, the joint sequence, the regions' centres and their soft masks."""

from __future__ import annotations

import numpy as np
import pytest

from a2i_core.core.errors import A2IError
from a2i_core.layers.answer import Layer
from a2i_core.layers.compose import arrange, joint, joint_negative, layer_conditioning, region_masks

RNG = np.random.default_rng(0)
BANK_POOLED = RNG.normal(size=(5, 6)).astype(np.float32)  # (K, P)
BANK_SEQUENCES = RNG.normal(size=(5, 3, 4))  # (K, L, D), float64 on purpose: handed on as float32
SINGLE = (RNG.normal(size=6).astype(np.float32), RNG.normal(size=(3, 4)).astype(np.float32))


def _layers(n: int) -> list[Layer]:
    return [Layer(f"sound {k}", k, 1.0 / (k + 1)) for k in range(n)]


def _fill_must_not_run(pooled: np.ndarray) -> np.ndarray:
    raise AssertionError("the fill is for banks without sequences")


def test_one_layer_is_the_single_conditioning_itself():
    out = layer_conditioning([Layer("dog", 3, 0.9)], SINGLE, BANK_POOLED, BANK_SEQUENCES, _fill_must_not_run)
    assert len(out) == 1 and out[0] is SINGLE


def test_several_layers_take_their_bank_rows():
    out = layer_conditioning([Layer("b", 4, 0.6), Layer("a", 1, 0.3)], SINGLE, BANK_POOLED, BANK_SEQUENCES,
                             _fill_must_not_run)
    assert [p.tolist() for p, _ in out] == [BANK_POOLED[4].tolist(), BANK_POOLED[1].tolist()]
    np.testing.assert_allclose(out[1][1], BANK_SEQUENCES[1], rtol=1e-6)
    assert {s.dtype for _, s in out} == {np.dtype(np.float32)}


def test_a_bank_without_sequences_fills_from_each_layers_pooled():
    seen = []

    def fill(pooled: np.ndarray) -> np.ndarray:
        seen.append(pooled)
        return np.full((3, 4), pooled[0])

    out = layer_conditioning([Layer("a", 0, 0.5), Layer("c", 2, 0.5)], SINGLE, BANK_POOLED, None, fill)
    assert [p.tolist() for p in seen] == [BANK_POOLED[0].tolist(), BANK_POOLED[2].tolist()]
    assert out[1][1][0, 0] == np.float32(BANK_POOLED[2, 0]) and out[1][1].dtype == np.float32


@pytest.mark.parametrize("layers", [[], [Layer("a", 0, 0.5), Layer("ghost", 5, 0.5)]])
def test_no_layers_or_a_row_outside_the_bank_is_refused(layers):
    with pytest.raises(A2IError) as err:
        layer_conditioning(layers, SINGLE, BANK_POOLED, BANK_SEQUENCES, _fill_must_not_run)
    assert "\n" not in str(err.value)


def test_joint_of_one_layer_is_its_conditioning_unchanged():
    assert joint([SINGLE], [0.3]) is SINGLE


def test_joint_puts_sequences_side_by_side_and_weights_the_pooled_by_score():
    conds = [(np.full(6, 1.0, np.float32), np.full((3, 4), 1.0)), (np.full(6, 5.0, np.float32), np.full((3, 4), 2.0))]
    pooled, sequence = joint(conds, [3.0, 1.0])
    np.testing.assert_allclose(pooled, np.full(6, 0.75 * 1 + 0.25 * 5), rtol=1e-6)  # weights 3/4, 1/4
    assert sequence.shape == (6, 4) and sequence.dtype == np.float32
    assert sequence[:3].tolist() == [[1.0] * 4] * 3 and sequence[3:].tolist() == [[2.0] * 4] * 3  # layer order


def test_joint_weights_equally_when_every_score_is_zero():
    pooled, _ = joint([(np.zeros(2), np.zeros((1, 1))), (np.full(2, 4.0), np.zeros((1, 1)))], [0.0, 0.0])
    assert pooled.tolist() == [2.0, 2.0]


@pytest.mark.parametrize("scores", [[1.0], [1.0, -0.5], [1.0, float("nan")]])
def test_joint_refuses_scores_that_do_not_fit(scores):
    with pytest.raises(A2IError) as err:
        joint([SINGLE, SINGLE], scores)
    assert "\n" not in str(err.value)


def test_joint_negative_is_the_empty_prompt_tiled():
    empty = RNG.normal(size=(3, 4)).astype(np.float32)
    negative = joint_negative(empty, 3)
    assert negative.shape == (9, 4)
    for k in range(3):
        assert (negative[3 * k:3 * (k + 1)] == empty).all()


def test_score_layout_goes_left_to_right_in_the_given_order():
    placed = arrange(_layers(4), "score")
    assert [(p.x, p.y) for p in placed] == [(0.125, 0.5), (0.375, 0.5), (0.625, 0.5), (0.875, 0.5)]
    assert [(p.label, p.index, p.score) for p in placed] == [(x.label, x.index, x.score) for x in _layers(4)]


@pytest.mark.parametrize(("n", "centres"), [
    (1, [(0.5, 0.5)]),
    (4, [(0.25, 0.25), (0.75, 0.25), (0.25, 0.75), (0.75, 0.75)]),
    (5, [(1 / 6, 0.25), (0.5, 0.25), (5 / 6, 0.25), (1 / 6, 0.75), (0.5, 0.75)]),  # 3 columns, 2 rows, row-major
])
def test_grid_layout_centres(n, centres):
    placed = arrange(_layers(n), "grid")
    np.testing.assert_allclose([(p.x, p.y) for p in placed], centres)


def test_stereo_or_an_unknown_layout_is_not_placed_here():
    with pytest.raises(ValueError, match="stereo"):
        arrange(_layers(2), "stereo")


@pytest.mark.parametrize("feather", [0.0, 0.01, 0.1, 0.5, 1.0])
@pytest.mark.parametrize("layout", ["score", "grid"])
def test_masks_sum_to_one_at_every_pixel(feather, layout):
    masks = region_masks(arrange(_layers(5), layout), 24, 40, feather)
    assert masks.shape == (5, 24, 40) and masks.dtype == np.float32
    assert (masks >= 0).all()
    np.testing.assert_allclose(masks.sum(axis=0), 1, atol=1e-6)


def test_one_layer_owns_every_pixel():
    assert (region_masks(arrange(_layers(1), "score"), 8, 8, 0.1) == 1).all()


def test_feather_zero_gives_hard_regions_ties_to_the_first():
    left, right = Layer("l", 0, 1, x=0.25), Layer("r", 1, 1, x=0.75)
    masks = region_masks([left, right], 2, 3, 0.0)  # pixel centres x = 1/6, 1/2, 5/6: the middle one is a tie
    assert masks[0].tolist() == [[1, 1, 0]] * 2 and masks[1].tolist() == [[0, 0, 1]] * 2
    hard = region_masks(arrange(_layers(3), "score"), 16, 30, 0.0)
    assert set(np.unique(hard)) == {0.0, 1.0}
    assert hard[:, :, :10].argmax(axis=0).tolist() == [[0] * 10] * 16  # each third to its own layer
    assert hard[:, :, 20:].argmax(axis=0).tolist() == [[2] * 10] * 16


def test_feathered_masks_are_the_softmax_of_squared_distances():
    a, b = Layer("a", 0, 1, x=0.25, y=0.5), Layer("b", 1, 1, x=0.75, y=0.25)
    masks = region_masks([a, b], 4, 4, 0.2)
    u, v = 1.5 / 4, 2.5 / 4  # the centre of pixel (row 2, column 1)
    la = -((u - 0.25) ** 2 + (v - 0.5) ** 2) / (2 * 0.2 ** 2)
    lb = -((u - 0.75) ** 2 + (v - 0.25) ** 2) / (2 * 0.2 ** 2)
    assert masks[0, 2, 1] == pytest.approx(np.exp(la) / (np.exp(la) + np.exp(lb)), rel=1e-5)
    assert 0.5 < masks[0, 2, 1] < 1  # nearer a, but softly


@pytest.mark.parametrize("feather", [0.0, 0.1])
def test_layers_at_the_same_centre_share_every_pixel_equally(feather):
    masks = region_masks([Layer("a", 0, 1), Layer("b", 1, 1)], 6, 6, feather)
    assert (masks == 0.5).all()
    with_third = region_masks([Layer("a", 0, 1, x=0.3), Layer("c", 2, 1, x=0.9), Layer("b", 1, 1, x=0.3)],
                              6, 10, feather)
    assert (with_third[0] == with_third[2]).all() and with_third[0].max() > 0.4


def test_masks_need_a_layer_and_a_non_negative_feather():
    with pytest.raises(ValueError):
        region_masks([], 8, 8, 0.1)
    with pytest.raises(ValueError):
        region_masks(_layers(2), 8, 8, -0.1)
