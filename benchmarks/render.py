"""Rendering throughput: a stock SD3 pipeline call against the render stage's path, side by side.

(a) stock: ``StableDiffusion3Pipeline(prompt=...)`` with its text encoders, eager, fp16, one image per call;
(b) a2i: ``a2i_core.render.render`` as the render stage runs it: precomputed embeddings (no text encoders),
    bf16, batched, SDPA attention, optional torch.compile of the transformer and VAE decoder.

On a GPU the models have SD3 Medium's real architecture with random weights, built directly on the GPU
(no download). ``--tiny`` runs the tiny SD3 on CPU in seconds, for the tests.

    python benchmarks/render.py --device cuda --compile     # the run recorded in benchmarks/RESULTS.md
    python benchmarks/render.py --tiny
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from a2i_core.devices import resolve_device
from a2i_core.errors import quiet_hf_libraries
from a2i_core.render import RenderSettings, compile_for_speed, render

TFLOP_PER_IMAGE = 499.0  # SD3 Medium, 1024², 28 steps with guidance (DESIGN.md)


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

    from a2i_core.tiny import clip_tokenizer, t5_tokenizer

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

    from a2i_core.tiny import save_tiny_sd3

    save_tiny_sd3(directory)
    return StableDiffusion3Pipeline.from_pretrained(directory, dtype=dtype)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--images", type=int, default=8)
    parser.add_argument("--batch-size", type=int, default=4)
    parser.add_argument("--size", type=int, default=1024)
    parser.add_argument("--steps", type=int, default=28)
    parser.add_argument("--guidance", type=float, default=7.0)
    parser.add_argument("--compile", action="store_true")
    parser.add_argument("--peak-tflops", type=float, default=989.4, help="bf16 dense peak (H100 SXM: 989.4)")
    parser.add_argument("--tiny", action="store_true", help="the tiny SD3 on CPU")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.images, args.batch_size, args.size, args.steps = "cpu", 4, 2, 64, 4

    device = resolve_device(args.device)
    half = torch.float16 if device.type == "cuda" else torch.float32
    fast = torch.bfloat16 if device.type == "cuda" else torch.float32
    prompts = [f"an image of a {n}" for n in ("dog", "church bell", "drum kit", "rainy street")]
    with tempfile.TemporaryDirectory() as tmp:
        pipe = tiny_sd3(Path(tmp) / "sd3", half) if args.tiny else sd3_medium_on(device, half)
    pipe.to(device)
    pipe.set_progress_bar_config(disable=True)

    # (a) stock: text encoders in the loop, fp16, eager, one image per call.
    pipe(prompt=prompts[0], num_inference_steps=2, height=args.size, width=args.size)  # warm-up
    sync(device)
    start = time.perf_counter()
    for i in range(args.images):
        pipe(prompt=prompts[i % len(prompts)], num_inference_steps=args.steps, guidance_scale=args.guidance,
             height=args.size, width=args.size, generator=torch.Generator("cpu").manual_seed(i))
    sync(device)
    stock_s = time.perf_counter() - start

    # (b) the render stage's path: embeddings precomputed once (embed_text's job), text encoders dropped.
    with torch.inference_mode():
        sequence, _, pooled, _ = pipe.encode_prompt(prompts + [""], None, None, device=device,
                                                    do_classifier_free_guidance=False)
    pooled_np = pooled.float().cpu().numpy()
    targets = pooled_np[[i % len(prompts) for i in range(args.images)]]
    empty_pooled, empty_sequence = pooled_np[-1], sequence[-1].float().cpu().numpy()
    for name in ("text_encoder", "text_encoder_2", "text_encoder_3"):
        setattr(pipe, name, None)
    torch.cuda.empty_cache() if device.type == "cuda" else None
    pipe.transformer.to(fast)
    pipe.vae.to(fast)
    if args.compile:
        compile_for_speed(pipe)
    settings = RenderSettings(args.steps, args.guidance, args.size, seed=0, batch_size=args.batch_size)
    warm = RenderSettings(2, args.guidance, args.size, seed=0, batch_size=args.batch_size)
    def sequences(indices: list[int]) -> np.ndarray:
        return np.stack([empty_sequence] * len(indices))  # (B, L, D): the empty prompt's, as the stage does

    render(pipe, targets[: args.batch_size], sequences, empty_pooled, empty_sequence, warm, device, fast)  # warm-up
    sync(device)
    start = time.perf_counter()
    images = render(pipe, targets, sequences, empty_pooled, empty_sequence, settings, device, fast)
    sync(device)
    ours_s = time.perf_counter() - start
    assert len(images) == args.images

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    model = "tiny SD3" if args.tiny else "SD3 Medium architecture, random weights"
    print(f"\nrender on {name}: {model}, {args.size}², {args.steps} steps, guidance {args.guidance}, "
          f"{args.images} images\n")
    print("| path | dtype | batch | s/image | images/s | speed-up | TFLOP/s | MFU |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for label, dtype, batch, seconds in [("(a) stock pipeline call, eager", half, 1, stock_s),
                                         (f"(b) a2i render{' + compile' if args.compile else ''}", fast,
                                          args.batch_size, ours_s)]:
        per_second = args.images / seconds
        flops = f"{per_second * TFLOP_PER_IMAGE:.0f}" if not args.tiny else "n/a"
        mfu = f"{per_second * TFLOP_PER_IMAGE / args.peak_tflops:.1%}" if not args.tiny else "n/a"
        print(f"| {label} | {str(dtype).removeprefix('torch.')} | {batch} | {seconds / args.images:.3f} | "
              f"{per_second:.2f} | {stock_s / seconds:.2f}x | {flops} | {mfu} |")
    if not args.tiny:
        print(f"\nMFU against {TFLOP_PER_IMAGE:.0f} TFLOP per image and a {args.peak_tflops} TFLOP/s bf16 peak.")


if __name__ == "__main__":
    main()
