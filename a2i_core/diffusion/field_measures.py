"""The image measures papers on audio-to-image generation report (AudioToken, SonicDiffusion, Sound2Scene,
SeeingSounds), by their definitions, on feature vectors; the features come from CLIP or the FID Inception
(:mod:`a2i_core.diffusion.fid_features`).

- AIC: zero-shot classification of the generated image over the dataset's label texts (:func:`zero_shot_correct`),
  accuracy against the sound's label; chance 1 / labels.
- IIS: CLIP cosine of the generated image and its source video's real frame; its rank form, the share of the other
  clips' frames less similar to the image than its own frame (ties count half: chance 0.5).
- R@k: the generated image retrieves its source clip, known by its frame, among all evaluated clips' frames; chance
  k / frames.
- FID and KID of the generated images against the frames, through torchmetrics (Lightning-AI's maintained metrics:
  the Frechet distance of Heusel et al. and the unbiased polynomial-kernel MMD of Binkowski et al., over subsets of
  at most 1000 images, as torch-fidelity and clean-fid compute them).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from a2i_core.diffusion.image_scores import zero_shot_correct

__all__ = ["zero_shot_correct"]  # AIC's verdict per image is CLIP's zero-shot one
KID_SUBSETS = 100  # torch-fidelity's and torchmetrics' default
KID_MAX_SUBSET = 1000


def iis(image_emb: np.ndarray, frame_emb: np.ndarray) -> np.ndarray:
    """Per image: the cosine to its own frame (both unit-norm, (n, d) each, row i of one with row i of the other)."""
    return np.sum(image_emb * frame_emb, axis=-1)


BLOCK = 1024  # images compared with every frame at once: 15,000 x 15,000 similarities would be 900 MB


def _ranked(image_emb: np.ndarray, frames: np.ndarray, own: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per image: how many other frames are less like it than its own, and how many are as like it (ties), in
    blocks of images."""
    below, level = np.zeros(len(own)), np.zeros(len(own))
    for start in range(0, len(own), BLOCK):
        rows = slice(start, start + BLOCK)
        sims = image_emb[rows] @ frames.T  # (b, m)
        index = np.arange(sims.shape[0])
        mine = sims[index, own[rows]][:, None]  # (b, 1)
        below[rows] = (sims < mine).sum(axis=1)
        level[rows] = (sims == mine).sum(axis=1) - 1  # its own frame left out
    return below, level


def iis_rank(image_emb: np.ndarray, frames: np.ndarray, own: np.ndarray) -> np.ndarray:
    """Per image: the share of the other frames less similar to it than its own frame ``frames[own[i]]``; ties count
    half, so an image as like every frame scores 0.5 (chance). ``frames`` (m, d), m >= 2."""
    return frame_ranks(image_emb, frames, own, ())[0]


def recall_at_k(image_emb: np.ndarray, frames: np.ndarray, own: np.ndarray, ks: tuple[int, ...]) -> dict[int, float]:
    """Share of images whose own frame is among the k frames most like them (ties against it: the frame is ranked
    after them, so a constant image retrieves nothing by luck)."""
    return frame_ranks(image_emb, frames, own, ks)[1]


def frame_ranks(image_emb: np.ndarray, frames: np.ndarray, own: np.ndarray, ks: tuple[int, ...]
                ) -> tuple[np.ndarray, dict[int, float]]:
    """:func:`iis_rank` and :func:`recall_at_k` from one pass over the similarities."""
    below, level = _ranked(image_emb, frames, own)
    others = frames.shape[0] - 1
    rank = others - below  # frames at least as like the image, its own left out: 0 is the top
    return (below + 0.5 * level) / others, {k: float(np.mean(rank < k)) for k in ks}


class _Given(nn.Module):
    """torchmetrics' feature-extractor interface over features already extracted: each image is embedded once for
    both FID and KID, and the frames once for every row."""

    def __init__(self, num_features: int) -> None:
        super().__init__()
        self.num_features = num_features

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        return features


@dataclass(frozen=True)
class Distances:
    """FID and KID of one set of images against the frames; None where the images are too few, with why."""

    fid: float | None
    kid: float | None
    kid_std: float | None
    note: str | None


def fid_kid(generated: np.ndarray, real: np.ndarray, min_images: int, seed: int = 0) -> Distances:
    """FID and KID (mean and standard deviation over subsets) of ``generated`` (n, d) against ``real`` (m, d)
    features. FID needs ``min_images`` of each (below it its covariances are too noisy to compare); KID, unbiased at
    any size, needs 2 of each. KID's spread over subsets is given only when a subset is smaller than the sets (at the
    sets' size every subset is the whole set)."""
    from torchmetrics.image.fid import FrechetInceptionDistance
    from torchmetrics.image.kid import KernelInceptionDistance

    n, m = len(generated), len(real)
    notes, fid, kid, kid_std = [], None, None, None
    fake_t, real_t = torch.from_numpy(np.asarray(generated, np.float64)), torch.from_numpy(np.asarray(real, np.float64))
    if min(n, m) >= max(min_images, 2):
        metric = FrechetInceptionDistance(feature=_Given(fake_t.shape[1]))
        metric.update(real_t, real=True)
        metric.update(fake_t, real=False)
        fid = float(metric.compute())
    else:
        notes.append(f"no FID: {n} images and {m} frames, fewer than the {max(min_images, 2)} each it needs "
                     "(evaluate.fid_min_images); KID is unbiased at any size")
    if min(n, m) >= 2:
        with warnings.catch_warnings():  # that it keeps the features: they are here already
            warnings.filterwarnings("ignore", message=".*will save all extracted features", category=UserWarning)
            metric = KernelInceptionDistance(feature=_Given(fake_t.shape[1]), subsets=KID_SUBSETS,
                                             subset_size=min(n, m, KID_MAX_SUBSET))
        metric.update(real_t, real=True)
        metric.update(fake_t, real=False)
        with torch.random.fork_rng(devices=[]):  # its subsets are drawn with torch's generator: the same every run
            torch.manual_seed(seed)
            mean, std = metric.compute()
        kid, kid_std = float(mean), float(std) if min(n, m) > KID_MAX_SUBSET else None
    else:
        notes.append(f"no KID: {n} images and {m} frames, fewer than the 2 each it needs")
    return Distances(fid, kid, kid_std, "; ".join(notes) or None)
