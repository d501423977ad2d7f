"""Rendering throughput: a stock SD3 pipeline call against the render stage's path, side by side.

(a) stock: ``StableDiffusion3Pipeline(prompt=...)`` with its text encoders, eager, fp16, one image per call;
(b) a2i: ``a2i_core.diffusion.render.render`` as the render stage runs it: precomputed embeddings (no text encoders),
    bf16, batched, SDPA attention; eager, then (with ``--compile``) with the transformer and VAE decoder compiled.
Rows are printed as they are measured, so a failure in compilation keeps the eager figures.

On a GPU the models have SD3 Medium's real architecture with random weights, built directly on the GPU
(no download). MFU is against the card's dense bf16 peak and against a bf16 GEMM measured in the same run,
and a table times SDPA's attention kernels at SD3 Medium's shape. ``--tiny`` runs the tiny SD3 on CPU in
seconds, for the tests.

    python benchmarks/render.py --device cuda --compile     # the run recorded in benchmarks/RESULTS.md
    python benchmarks/render.py --tiny
"""

from __future__ import annotations

import argparse
import contextlib
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from a2i_core.core.devices import resolve_device
from a2i_core.core.errors import quiet_hf_libraries
from a2i_core.diffusion.render import RenderSettings, compile_for_speed, render

TFLOP_PER_IMAGE = 499.0  # SD3 Medium, 1024², 28 steps with guidance (DESIGN.md)
# Dense bf16 tensor-core peaks from the vendors' data sheets, matched against torch.cuda.get_device_name.
SPEC_PEAK_TFLOPS = {"H100 PCIe": 756.0, "H100 NVL": 835.5, "H100": 989.4, "H200": 989.4, "GH200": 989.4,
                    "A100": 312.0, "L40S": 362.0}


def sd3_medium_on(device: torch.device, dtype: torch.dtype):
    """SD3 Medium's architecture with random weights, allocated and initialised on ``device``."""
    quiet_hf_libraries()
    from diffusers import (
        AutoencoderKL,
        FlowMatchEulerDiscreteScheduler,
        SD3Transformer2DModel,
        StableDiffusion3Pipeline,
    )
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection, T5Config, T5EncoderModel

    from a2i_core.offline.tiny import clip_tokenizer, t5_tokenizer

    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with device:  # parameters are created and initialised where they will run
            transformer = SD3Transformer2DModel(
                sample_size=128, patch_size=2, in_channels=16, num_layers=24, attention_head_dim=64,
                num_attention_heads=24, joint_attention_dim=4096, caption_projection_dim=1536,
                pooled_projection_dim=2048, out_channels=16, pos_embed_max_size=192)
            vae = AutoencoderKL(
                in_channels=3, out_channels=3, latent_channels=16, block_out_channels=(128, 256, 512, 512),
                down_block_types=("DownEncoderBlock2D",) * 4, up_block_types=("UpDecoderBlock2D",) * 4,
                layers_per_block=2, norm_num_groups=32, sample_size=1024, scaling_factor=1.5305,
                shift_factor=0.0609, use_quant_conv=False, use_post_quant_conv=False)
            clip_l = CLIPTextModelWithProjection(CLIPTextConfig(
                vocab_size=49408, hidden_size=768, intermediate_size=3072, num_hidden_layers=12,
                num_attention_heads=12, projection_dim=768, hidden_act="quick_gelu"))
            clip_g = CLIPTextModelWithProjection(CLIPTextConfig(
                vocab_size=49408, hidden_size=1280, intermediate_size=5120, num_hidden_layers=32,
                num_attention_heads=20, projection_dim=1280, hidden_act="gelu"))
            t5 = T5EncoderModel(T5Config(
                vocab_size=32128, d_model=4096, d_kv=64, d_ff=10240, num_layers=24, num_heads=64,
                feed_forward_proj="gated-gelu", relative_attention_num_buckets=32))
    finally:
        torch.set_default_dtype(previous)
    # The in-code tokenizers' ids all fall inside the real vocabularies, which is all random weights need.
    return StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=3.0), vae=vae,
        text_encoder=clip_l, tokenizer=clip_tokenizer(), text_encoder_2=clip_g, tokenizer_2=clip_tokenizer(),
        text_encoder_3=t5, tokenizer_3=t5_tokenizer())


def tiny_sd3(directory: Path, dtype: torch.dtype):
    quiet_hf_libraries()
    from diffusers import StableDiffusion3Pipeline

    from a2i_core.offline.tiny import save_tiny_sd3

    save_tiny_sd3(directory)
    return StableDiffusion3Pipeline.from_pretrained(directory, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def timed(fn: Callable[[], object], device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


def spec_peak(name: str) -> float | None:
    return next((peak for key, peak in SPEC_PEAK_TFLOPS.items() if key in name), None)


def gemm_tflops(device: torch.device, n: int = 8192, repeats: int = 10) -> float:
    """What a large bf16 matrix product reaches on this card: the practical ceiling for MFU."""
    a, b = (torch.randn(n, n, device=device, dtype=torch.bfloat16) for _ in range(2))
    for _ in range(3):
        a @ b
    seconds = timed(lambda: [a @ b for _ in range(repeats)], device)
    return 2 * n**3 * repeats / seconds / 1e12


def attention_table(device: torch.device, batch: int, image_tokens: int = 4096) -> list[str]:
    """SDPA's kernels on one joint-attention call of SD3 Medium (4096 image tokens at 1024², 333 text tokens)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.functional import scaled_dot_product_attention as sdpa

    tokens = image_tokens + 333
    q, k, v = (torch.randn(2 * batch, 24, tokens, 64, device=device, dtype=torch.bfloat16) for _ in range(3))
    flop = 4 * q.shape[0] * q.shape[1] * tokens**2 * q.shape[3]
    lines = [f"\nSDPA at SD3 Medium's shape (batch {2 * batch} with guidance, 24 heads, {tokens} tokens, head 64, "
             "bf16)\n", "| kernel | ms | TFLOP/s |", "| --- | ---: | ---: |"]
    kernels = {"default choice": None, "flash": SDPBackend.FLASH_ATTENTION, "cuDNN": SDPBackend.CUDNN_ATTENTION,
               "memory-efficient": SDPBackend.EFFICIENT_ATTENTION}
    for label, backend in kernels.items():
        try:
            with sdpa_kernel([backend]) if backend else contextlib.nullcontext():
                sdpa(q, k, v)
                seconds = timed(lambda: [sdpa(q, k, v) for _ in range(10)], device) / 10
            lines.append(f"| {label} | {seconds * 1e3:.2f} | {flop / seconds / 1e12:.0f} |")
        except RuntimeError as err:  # a kernel this card or build lacks
            lines.append(f"| {label} | n/a: {str(err).splitlines()[0][:60]} | |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--compile", action="store_true", help="add a row with the transformer and decoder compiled")
    parser.add_argument("--peak-tflops", type=float, help="dense bf16 peak (default: the card's data sheet)")
    parser.add_argument("--tiny", action="store_true", help="the tiny SD3 on CPU")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.images, args.batch_size, args.size, args.steps = "cpu", 4, 2, 64, 4

    device = resolve_device(args.device)
    on_gpu = device.type == "cuda"
    half = torch.float16 if on_gpu else torch.float32
    fast = torch.bfloat16 if on_gpu else torch.float32
    name = torch.cuda.get_device_name(device) if on_gpu else f"CPU x{torch.get_num_threads()} threads"
    peak = args.peak_tflops or (spec_peak(name) if on_gpu else None)
    gemm = gemm_tflops(device) if on_gpu else None
    prompts = [f"an image of a {n}" for n in ("dog", "church bell", "drum kit", "rainy street")]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = tiny_sd3(Path(tmp) / "sd3", half) if args.tiny else sd3_medium_on(device, half)  # on `device`
    pipe.set_progress_bar_config(disable=True)

    model = "tiny SD3" if args.tiny else "SD3 Medium architecture, random weights"
    print(f"\nrender on {name}: {model}, {args.size}², {args.steps} steps, guidance {args.guidance}, "
          f"{args.images} images, torch {torch.__version__}\n")
    print("| path | dtype | batch | s/image | images/s | speed-up | TFLOP/s | MFU | of GEMM peak |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)

    def report(label: str, dtype: torch.dtype, batch: int, seconds: float, stock_s: float) -> None:
        rate = args.images / seconds  # images/s
        tflops = rate * TFLOP_PER_IMAGE if not args.tiny else None
        cells = [f"{tflops:.0f}" if tflops else "n/a", f"{tflops / peak:.1%}" if tflops and peak else "n/a",
                 f"{tflops / gemm:.1%}" if tflops and gemm else "n/a"]
        print(f"| {label} | {str(dtype).removeprefix('torch.')} | {batch} | {seconds / args.images:.3f} | "
              f"{rate:.2f} | {stock_s / seconds:.2f}x | {' | '.join(cells)} |", flush=True)

    # (a) stock: text encoders in the loop, fp16, eager, one image per call.
    def stock(steps: int, images: int) -> None:
        for i in range(images):
            pipe(prompt=prompts[i % len(prompts)], num_inference_steps=steps, guidance_scale=args.guidance,
                 height=args.size, width=args.size, generator=torch.Generator("cpu").manual_seed(i))

    stock(2, 1)  # warm-up
    stock_s = timed(lambda: stock(args.steps, args.images), device)
    report("(a) stock pipeline call, eager", half, 1, stock_s, stock_s)

    # (b) the render stage's path: embeddings precomputed once (embed_text's job), text encoders dropped.
    with torch.inference_mode():
        sequence, _, pooled, _ = pipe.encode_prompt(prompts + [""], None, None, device=device,
                                                    do_classifier_free_guidance=False)
    pooled_np = pooled.float().cpu().numpy()
    targets = pooled_np[[i % len(prompts) for i in range(args.images)]]
    empty_pooled, empty_sequence = pooled_np[-1], sequence[-1].float().cpu().numpy()
    for part in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        setattr(pipe, part, None)
    if on_gpu:
        torch.cuda.empty_cache()
    pipe.transformer.to(fast)
    pipe.vae.to(fast)

    def sequences(indices: list[int]) -> np.ndarray:
        return np.stack([empty_sequence] * len(indices))  # (B, L, D): the empty prompt's, as the stage does

    def ours(steps: int, images: int) -> None:
        settings = RenderSettings(steps, args.guidance, args.size, seed=0, batch_size=args.batch_size)
        assert len(render(pipe, targets[:images], sequences, empty_pooled, empty_sequence, settings, device,
                          fast)) == images

    variants = [("(b) a2i render, eager", None)]
    if args.compile:
        variants.append(("(b) a2i render + compile", compile_for_speed))
    for label, prepare in variants:
        if prepare:
            prepare(pipe)
        ours(2, args.batch_size)  # warm-up (and compilation)
        report(label, fast, args.batch_size, timed(lambda: ours(args.steps, args.images), device), stock_s)

    if not args.tiny:
        print(f"\nMFU against {TFLOP_PER_IMAGE:.0f} TFLOP per image and "
              + (f"a {peak} TFLOP/s dense bf16 peak" if peak else "no known peak (pass --peak-tflops)")
              + (f"; a bf16 8192³ GEMM reached {gemm:.0f} TFLOP/s here." if gemm else "."))
    if on_gpu:
        print("\n".join(attention_table(device, args.batch_size)))


if __name__ == "__main__":
    main()
