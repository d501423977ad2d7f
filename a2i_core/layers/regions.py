"""Regions: one image, each region denoised under its own sound (MultiDiffusion on SD3's flow matching).

SD3 samples by integrating a velocity field: from noise x at sigma 1 to an image latent at sigma 0, each step
``x <- x + (sigma_next - sigma) * v(x, sigma, conditioning)`` (the flow-match Euler scheduler). Here every step
asks the transformer for each sound's velocity on the very same latent, and the velocity taken is their mix
pixel by pixel, under soft masks that sum to 1 (:func:`a2i_core.layers.compose.region_masks`): each region moves
towards its own sound's image, and the shared latent keeps them one picture.

The loop is the pipeline's own (``StableDiffusion3Pipeline.__call__``) with the one change written out: the same
starting noise for a seed, the same timesteps, the same guidance and decoding. One sound under a mask of ones is
the pipeline's image.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from a2i_core.core.errors import A2IError
from a2i_core.diffusion.render import RenderSettings


def check_masks(masks: np.ndarray, n: int, size: int) -> None:
    """A2IError unless ``masks`` is (n, size, size), non-negative and summing to 1 at every pixel."""
    if np.shape(masks) != (n, size, size):
        raise A2IError(f"region masks of shape {tuple(np.shape(masks))} for {n} sounds at {size} px: need "
                       f"({n}, {size}, {size})")
    if not (np.all(np.asarray(masks) >= 0) and np.allclose(np.sum(masks, axis=0), 1, atol=1e-4)):
        raise A2IError("region masks must be non-negative and sum to 1 at every pixel")


def latent_masks(masks: np.ndarray, h: int, w: int, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """(n, 1, h, w) the pixel masks (n, H, W) area-averaged to latent resolution, renormalised to sum 1."""
    pixel = torch.from_numpy(np.asarray(masks, np.float32))[:, None]  # (n, 1, H, W)
    small = F.interpolate(pixel, size=(h, w), mode="area")  # (n, 1, h, w): each latent cell's share of its pixels
    small = small / small.sum(dim=0, keepdim=True)
    return small.to(device, dtype)


def timesteps(pipe, steps: int, h: int, w: int, device: torch.device) -> torch.Tensor:
    """The scheduler's timesteps as the pipeline sets them: shifted by the latent's size only when the scheduler
    shifts dynamically (SD3.5-style configs); SD3 Medium's fixed shift needs no ``mu``."""
    from diffusers.pipelines.stable_diffusion_3.pipeline_stable_diffusion_3 import calculate_shift

    config, kwargs = pipe.scheduler.config, {}
    if config.get("use_dynamic_shifting", None):
        patch = pipe.transformer.config.patch_size
        kwargs["mu"] = calculate_shift((h // patch) * (w // patch), config.get("base_image_seq_len", 256),
                                       config.get("max_image_seq_len", 4096), config.get("base_shift", 0.5),
                                       config.get("max_shift", 1.16))
    pipe.scheduler.set_timesteps(steps, device=device, **kwargs)  # also resets the scheduler's step counter
    return pipe.scheduler.timesteps


def decode(pipe, latents: torch.Tensor) -> Image.Image:
    """The image of ``latents`` (1, C, h, w), decoded as the pipeline decodes for ``output_type="pil"``."""
    latents = latents / pipe.vae.config.scaling_factor + pipe.vae.config.shift_factor
    image = pipe.vae.decode(latents, return_dict=False)[0]  # (1, 3, H, W) in [-1, 1]
    return pipe.image_processor.postprocess(image, output_type="pil")[0]


@torch.inference_mode()
def render_regions(pipe, conds: list[tuple[np.ndarray, np.ndarray]], masks: np.ndarray, empty_pooled: np.ndarray,
                   empty_sequence: np.ndarray, settings: RenderSettings, device: torch.device, dtype: torch.dtype,
                   seed: int, centres: list[tuple[float, float]] | None = None) -> Image.Image:
    """One image of ``settings.size`` pixels in which sound i, conditioned on ``conds[i]`` (pooled (P,), sequence
    (L, D)), draws where ``masks[i]`` (n, size, size), summing to 1 at every pixel, gives it weight.

    The starting noise is ``render_iter``'s for ``seed``, the negative (guidance) branch the empty prompt, and
    ``settings.steps`` and ``settings.guidance`` are used as the pipeline uses them (``settings.seed`` and
    ``settings.batch_size`` are not: one image, one seed). Each step costs one transformer call of n + 1 rows.

    With ``centres`` (each sound's (x, y) in unit coordinates), sound i sees the latents shifted (rolled) so that
    its centre lies at the image's middle, and its velocity is shifted back: a model that draws its subject in the
    middle of the frame draws it whole in the sound's region, not the region's slice of a centred subject. Each
    sound then needs its own unconditional row: 2n rows a step (n + 1 when every centre is the middle).
    """
    n, size = len(conds), settings.size
    check_masks(masks, n, size)
    lengths = {np.shape(seq) for _, seq in conds} | {np.shape(empty_sequence)}
    if len(lengths) != 1:
        raise A2IError(f"the sounds' sequences and the empty prompt's differ in shape ({sorted(lengths)}): "
                       "they are batched in one transformer call")
    guided = settings.guidance > 1  # the pipeline's own rule: no unconditional branch at guidance <= 1

    def tensor(array: np.ndarray) -> torch.Tensor:
        return torch.from_numpy(np.asarray(array, np.float32)).to(device, dtype)

    # One batch of rows for the transformer: [empty prompt,] sound 1, ..., sound n (the pipeline's order: negative
    # first), so that for one sound it is the pipeline's very call.
    pooled = torch.stack([tensor(p) for p, _ in conds])  # (n, P)
    sequence = torch.stack([tensor(s) for _, s in conds])  # (n, L, D)
    if guided:
        pooled = torch.cat([tensor(empty_pooled)[None], pooled])  # (1+n, P)
        sequence = torch.cat([tensor(empty_sequence)[None], sequence])  # (1+n, L, D)
    rows = len(pooled)

    # The pipeline's starting noise for this seed: a CPU generator, as render_iter seeds it.
    generator = torch.Generator(device="cpu").manual_seed(seed)
    latents = pipe.prepare_latents(1, pipe.transformer.config.in_channels, size, size, dtype, device,
                                   [generator])  # (1, C, h, w)
    _, _, h, w = latents.shape
    weight = latent_masks(masks, h, w, device, dtype)  # (n, 1, h, w)
    shifts = _shifts(centres, n, h, w, pipe.transformer.config.patch_size)
    if any(shifts):
        return decode(pipe, _denoise_shifted(pipe, latents, pooled, sequence, weight, shifts, settings, guided,
                                             device))

    for t in timesteps(pipe, settings.steps, h, w, device):
        velocity = pipe.transformer(
            hidden_states=latents.repeat(rows, 1, 1, 1),  # (rows, C, h, w): every row sees the same latent
            timestep=t.expand(rows), encoder_hidden_states=sequence, pooled_projections=pooled,
            return_dict=False)[0]  # (rows, C, h, w)
        conditional = velocity[1:] if guided else velocity  # (n, C, h, w)
        # The regions' velocity: each latent cell takes each sound's velocity in the share its mask gives it.
        v_c = (weight * conditional).sum(dim=0, keepdim=True)  # (1, C, h, w)
        if guided:
            # Guidance after blending is guidance per sound then blended: with sum_i m_i = 1,
            # sum_i m_i (v_u + g (v_i - v_u)) = v_u + g (sum_i m_i v_i - v_u), since the guided velocity is affine
            # in v_i. So one unconditional call serves every region.
            v_u = velocity[:1]  # (1, C, h, w)
            v = v_u + settings.guidance * (v_c - v_u)
        else:
            v = v_c
        latents = pipe.scheduler.step(v, t, latents, return_dict=False)[0]  # x += (sigma_next - sigma) * v
    return decode(pipe, latents)


def _shifts(centres: list[tuple[float, float]] | None, n: int, h: int, w: int, patch: int) -> list[tuple[int, int]]:
    """Each sound's (rows, columns) of latent that bring its centre to the middle: whole patches, so that every view
    cuts the latents into the same patches."""
    if centres is None:
        return [(0, 0)] * n
    if len(centres) != n:
        raise A2IError(f"{len(centres)} centres for {n} sounds")
    return [(round((y - 0.5) * h / patch) * patch, round((x - 0.5) * w / patch) * patch) for x, y in centres]


def _denoise_shifted(pipe, latents: torch.Tensor, pooled: torch.Tensor, sequence: torch.Tensor, weight: torch.Tensor,
                     shifts: list[tuple[int, int]], settings: RenderSettings, guided: bool,
                     device: torch.device) -> torch.Tensor:
    """The flow of ``render_regions`` with each sound seeing the latents rolled by its shift (its centre in the
    middle): per step, one call of [empty, sound] rows per sound, each guided velocity rolled back and blended."""
    _, _, h, w = latents.shape
    n = len(shifts)
    first = 1 if guided else 0  # pooled and sequence hold [empty prompt,] sound 1 .. n
    if guided:
        pooled = torch.cat([torch.stack([pooled[0], pooled[first + i]]) for i in range(n)])  # (2n, P)
        sequence = torch.cat([torch.stack([sequence[0], sequence[first + i]]) for i in range(n)])  # (2n, L, D)
    per = 2 if guided else 1  # rows per sound
    for t in timesteps(pipe, settings.steps, h, w, device):
        views = torch.cat([torch.roll(latents, (-dy, -dx), dims=(2, 3)) for dy, dx in shifts])  # (n, C, h, w)
        rows = views.repeat_interleave(per, dim=0)  # (per n, C, h, w): each view under [empty,] its sound
        velocity = pipe.transformer(hidden_states=rows, timestep=t.expand(len(rows)),
                                    encoder_hidden_states=sequence, pooled_projections=pooled,
                                    return_dict=False)[0]  # (per n, C, h, w)
        velocity = velocity.view(n, per, *velocity.shape[1:])  # (n, per, C, h, w)
        guided_v = (velocity[:, 0] + settings.guidance * (velocity[:, 1] - velocity[:, 0]) if guided
                    else velocity[:, 0])  # (n, C, h, w), in each sound's own view
        back = torch.stack([torch.roll(v, (dy, dx), dims=(1, 2)) for v, (dy, dx) in zip(guided_v, shifts,
                                                                                       strict=True)])  # (n, C, h, w)
        v = (weight * back).sum(dim=0, keepdim=True)  # (1, C, h, w)
        latents = pipe.scheduler.step(v, t, latents, return_dict=False)[0]
    return latents
