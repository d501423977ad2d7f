"""Each sound's own conditioning, and the two ways of drawing several in one image.

joint: one text sequence holding each sound's sequence side by side, the pooled embedding their score-weighted mix,
rendered as any single image is. regions: each sound gets a place on the image (``arrange``) and a soft mask around
it (``region_masks``); :func:`a2i_core.layers.regions.render_regions` denoises each region under its own sound.
One sound is always the single image: its conditioning is the mapper's own prediction, and both ways hand it on
unchanged.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable

import numpy as np

from a2i_core.core.errors import A2IError
from a2i_core.layers.answer import Layer

Conditioning = tuple[np.ndarray, np.ndarray]  # pooled (P,), sequence (L, D)


def layer_conditioning(layers: list[Layer], single: Conditioning, bank_pooled: np.ndarray,
                       bank_sequences: np.ndarray | None,
                       fill: Callable[[np.ndarray], np.ndarray]) -> list[Conditioning]:
    """(pooled (P,), sequence (L, D)) of each layer, in layer order.

    One layer: exactly ``[single]``, the mapper's own prediction and sequence, so a one-sound layered image is the
    single image pixel for pixel. Several: each layer's prompt from the bank, row ``layer.index`` of ``bank_pooled``
    (K, P) and of ``bank_sequences`` (K, L, D), or ``fill(pooled)`` (L, D) where the bank holds no sequences.
    """
    if not layers:
        raise A2IError("no sound to draw: a layered image needs at least one layer")
    if len(layers) == 1:
        return [single]
    out = []
    for layer in layers:
        if not 0 <= layer.index < len(bank_pooled):
            raise A2IError(f"layer {layer.label!r}: row {layer.index} is not in the prompt bank of {len(bank_pooled)}")
        pooled = np.asarray(bank_pooled[layer.index], np.float32)  # (P,)
        sequence = fill(pooled) if bank_sequences is None else bank_sequences[layer.index]
        out.append((pooled, np.asarray(sequence, np.float32)))  # (L, D)
    return out


def joint(conds: list[Conditioning], scores: list[float] | np.ndarray) -> Conditioning:
    """One conditioning for all layers: pooled (P,) the score-weighted mean of theirs (weights summing to 1; equal
    weights where every score is 0), sequence (n*L, D) theirs side by side in layer order. One layer: its own
    conditioning, unchanged."""
    scores = np.asarray(scores, np.float64)
    if len(conds) == 0 or scores.shape != (len(conds),):
        raise A2IError(f"{len(scores)} scores for {len(conds)} layers")
    if not (np.isfinite(scores).all() and (scores >= 0).all()):
        raise A2IError(f"layer scores must be finite and non-negative, got {scores.tolist()}")
    if len(conds) == 1:
        return conds[0]
    total = scores.sum()
    weights = scores / total if total > 0 else np.full(len(conds), 1 / len(conds))  # (n,)
    pooled = np.stack([np.asarray(p, np.float64) for p, _ in conds])  # (n, P)
    sequence = np.concatenate([np.asarray(s, np.float32) for _, s in conds])  # (n*L, D)
    return (weights @ pooled).astype(np.float32), sequence


def joint_negative(empty_sequence: np.ndarray, n: int) -> np.ndarray:
    """The guidance branch of a joint image: the empty prompt's sequence (L, D) tiled n times, (n*L, D).

    Classifier-free guidance batches the negative with the positive, so it must be as long (n*L). Tiled rather than
    zero-padded: SD3's joint attention has no mask, so every row is a token the image attends to, and zero rows are
    not "nothing" but tokens the model never saw (the context embedder maps them to its bias). The empty prompt n
    times is "no prompt" in the kind of tokens the positive is made of, block for block, and for n = 1 it is the
    single image's own negative.
    """
    return np.tile(np.asarray(empty_sequence, np.float32), (n, 1))


def arrange(layers: list[Layer], layout: str) -> list[Layer]:
    """The layers with the centres of their regions set (x 0 left .. 1 right, y 0 top .. 1 bottom).

    "score": left to right in the given order (best first), x = (k + 0.5) / n, y = 0.5. "grid": ceil(sqrt(n))
    columns, as many rows as needed, filled row by row in the given order. ("stereo" places layers from the
    channels, elsewhere.)
    """
    n = len(layers)
    if layout == "score":
        return [dataclasses.replace(layer, x=(k + 0.5) / n, y=0.5) for k, layer in enumerate(layers)]
    if layout == "grid":
        cols = math.ceil(math.sqrt(n))
        rows = math.ceil(n / cols) if n else 0
        return [dataclasses.replace(layer, x=(k % cols + 0.5) / cols, y=(k // cols + 0.5) / rows)
                for k, layer in enumerate(layers)]
    raise ValueError(f"arrange places layers by 'score' or 'grid', not {layout!r}")


def region_masks(layers: list[Layer], height: int, width: int, feather: float) -> np.ndarray:
    """(n, height, width) float32 soft masks, summing to 1 at every pixel: each layer's share of each pixel.

    A softmax over the layers of -d² / (2 feather²), d the distance in unit coordinates (x over the width, y over
    the height) from the pixel's centre to the layer's centre: feather is the borders' softness as a fraction of the
    side. Feather 0: hard regions, each pixel wholly its nearest centre's (a tie between centres goes to the first).
    Layers at the same centre share their pixels equally, at every feather (so none of them vanishes).
    """
    if not layers:
        raise ValueError("region_masks needs at least one layer")
    if feather < 0 or height < 1 or width < 1:
        raise ValueError(f"region_masks: feather {feather} must be >= 0 and the size {height}x{width} positive")
    u = (np.arange(width) + 0.5) / width  # (W,) pixel centres
    v = (np.arange(height) + 0.5) / height  # (H,)
    centres = np.array([(layer.x, layer.y) for layer in layers], np.float64)  # (n, 2)
    d2 = ((u[None, None, :] - centres[:, 0, None, None]) ** 2
          + (v[None, :, None] - centres[:, 1, None, None]) ** 2)  # (n, H, W)
    if feather > 0:
        logits = -d2 / (2 * feather ** 2)
        weights = np.exp(logits - logits.max(axis=0, keepdims=True))  # (n, H, W), the nearest centre's is 1
        return (weights / weights.sum(axis=0, keepdims=True)).astype(np.float32)
    # Hard: the nearest distinct centre wins (argmin: ties to the first), then its pixels are split equally among
    # the layers sitting on it.
    distinct, group = np.unique(centres, axis=0, return_inverse=True)  # (m, 2), (n,)
    group = group.reshape(-1)
    first = np.array([int(np.flatnonzero(group == g)[0]) for g in range(len(distinct))])  # (m,) in layer order
    order = np.argsort(first, kind="stable")  # distinct centres in the order of their first layer
    nearest = order[np.argmin(d2[first[order]], axis=0)]  # (H, W): the winning distinct centre
    masks = (group[:, None, None] == nearest[None]).astype(np.float64)  # (n, H, W)
    return (masks / masks.sum(axis=0, keepdims=True)).astype(np.float32)
