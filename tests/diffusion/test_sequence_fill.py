"""render.sequence_fill: what fills the sequence positions the mapper does not predict, nearest_prompts above all."""

from __future__ import annotations

import numpy as np
import pytest

from a2i_core.core.errors import A2IError
from a2i_core.diffusion.fills import SequenceFill, fill_sequence, nearest_prompt_weights

RNG = np.random.default_rng(0)
BANK_POOLED = RNG.normal(size=(5, 16)).astype(np.float32)  # (K, P)
BANK_SEQUENCES = RNG.normal(size=(5, 6, 8)).astype(np.float16)  # (K, L, D), float16 as the artifact stores them
EMPTY = RNG.normal(size=(6, 8)).astype(np.float32)  # (L, D)


def _reference_weights(pooled: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """The definition, one sound at a time: softmax over the k largest cosines, zero elsewhere."""
    out = np.zeros((len(pooled), len(BANK_POOLED)))
    for i, p in enumerate(pooled):
        cosines = np.array([p @ q / np.linalg.norm(p) / np.linalg.norm(q) for q in BANK_POOLED])
        top = sorted(range(len(cosines)), key=lambda j: -cosines[j])[:k]
        z = np.exp(cosines[top] / temperature)
        out[i, top] = z / z.sum()
    return out


@pytest.mark.parametrize(("k", "temperature"), [(1, 0.05), (3, 0.05), (3, 1.0), (5, 0.2), (50, 0.1)])
def test_weights_are_a_softmax_over_the_k_nearest_prompts(k, temperature):
    pooled = RNG.normal(size=(7, 16)).astype(np.float32) * 3  # the scale must not matter: cosines
    weights = nearest_prompt_weights(pooled, BANK_POOLED, k, temperature)
    np.testing.assert_allclose(weights, _reference_weights(pooled, k, temperature), rtol=1e-5, atol=1e-7)
    assert np.allclose(weights.sum(axis=1), 1) and ((weights > 0).sum(axis=1) == min(k, 5)).all()


def test_a_prompts_own_pooled_gets_its_own_sequence_and_a_blend_a_blend():
    fill = SequenceFill("nearest_prompts", 2, 1e-4)
    own = fill.rows(BANK_POOLED[[3]], EMPTY, BANK_POOLED, BANK_SEQUENCES)
    np.testing.assert_allclose(own(0), BANK_SEQUENCES[3].astype(np.float32), rtol=1e-6)
    # Exactly between two prompts (equal cosine to each), the two sequences in equal parts.
    a, b = BANK_POOLED[1] / np.linalg.norm(BANK_POOLED[1]), BANK_POOLED[4] / np.linalg.norm(BANK_POOLED[4])
    between = SequenceFill("nearest_prompts", 2, 0.05).rows((a + b)[None], EMPTY, BANK_POOLED,
                                                                          BANK_SEQUENCES)
    expected = (BANK_SEQUENCES[1].astype(np.float32) + BANK_SEQUENCES[4].astype(np.float32)) / 2
    np.testing.assert_allclose(between(0), expected, rtol=1e-4, atol=1e-5)


def test_the_constant_fills_and_predicted_tokens_over_them():
    pooled = RNG.normal(size=(2, 16)).astype(np.float32)
    empty = SequenceFill("empty_prompt").rows(pooled, EMPTY, BANK_POOLED, None)
    zeros = SequenceFill("zeros").rows(pooled, EMPTY, BANK_POOLED, None)  # neither needs the bank's sequences
    assert np.array_equal(empty(1), EMPTY) and not zeros(0).any() and zeros(0).shape == EMPTY.shape
    head = np.ones((2, 8), np.float32)
    mixed = SequenceFill("nearest_prompts", 3, 0.05).rows(pooled, EMPTY, BANK_POOLED, BANK_SEQUENCES)(0)
    filled = fill_sequence(mixed, head)
    assert np.array_equal(filled[:2], head) and np.array_equal(filled[2:], mixed[2:])


def test_nearest_prompts_without_sequences_and_unknown_fills_are_one_line():
    with pytest.raises(A2IError, match=r"nearest_prompts needs the prompts' sequences.*diffusion\.store_sequence: "
                                       r"false\): use empty_prompt or zeros$"):
        SequenceFill("nearest_prompts", 3, 0.05).rows(BANK_POOLED[:1], EMPTY, BANK_POOLED, None)
    with pytest.raises(A2IError, match=r"render\.sequence_fill: 'nearest': not one of empty_prompt, zeros, "
                                       r"nearest_prompts"):
        SequenceFill("nearest", 3, 0.05).check(BANK_SEQUENCES)


def test_params_refuse_a_bad_k_or_temperature(raw_params):
    from a2i_core.core.params import ParamsError, params_from_dict

    assert params_from_dict(raw_params).render.nearest_k >= 1
    for key, value, message in [("nearest_k", 0, r"render\.nearest_k: must be in \[1, 1,000,000\], got 0"),
                                ("nearest_temperature", 0.0, r"render\.nearest_temperature: must be > 0"),
                                ("nearest_temperature", float("nan"), r"render\.nearest_temperature: must be a finite"),
                                ("nearest_temperature", "warm", r"render\.nearest_temperature: expected float"),
                                ("sequence_fill", "nearest", r"render\.sequence_fill: must be one of")]:
        bad = {**raw_params, "render": {**raw_params["render"], key: value}}
        with pytest.raises(ParamsError, match=message):
            params_from_dict(bad)
