"""Which sounds a clip holds: scores over the prompt bank (the label head's probabilities, or the shares of a
non-negative decomposition of the mapper's prediction), and the layers drawn from them."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy.optimize import nnls

from a2i_core.core.errors import A2IError


@dataclass(frozen=True)
class Layer:
    """One sound of a layered image: its prompt (a row of the prompt bank), score and place."""

    label: str  # the prompt bank's entry
    index: int  # its row in the bank
    score: float  # the head's probability, or its share of the mapper's prediction
    x: float = 0.5  # the centre of its region, 0 left .. 1 right
    y: float = 0.5  # 0 top .. 1 bottom
    pan: float | None = None  # stereo: -1 hard left .. 1 hard right, as heard (None: not placed by stereo)

    def record(self) -> dict:
        """What a PNG's text says of this layer."""
        out = {"label": self.label, "score": round(self.score, 4), "x": round(self.x, 4), "y": round(self.y, 4)}
        if self.pan is not None:
            out["pan"] = round(self.pan, 4)
        return out


def decompose(pooled: np.ndarray, bank: np.ndarray) -> np.ndarray:
    """(n, K) shares: each pooled embedding (n, P) as a non-negative combination of the bank's rows (K, P) (least
    squares, scipy's NNLS), the weights divided by their sum; a row of zeros where nothing of the bank fits."""
    if len(bank) == 0:
        raise A2IError("the prompt bank is empty: there is nothing to decompose a prediction over")
    basis = np.asarray(bank, np.float64).T  # (P, K)
    out = np.zeros((len(pooled), len(bank)), np.float32)
    for i, target in enumerate(np.asarray(pooled, np.float64)):
        weights, _ = nnls(basis, target)
        total = weights.sum()
        if total > 0:
            out[i] = weights / total
    return out


def pick(scores: np.ndarray, prompts: list[str], min_score: float, max_layers: int) -> tuple[list[Layer], list[str]]:
    """The layers of one clip from its scores (K,): each prompt scoring at least ``min_score``, best first, at most
    ``max_layers`` (the rest named in a note); at least the best one, whatever its score (a clip always has a
    picture). With notes the user should read."""
    if len(scores) != len(prompts) or len(prompts) == 0:
        raise A2IError(f"{len(scores)} scores for {len(prompts)} prompts")
    order = [int(k) for k in np.argsort(-np.asarray(scores), kind="stable")]
    chosen = [k for k in order if scores[k] >= min_score] or order[:1]
    notes = []
    if len(chosen) > max_layers:
        left = chosen[max_layers:]
        notes.append(f"{len(chosen)} sounds score at least {min_score:g}; the {max_layers} strongest are drawn "
                     f"(layers.max_layers), not: " + ", ".join(f"{prompts[k]} ({scores[k]:.2f})" for k in left))
        chosen = chosen[:max_layers]
    return [Layer(prompts[k], k, float(scores[k])) for k in chosen], notes


def recall_at_2(scores: np.ndarray, truth: set[int]) -> float:
    """The share of a two-sound clip's two true prompts (bank rows) among its two best-scoring prompts."""
    return len(set(np.argsort(-np.asarray(scores), kind="stable")[:2].tolist()) & truth) / 2
