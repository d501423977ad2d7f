"""A film's frames, in order, with the starting noise fixed: each frame rendered in full, or warm-started.

A warm frame starts from the previous frame's final latent noised back to the point of the sampler's schedule that
``strength`` names (the same fixed noise), and runs only the steps left from there: about ``steps * strength``
transformer calls instead of ``steps``, and a picture that keeps what the last frame drew where the conditioning
barely moved. This is diffusers' own image-to-image path (``StableDiffusion3Img2ImgPipeline``, which takes a latent
as its ``image``, noises it with ``scheduler.scale_noise`` at the first kept timestep and runs the truncated
schedule), sharing the render pipeline's modules, so no denoising loop is written here. Frames come out as latents
and are decoded the way the pipeline decodes them, so each frame's latent can be stored and a film resumed.

Conditioning, guidance and seeding are those of :func:`a2i_core.diffusion.render.render_iter`: strength 0 draws
exactly its pixels for ``seeds=[seed] * n`` at batch size 1.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Iterator

import numpy as np
import torch
from PIL import Image
from tqdm import tqdm

from a2i_core.core.errors import A2IError
from a2i_core.diffusion.render import RenderSettings


def warm_steps(steps: int, strength: float) -> int:
    """The denoising steps a warm frame runs: diffusers' image-to-image rule (``get_timesteps``), which starts at
    step ``int(steps - steps * strength)`` of the full schedule."""
    return steps - int(max(steps - steps * strength, 0))


def check_strength(steps: int, strength: float) -> None:
    """A2IError unless ``strength`` is 0 (full frames) or a warm start that runs at least one step."""
    is_number = isinstance(strength, numbers.Real) and not isinstance(strength, bool)
    if not (is_number and math.isfinite(strength) and 0 <= strength <= 1):
        raise A2IError(f"film warm-start strength {strength!r} is not a number in [0, 1]: use 0 for full frames")
    if strength > 0 and warm_steps(steps, strength) < 1:
        raise A2IError(f"film warm-start strength {strength} runs no step of {steps}: use at least {1 / steps:.3g} "
                       "(or 0 for full frames)")


def transformer_calls(steps: int, strength: float, guidance: float) -> int:
    """Transformer forward passes per image for one frame after the first (the first is always full), counted per
    image row as the FLOP figures in DESIGN.md count them: under guidance (> 1) every step runs the prompt and the
    empty prompt, two rows of one batched call."""
    check_strength(steps, strength)
    run = steps if strength == 0 else warm_steps(steps, strength)
    return run * (2 if guidance > 1 else 1)


def latent_shape(pipe, size: int) -> tuple[int, int, int]:
    """(C, h, w): one frame's latent in the transformer's space."""
    side = size // pipe.vae_scale_factor
    return pipe.transformer.config.in_channels, side, side


def checked_latent(latent: object, shape: tuple[int, int, int]) -> torch.Tensor:
    """The stored latent a resumed warm film continues from, as float32 (C, h, w); A2IError if it cannot be one."""
    if not isinstance(latent, torch.Tensor):
        raise A2IError("resuming a warm-started film needs the previous frame's stored latent: none was given "
                       "(render the film again from frame 0)")
    if tuple(latent.shape) != shape:
        raise A2IError(f"the stored film latent has shape {tuple(latent.shape)}, this film's frames need {shape}: "
                       "render the film again from frame 0")
    latent = latent.detach().float().cpu()
    if not torch.isfinite(latent).all():
        raise A2IError("the stored film latent holds NaN or infinity: render the film again from frame 0")
    return latent


def decode(pipe, latents: torch.Tensor) -> Image.Image:
    """The first image of ``latents`` (B, C, h, w), decoded as the pipeline decodes for ``output_type="pil"``."""
    latents = (latents / pipe.vae.config.scaling_factor) + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents, return_dict=False)[0]  # (B, 3, H, W) in [-1, 1]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


@torch.inference_mode()
def render_film_frames(pipe, pooled: np.ndarray, sequences: Callable[[list[int]], np.ndarray],
                       empty_pooled: np.ndarray, empty_sequence: np.ndarray, settings: RenderSettings,
                       device: torch.device, dtype: torch.dtype, seed: int, strength: float, start: int = 0,
                       previous_latent: torch.Tensor | None = None
                       ) -> Iterator[tuple[int, Image.Image, torch.Tensor]]:
    """(index, image, latent) for frames ``start``..n-1 of a film whose frame i is conditioned on ``pooled[i]``
    (n, P) and ``sequences([i])`` (1, L, D), every frame from the fixed noise of ``seed``.

    ``strength`` 0: every frame in full. ``strength`` s in (0, 1]: the film's first frame in full, each later one
    warm-started from the previous frame's latent (``warm_steps`` steps; s = 1 is a full frame again). The yielded
    latent (C, h, w), float32 on the CPU, is the frame's final one: to resume a warm film at frame k, pass
    ``start=k`` and frame k-1's latent as ``previous_latent``; the frames are then those of an uninterrupted run.
    ``settings.seed`` and ``settings.batch_size`` are not used: one seed for the whole film, one frame per call.
    """
    from diffusers import StableDiffusion3Img2ImgPipeline

    n = len(pooled)
    check_strength(settings.steps, strength)
    if not (isinstance(start, int) and 0 <= start <= n):
        raise A2IError(f"film start frame {start!r} is not one of the film's frames 0..{n}: resume from 0")
    previous = None
    if strength > 0 and start > 0:
        previous = checked_latent(previous_latent, latent_shape(pipe, settings.size))
    # The image-to-image pipeline over the very modules of ``pipe``: no second copy of any weight.
    warm_pipe = StableDiffusion3Img2ImgPipeline.from_pipe(pipe) if strength > 0 else None
    if warm_pipe is not None:
        warm_pipe.set_progress_bar_config(disable=True)
    negative_sequence = torch.from_numpy(np.asarray(empty_sequence, np.float32)).to(device, dtype)[None]  # (1, L, D)
    negative_pooled = torch.from_numpy(empty_pooled).to(device, dtype)[None]  # (1, P)
    for i in tqdm(range(start, n), desc="film", unit="frame", initial=start, total=n):
        call = dict(
            prompt_embeds=torch.from_numpy(np.asarray(sequences([i]), np.float32)).to(device, dtype),  # (1, L, D)
            pooled_prompt_embeds=torch.from_numpy(pooled[[i]]).to(device, dtype),  # (1, P)
            negative_prompt_embeds=negative_sequence, negative_pooled_prompt_embeds=negative_pooled,
            num_inference_steps=settings.steps, guidance_scale=settings.guidance, height=settings.size,
            width=settings.size, generator=[torch.Generator(device="cpu").manual_seed(seed)], output_type="latent")
        if previous is None:
            latents = pipe(**call).images  # (1, C, h, w)
        else:
            latents = warm_pipe(image=previous[None].to(device, dtype), strength=strength, **call).images
        image = decode(pipe, latents)
        latent = latents[0].float().cpu()  # (C, h, w): exact for float32, bfloat16 and float16 alike
        previous = latent if strength > 0 else None
        yield i, image, latent
