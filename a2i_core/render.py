"""Rendering images from predicted pooled embeddings with SD3's transformer and VAE.

The text encoders are never loaded: the sequence embedding is the stored empty prompt's, the pooled one
is the mapper's prediction, and the negative (guidance) branch is the stored empty prompt.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from a2i_core.files import atomic_path

log = logging.getLogger(__name__)


@dataclass
class RenderSettings:
    steps: int
    guidance: float
    size: int
    seed: int
    batch_size: int


@torch.inference_mode()
def render(pipe, pooled: np.ndarray, empty_pooled: np.ndarray, empty_sequence: np.ndarray,
           settings: RenderSettings, device: torch.device, dtype: torch.dtype) -> list:
    """One PIL image per row of ``pooled`` (n, P). Image i uses seed ``settings.seed + i``, whatever the batching."""
    images = []
    sequence = torch.from_numpy(np.asarray(empty_sequence, np.float32)).to(device, dtype)  # (L, D)
    negative_pooled = torch.from_numpy(empty_pooled).to(device, dtype)  # (P,)
    for first in tqdm(range(0, len(pooled), settings.batch_size), desc="render", unit="batch"):
        batch = torch.from_numpy(pooled[first : first + settings.batch_size]).to(device, dtype)  # (B, P)
        b = batch.shape[0]
        # Precomputed embeddings are not expanded by the pipeline: repeat them per image ourselves.
        seq = sequence.unsqueeze(0).expand(b, -1, -1)  # (B, L, D)
        generators = [torch.Generator(device="cpu").manual_seed(settings.seed + first + j) for j in range(b)]
        out = pipe(
            prompt_embeds=seq, pooled_prompt_embeds=batch,
            negative_prompt_embeds=seq, negative_pooled_prompt_embeds=negative_pooled.expand(b, -1),
            num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            height=settings.size, width=settings.size, generator=generators, output_type="pil")
        images += out.images
    return images


def save_png(image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")

