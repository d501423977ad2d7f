"""Rendering images from predicted pooled embeddings with SD3's transformer and VAE.

The text encoders are never loaded: the sequence embedding is the stored empty prompt's, the pooled one
is the mapper's prediction, and the negative (guidance) branch is the stored empty prompt.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from tqdm import tqdm

from a2i_core.distributed import SOLO, World
from a2i_core.files import atomic_path
from a2i_core.params import RenderParams

log = logging.getLogger(__name__)


@dataclass
class RenderSettings:
    steps: int
    guidance: float
    size: int
    seed: int
    batch_size: int

    @classmethod
    def from_params(cls, params: RenderParams) -> RenderSettings:
        return cls(params.steps, params.guidance, params.size, params.seed, params.batch_size)


@torch.inference_mode()
def render(pipe, pooled: np.ndarray, sequences: Callable[[list[int]], np.ndarray], empty_pooled: np.ndarray,
           empty_sequence: np.ndarray, settings: RenderSettings, device: torch.device, dtype: torch.dtype,
           seeds: list[int] | None = None, world: World = SOLO) -> list[tuple[int, Image.Image]]:
    """(index, PIL image) for the rows of ``pooled`` (n, P) this process renders.

    ``sequences(indices)`` gives the sequence embeddings (B, L, D) of those images; the negative (guidance)
    branch is the empty prompt. Image i uses seed ``seeds[i]`` (default ``settings.seed + i``), and batches are
    planned the same way whatever the number of processes (process r takes batches r, r + world, ...), so every
    image is the same however it is run.
    """
    n = len(pooled)
    seeds = seeds if seeds is not None else [settings.seed + i for i in range(n)]
    batches = [list(range(i, min(i + settings.batch_size, n))) for i in range(0, n, settings.batch_size)]
    negative_sequence = torch.from_numpy(np.asarray(empty_sequence, np.float32)).to(device, dtype)  # (L, D)
    negative_pooled = torch.from_numpy(empty_pooled).to(device, dtype)  # (P,)
    images = []
    for _, indices in tqdm(world.mine(batches), desc=f"render[{world.rank}]", unit="batch", position=world.rank):
        batch = torch.from_numpy(pooled[indices]).to(device, dtype)  # (B, P)
        b = batch.shape[0]
        # Precomputed embeddings are not expanded by the pipeline: give every image its own row.
        seq = torch.from_numpy(np.asarray(sequences(indices), np.float32)).to(device, dtype)  # (B, L, D)
        generators = [torch.Generator(device="cpu").manual_seed(seeds[i]) for i in indices]
        out = pipe(
            prompt_embeds=seq, pooled_prompt_embeds=batch,
            negative_prompt_embeds=negative_sequence.expand(b, -1, -1),
            negative_pooled_prompt_embeds=negative_pooled.expand(b, -1),
            num_inference_steps=settings.steps, guidance_scale=settings.guidance,
            height=settings.size, width=settings.size, generator=generators, output_type="pil")
        images += list(zip(indices, out.images, strict=True))
    return images


def sequence_fills(empty_sequence: np.ndarray) -> dict[str, np.ndarray]:
    """The (L, D) sequences a pooled-only image can be given, by render.sequence_fill name."""
    empty = np.asarray(empty_sequence, np.float32)
    return {"empty_prompt": empty, "zeros": np.zeros_like(empty)}


def fill_sequence(fill: np.ndarray, head: np.ndarray | None) -> np.ndarray:
    """A (L, D) sequence: ``fill`` with its first N rows replaced by predicted tokens ``head`` (N, D)."""
    sequence = np.array(fill, np.float32, copy=True)
    if head is not None:
        sequence[: len(head)] = head
    return sequence


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: list[str], cell: int = 160) -> Image.Image:
    """A grid: one row per sound (its label, then one image per column), with a header naming the columns."""
    label_width, header = 180, 24
    sheet = Image.new("RGB", (label_width + cell * len(columns), header + cell * len(rows)), "white")
    draw = ImageDraw.Draw(sheet)
    for c, name in enumerate(columns):
        draw.text((label_width + c * cell + 4, 6), name, fill="black")
    for r, (label, images) in enumerate(rows):
        y = header + r * cell
        draw.text((6, y + cell // 2 - 6), label[:28], fill="black")
        for c, image in enumerate(images):
            sheet.paste(image.convert("RGB").resize((cell, cell)), (label_width + c * cell, y))
    return sheet


def save_png(image, path: str | Path) -> None:
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG")



def compile_for_speed(pipe) -> None:
    """torch.compile the transformer and the VAE decoder: minutes of compilation, then faster steps."""
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=False)
    pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=False)
