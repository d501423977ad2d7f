"""Film frames warm-started from the previous frame's latent against full frames: cost, steadiness and fidelity.

A film over a few keyframes (class prompts' own pooled and sequence embeddings, held, then moved to the next one by
linear interpolation) is rendered with ``a2i_core.timeline.warm.render_film_frames``, the starting noise fixed, at
strength 0 (every frame in full) and at partial strengths. Per row: transformer forward passes per frame (per image
row, guidance's two rows counted, as DESIGN.md counts FLOPs), seconds per frame, flicker (mean absolute change
between consecutive frames, pixels in 0..1) inside keyframe holds and across transitions, and fidelity on held
frames: mean absolute difference from the full render of the same conditioning, and the share whose nearest class
picture (``data.sources.pictures``) is the held class.

The SD3 is the offline demo's tiny one, fitted in code to the synthetic classes' pictures (``fit_tiny_sd3``) for
the size and step count rendered here, so that a frame shows which class it draws.

    python benchmarks/film_warm_start.py               # 64 px, 8 steps, 40 frames: about 2 minutes on 2 CPU cores
    python benchmarks/film_warm_start.py --tiny        # seconds; what the tests run
"""

from __future__ import annotations

import argparse
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from a2i_core.core.devices import resolve_device
from a2i_core.data.sources.pictures import picture_array
from a2i_core.data.sources.synthetic import SOUND_CLASSES, class_prompt
from a2i_core.diffusion.render import RenderSettings
from a2i_core.diffusion.sd3 import load_sd3
from a2i_core.offline import tiny
from a2i_core.offline.fit import fit_tiny_sd3, prompt_conditioning, torch_threads
from a2i_core.timeline.warm import render_film_frames, transformer_calls

TEMPLATE = "an image of a {name}"  # params.yaml's data.prompt_template
MAX_SEQUENCE_LENGTH = 32  # the offline profile's diffusion.max_sequence_length
GUIDANCE = 5.0  # the offline profile's render.guidance


@dataclass
class Film:
    weights: np.ndarray  # (n, K): each frame's mix of the keyframes (rows sum to 1)
    held: np.ndarray  # (n,) the keyframe a frame holds, -1 inside a transition
    position: np.ndarray  # (n,) how many frames into its hold a frame is, -1 inside a transition


def film_timeline(keyframes: int, hold: int, transition: int) -> Film:
    """Hold each keyframe ``hold`` frames; between two, ``transition`` frames interpolated linearly (exclusive of
    both ends, so a transition never repeats a held frame)."""
    rows, held, position = [], [], []
    for k in range(keyframes):
        rows += [np.eye(keyframes)[k]] * hold
        held += [k] * hold
        position += list(range(hold))
        if k + 1 < keyframes:
            for t in np.arange(1, transition + 1) / (transition + 1):
                rows.append((1 - t) * np.eye(keyframes)[k] + t * np.eye(keyframes)[k + 1])
                held.append(-1)
                position.append(-1)
    return Film(np.stack(rows).astype(np.float32), np.array(held), np.array(position))


def as_unit(image) -> np.ndarray:
    """A PIL frame as float32 (3, H, W) in 0..1."""
    return np.asarray(image, np.float32).transpose(2, 0, 1) / 255.0


def flicker(frames: np.ndarray, pairs: np.ndarray) -> tuple[float, float]:
    """Mean and largest mean-absolute change between frame i-1 and i over the ``pairs`` (indices i) given."""
    change = np.abs(frames[pairs] - frames[pairs - 1]).mean(axis=(1, 2, 3))  # (pairs,)
    return float(change.mean()), float(change.max())


def nearest_picture(frames: np.ndarray, pictures: np.ndarray) -> np.ndarray:
    """(n,) index of the class picture (K, 3, H, W) in 0..1 nearest each frame (n, 3, H, W) by mean absolute
    difference."""
    distance = np.abs(frames[:, None] - pictures[None]).mean(axis=(2, 3, 4))  # (n, K)
    return distance.argmin(axis=1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--size", type=int, default=64)
    parser.add_argument("--steps", type=int, default=8)
    parser.add_argument("--strengths", default="0,0.3,0.5,0.7")
    parser.add_argument("--keyframes", default="siren,birds,clock", help="synthetic classes, in film order")
    parser.add_argument("--hold", type=int, default=10, help="frames each keyframe is held")
    parser.add_argument("--transition", type=int, default=5, help="frames between two keyframes")
    parser.add_argument("--fit-steps", type=int, default=300, help="transformer fitting steps (the demo's 300)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=2, help="films per strength; the fastest is timed")
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (one: on a shared 2-core machine a second thread makes every small op "
                             "wait, 0.39 s a frame against 0.05 s measured)")
    parser.add_argument("--tiny", action="store_true", help="a small film on a briefly fitted SD3, on CPU")
    args = parser.parse_args()
    if args.tiny:
        args.device, args.size, args.steps, args.hold, args.transition, args.fit_steps = "cpu", 32, 4, 3, 2, 10

    device = resolve_device(args.device)
    labels = list(SOUND_CLASSES)
    prompts = [class_prompt(label, TEMPLATE) for label in labels]
    keys = [labels.index(k) for k in args.keyframes.split(",")]
    film = film_timeline(len(keys), args.hold, args.transition)
    n = len(film.weights)

    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp) / "sd3"
        fit_start = time.perf_counter()
        tiny.save_tiny_sd3(directory)
        fit_tiny_sd3(directory, prompts, max_sequence_length=MAX_SEQUENCE_LENGTH, sizes=(args.size,),
                     render_steps=(args.steps,), guidance=GUIDANCE, steps=args.fit_steps,
                     vae_steps=min(400, 2 * args.fit_steps))
        fit_seconds = time.perf_counter() - fit_start
        cond = prompt_conditioning(directory, prompts, MAX_SEQUENCE_LENGTH)
        pipe = load_sd3(directory, "image", device)

    pooled = film.weights @ cond.pooled[keys].numpy()  # (n, P)
    sequence = np.einsum("nk,kld->nld", film.weights, cond.sequence[keys].numpy())  # (n, L, D)
    settings = RenderSettings(args.steps, GUIDANCE, args.size, args.seed, batch_size=1)
    rows: list[int] = []  # image rows of each transformer call
    pipe.transformer.register_forward_hook(
        lambda module, inputs, kwargs, output: rows.append(kwargs["hidden_states"].shape[0]), with_kwargs=True)

    def run(strength: float, frames: int = n) -> tuple[np.ndarray, float, int]:
        """The film's frames (n, 3, H, W) in 0..1, the fastest of ``args.repeats`` runs' seconds, and the image rows
        through the transformer in one run."""
        times = []
        for _ in range(args.repeats):
            rows.clear()
            start = time.perf_counter()
            with torch_threads(args.threads):
                out = render_film_frames(pipe, pooled[:frames], lambda idx: sequence[idx], cond.empty_pooled.numpy(),
                                         cond.empty_sequence.numpy(), settings, device, torch.float32, args.seed,
                                         strength)
                images = np.stack([as_unit(image) for _, image, _ in out])  # (n, 3, H, W)
            times.append(time.perf_counter() - start)
        return images, min(times), sum(rows)

    run(0.3, frames=3)  # warm-up: first calls allocate
    pictures = (np.stack([picture_array(p, args.size) for p in prompts]) + 1) / 2  # (K, 3, H, W) in 0..1
    in_hold = np.flatnonzero(film.held >= 0)
    late = np.flatnonzero(film.position >= args.hold // 2)
    hold_pairs = np.array([i for i in range(1, n) if film.held[i] >= 0 and film.held[i] == film.held[i - 1]])
    # The second half of each hold: what a still sound looks like once the frames have settled.
    late_pairs = hold_pairs[film.position[hold_pairs] >= args.hold // 2]
    moving_pairs = np.array([i for i in range(1, n) if film.held[i] < 0 or film.held[i - 1] < 0])
    held_class = np.array(keys)[film.held[in_hold]]

    print(f"\nfilm warm start on {device}: fitted tiny SD3 ({fit_seconds:.0f} s to fit), {args.size}², "
          f"{args.steps} steps, guidance {GUIDANCE}, {n} frames: keyframes {args.keyframes} held {args.hold} "
          f"frames each, {args.transition}-frame linear transitions; seed {args.seed} for every frame\n")
    print("| strength | calls/frame (warm) | calls/frame (film, measured) | s/frame | flicker in holds (all / 2nd "
          "half) | flicker across transitions (mean / max) | diff from full render (holds: all / 2nd half) | "
          "right class (holds) |")
    print("| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |", flush=True)
    full = None
    for strength in [float(s) for s in args.strengths.split(",")]:
        frames, seconds, calls = run(strength)
        if full is None:
            full = frames if strength == 0 else run(0.0)[0]
        hold_mean, _ = flicker(frames, hold_pairs)
        late_mean, _ = flicker(frames, late_pairs)
        moving_mean, moving_max = flicker(frames, moving_pairs)
        fidelity = float(np.abs(frames[in_hold] - full[in_hold]).mean())
        late_fidelity = float(np.abs(frames[late] - full[late]).mean())
        right = float((nearest_picture(frames[in_hold], pictures) == held_class).mean())
        print(f"| {strength:g} | {transformer_calls(args.steps, strength, GUIDANCE)} | {calls / n:.2f} | "
              f"{seconds / n:.3f} | {hold_mean:.4f} / {late_mean:.4f} | {moving_mean:.4f} / {moving_max:.4f} | "
              f"{fidelity:.4f} / {late_fidelity:.4f} | {right:.0%} |", flush=True)


if __name__ == "__main__":
    main()
