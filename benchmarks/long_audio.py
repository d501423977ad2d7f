"""Peak memory of embedding one long recording: streamed a window at a time against the whole-file path.

(a) whole file: ``decode`` the recording into one array, then ``embed_waves`` on it (what ``a2i generate`` did);
(b) streamed: ``embed_path``, which reads ffmpeg's output as it comes and embeds ``--window-seconds`` at a time.
Each case runs in a fresh process and reports its resident-memory high-water mark (VmHWM) while it embeds: the
mark is reset after loading the model, whose load-time peak (the state dict and the model side by side) would
otherwise hide everything smaller; a baseline process loads torch and the model and embeds nothing. Random
VGGish weights (the real architecture), CPU by default; the recording is a tone plus noise, written by ffmpeg
as Opus so an hour stays small on disk. The streamed path's peak must not grow with the recording: its ratio
longest / shortest must stay at or under 1.2.

    python benchmarks/long_audio.py                   # 1, 10, 60 minutes: the run recorded in benchmarks/RESULTS.md
    python benchmarks/long_audio.py --tiny            # seconds of work; what the tests run
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from cells import resident_mib, run_cell  # benchmarks/cells.py, beside this script

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import embed_path, embed_waves
from a2i_core.core.audio_io import SAMPLE_RATE, decode, ffmpeg_binary
from a2i_core.core.devices import resolve_device
from a2i_core.offline.tiny_audio import tiny_vggish_weights

RATIO_LIMIT = 1.2
PATHS = {"baseline": "baseline: torch + VGGish loaded, no audio", "whole": "(a) whole file: decode + embed_waves",
         "stream": "(b) streamed: embed_path"}


def write_recording(path: Path, minutes: float, seed: int = 0) -> None:
    """A 440 Hz tone plus noise, piped to ffmpeg a minute at a time (never held whole), as Opus."""
    proc = subprocess.Popen([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", "-f", "f32le", "-ar",
                             str(SAMPLE_RATE), "-ac", "1", "-i", "pipe:", "-c:a", "libopus", "-b:a", "48k", str(path)],
                            stdin=subprocess.PIPE)
    rng = np.random.default_rng(seed)
    total, done, block = round(minutes * 60 * SAMPLE_RATE), 0, 60 * SAMPLE_RATE
    while done < total:
        t = np.arange(done, min(done + block, total)) / SAMPLE_RATE
        wave = 0.3 * np.sin(2 * np.pi * 440 * t) + 0.05 * rng.standard_normal(t.size)
        proc.stdin.write(wave.astype(np.float32).tobytes())
        done += t.size
    proc.stdin.close()
    if proc.wait() != 0:
        raise SystemExit(f"ffmpeg could not write {path}")


def reset_peak() -> bool:
    """Start the high-water mark again from the current resident size (Linux >= 4.0); False where not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def child(mode: str, weights_dir: str, audio: str, out: str, device: str, batch_size: int,
          window_seconds: float) -> None:
    """Run in a fresh process: embed ``audio`` one way, save the frames, print peak memory and seconds."""
    device = resolve_device(device)
    encoder = load_audio_encoder(weights_dir, postprocess=False)
    frontend = encoder.place(device)
    load_peak = resident_mib()
    reset = reset_peak()
    start = time.perf_counter()
    if mode == "whole":
        frames = embed_waves(encoder, frontend, [decode(audio)], batch_size, device)[0]
    elif mode == "stream":
        frames = embed_path(encoder, frontend, audio, batch_size, device, window_seconds)[0]
    else:
        frames = np.zeros((0, 128), np.float32)
    seconds = time.perf_counter() - start
    np.save(out, frames)
    print(json.dumps({"peak_mib": resident_mib(), "seconds": seconds, "load_peak_mib": load_peak, "reset": reset}))


def run_case(mode: str, weights_dir: Path, audio: Path, out: Path, args: argparse.Namespace) -> dict:
    return run_cell(__file__, ["--child", mode, "--weights", str(weights_dir), "--audio", str(audio), "--out",
                               str(out), "--device", args.device, "--batch-size", str(args.batch_size),
                               "--window-seconds", str(args.window_seconds)], f"{mode} on {audio.name}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", default="1,10,60", help="recording lengths, shortest first (comma-separated)")
    parser.add_argument("--window-seconds", type=float, default=60.0)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--tiny", action="store_true", help="short recordings and windows, for a smoke test")
    parser.add_argument("--child", choices=sorted(PATHS), help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    parser.add_argument("--audio", help=argparse.SUPPRESS)
    parser.add_argument("--out", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child(args.child, args.weights, args.audio, args.out, args.device, args.batch_size,
                     args.window_seconds)
    if args.tiny:
        args.minutes, args.window_seconds = "0.25,1", 5.0  # several windows even in the short recording
    minutes = [float(m) for m in args.minutes.split(",")]

    results: dict[tuple[str, float], dict] = {}
    agreement: dict[float, float] = {}
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "vggish").mkdir()
        torch.save(tiny_vggish_weights(seed=0), tmp / "vggish" / "vggish.pth")
        for m in minutes:
            audio = tmp / f"{m:g}min.opus"
            write_recording(audio, m)
            for mode in PATHS:
                results[mode, m] = run_case(mode, tmp / "vggish", audio, tmp / f"{mode}-{m:g}.npy", args)
            whole, streamed = np.load(tmp / f"whole-{m:g}.npy"), np.load(tmp / f"stream-{m:g}.npy")
            assert whole.shape == streamed.shape, (whole.shape, streamed.shape)
            agreement[m] = float(np.abs(whole - streamed).max())
            results["size", m] = {"mib": audio.stat().st_size / 2**20, "examples": whole.shape[0]}

    load_peak = max(r["load_peak_mib"] for k, r in results.items() if k[0] in PATHS)
    reset = all(r["reset"] for k, r in results.items() if k[0] in PATHS)
    name = torch.cuda.get_device_name() if args.device.startswith("cuda") else f"CPU x{torch.get_num_threads()} threads"
    first, last = minutes[0], minutes[-1]
    print(f"\nembedding one recording on {name}: random VGGish, batch {args.batch_size}, "
          f"window {args.window_seconds:g} s; peak resident memory (VmHWM) of a fresh process per cell, "
          + (f"counted after loading the model (load peak {load_peak:.0f} MiB)\n" if reset else
             "loading included (the mark could not be reset)\n"))
    print("| path | " + " | ".join(f"{m:g} min MiB" for m in minutes) + f" | ratio {last:g} / {first:g} | "
          f"seconds ({last:g} min) |")
    print("| --- | " + " | ".join("---:" for _ in minutes) + " | ---: | ---: |")
    for mode, label in PATHS.items():
        peaks = [results[mode, m]["peak_mib"] for m in minutes]
        seconds = f"{results[mode, last]['seconds']:.1f}" if mode != "baseline" else "n/a"
        print(f"| {label} | " + " | ".join(f"{p:.0f}" for p in peaks) + f" | {peaks[-1] / peaks[0]:.2f} | {seconds} |")
    print("\n| recording | Opus file MiB | examples | max abs difference (a) vs (b) |")
    print("| --- | ---: | ---: | ---: |")
    for m in minutes:
        size = results["size", m]
        print(f"| {m:g} min | {size['mib']:.1f} | {size['examples']} | {agreement[m]:.1e} |")
    ratio = results["stream", last]["peak_mib"] / results["stream", first]["peak_mib"]
    verdict = "bounded" if ratio <= RATIO_LIMIT else "GROWS WITH LENGTH"
    print(f"\nstreamed ratio {last:g} / {first:g} min: {ratio:.2f} (limit {RATIO_LIMIT}): {verdict}")
    if ratio > RATIO_LIMIT:
        sys.exit(1)


if __name__ == "__main__":
    main()
