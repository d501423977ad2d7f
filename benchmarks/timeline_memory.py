"""Peak memory of one recording made into its timeline and its film: a long recording against a short one.

Each recording is synthetic class sounds (``data.sources.synthetic``) one after another, 2 to 10 s each with now and
then a silent gap, written as FLAC a piece at a time; the short one is the first minutes of the long one. Each runs
in a fresh process: the models are built the way benchmarks/generate.py builds them (the tiny SD3, random VGGish, a
random mapper whose input statistics and prompt bank come from the synthetic classes, so that windows are labelled
and events change as the sounds do), a 5 s warm-up timeline is made, and then ``make_timeline`` with its film at
``--fps`` frames/s. Memory is the process's resident high-water mark (VmHWM), reset after the warm-up; each part of
``make_timeline`` (hearing, labelling, keyframes, storyboard, the per-frame conditioning, rendering, encoding) is
measured on its own by resetting the mark as it starts. ffmpeg (decoding, x264) runs in child processes, outside
these figures. Issue 27's target: the process's peak for 60 minutes within 1.2x of its peak for 1 minute.

    python benchmarks/timeline_memory.py          # 1 and 60 minutes at 1 frame/s: the run in benchmarks/RESULTS.md
    python benchmarks/timeline_memory.py --tiny   # 1 and 2 minutes; what the tests run
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import functools
import importlib.util
import inspect
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import numpy as np
import soundfile as sf
import torch
from cells import resident_mib, run_cell  # benchmarks/cells.py, beside this script
from long_audio import reset_peak

from a2i_core.audio.features import clip_means, embed_waves
from a2i_core.core.audio_io import SAMPLE_RATE
from a2i_core.core.params import load_params
from a2i_core.data.sources.synthetic import SOUND_CLASSES, ClipSpec, class_prompt, clip_specs, synthesize
from a2i_core.diffusion.fills import SequenceFill
from a2i_core.diffusion.render import RenderSettings
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.mapper.model import predict
from a2i_core.timeline import film as film_module
from a2i_core.timeline import make as make_module

ROOT = Path(__file__).resolve().parents[1]
RATIO_LIMIT = 1.2
TEMPLATE = "an image of a {name}"  # params.yaml's data.prompt_template
WARM_UP_SECONDS = 5.0
# Whole minutes are whole numbers of VGGish hops (0.96 s: 2 min = 125 hops, 60 min = 3,750) of which the encoder
# keeps one fewer window (the last would read past the end): the lengths that once were refused, kept as the default.
EXTRA_SECONDS = 0.0
GAP_CHANCE = 0.15  # of a piece being a silent gap ("no event")
# The parts of make_timeline measured on their own: (module, name, row label). A part inside another (the film's
# render inside the film) is measured inside it too; each row is the process's peak while that part ran.
STAGES = [
    (make_module, "listen", "hear: decode + VGGish, streamed"),
    (make_module, "label_windows", "label the windows"),
    (make_module, "event_conditioning", "events' conditioning"),
    (make_module, "draw_keyframes", "keyframes: render (held as images)"),
    (make_module, "save_keyframes", "keyframes: PNGs"),
    (make_module, "save_storyboard", "storyboard sheet"),
    (make_module, "make_film", "film: all of it"),
    (film_module, "blend", "film: per-frame conditioning (blend)"),
    (film_module, "render_iter", "film: render + save frames"),
    (film_module, "encode_film", "film: MP4 encode (frames to ffmpeg)"),
]
TOTAL = "make_timeline: all of it"

# The model builders of the latency benchmark, shared rather than copied.
_spec = importlib.util.spec_from_file_location("generate_benchmark", Path(__file__).with_name("generate.py"))
generate_benchmark = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(generate_benchmark)


# ---- the recording ---------------------------------------------------------------------------------------------


def pieces(seed: int) -> Iterator[np.ndarray]:
    """An endless run of synthetic class sounds, 2 to 10 s each, now and then a silent gap of 1 to 3 s."""
    rng = np.random.default_rng(seed)
    labels = list(SOUND_CLASSES)
    while True:
        if rng.random() < GAP_CHANCE:
            yield np.zeros(round(rng.uniform(1.0, 3.0) * SAMPLE_RATE), np.float32)
            continue
        spec = ClipSpec(label=labels[rng.integers(len(labels))], seed=int(rng.integers(2**31 - 1)),
                        seconds=round(float(rng.uniform(2.0, 10.0)), 3), gain_db=float(rng.uniform(-18, -3)),
                        snr_db=float(rng.uniform(10, 30)))
        yield synthesize(spec)


def write_recording(path: Path, seconds: float, seed: int = 0) -> None:
    """``seconds`` of ``pieces`` as 16-bit FLAC, written a piece at a time (an hour is never held whole)."""
    total, done = round(seconds * SAMPLE_RATE), 0
    with sf.SoundFile(path, "w", SAMPLE_RATE, 1, format="FLAC", subtype="PCM_16") as f:
        for wave in pieces(seed):
            wave = wave[: total - done]
            f.write(wave)
            done += len(wave)
            if done >= total:
                break


# ---- the child: one recording made into its timeline -----------------------------------------------------------


class Meter:
    """Each named part's seconds and its rise: the most its resident memory rose above what it was when the part
    began. A part's start folds the mark so far into the parts already running, then resets it; its end folds the
    mark into every part running, itself included."""

    def __init__(self) -> None:
        self.running: dict[str, float] = {}  # name -> resident MiB when it began
        self.rise: dict[str, float] = {}
        self.seconds: dict[str, float] = {}

    def _fold(self) -> None:
        mark = resident_mib()
        for name, start in self.running.items():
            self.rise[name] = max(self.rise.get(name, 0.0), mark - start)

    @contextlib.contextmanager
    def part(self, name: str) -> Iterator[None]:
        self._fold()
        reset_peak()
        self.running[name] = resident_mib("VmRSS")
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] = self.seconds.get(name, 0.0) + time.perf_counter() - start
            self._fold()
            del self.running[name]

    def wrap(self, name: str, fn: Callable) -> Callable:
        if inspect.isgeneratorfunction(fn):  # render_iter: measured from its first image to its last
            @functools.wraps(fn)
            def measured_iter(*args, **kwargs):
                with self.part(name):
                    yield from fn(*args, **kwargs)
            return measured_iter

        @functools.wraps(fn)
        def measured(*args, **kwargs):
            with self.part(name):
                return fn(*args, **kwargs)
        return measured


def class_bank(generator, seed: int) -> tuple[list[str], np.ndarray]:
    """Give the random mapper the synthetic classes' input statistics, so that its predictions differ by class; the
    prompt bank (K, P) is its mean prediction for each class's clips."""
    specs = clip_specs(list(SOUND_CLASSES), 3, 3.0, 5.0, seed)
    frames = embed_waves(generator.encoder, generator.frontend, [synthesize(s) for s in specs.values()], 64,
                         generator.device)  # [(n_i, 128)]
    every = np.concatenate(frames)  # (sum n_i, 128)
    mapper = generator.artifact.mapper
    mapper.set_input_stats(torch.from_numpy(every.mean(axis=0)), torch.from_numpy(every.std(axis=0)))
    pooled, _ = predict(mapper, clip_means(frames, every.shape[1]))  # (clips, P)
    labels = [s.label for s in specs.values()]
    bank = np.stack([pooled[[i for i, lab in enumerate(labels) if lab == c]].mean(axis=0) for c in SOUND_CLASSES])
    return [class_prompt(c, TEMPLATE) for c in SOUND_CLASSES], bank.astype(np.float32)


def build_engine(args: argparse.Namespace):
    """The tiny SD3, random VGGish and a random mapper with the classes' prompt bank, as one SoundToImage."""
    device = torch.device(args.device)
    torch.manual_seed(args.seed)
    generator, _ = generate_benchmark.sd3_medium_generator(device, args.steps, args.size, tiny=True)
    prompts, bank = class_bank(generator, args.seed)
    old = generator.artifact
    generator.artifact = MapperArtifact(old.mapper, old.empty_pooled, old.empty_sequence, prompts, bank)
    return generator


def child(args: argparse.Namespace) -> None:
    """Run in a fresh process: build the models, warm up, then make ``args.audio``'s timeline and film; print its
    figures as one JSON line."""
    torch.set_num_threads(args.threads)
    engine = build_engine(args)
    params = load_params(ROOT / "params.yaml")
    settings = dataclasses.replace(RenderSettings.from_params(params.render), steps=args.steps, size=args.size,
                                   batch_size=args.batch_size, seed=args.seed)
    frames_needed = round((args.minutes * 60 + args.extra_seconds) * args.fps) + 1
    cfg = dataclasses.replace(params.timeline, fps=args.fps, max_frames=max(params.timeline.max_frames, frames_needed))
    fill = SequenceFill("empty_prompt")
    work = Path(args.work)
    write_recording(work / "warm-up.flac", WARM_UP_SECONDS, seed=args.seed + 1)
    make_module.make_timeline(engine, work / "warm-up.flac", work / "warm-up", cfg, settings, fill)
    load_peak = resident_mib()

    meter = Meter()
    for module, name, label in STAGES:
        setattr(module, name, meter.wrap(label, getattr(module, name)))
    base = resident_mib("VmRSS")
    reset = reset_peak()
    start = time.perf_counter()
    with meter.part(TOTAL):
        made = make_module.make_timeline(engine, Path(args.audio), work / "timeline", cfg, settings, fill)
    wall = time.perf_counter() - start
    assert made.film is not None and made.film.is_file(), "no film was written"
    print(json.dumps({
        "base_mib": base, "load_peak_mib": load_peak, "reset": reset, "rise": meter.rise,
        "seconds": meter.seconds, "wall": wall, "retained_mib": resident_mib("VmRSS") - base,
        "events": len(made.events), "labelled": len(made.labelled),
        "frames": film_module.frame_count(made.seconds, cfg.fps), "recording_seconds": made.seconds,
        "guidance": settings.guidance,
    }))


# ---- the parent: one child per recording, one table ------------------------------------------------------------


def length(minutes: float) -> str:
    """A recording's length as the table names it: 20 s, 2 min."""
    return f"{minutes * 60:.0f} s" if minutes < 1 else f"{minutes:g} min"


def run_case(audio: Path, minutes: float, work: Path, args: argparse.Namespace) -> dict:
    work.mkdir()
    return run_cell(__file__, ["--child", "--audio", str(audio), "--work", str(work), "--case-minutes", f"{minutes}",
                               "--fps", f"{args.fps}", "--size", str(args.size), "--steps", str(args.steps),
                               "--batch-size", str(args.batch_size), "--threads", str(args.threads), "--device",
                               args.device, "--seed", str(args.seed), "--extra-seconds", f"{args.extra_seconds}"],
                    f"the timeline of {audio.name}")


def print_tables(results: dict[float, dict], sizes: dict[float, float], args: argparse.Namespace) -> float:
    """The tables; returns the ratio of the process's peaks, longest / shortest."""
    minutes = sorted(results)
    first, last = minutes[0], minutes[-1]
    one = results[first]
    reset = all(r["reset"] for r in results.values())
    baselines = ", ".join(f"{results[m]['base_mib']:.0f}" for m in minutes)
    print(f"\nmake_timeline with its film on CPU x{args.threads} threads: tiny SD3, random VGGish, random mapper "
          f"(input stats and prompt bank from the 8 synthetic classes); {args.size}², {args.steps} steps, guidance "
          f"{one['guidance']:g}, batch {args.batch_size}, {args.fps:g} frame/s; a fresh process per recording; peak "
          f"resident memory (VmHWM): all of it above the baseline after imports, model loading and a "
          f"{WARM_UP_SECONDS:g} s warm-up timeline (baseline {baselines} MiB), each part above the resident memory "
          "when it began" + ("" if reset else "; the mark could not be reset: peaks include loading") + "\n")
    head = " | ".join(f"{length(m)} MiB" for m in minutes)
    print(f"| part | {head} | growth MiB | ratio {length(last)} / {length(first)} | "
          + " | ".join(f"{length(m)} s" for m in minutes)
          + " |")
    print("| --- | " + " | ".join("---:" for _ in range(2 * len(minutes) + 2)) + " |")
    for label in [TOTAL] + [label for _, _, label in STAGES]:
        above = [results[m]["rise"].get(label, float("nan")) for m in minutes]
        seconds = [results[m]["seconds"].get(label, float("nan")) for m in minutes]
        print(f"| {label} | " + " | ".join(f"{a:.1f}" for a in above) + f" | {above[-1] - above[0]:+.1f} | "
              f"{above[-1] / above[0] if above[0] > 0 else float('nan'):.2f} | "
              + " | ".join(f"{s:.1f}" for s in seconds) + " |")

    print("\n| recording | FLAC MiB | events (labelled) | frames | wall s | frames/s | process peak MiB | above "
          "baseline MiB | held after MiB |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for m in minutes:
        r = results[m]
        peak = r["base_mib"] + r["rise"][TOTAL]
        print(f"| {length(m)} | {sizes[m]:.1f} | {r['events']} ({r['labelled']}) | {r['frames']} | {r['wall']:.1f} | "
              f"{r['frames'] / r['wall']:.1f} | {peak:.0f} | {peak - r['base_mib']:.1f} | {r['retained_mib']:.1f} |")
    above = [results[m]["rise"][TOTAL] for m in (first, last)]
    peaks = [results[m]["base_mib"] + a for a, m in zip(above, (first, last), strict=True)]
    ratio = peaks[1] / peaks[0]
    verdict = "bounded" if ratio <= RATIO_LIMIT else "GROWS WITH LENGTH"
    growth = above[1] / above[0] if above[0] > 0 else float("nan")
    print(f"\nprocess peak ratio {length(last)} / {length(first)}: {ratio:.2f} (limit {RATIO_LIMIT}): {verdict}; "
          f"above the baseline {above[0]:.1f} -> {above[1]:.1f} MiB ({growth:.2f}x)")
    return ratio


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,60", help="recording lengths, shortest first (comma-separated)")
    parser.add_argument("--fps", type=float, default=1.0)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--steps", type=int, default=1)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--threads", type=int, default=1,
                        help="CPU threads (one: the tiny models' ops are too small to share, and the machine is)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--extra-seconds", type=float, default=EXTRA_SECONDS,
                        help="added to every recording's whole minutes (default: none)")
    parser.add_argument("--tiny", action="store_true", help="1 and 2 minutes, for a smoke test")
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--work", help=argparse.SUPPRESS)
    parser.add_argument("--case-minutes", dest="case_minutes", type=float, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        args.minutes = args.case_minutes
        return child(args)
    if args.tiny:  # a full minute each: both hear in whole 60 s windows, so only the length differs
        args.minutes = "1,2"
    minutes = [float(m) for m in args.minutes.split(",")]

    results, sizes = {}, {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for m in minutes:
            audio = tmp / f"{m:g}min.flac"
            write_recording(audio, m * 60 + args.extra_seconds, seed=args.seed)
            sizes[m] = audio.stat().st_size / 2**20
            results[m] = run_case(audio, m, tmp / f"case-{m:g}", args)
    if print_tables(results, sizes, args) > RATIO_LIMIT:
        sys.exit(1)


if __name__ == "__main__":
    main()
