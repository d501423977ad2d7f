"""Teaching the offline profile's tiny SD3 and tiny CLIP the demo's world, so that sound visibly steers the picture.

Randomly initialised, the tiny SD3 draws the same speckle for every conditioning and the tiny CLIP recognises
nothing, so image-level metrics sit at chance. Here both are fitted, in plain PyTorch, to one procedural picture per
prompt (:mod:`a2i_core.data.sources.pictures`):

- SD3's VAE becomes an autoencoder of the pictures (its last decoder layer then solved exactly), so that its
  decoder paints them;
- SD3's transformer learns rectified flow towards each prompt's picture latent as ``FlowMatchEulerDiscreteScheduler``
  samples it (x_t = (1 - σ)·x0 + σ·ε, velocity ε - x0, timestep 1000·σ, at the σ the sampler visits), from the
  conditioning the embed_text stage really stores: a prompt's pooled with its own sequence, a pooled only near a
  prompt's with the empty prompt's sequence (how a mapper's prediction is rendered), and the empty prompt itself.
  The loss is taken on the velocity the pipeline follows under classifier-free guidance, so guidance g lands on the
  picture; a blend of all prompts (the mean baseline) is drawn as one plain neutral picture;
- CLIP's two towers learn, contrastively, to match the pictures (augmented so that the fitted SD3's imperfect
  drawings still count) with their prompts.

Everything is seeded through explicit generators and runs on the CPU in under a minute; the fitted components are
saved back with ``save_pretrained`` in place of the random ones and load through the usual ``from_pretrained`` paths.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from a2i_core.core.errors import quiet_hf_libraries
from a2i_core.data.sources.pictures import picture, picture_array
from a2i_core.diffusion.prompt_embeddings import EMPTY_PROMPT, encode
from a2i_core.diffusion.sd3 import joint_attention_dim, load_sd3

log = logging.getLogger(__name__)

CPU = torch.device("cpu")
VAE_TRAINING_SIZE = 64  # the VAE is fitted on crops of pictures drawn this size (or the smallest asked for)


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the block with ``n`` intra-op threads, then restore the caller's setting.

    The fits default to one thread: their matrices are a few dozen wide, so a second thread gains at most about
    1.5x on an idle machine, and when another process holds a core every small op waits for the descheduled
    thread (measured: the CLIP fit took 2.5 s on one thread, 76 s on two, beside one busy process).
    """
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def cosine_lr(optimizer: torch.optim.Optimizer, base: float, step: int, total: int, warmup: int = 0) -> None:
    """Linear warm-up for ``warmup`` steps, then a cosine decay to zero at ``total`` (times a group's ``lr_scale``)."""
    scale = min(1.0, (step + 1) / warmup) if warmup else 1.0
    for group in optimizer.param_groups:
        group["lr"] = group.get("lr_scale", 1.0) * base * scale * 0.5 * (1 + math.cos(math.pi * step / total))


# --- SD3: the conditioning the pipeline stores ---------------------------------------------------------------------

@dataclass
class Conditioning:
    pooled: torch.Tensor  # (K, P): each prompt's pooled embedding
    sequence: torch.Tensor  # (K, L, D): each prompt's joint sequence embedding
    empty_pooled: torch.Tensor  # (P,)
    empty_sequence: torch.Tensor  # (L, D)


def prompt_conditioning(directory: str | Path, prompts: Sequence[str], max_sequence_length: int,
                        use_t5: bool = True) -> Conditioning:
    """The prompts' and the empty prompt's embeddings, computed exactly as the embed_text stage computes them."""
    pipe = load_sd3(directory, "text", CPU, torch.float32, use_t5=use_t5)
    joint_width = None if use_t5 else joint_attention_dim(directory)
    pooled, sequence = encode(pipe, [*prompts, EMPTY_PROMPT], max_sequence_length, joint_width)  # (K+1, P), (K+1, L, D)
    pooled = torch.from_numpy(pooled)
    # embed_text stores sequences as float16: fit on exactly the numbers rendering will be given.
    sequence = sequence.half().float()
    return Conditioning(pooled[:-1], sequence[:-1], pooled[-1], sequence[-1])


def pictures_tensor(prompts: Sequence[str], size: int) -> torch.Tensor:
    """Each prompt's picture, then the neutral one (plain grey: see ``conditioning_batch``), as
    (K + 1, 3, size, size) in [-1, 1]."""
    pictures = torch.from_numpy(np.stack([picture_array(p, size) for p in prompts]))
    return torch.cat([pictures, torch.zeros(1, 3, size, size)])


# --- SD3: the VAE ----------------------------------------------------------------------------------------------------

def random_crops(images: dict[int, torch.Tensor], n: int, crop: int, grid: int,
                 generator: torch.Generator) -> torch.Tensor:
    """``n`` crops (n, 3, crop, crop) from random images of random sizes, at offsets on the latent ``grid`` so that
    a crop is encoded in the same phase as the whole picture."""
    sizes = sorted(images)
    out = []
    for _ in range(n):
        size = sizes[int(torch.randint(len(sizes), (), generator=generator))]
        batch = images[size]  # (K, 3, size, size)
        k = int(torch.randint(len(batch), (), generator=generator))
        y, x = (torch.randint(0, (size - crop) // grid + 1, (2,), generator=generator) * grid).tolist()
        out.append(batch[k, :, y : y + crop, x : x + crop])
    return torch.stack(out)


def fit_vae(vae, images: dict[int, torch.Tensor], steps: int, generator: torch.Generator, lr: float = 3e-3,
            batch_size: int = 16, crop: int = 16, kl_weight: float = 1e-2, warmup: int = 30) -> float:
    """Fit the VAE as an autoencoder of the pictures; returns the last batch's reconstruction MSE.

    Crops train faster than whole pictures and, the VAE being convolutional, teach it the local shapes and colours
    it needs at every size. A warm-up keeps the first steps from scattering the random decoder (fits from
    different seeds then end much closer to each other). Decoding a *sampled* latent (not its mean) makes the
    decoder tolerant of latents that are only near a picture's, which is what the transformer will hand it. The
    KL term keeps latents near unit scale.
    """
    grid = 2 ** (len(vae.config.block_out_channels) - 1)  # the pipeline's vae_scale_factor
    optimizer = torch.optim.Adam(vae.parameters(), lr=lr)
    vae.train()
    mse = float("nan")
    for step in tqdm(range(steps), desc="fit tiny SD3 VAE", unit="step", mininterval=2):
        cosine_lr(optimizer, lr, step, steps, warmup)
        x = random_crops(images, batch_size, crop, grid, generator)  # (B, 3, crop, crop)
        posterior = vae.encode(x).latent_dist
        z = posterior.mean + posterior.std * torch.randn(posterior.mean.shape, generator=generator)  # (B, C, h, w)
        reconstruction = vae.decode(z).sample  # (B, 3, crop, crop)
        mse_t = F.mse_loss(reconstruction, x)
        kl = posterior.kl().mean() / z[0].numel()  # per latent element
        optimizer.zero_grad(set_to_none=True)
        (mse_t + kl_weight * kl).backward()
        optimizer.step()
        mse = float(mse_t.detach())
    vae.eval()
    return mse


@torch.no_grad()
def calibrate_decoder(vae, images: dict[int, torch.Tensor], generator: torch.Generator, ridge: float = 1e-3) -> None:
    """Solve the decoder's last convolution exactly by least squares on the whole pictures.

    A few hundred gradient steps leave the decoder's colours visibly off (red drifts to orange), and colour is
    what tells these pictures apart. That layer is linear in its weights given its input, so its best weights
    for the pictures' latents (their means and one sample each, as the transformer's are only near) are a ridge
    regression of the pixels on the 3x3 neighbourhoods of its input features.
    """
    conv = vae.decoder.conv_out
    captured: list[torch.Tensor] = []
    hook = conv.register_forward_hook(lambda module, inputs, output: captured.append(inputs[0]))
    gram = cross = torch.zeros(())
    try:
        for x in images.values():
            posterior = vae.encode(x).latent_dist
            for z in (posterior.mean, posterior.mean + posterior.std * torch.randn(posterior.mean.shape,
                                                                                 generator=generator)):
                captured.clear()
                vae.decode(z)
                columns = F.unfold(captured[0], conv.kernel_size, padding=conv.padding)  # (K, C*3*3, H*W)
                features = torch.cat([columns, torch.ones_like(columns[:, :1])], 1)  # (K, C*3*3 + 1, H*W): + bias
                features = features.transpose(1, 2).reshape(-1, features.shape[1]).double()  # (K*H*W, F)
                pixels = x.permute(0, 2, 3, 1).reshape(-1, x.shape[1]).double()  # (K*H*W, 3)
                gram = gram + features.T @ features  # (F, F)
                cross = cross + features.T @ pixels  # (F, 3)
    finally:
        hook.remove()
    regulariser = ridge * gram.diagonal().mean() * torch.eye(len(gram), dtype=gram.dtype)
    solution = torch.linalg.solve(gram + regulariser, cross)  # (F, 3)
    conv.weight.copy_(solution[:-1].T.reshape(conv.weight.shape))
    conv.bias.copy_(solution[-1])


@torch.no_grad()
def reconstruction_mse(vae, images: dict[int, torch.Tensor]) -> float:
    """Mean squared error of decoding the pictures' mean latents, over all sizes (pixels in [-1, 1])."""
    errors = [F.mse_loss(vae.decode(vae.encode(x).latent_dist.mean).sample, x) for x in images.values()]
    return float(torch.stack(errors).mean())


@torch.no_grad()
def picture_latents(vae, images: dict[int, torch.Tensor]) -> dict[int, torch.Tensor]:
    """Each picture's latent (K + 1, C, size/f, size/f) in the transformer's space: the pipeline decodes
    ``latents / scaling_factor + shift_factor``, so the target is ``(mean - shift_factor) * scaling_factor``."""
    shift, scale = vae.config.shift_factor, vae.config.scaling_factor
    return {size: (vae.encode(x).latent_dist.mean - shift) * scale for size, x in images.items()}


# --- SD3: the transformer --------------------------------------------------------------------------------------------

def sampler_sigmas(scheduler, render_steps: Sequence[int], smallest: float = 0.1) -> torch.Tensor:
    """The σ at which the pipeline calls the transformer for these step counts, leaving out those below
    ``smallest``: the sampler's last step from there moves the latent by σ·v, next to nothing."""
    sigmas = []
    for n in render_steps:
        scheduler.set_timesteps(n)
        sigmas.append(scheduler.sigmas[:-1].float())
    sigmas = torch.cat(sigmas)
    return sigmas[sigmas >= smallest]


def sample_sigmas(n: int, shift: float, grid: torch.Tensor, generator: torch.Generator,
                  grid_fraction: float = 0.8) -> torch.Tensor:
    """(n,) noise levels: most exactly the σ the sampler visits at the step counts rendering uses, the rest drawn
    the way the scheduler spaces them (a uniform time through its shift, σ = s·u / (1 + (s - 1)·u))."""
    u = torch.rand(n, generator=generator)
    sigma = shift * u / (1 + (shift - 1) * u)
    on_grid = torch.rand(n, generator=generator) < grid_fraction
    return torch.where(on_grid, grid[torch.randint(len(grid), (n,), generator=generator)], sigma)


def near_pooled(pooled: torch.Tensor, k: torch.Tensor, generator: torch.Generator, max_mix: float = 0.15,
                max_noise: float = 0.25) -> torch.Tensor:
    """(B, P) pooled embeddings only close to those of classes ``k`` (B,): what a mapper predicts (cosine about
    0.99 to the truth, pulled towards other prompts and their mean). Each is mixed with another prompt's or the
    mean (weight up to ``max_mix``), then moved by random noise of up to ``max_noise`` of its norm."""
    b = len(k)
    others = torch.cat([pooled, pooled.mean(0, keepdim=True)])  # (K + 1, P)
    other = others[torch.randint(len(others), (b,), generator=generator)]  # (B, P)
    mix = max_mix * torch.rand(b, 1, generator=generator)
    near = (1 - mix) * pooled[k] + mix * other
    noise = torch.randn(b, pooled.shape[1], generator=generator)
    noise = noise / noise.norm(dim=1, keepdim=True) * near.norm(dim=1, keepdim=True)
    return near + max_noise * torch.rand(b, 1, generator=generator) * noise


def ambiguous_pooled(pooled: torch.Tensor, b: int, generator: torch.Generator) -> torch.Tensor:
    """(b, P) blends of all the prompts' pooled embeddings with no prompt dominant, like the mean of them all
    (the render stage's baseline): embeddings that say nothing about which picture to draw."""
    weights = torch.softmax(0.5 * torch.randn(b, len(pooled), generator=generator), dim=1)  # (b, K)
    return weights @ pooled


@dataclass
class FlowBatch:
    k: torch.Tensor  # (B,) the picture each row is drawn towards; K (one past the prompts) is the neutral one
    pooled: torch.Tensor  # (B, P)
    sequence: torch.Tensor  # (B, L, D)


def conditioning_batch(cond: Conditioning, b: int, generator: torch.Generator, own_sequence: float = 0.5,
                       neutral: float = 0.2) -> FlowBatch:
    """Rows of the kinds rendering uses: a prompt's pooled with its own sequence (the true prompt's image), a
    pooled only near a prompt's with the empty prompt's sequence (a mapper's prediction), and (a ``neutral``
    fraction) a blend of every prompt, no prompt's, with the empty sequence, drawn towards the neutral picture.

    Without those, a blend such as the mean baseline would be drawn as an unconditional sample, a random
    picture per seed that matches its sound by chance; with them it is one plain picture for every sound.
    """
    n_prompts = len(cond.pooled)
    k = torch.randint(n_prompts, (b,), generator=generator)
    own = torch.rand(b, generator=generator) < own_sequence
    blend = torch.rand(b, generator=generator) < neutral
    pooled = torch.where(own[:, None], cond.pooled[k], near_pooled(cond.pooled, k, generator))  # (B, P)
    pooled = torch.where(blend[:, None], ambiguous_pooled(cond.pooled, b, generator), pooled)
    sequence = torch.where((own & ~blend)[:, None, None], cond.sequence[k], cond.empty_sequence.expand(b, -1, -1))
    return FlowBatch(torch.where(blend, n_prompts, k), pooled, sequence)  # (B, L, D) sequences


def posterior_velocity(x0: torch.Tensor, x_t: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
    """(B, C, h, w): the empty prompt's velocity target E[ε - x0 | x_t] = (x_t - E[x0 | x_t]) / σ.

    The empty prompt's data is every picture alike; with a handful of pictures the posterior over them is exact
    (a softmax over Gaussian likelihoods), so the expectation is used instead of one random picture's velocity.
    """
    s = sigma[:, None, None, None]
    # log N(x_t; (1 - σ)·x0_j, σ²) up to a constant, for every picture j: (B, K)
    distance = (x_t[:, None] - (1 - s[:, None]) * x0[None]).pow(2).flatten(2).sum(-1)
    weights = torch.softmax(-distance / (2 * sigma[:, None] ** 2), dim=1)
    return (x_t - torch.einsum("bk,kchw->bchw", weights, x0)) / s


def flow_loss(transformer, cond: Conditioning, x0: torch.Tensor, batch: FlowBatch, sigma: torch.Tensor,
              eps: torch.Tensor, guidance: float) -> torch.Tensor:
    """The loss of one batch, taken on what the pipeline actually moves along.

    The pipeline runs each latent twice, with the prompt and with the empty prompt, and follows
    v_empty + g·(v_prompt - v_empty). That guided velocity is fitted to ε - x0 (so the sampler goes straight to the
    picture at guidance g, neither overshooting nor amplifying either branch's error g-fold), and the empty branch
    alone to its own target (so it stays an unconditional model). Errors are weighted by σ²: the error of the
    implied clean latent x_t - σ·v, which is what the sampler's last large step turns into the picture.
    ``x0`` (K + 1, C, h, w) holds the prompts' picture latents, then the neutral one.
    """
    b = len(batch.k)
    s = sigma[:, None, None, None]
    x_t = (1 - s) * x0[batch.k] + s * eps  # (B, C, h, w)
    v = transformer(  # prompt rows, then the same latents with the empty prompt, as the pipeline batches them
        hidden_states=torch.cat([x_t, x_t]), timestep=torch.cat([sigma, sigma]) * 1000,
        encoder_hidden_states=torch.cat([batch.sequence, cond.empty_sequence.expand(b, -1, -1)]),
        pooled_projections=torch.cat([batch.pooled, cond.empty_pooled.expand(b, -1)])).sample  # (2B, C, h, w)
    v_prompt, v_empty = v.chunk(2)
    guided = v_empty + guidance * (v_prompt - v_empty)
    guided_error = (guided - (eps - x0[batch.k])).pow(2)
    empty_error = (v_empty - posterior_velocity(x0[:-1], x_t, sigma)).pow(2)  # the prompts' pictures only
    return (s**2 * (guided_error + empty_error)).mean()


def sharpen_positions(transformer) -> None:
    """Rebuild the positional table at two units per patch and make it trainable.

    The tiny transformer inherits SD3's table (sincos over a ``pos_embed_max_size`` grid scaled by
    ``sample_size / patch_size``), but at its size neighbouring patches sit a quarter unit apart: the code barely
    changes across a 64 px image and the fit cannot place shapes. The table is a saved weight, so a sharper start
    (diffusers' own sincos at eight times the spacing), then fitting it, changes no architecture and loads back
    through ``from_pretrained``.
    """
    from diffusers.models.embeddings import get_2d_sincos_pos_embed

    embed = transformer.pos_embed
    grid = embed.pos_embed_max_size
    table = get_2d_sincos_pos_embed(embed.pos_embed.shape[-1], grid, base_size=2 * grid, interpolation_scale=1.0,
                                    output_type="pt")  # (grid * grid, width)
    del embed.pos_embed
    embed.pos_embed = torch.nn.Parameter(table.float().unsqueeze(0))


def freeze_positions(transformer) -> None:
    """Back to a (persistent) buffer, as diffusers declares it, before saving."""
    embed = transformer.pos_embed
    table = embed.pos_embed.detach().clone()
    del embed.pos_embed
    embed.register_buffer("pos_embed", table, persistent=True)


def transformer_optimizer(transformer, params: list[torch.nn.Parameter], lr: float,
                          position_lr_scale: float = 10.0) -> torch.optim.AdamW:
    """AdamW over ``params``, with the positional table (``sharpen_positions``) at ``position_lr_scale`` times the
    rate: each of its entries is trained only by the patch at its place, and where shapes go is what takes the
    fit longest to learn (at 128 px it cuts the pixel error of a 300-step fit by about a third)."""
    table = transformer.pos_embed.pos_embed
    rest = [p for p in params if p is not table]
    groups = [{"params": rest, "lr_scale": 1.0}, {"params": [table], "lr_scale": position_lr_scale}]
    return torch.optim.AdamW(groups, lr=lr, weight_decay=0.0)


def fit_transformer(transformer, scheduler, cond: Conditioning, latents: dict[int, torch.Tensor],
                    render_steps: Sequence[int], guidance: float, steps: int, generator: torch.Generator,
                    lr: float = 8e-3, batch_size: int = 8) -> float:
    """Rectified-flow fitting of the transformer (see ``flow_loss``); returns the last loss.

    Each step takes, per image size, ``batch_size`` prompt rows at 64 px (proportionally fewer at larger sizes),
    each also run with the empty prompt, at noise levels drawn as ``sample_sigmas`` draws them.
    """
    shift = scheduler.config.shift
    grid = sampler_sigmas(scheduler, render_steps)
    sharpen_positions(transformer)
    params = [p for p in transformer.parameters() if p.requires_grad]
    optimizer = transformer_optimizer(transformer, params, lr)
    transformer.train()
    loss_value = float("nan")
    for step in tqdm(range(steps), desc="fit tiny SD3 transformer", unit="step", mininterval=2):
        cosine_lr(optimizer, lr, step, steps, warmup=20)
        optimizer.zero_grad(set_to_none=True)
        total = 0.0
        for size, x0 in sorted(latents.items()):
            b = max(2, batch_size * 64 // size)
            batch = conditioning_batch(cond, b, generator)
            sigma = sample_sigmas(b, shift, grid, generator)  # (B,)
            eps = torch.randn((b, *x0.shape[1:]), generator=generator)  # (B, C, h, w)
            loss = flow_loss(transformer, cond, x0, batch, sigma, eps, guidance) / len(latents)
            loss.backward()
            total += float(loss.detach())
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        optimizer.step()
        loss_value = total
    transformer.eval()
    freeze_positions(transformer)
    return loss_value


def fit_tiny_sd3(directory: str | Path, prompts: Sequence[str], *, max_sequence_length: int, use_t5: bool = True,
                 sizes: Sequence[int] = (64, 128), render_steps: Sequence[int] = (4, 8), guidance: float = 5.0,
                 vae_steps: int = 400, steps: int = 300, batch_size: int = 8, seed: int = 0,
                 threads: int = 1) -> dict[str, float]:
    """Fit the tiny SD3 saved in ``directory`` (by ``tiny.save_tiny_sd3``) to draw each prompt's picture, and save
    its VAE and transformer back there.

    ``max_sequence_length`` and ``use_t5`` must be the embed_text stage's (``diffusion.*``): the transformer learns
    the sequences that stage will store. ``sizes``, ``render_steps`` and ``guidance`` are the render settings it is
    fitted for (the offline profile renders 128 px in 8 steps, the tests' demo 64 px in 4, both at guidance 5);
    each extra size costs about as much again. Returns timings and losses.
    """
    quiet_hf_libraries()
    generator = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    with torch_threads(threads):
        cond = prompt_conditioning(directory, prompts, max_sequence_length, use_t5)
        pipe = load_sd3(directory, "image", CPU, torch.float32)
        images = {size: pictures_tensor(prompts, size) for size in sizes}
        vae_start = time.monotonic()
        # Crops of small drawings hold the most edges per crop (at 128 px most crops are flat colour); the VAE is
        # convolutional, so what it learns there it applies at every size (measured: 30% lower error at 128 px).
        small = min(VAE_TRAINING_SIZE, *sizes)
        fit_vae(pipe.vae, {small: pictures_tensor(prompts, small)}, vae_steps, generator)
        calibrate_decoder(pipe.vae, images, generator)
        vae_mse = reconstruction_mse(pipe.vae, images)
        latents = picture_latents(pipe.vae, images)
        transformer_start = time.monotonic()
        flow = fit_transformer(pipe.transformer, pipe.scheduler, cond, latents, render_steps, guidance, steps,
                               generator, batch_size=batch_size)
        done = time.monotonic()
    directory = Path(directory)
    pipe.vae.save_pretrained(directory / "vae", safe_serialization=True)
    pipe.transformer.save_pretrained(directory / "transformer", safe_serialization=True)
    stats = {"vae_seconds": round(transformer_start - vae_start, 2), "vae_mse": round(vae_mse, 5),
             "transformer_seconds": round(done - transformer_start, 2), "flow_loss": round(flow, 5),
             "seconds": round(time.monotonic() - start, 2)}
    log.info("fitted the tiny SD3 to %d prompts: %s", len(prompts), stats)
    return stats


# --- CLIP ------------------------------------------------------------------------------------------------------------

def augment(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(B, 3, H, W) in [0, 1] -> the same pictures as a fitted SD3 might draw them: moved and scaled a little,
    blurred, off in colour and saturation (guidance exaggerates colours), and noisy."""
    b = len(images)

    def uniform(lo: float, hi: float, *shape: int) -> torch.Tensor:
        return lo + (hi - lo) * torch.rand(b, *shape, generator=generator)

    # Geometry: scale, small rotation and translation, by an affine sampling grid.
    scale, angle = uniform(0.85, 1.15), uniform(-0.2, 0.2)
    shift = uniform(-0.12, 0.12, 2)
    theta = torch.stack([torch.stack([torch.cos(angle) / scale, -torch.sin(angle) / scale, shift[:, 0]], -1),
                         torch.stack([torch.sin(angle) / scale, torch.cos(angle) / scale, shift[:, 1]], -1)], 1)
    grid = F.affine_grid(theta, list(images.shape), align_corners=False)  # (B, H, W, 2)
    x = F.grid_sample(images, grid, padding_mode="border", align_corners=False)
    # Blur: a mix with a box-blurred copy.
    blurred = F.avg_pool2d(F.pad(x, (1, 1, 1, 1), mode="replicate"), 3, stride=1)
    amount = uniform(0, 1, 1, 1, 1)
    x = (1 - amount) * x + amount * blurred
    # Colour: saturation, per-channel gain and offset.
    grey = x.mean(1, keepdim=True)
    x = grey + uniform(0.6, 1.5, 1, 1, 1) * (x - grey)
    x = x * uniform(0.75, 1.25, 3, 1, 1) + uniform(-0.12, 0.12, 3, 1, 1)
    x = x + uniform(0, 0.08, 1, 1, 1) * torch.randn(x.shape, generator=generator)
    return x.clamp(0, 1)


def clip_pixels(processor, prompts: Sequence[str], sizes: Sequence[int]) -> torch.Tensor:
    """The pictures at each size, through the CLIP processor's own resize and crop, as (K * len(sizes), 3, S, S) in
    [0, 1] (the normalisation is applied after augmenting)."""
    images = [picture(p, size) for size in sizes for p in prompts]
    pixels = processor(images=images, return_tensors="pt")["pixel_values"]  # normalised
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    return pixels * std + mean


def fit_clip(model, processor, prompts: Sequence[str], steps: int, generator: torch.Generator, lr: float = 2e-3,
             batch_size: int = 64, sizes: Sequence[int] = (64, 128)) -> float:
    """Contrastive fitting of both towers: each augmented picture against all the prompts (cross-entropy over the
    prompts, CLIP's image-to-text half); returns the last loss."""
    text = processor(text=list(prompts), return_tensors="pt", padding=True, truncation=True)  # as ClipScorer tokenises
    base = clip_pixels(processor, prompts, sizes)  # (K * S, 3, H, W)
    labels = torch.arange(len(prompts)).repeat(len(sizes))  # (K * S,)
    mean = torch.tensor(processor.image_processor.image_mean)[:, None, None]
    std = torch.tensor(processor.image_processor.image_std)[:, None, None]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    loss_value = float("nan")
    for step in tqdm(range(steps), desc="fit tiny CLIP", unit="step", mininterval=2):
        cosine_lr(optimizer, lr, step, steps, warmup=10)
        rows = torch.randint(len(base), (batch_size,), generator=generator)
        pixels = (augment(base[rows], generator) - mean) / std  # (B, 3, H, W)
        image_emb = F.normalize(model.get_image_features(pixel_values=pixels).pooler_output, dim=-1)  # (B, d)
        text_emb = F.normalize(model.get_text_features(**text).pooler_output, dim=-1)  # (K, d)
        logits = model.logit_scale.exp() * image_emb @ text_emb.T  # (B, K)
        loss = F.cross_entropy(logits, labels[rows])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss_value = float(loss.detach())
    model.eval()
    return loss_value


def fit_tiny_clip(directory: str | Path, prompts: Sequence[str], *, steps: int = 200, seed: int = 0,
                  threads: int = 1) -> dict[str, float]:
    """Fit the tiny CLIP saved in ``directory`` (by ``tiny.save_tiny_clip``) to recognise each prompt's picture,
    and save it back there. Returns timings and the last loss."""
    quiet_hf_libraries()
    from transformers import CLIPModel, CLIPProcessor

    generator = torch.Generator().manual_seed(seed)
    start = time.monotonic()
    with torch_threads(threads):
        model = CLIPModel.from_pretrained(str(directory))
        processor = CLIPProcessor.from_pretrained(str(directory))
        loss = fit_clip(model, processor, prompts, steps, generator)
    model.save_pretrained(str(directory), safe_serialization=True)
    stats = {"clip_loss": round(loss, 5), "seconds": round(time.monotonic() - start, 2)}
    log.info("fitted the tiny CLIP to %d prompts: %s", len(prompts), stats)
    return stats
