"""The download stage's speed by kind of source: local files at disk speed, network fetches under the global limit.

(a) a local folder of mixed formats (WAV, FLAC, MP3, Ogg; 8-48 kHz, mono and stereo) with the committed
    ``download.requests_per_second`` (2/s): the limit must not apply, so clips/s must be far above 2;
(b) the same number of YouTube-style segments fetched by yt-dlp from a local media server (``tests/media_server.py``)
    with N workers under a set rate: clips/s must stay at or under that rate, whatever N.
Both run in one process, side by side, through ``download_clips``: the same workers, retries and manifest.

    python benchmarks/download.py                 # 40 clips per case: the run recorded in benchmarks/RESULTS.md
    python benchmarks/download.py --clips 8       # seconds of work
"""

from __future__ import annotations

import argparse
import dataclasses
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
import soundfile as sf

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # tests.media_server, run from anywhere

from a2i_core.core.audio_io import ffmpeg_binary  # noqa: E402
from a2i_core.core.params import load_params  # noqa: E402
from a2i_core.data.download import download_clips  # noqa: E402
from tests.media_server import MediaServer  # noqa: E402

FORMATS = [("wav", 16_000, 1), ("flac", 44_100, 2), ("mp3", 22_050, 2), ("ogg", 48_000, 1), ("wav", 8_000, 2)]


def write_folder(root: Path, clips: int, seconds: float) -> pd.DataFrame:
    """``clips`` recordings in rotating formats; the candidates rows a folder source makes of them."""
    rng = np.random.default_rng(0)
    rows = []
    for i in range(clips):
        ext, rate, channels = FORMATS[i % len(FORMATS)]
        wave = 0.1 * rng.standard_normal((round(seconds * rate), channels)).astype(np.float32)
        path = root / f"clip{i:03d}.{ext}"
        if ext in ("wav", "flac"):
            sf.write(path, wave, rate)
        else:  # MP3 and Ogg through ffmpeg, as a user's recordings would be
            raw = root / f".raw{i}.wav"
            sf.write(raw, wave, rate)
            codec = ["-c:a", "libmp3lame"] if ext == "mp3" else ["-c:a", "libopus", "-ar", "48000"]
            subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", "-i", str(raw), *codec,
                            str(path)], check=True)
            raw.unlink()
        rows.append({"clip_id": f"clip{i:03d}", "label": "x", "source": "folder", "uri": str(path)})
    return pd.DataFrame(rows)


def write_media(root: Path, clips: int, seconds: float) -> pd.DataFrame:
    """``clips`` AAC files the media server serves as YouTube ids; the candidates rows of their first seconds."""
    rows = []
    for i in range(clips):
        ytid = f"benchclip{i:02d}"[:11].ljust(11, "x")
        subprocess.run([ffmpeg_binary(), "-nostdin", "-loglevel", "error", "-y", "-f", "lavfi", "-i",
                        f"sine=frequency={300 + 10 * i}:duration={seconds + 1}", "-c:a", "aac",
                        str(root / f"{ytid}.m4a")], check=True)
        rows.append({"clip_id": f"{ytid}_0", "label": "x", "source": "audioset", "ytid": ytid, "start": 0.0,
                     "end": seconds})
    return pd.DataFrame(rows)


def timed(candidates: pd.DataFrame, out: Path, cfg) -> tuple[float, dict]:
    start = time.perf_counter()
    counts = download_clips(candidates, out, cfg)
    return time.perf_counter() - start, counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clips", type=int, default=40)
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--rate", type=float, default=4.0, help="requests/s for the network case")
    args = parser.parse_args()
    committed = load_params(Path(__file__).resolve().parent.parent / "params.yaml").download

    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        (tmp / "folder").mkdir()
        (tmp / "media").mkdir()
        folder = write_folder(tmp / "folder", args.clips, args.seconds)
        media = write_media(tmp / "media", args.clips, args.seconds)
        cases = []
        local_cfg = dataclasses.replace(committed, workers=args.workers)
        seconds, counts = timed(folder, tmp / "out-local", local_cfg)
        cases.append(("(a) local folder, mixed formats", local_cfg.requests_per_second, seconds, counts))
        with MediaServer(tmp / "media") as server:
            net_cfg = dataclasses.replace(committed, workers=args.workers, requests_per_second=args.rate,
                                          max_attempts=1, url_template=server.url + "{ytid}.m4a")
            seconds, counts = timed(media, tmp / "out-net", net_cfg)
            cases.append(("(b) yt-dlp from a local server", args.rate, seconds, counts))

    print(f"\ndownload stage: {args.clips} clips of {args.seconds:g} s per case, {args.workers} workers\n")
    print("| case | requests_per_second | seconds | clips/s | ok |")
    print("| --- | ---: | ---: | ---: | ---: |")
    for name, rate, seconds, counts in cases:
        print(f"| {name} | {rate:g} | {seconds:.2f} | {args.clips / seconds:.1f} | {counts.get('ok', 0)} |")
    # The limit spaces the starts: n clips need (n - 1) intervals, so that is the rate to compare with it.
    local_rate, net_rate = args.clips / cases[0][2], (args.clips - 1) / cases[1][2]
    print(f"\nlocal clips/s over the limit it no longer obeys: {local_rate / committed.requests_per_second:.1f}x; "
          f"network starts/s over its limit: {net_rate / args.rate:.2f} (at most 1)")
    if any(c[3].get("ok", 0) != args.clips for c in cases) or net_rate > args.rate * 1.02:
        raise SystemExit("a case lost clips, or the network case went faster than its limit")

if __name__ == "__main__":
    main()
