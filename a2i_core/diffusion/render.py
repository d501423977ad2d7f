"""Rendering images from precomputed conditioning with SD3's transformer and VAE: batches, seeds, guidance.

The text encoders are never loaded. Each image gets a pooled embedding (the mapper's prediction, or a prompt's own)
and a sequence embedding (what :mod:`a2i_core.diffusion.fills` makes of the positions the mapper does not predict,
or a prompt's own sequence); the negative (guidance) branch is the stored empty prompt. Pictures are saved and
laid out by :mod:`a2i_core.diffusion.images`.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from a2i_core.core.distributed import SOLO, World
from a2i_core.core.params import RenderParams

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


def plan_batches(n: int, batch_size: int) -> list[list[int]]:
    """The image indices of each batch: fixed by ``n`` and ``batch_size`` alone, never by what is left to do."""
    return [list(range(i, min(i + batch_size, n))) for i in range(0, n, batch_size)]


@torch.inference_mode()
def render_iter(pipe, pooled: np.ndarray, sequences: Callable[[list[int]], np.ndarray], empty_pooled: np.ndarray,
                empty_sequence: np.ndarray, settings: RenderSettings, device: torch.device, dtype: torch.dtype,
                seeds: list[int] | None = None, world: World = SOLO,
                skip: AbstractSet[int] = frozenset(), desc: str = "render") -> Iterator[tuple[int, Image.Image]]:
    """(index, PIL image) for the rows of ``pooled`` (n, P) this process renders, yielded as each batch finishes.

    ``sequences(indices)`` gives the sequence embeddings (B, L, D) of those images; the negative (guidance)
    branch is the empty prompt. Image i uses seed ``seeds[i]`` (default ``settings.seed + i``), and batches are
    planned the same way whatever the number of processes (process r takes batches r, r + world, ...), so every
    image is the same however it is run. Images in ``skip`` are not yielded, and a batch wholly in ``skip`` is not
    rendered; a batch only partly in it is still rendered whole, because a batch's composition can move other
    images' pixels by a rounding step, and a resumed run must give the very images an uninterrupted one gives.
    """
    n = len(pooled)
    seeds = seeds if seeds is not None else [settings.seed + i for i in range(n)]
    negative_sequence = torch.from_numpy(np.asarray(empty_sequence, np.float32)).to(device, dtype)  # (L, D)
    negative_pooled = torch.from_numpy(empty_pooled).to(device, dtype)  # (P,)
    batches = [indices for _, indices in world.mine(plan_batches(n, settings.batch_size))
               if not all(i in skip for i in indices)]
    # Counted in images, not batches: the bar's rate and time left are then what a reader wants to know.
    bar = tqdm(total=sum(len(b) for b in batches), desc=f"{desc}[{world.rank}]", unit="image", position=world.rank)
    for indices in batches:
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
        bar.update(len(indices))
        yield from ((i, image) for i, image in zip(indices, out.images, strict=True) if i not in skip)
    bar.close()


def render(pipe, pooled: np.ndarray, sequences: Callable[[list[int]], np.ndarray], empty_pooled: np.ndarray,
           empty_sequence: np.ndarray, settings: RenderSettings, device: torch.device, dtype: torch.dtype,
           seeds: list[int] | None = None, world: World = SOLO) -> list[tuple[int, Image.Image]]:
    """Every (index, image) of ``render_iter``, held in memory: for a few images (generate, benchmarks)."""
    return list(render_iter(pipe, pooled, sequences, empty_pooled, empty_sequence, settings, device, dtype, seeds,
                            world))


def compile_for_speed(pipe) -> None:
    """torch.compile the transformer and the VAE decoder: minutes of compilation, then faster steps."""
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=False)
    pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=False)


def image_digest(pooled: np.ndarray, sequence: np.ndarray, seed: int, context: str) -> str:
    """What one image is made from: its pooled (P,) and sequence (L, D) embeddings as float32, its seed, and
    ``context`` (everything shared by the images: settings, negative branch, model, dtype)."""
    digest = hashlib.sha256(context.encode() + b"\0" + str(seed).encode() + b"\0")
    digest.update(np.ascontiguousarray(pooled, np.float32).tobytes())
    digest.update(np.ascontiguousarray(sequence, np.float32).tobytes())
    return digest.hexdigest()
