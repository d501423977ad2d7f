"""Rendering images from predicted pooled embeddings with SD3's transformer and VAE.

The text encoders are never loaded: the sequence embedding is the stored empty prompt's, the pooled one
is the mapper's prediction, and the negative (guidance) branch is the stored empty prompt.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable, Iterator
from collections.abc import Set as AbstractSet
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo
from tqdm import tqdm

from a2i_core.core.distributed import SOLO, World
from a2i_core.core.errors import A2IError
from a2i_core.core.files import atomic_path
from a2i_core.core.params import RenderParams
from a2i_core.core.retrieval import nearest_rows

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
                skip: AbstractSet[int] = frozenset()) -> Iterator[tuple[int, Image.Image]]:
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
    for _, indices in tqdm(world.mine(plan_batches(n, settings.batch_size)), desc=f"render[{world.rank}]",
                           unit="batch", position=world.rank):
        if all(i in skip for i in indices):
            continue
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
        yield from ((i, image) for i, image in zip(indices, out.images, strict=True) if i not in skip)


def render(pipe, pooled: np.ndarray, sequences: Callable[[list[int]], np.ndarray], empty_pooled: np.ndarray,
           empty_sequence: np.ndarray, settings: RenderSettings, device: torch.device, dtype: torch.dtype,
           seeds: list[int] | None = None, world: World = SOLO) -> list[tuple[int, Image.Image]]:
    """Every (index, image) of ``render_iter``, held in memory: for a few images (generate, benchmarks)."""
    return list(render_iter(pipe, pooled, sequences, empty_pooled, empty_sequence, settings, device, dtype, seeds,
                            world))


def image_digest(pooled: np.ndarray, sequence: np.ndarray, seed: int, context: str) -> str:
    """What one image is made from: its pooled (P,) and sequence (L, D) embeddings as float32, its seed, and
    ``context`` (everything shared by the images: settings, negative branch, model, dtype)."""
    digest = hashlib.sha256(context.encode() + b"\0" + str(seed).encode() + b"\0")
    digest.update(np.ascontiguousarray(pooled, np.float32).tobytes())
    digest.update(np.ascontiguousarray(sequence, np.float32).tobytes())
    return digest.hexdigest()


FILLS = ("empty_prompt", "zeros", "nearest_prompts")  # render.sequence_fill's values, in the render stage's order


@dataclass(frozen=True)
class SequenceFill:
    """What fills the sequence positions the mapper does not predict (render.sequence_fill and its settings)."""

    name: str
    k: int | None = None  # nearest_prompts: how many of the closest prompts are mixed
    temperature: float | None = None  # nearest_prompts: the softmax temperature over their cosines

    @classmethod
    def from_params(cls, params: RenderParams, name: str | None = None) -> SequenceFill:
        return cls(name or params.sequence_fill, params.nearest_k, params.nearest_temperature)

    def check(self, bank_sequences: np.ndarray | None) -> None:
        """A2IError when this fill cannot be made with a mapper whose bank holds ``bank_sequences``."""
        if self.name not in FILLS:
            raise A2IError(f"render.sequence_fill: {self.name!r}: not one of {', '.join(FILLS)}")
        if self.name == "nearest_prompts" and (self.k is None or self.temperature is None):
            raise A2IError("render.sequence_fill nearest_prompts needs render.nearest_k and render.nearest_temperature")
        if self.name == "nearest_prompts" and bank_sequences is None:
            raise A2IError("render.sequence_fill nearest_prompts needs the prompts' sequences, and this mapper has "
                           "none (trained with diffusion.store_sequence: false): use empty_prompt or zeros")

    def rows(self, pooled: np.ndarray, empty_sequence: np.ndarray, bank_pooled: np.ndarray,
             bank_sequences: np.ndarray | None) -> Callable[[int], np.ndarray]:
        """The fill of image i (L, D), for images of predicted pooled embeddings ``pooled`` (n, P).

        empty_prompt and zeros give every image the same sequence; nearest_prompts gives image i the mix of the
        prompt bank's sequences ``bank_sequences`` (K, L, D) weighted by ``nearest_prompt_weights``, so a sound gets
        the sequence of the prompts its pooled embedding is closest to, and a sound between prompts a mix of theirs.
        """
        self.check(bank_sequences)
        if self.name == "empty_prompt":
            empty = np.asarray(empty_sequence, np.float32)
            return lambda i: empty
        if self.name == "zeros":
            zeros = np.zeros(np.shape(empty_sequence), np.float32)
            return lambda i: zeros
        weights = nearest_prompt_weights(pooled, bank_pooled, self.k, self.temperature)  # (n, K)

        def mixed(i: int) -> np.ndarray:
            used = np.flatnonzero(weights[i])  # k prompts: only their sequences are read
            return np.einsum("k,kld->ld", weights[i, used], np.asarray(bank_sequences[used], np.float32))

        return mixed


def nearest_prompt_weights(pooled: np.ndarray, bank_pooled: np.ndarray, k: int, temperature: float) -> np.ndarray:
    """(n, K) mixing weights: for each pooled embedding (n, P), a softmax at ``temperature`` over the cosines of the
    ``k`` bank prompts (K, P) closest to it; zero for every other prompt. Each row sums to 1."""
    top, cosines = nearest_rows(pooled, bank_pooled, k)  # (n, k), (n, K)
    logits = np.take_along_axis(cosines, top, axis=1).astype(np.float64) / temperature
    mix = np.exp(logits - logits.max(axis=1, keepdims=True))
    weights = np.zeros(cosines.shape, np.float32)
    np.put_along_axis(weights, top, (mix / mix.sum(axis=1, keepdims=True)).astype(np.float32), axis=1)
    return weights


def fill_sequence(fill: np.ndarray, head: np.ndarray | None) -> np.ndarray:
    """A (L, D) sequence: ``fill`` with its first N rows replaced by predicted tokens ``head`` (N, D)."""
    sequence = np.array(fill, np.float32, copy=True)
    if head is not None:
        sequence[: len(head)] = head
    return sequence


SHEET_CELL = 160  # pixels per contact-sheet image
SHEET_LABEL_WIDTH = 180  # the sound's label, left of its images


def contact_sheet(rows: list[tuple[str, list[Image.Image]]], columns: list[str], cell: int = SHEET_CELL) -> Image.Image:
    """A grid: one row per sound (its label, then one image per column), with a header naming the columns."""
    label_width, header = SHEET_LABEL_WIDTH, 24
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


def save_png(image, path: str | Path, text: dict[str, str] | None = None) -> None:
    """Write ``image`` whole or not at all; ``text`` goes into the PNG's tEXt chunks (read back by ``png_text``)."""
    info = None
    if text:
        info = PngInfo()
        for key, value in text.items():
            info.add_text(key, value)
    with atomic_path(path) as tmp:
        image.save(tmp, format="PNG", pnginfo=info)


def png_text(path: str | Path) -> dict[str, str]:
    """The tEXt chunks of a PNG without decoding its pixels; empty when it is missing or unreadable."""
    try:
        with Image.open(path) as image:
            return {k: v for k, v in image.info.items() if isinstance(v, str)}
    except (OSError, SyntaxError, ValueError):
        return {}


def compile_for_speed(pipe) -> None:
    """torch.compile the transformer and the VAE decoder: minutes of compilation, then faster steps."""
    pipe.transformer = torch.compile(pipe.transformer, fullgraph=False)
    pipe.vae.decode = torch.compile(pipe.vae.decode, fullgraph=False)
