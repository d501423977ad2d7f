"""Training memory and speed against the number of pairs: targets indexed by prompt, features by clip.

Synthetic features of the real widths (128-D clip means; 2048-D pooled targets, and for pooled+tokens the first
20 x 4096 sequence tokens stored as float16) for ``--prompts`` unique prompts (AudioSet has 527 classes) and a clip
per ``--pairs-per-clip`` pairs, joined into Pairs by the pipeline's own join_pairs and trained one epoch by the
stage's own Split and train_mapper (1 % of the pairs are the validation split). Each cell runs in a fresh process
and reports its resident-memory high-water mark (VmHWM: loading torch included) and training pairs/s of the epoch
(its time includes the validation pass), and the time to gather one batch by index and move it to the device,
the data path alone. The peak at the largest size must stay within 2x the smallest's.

The "per-pair layout" column is what the former code held for the same set, at least, computed, not run:
load_pairs copied the clip mean, the pooled target and the float32 tokens into a row per pair, the train/val
subsets copied those rows again, and each subset's pooled and tokens were concatenated once more (pooled+tokens).

    python benchmarks/train.py --device cuda   # 20 k and 200 k pairs, the mapper of params.yaml
    python benchmarks/train.py --hidden 64     # on a CPU: a small mapper (the same data path), minutes
    python benchmarks/train.py --tiny          # seconds: a smoke test
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np
import pandas as pd
import torch
from cells import resident_mib, run_cell  # benchmarks/cells.py, beside this script

from a2i_core.core.devices import resolve_device
from a2i_core.core.params import MapperParams, TrainParams
from a2i_core.core.provenance import Provenance
from a2i_core.mapper.pairs import Pairs, join_pairs
from a2i_core.mapper.train import Split, mapper_config, train_mapper

RATIO_LIMIT = 2.0
GATHER_BATCHES = 200
TARGETS = ("pooled", "pooled+tokens")


def synthetic_pairs(n: int, args: argparse.Namespace, tokens: bool) -> Pairs:
    """``n`` pairs of ``n / pairs_per_clip`` clips and ``args.prompts`` prompts, joined as load_pairs joins them."""
    rng = np.random.default_rng(0)
    n_clips = max(1, n // args.pairs_per_clip)
    clip_ids = [f"clip{i:08d}" for i in range(n_clips)]
    prompts = [f"a photo of sound class {k}" for k in range(args.prompts)]
    clip = np.arange(n) % n_clips  # every clip carries pairs_per_clip labels
    prompt = rng.integers(0, args.prompts, n)
    candidates = pd.DataFrame({"clip_id": pd.Categorical.from_codes(clip, clip_ids).astype(object),
                               "label": pd.Categorical.from_codes(prompt, [f"class {k}" for k in range(args.prompts)])
                               .astype(object),
                               "prompt": pd.Categorical.from_codes(prompt, prompts).astype(object),
                               "split": np.where(rng.random(n) < 0.01, "val", "train")})
    frame, clip_row, prompt_row = join_pairs(candidates, clip_ids, prompts)
    del candidates
    return Pairs(frame=frame, clip_row=clip_row, prompt_row=prompt_row,
                 clip_audio=rng.standard_normal((n_clips, 128), np.float32), prompts=prompts,
                 prompt_pooled=rng.standard_normal((args.prompts, 2048), np.float32), provenance={},
                 prompt_tokens=(rng.standard_normal((args.prompts, args.tokens, 4096), np.float32).astype(np.float16)
                                if tokens else None))


def child(target: str, n: int, args: argparse.Namespace) -> None:
    """Run in a fresh process: build the pairs, train one epoch, print peak memory and pairs/s."""
    device = resolve_device(args.device)
    with_tokens = target == "pooled+tokens"
    pairs = synthetic_pairs(n, args, with_tokens)
    data = Split.of(pairs, "mean", with_tokens, device)
    split = pairs.frame["split"].to_numpy()
    train, val = data.rows(split == "train"), data.rows(split == "val")
    hidden = [int(h) for h in args.hidden.split(",")]
    mapper = MapperParams(target=target, input="mean", hidden=hidden, dropout=[0.1] * len(hidden), frames_width=256,
                          frames_layers=2, max_frames=32)
    config = mapper_config(mapper, 128, 2048, (args.tokens, 4096) if with_tokens else None,
                           Provenance(encoder_sha256="0" * 64, postprocess=True, frontend="bench",
                                      diffusion_model="bench", sequence_shape=(333, 4096)))
    params = TrainParams(lr=1e-4, batch_size=args.batch_size, epochs=1, patience=1, w_cos=0.7, w_mse=0.3, seed=0,
                         device=args.device)
    result = train_mapper(train, val, config, params)
    generator = torch.Generator().manual_seed(0)
    start = time.perf_counter()
    for _ in range(GATHER_BATCHES):  # the data path alone: one batch gathered and moved, as the loop does
        x, _, y = train.batch(torch.randint(0, len(train), (args.batch_size,), generator=generator))
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    gather = (time.perf_counter() - start) / GATHER_BATCHES
    print(json.dumps({"peak_mib": resident_mib(), "seconds": result.seconds, "train": len(train), "val": len(val),
                      "clips": len(pairs.clip_audio), "gather_ms": gather * 1e3}))


def per_pair_mib(n: int, args: argparse.Namespace, target: str) -> float:
    """What the per-pair layout held for ``n`` train and val pairs, at least: every float32 row twice (the set, its
    subsets) and, for pooled+tokens, the subsets' concatenated targets a third time."""
    targets = 2048 + (args.tokens * 4096 if target == "pooled+tokens" else 0)
    return (2 * n * (128 + targets) + (n * targets if target == "pooled+tokens" else 0)) * 4 / 2**20


def run_case(target: str, n: int, args: argparse.Namespace) -> dict:
    return run_cell(__file__, ["--child", target, "--n", str(n), "--device", args.device, "--prompts",
                               str(args.prompts), "--pairs-per-clip", str(args.pairs_per_clip), "--tokens",
                               str(args.tokens), "--hidden", args.hidden, "--batch-size", str(args.batch_size)],
                    f"{target} at {n} pairs")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--pairs", default="20000,200000", help="set sizes, smallest first (comma-separated)")
    parser.add_argument("--prompts", type=int, default=500)
    parser.add_argument("--pairs-per-clip", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=20)
    parser.add_argument("--hidden", default="512,1024,1024", help="the mapper's hidden sizes (params.yaml's)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--targets", default=",".join(TARGETS))
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="small sets and mapper, for a smoke test")
    parser.add_argument("--child", choices=TARGETS, help=argparse.SUPPRESS)
    parser.add_argument("--n", type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.n, args)
    if args.tiny:
        args.pairs, args.prompts, args.tokens, args.hidden = "2000,20000", 50, 2, "16"
    sizes = [int(n) for n in args.pairs.split(",")]
    targets = args.targets.split(",")

    results = {(t, n): run_case(t, n, args) for t in targets for n in sizes}
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    first, last = sizes[0], sizes[-1]
    print(f"\ntraining one epoch on {name}: mapper hidden {args.hidden}, batch {args.batch_size}, {args.prompts} "
          f"prompts, {args.pairs_per_clip} pairs per clip, tokens {args.tokens} x 4096 (float16); peak resident "
          "memory (VmHWM) of a fresh process per cell, loading torch included\n")
    print("| target | pairs | clips | peak MiB | pairs/s | gather ms/batch | per-pair layout MiB (computed) |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for t in targets:
        for n in sizes:
            r = results[t, n]
            print(f"| {t} | {n:,} | {r['clips']:,} | {r['peak_mib']:.0f} | {r['train'] / r['seconds']:,.0f} | "
                  f"{r['gather_ms']:.2f} | {per_pair_mib(n, args, t):,.0f} |")
    print(f"\n| target | peak ratio {last:,} / {first:,} pairs | limit |")
    print("| --- | ---: | ---: |")
    failed = False
    for t in targets:
        ratio = results[t, last]["peak_mib"] / results[t, first]["peak_mib"]
        failed |= ratio > RATIO_LIMIT
        print(f"| {t} | {ratio:.2f} | {RATIO_LIMIT:g} |")
    print(f"\npeak memory {'GROWS WITH THE PAIRS' if failed else 'bounded by the clips and prompts'}")
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
