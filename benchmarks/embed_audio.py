"""embed_audio throughput and memory: the reference torchvggish path against the stage's path, side by side.

(a) reference: soundfile read, torchvggish's ``waveform_to_examples`` (resampy), one forward per file;
(b) a2i: ``embed_clips`` as the stage runs it (ffmpeg decode + resample in background threads, batched
    float64 log-mel frontend, batched channels-last forward, Parquet shards).
Same random VGGish weights (the real architecture), same files: mixed sample rates (8-48 kHz), mono and
stereo, 1-10 s. Then the peak memory of (b) in fresh processes at two dataset sizes.

    python benchmarks/embed_audio.py                # the full run recorded in benchmarks/RESULTS.md
    python benchmarks/embed_audio.py --tiny         # seconds; what the tests run
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile as sf
import torch

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.features import embed_clips, load_audio_embeddings
from a2i_core.core.devices import resolve_device
from a2i_core.offline.tiny_audio import tiny_vggish_weights

RATES = (8000, 11025, 16000, 22050, 32000, 44100, 48000)


def make_files(directory: Path, n: int, seconds: tuple[float, float], seed: int, rates=RATES) -> list[Path]:
    """Noise-and-tone clips at cycling sample rates and channel counts, written as 16-bit WAV."""
    rng = np.random.default_rng(seed)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        rate, channels = rates[i % len(rates)], 1 + (i // len(rates)) % 2
        length = int(rng.uniform(*seconds) * rate)
        t = np.arange(length) / rate
        tone = np.sin(2 * np.pi * rng.uniform(100, min(3000, rate / 3)) * t)
        wave = 0.3 * tone[:, None] + 0.05 * rng.standard_normal((length, channels))
        path = directory / f"clip{i:05d}_{rate}_{channels}ch.wav"
        sf.write(path, np.clip(wave, -1, 1), rate, subtype="PCM_16")
        paths.append(path)
    return paths


@torch.inference_mode()
def reference_embeddings(weights: dict, paths: list[Path]) -> tuple[dict[str, np.ndarray], float]:
    from torchvggish import torchvggish as tv
    from torchvggish import vggish_input

    model = tv._vgg(postprocess=False)
    model.load_state_dict(weights)
    model.eval()
    start = time.perf_counter()
    out = {}
    for path in paths:
        data, rate = sf.read(path, dtype="int16")
        examples = vggish_input.waveform_to_examples(data / 32768.0, rate)  # (n, 1, 96, 64)
        out[path.stem] = model(examples).mean(0).numpy()
    return out, time.perf_counter() - start


def a2i_embeddings(weights_dir: Path, paths: list[Path], out: Path, device: torch.device,
                   batch_size: int, workers: int) -> tuple[dict[str, np.ndarray], float]:
    encoder = load_audio_encoder(weights_dir, postprocess=False)
    start = time.perf_counter()
    embed_clips(encoder, [(p.stem, p) for p in paths], out, batch_size=batch_size, shard_rows=512,
                device=device, decode_workers=workers)
    if device.type == "cuda":
        torch.cuda.synchronize()
    seconds = time.perf_counter() - start
    ids, emb, _ = load_audio_embeddings(out)
    return dict(zip(ids, emb, strict=True)), seconds


def relative_errors(ours: dict, ref: dict, keys: list[str]) -> np.ndarray:
    return np.array([np.linalg.norm(ours[k] - ref[k]) / max(np.linalg.norm(ref[k]), 1e-12) for k in keys])


def memory_child(weights_dir: str, n: int, seconds: float, device: str) -> None:
    """Run in a fresh process: embed n clips, print the peak resident memory in MiB."""
    with tempfile.TemporaryDirectory() as tmp:
        paths = make_files(Path(tmp) / "audio", n, (seconds, seconds), seed=n, rates=(16000, 44100))
        encoder = load_audio_encoder(weights_dir, postprocess=False)
        embed_clips(encoder, [(p.stem, p) for p in paths], Path(tmp) / "features", batch_size=64, shard_rows=256,
                    device=resolve_device(device), decode_workers=2)
    print(json.dumps({"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def peak_memory(weights_dir: Path, n: int, seconds: float, device: str) -> float:
    result = subprocess.run([sys.executable, __file__, "--memory-child", str(n), "--weights", str(weights_dir),
                             "--memory-seconds", str(seconds), "--device", device],
                            capture_output=True, text=True, check=True)
    return json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=70)
    parser.add_argument("--memory-sizes", default="200,2000")
    parser.add_argument("--memory-seconds", type=float, default=2.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--tiny", action="store_true", help="a few clips, for a smoke test")
    parser.add_argument("--memory-child", type=int, help=argparse.SUPPRESS)
    parser.add_argument("--weights", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.memory_child:
        return memory_child(args.weights, args.memory_child, args.memory_seconds, args.device)
    if args.tiny:
        args.clips, args.memory_sizes, args.memory_seconds = 8, "4,8", 1.0

    device = resolve_device(args.device)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        weights = tiny_vggish_weights(seed=0)
        (tmp / "vggish").mkdir()
        torch.save(weights, tmp / "vggish" / "vggish.pth")
        paths = make_files(tmp / "audio", args.clips, (1.0, 10.0), seed=0)
        audio_seconds = sum(sf.info(p).duration for p in paths)

        # Warm-up, untimed: resampy's numba JIT, oneDNN kernel selection, ffmpeg's first start.
        reference_embeddings(weights, paths[:len(RATES)])
        a2i_embeddings(tmp / "vggish", paths[:len(RATES)], tmp / "warmup", device, args.batch_size, args.workers)
        ref, ref_s = reference_embeddings(weights, paths)
        ours, ours_s = a2i_embeddings(tmp / "vggish", paths, tmp / "features", device, args.batch_size, args.workers)
        at_16k = [p.stem for p in paths if "_16000_" in p.stem]
        resampled = [p.stem for p in paths if "_16000_" not in p.stem]
        err_16k, err_other = relative_errors(ours, ref, at_16k), relative_errors(ours, ref, resampled)

        sizes = [int(s) for s in args.memory_sizes.split(",")]
        peaks = [peak_memory(tmp / "vggish", n, args.memory_seconds, args.device) for n in sizes]

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else f"CPU x{torch.get_num_threads()} threads"
    print(f"\nembed_audio on {name}: {args.clips} files, {audio_seconds:.0f} s of audio, "
          f"rates {min(RATES)}-{max(RATES)} Hz, mono+stereo, 1-10 s\n")
    print("| path | seconds | clips/s | audio s/s | speed-up |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for label, seconds in [("(a) torchvggish reference, one file at a time", ref_s), ("(b) a2i embed_audio", ours_s)]:
        print(f"| {label} | {seconds:.2f} | {args.clips / seconds:.1f} | {audio_seconds / seconds:.0f} | "
              f"{ref_s / seconds:.2f}x |")
    print("\n| agreement ‖a−b‖/‖b‖ of clip embeddings | files | max | median |")
    print("| --- | ---: | ---: | ---: |")
    print(f"| 16 kHz input (same samples) | {len(at_16k)} | {err_16k.max():.2e} | {np.median(err_16k):.2e} |")
    print(f"| other rates (ffmpeg swr vs resampy) | {len(resampled)} | {err_other.max():.2e} | "
          f"{np.median(err_other):.2e} |")
    for rate in RATES:
        keys = [p.stem for p in paths if f"_{rate}_" in p.stem]
        if rate != 16000 and keys:
            err = relative_errors(ours, ref, keys)
            print(f"| &nbsp; {rate} Hz | {len(keys)} | {err.max():.2e} | {np.median(err):.2e} |")
    print(f"\n| peak memory of embed_audio ({args.memory_seconds:.0f} s clips) | MiB |")
    print("| --- | ---: |")
    for n, peak in zip(sizes, peaks, strict=True):
        print(f"| {n} clips | {peak:.0f} |")
    print(f"| ratio {sizes[-1]} / {sizes[0]} | {peaks[-1] / peaks[0]:.2f} |")


if __name__ == "__main__":
    main()
