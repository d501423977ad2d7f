"""Which sounds a clip holds: the decomposition over the prompt bank and the choice of layers."""

import numpy as np
import pytest

from a2i_core.core.errors import A2IError
from a2i_core.layers.answer import Layer, decompose, pick

PROMPTS = [f"an image of a {name}" for name in ("dog", "siren", "bell", "rain", "clock", "drum")]


def test_decompose_recovers_a_non_negative_mixture_of_the_bank():
    bank = np.random.default_rng(0).standard_normal((6, 64)).astype(np.float32)  # (K, P)
    pooled = np.stack([0.7 * bank[0] + 0.3 * bank[3], bank[5], np.zeros(64)])  # (3, P)
    shares = decompose(pooled, bank)
    np.testing.assert_allclose(shares[0], [0.7, 0, 0, 0.3, 0, 0], atol=1e-5)
    np.testing.assert_allclose(shares[1], [0, 0, 0, 0, 0, 1], atol=1e-5)
    assert shares[2].sum() == 0  # nothing of the bank fits: no share, not a division by zero


def test_decompose_never_gives_a_negative_share():
    rng = np.random.default_rng(1)
    bank = rng.standard_normal((6, 16))
    shares = decompose((bank[0] - bank[1] + 0.1 * rng.standard_normal(16))[None], bank)[0]  # wants a negative weight
    assert (shares >= 0).all() and shares.sum() == pytest.approx(1)


def test_pick_takes_the_sounds_over_the_threshold_best_first():
    layers, notes = pick(np.array([0.1, 0.8, 0.0, 0.45, 0.2, 0.0]), PROMPTS, min_score=0.3, max_layers=4)
    assert [(layer.label, layer.index) for layer in layers] == [(PROMPTS[1], 1), (PROMPTS[3], 3)]
    assert notes == []


def test_a_clip_always_gets_its_best_sound_even_below_the_threshold():
    layers, _ = pick(np.array([0.1, 0.2, 0.05, 0, 0, 0]), PROMPTS, min_score=0.3, max_layers=4)
    assert [layer.index for layer in layers] == [1]


def test_six_sources_are_capped_and_the_rest_named_in_a_note():
    layers, notes = pick(np.array([0.9, 0.8, 0.7, 0.6, 0.5, 0.4]), PROMPTS, min_score=0.3, max_layers=4)
    assert [layer.index for layer in layers] == [0, 1, 2, 3]
    assert len(notes) == 1 and "the 4 strongest are drawn" in notes[0]
    assert f"{PROMPTS[4]} (0.50)" in notes[0] and f"{PROMPTS[5]} (0.40)" in notes[0]


def test_scores_that_do_not_match_the_bank_are_refused():
    with pytest.raises(A2IError, match="3 scores for 6 prompts"):
        pick(np.zeros(3), PROMPTS, 0.3, 4)


def test_a_layer_records_its_label_score_and_place():
    assert Layer("dog", 0, 0.91234, x=0.25, pan=-1.0).record() == {
        "label": "dog", "score": 0.9123, "x": 0.25, "y": 0.5, "pan": -1.0}
