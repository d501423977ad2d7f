"""embed_text throughput: encoder calls per unique prompt, and prompts/s by batch size.

Runs the stage's own code (``diffusion.prompt_embeddings.embed_prompts``) on a prompt list with many duplicates.
On CPU it uses the tiny SD3 built in code; `--model` names any SD3 (a Hub id or local directory) for a GPU run.

    python benchmarks/embed_text.py --tiny          # seconds; what the tests run
    python benchmarks/embed_text.py --model stabilityai/stable-diffusion-3-medium-diffusers --device cuda
"""

from __future__ import annotations

import argparse
import itertools
import tempfile
import time
from pathlib import Path

import torch

from a2i_core.core.devices import resolve_device, resolve_dtype
from a2i_core.diffusion.prompt_embeddings import embed_prompts
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.offline.encoders import build_sd3  # tiny built in code, anything else pinned as the stage does

NOUNS = ["dog", "church bell", "car engine", "rainy street", "drum kit", "ticking clock", "police car siren",
         "bird singing in a tree", "crowd", "train", "waterfall", "violin", "thunderstorm", "cat", "baby", "guitar"]
STYLES = ["an image of a {}", "a photo of a {}", "a picture of a {}", "a painting of a {}", "a sketch of a {}"]


def prompts(n_unique: int, repeats: int) -> list[str]:
    unique = [s.format(n) + (f" {i}" if i else "") for i, (s, n) in
              zip(range(n_unique), itertools.cycle(itertools.product(STYLES, NOUNS)))]
    return unique * repeats  # every clip of a class carries its class prompt: duplicates are the norm


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="tiny")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--dtype", default="bfloat16")
    parser.add_argument("--unique", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batch-sizes", default="1,16,64")
    parser.add_argument("--max-sequence-length", type=int, default=256)
    parser.add_argument("--tiny", action="store_true")
    args = parser.parse_args()
    if args.tiny:
        args.unique, args.repeats, args.batch_sizes, args.max_sequence_length = 20, 3, "1,8", 32

    device = resolve_device(args.device)
    dtype = resolve_dtype(args.dtype, device)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        build_sd3(args.model, Path(tmp) / "sd3")
        pipe = load_sd3(Path(tmp) / "sd3", "text", device, dtype)
        texts = prompts(args.unique, args.repeats)
        for batch_size in [int(b) for b in args.batch_sizes.split(",")]:
            start = time.perf_counter()
            stats = embed_prompts(pipe, texts, Path(tmp) / f"out{batch_size}", tokens=20,
                                  max_sequence_length=args.max_sequence_length, batch_size=batch_size,
                                  shard_rows=1000, diffusion_model=args.model)
            rows.append((batch_size, stats, time.perf_counter() - start))

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\nembed_text on {name}, model {args.model}, {str(dtype).removeprefix('torch.')}: "
          f"{len(texts)} prompts, {args.unique} unique (+ the empty prompt)\n")
    print("| batch | prompts in | unique encoded | encoder calls | seconds | unique prompts/s |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: |")
    for batch_size, stats, seconds in rows:
        print(f"| {batch_size} | {len(texts)} | {stats['prompts']} | {stats['encoder_calls']} | {seconds:.2f} | "
              f"{stats['prompts'] / seconds:.1f} |")


if __name__ == "__main__":
    main()
