"""The download stage's logic: make every candidate clip a 16 kHz mono WAV, with a manifest row per clip.

Sources: synthetic clips are generated, local files (ESC-50, folders) are decoded, YouTube segments (AudioSet,
AudioCaps) are fetched with yt-dlp's ``download_ranges`` and ffmpeg. Statuses: ok, unavailable (private,
removed, terminated, 404), rate-limited (429), network, decode. Rate-limited and network failures are retried
with exponential backoff and jitter, here and on the next run; the others are final.

Resumable: each clip file is written to a temporary name and renamed, the manifest is rewritten as clips
finish, and a rerun skips clips whose file is there.
"""

from __future__ import annotations

import logging
import os
import random
import re
import shutil
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import pyarrow as pa
import soundfile as sf
from tqdm import tqdm

from a2i_core import shards
from a2i_core.audio import SAMPLE_RATE, AudioError, PackedClip, decode, encode_flac, ffmpeg_dir, write_wav
from a2i_core.errors import A2IError
from a2i_core.params import DownloadParams
from a2i_core.sources import synthetic
from a2i_core.sources.audioset import YTID

log = logging.getLogger(__name__)

MANIFEST_KIND = "audio_manifest"
MANIFEST_NAME = "manifest.parquet"
CLIP_ID = re.compile(r"^[A-Za-z0-9_-]{1,80}$")
MANIFEST_COLUMNS = ["clip_id", "status", "reason", "path", "row", "seconds"]
PACK_KIND = "audio_pack"
STAGING = ".staging"
RETRYABLE = {"rate-limited", "network"}


class ClipFailure(A2IError):
    """One clip could not be fetched; ``status`` says whether trying again can help."""

    def __init__(self, status: str, message: str) -> None:
        super().__init__(message)
        self.status = status


def check_clip_id(clip_id: str) -> str:
    """Ids come from outside (CSV files); check them before they become a path or a command argument."""
    if not CLIP_ID.match(clip_id):
        raise A2IError(f"invalid clip id {clip_id!r}: expected letters, digits, '_' or '-'")
    return clip_id


def load_manifest(audio_dir: Path) -> pd.DataFrame:
    path = Path(audio_dir) / MANIFEST_NAME
    if not path.is_file():
        return pd.DataFrame(columns=MANIFEST_COLUMNS)
    return shards.read_table(path, MANIFEST_KIND).to_pandas()


def save_manifest(audio_dir: Path, rows: dict[str, dict]) -> None:
    frame = pd.DataFrame([{"row": -1, **rows[k]} for k in sorted(rows)], columns=MANIFEST_COLUMNS)
    table = pa.Table.from_pandas(frame, preserve_index=False, schema=pa.schema([
        ("clip_id", pa.string()), ("status", pa.string()), ("reason", pa.string()),
        ("path", pa.string()), ("row", pa.int32()), ("seconds", pa.float64())]))
    shards.write_table(table, audio_dir / MANIFEST_NAME, MANIFEST_KIND)


def clip_sources(audio_dir: str | Path) -> list[tuple[str, Path | PackedClip]]:
    """Every ok clip's audio: its WAV file, or its row in a pack; pack-mates next to each other."""
    audio_dir = Path(audio_dir)
    ok = load_manifest(audio_dir).query("status == 'ok'").sort_values(["path", "row", "clip_id"])
    return [(c, PackedClip(audio_dir / p, int(r)) if r >= 0 else audio_dir / p)
            for c, p, r in zip(ok["clip_id"], ok["path"], ok["row"], strict=True)]


class PackWriter:
    """Gathers finished clips as FLAC and writes them ``size`` at a time into ``packs/pack-NNNNN.parquet``.

    Each clip is its own row group, so one clip is read without reading its pack. A kill loses at most the
    clips gathered since the last pack; the rerun fetches them again.
    """

    def __init__(self, audio_dir: Path, size: int) -> None:
        self.dir, self.size, self.buffer = audio_dir / "packs", size, []
        self.dir.mkdir(exist_ok=True)
        existing = sorted(self.dir.glob("pack-*.parquet"))
        self.next = int(existing[-1].stem.split("-")[1]) + 1 if existing else 0

    def add(self, row: dict, wav: Path) -> list[dict]:
        self.buffer.append((row, encode_flac(sf.read(wav, dtype="float32")[0])))  # write_wav's 16 kHz mono
        wav.unlink()
        return self.flush() if len(self.buffer) >= self.size else []

    def flush(self) -> list[dict]:
        if not self.buffer:
            return []
        path = self.dir / f"pack-{self.next:05d}.parquet"
        table = pa.table({"clip_id": [r["clip_id"] for r, _ in self.buffer],
                          "flac": pa.array([b for _, b in self.buffer], pa.binary())})
        shards.write_table(table, path, PACK_KIND, row_group_size=1)
        rows = [{**r, "path": f"packs/{path.name}", "row": i} for i, (r, _) in enumerate(self.buffer)]
        self.buffer, self.next = [], self.next + 1
        return rows


def fetch_synthetic(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    spec = synthetic.ClipSpec(label=clip["label"], seed=int(clip["seed"]), seconds=float(clip["seconds"]),
                              gain_db=float(clip["gain_db"]), snr_db=float(clip["snr_db"]))
    wave = synthetic.synthesize(spec)
    write_wav(out, wave)
    return wave.size / SAMPLE_RATE


def fetch_local(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    try:
        wave = decode(clip["uri"])
    except AudioError as err:
        raise ClipFailure("decode", str(err)) from None
    write_wav(out, wave)
    return wave.size / SAMPLE_RATE


def classify(message: str) -> str:
    """A yt-dlp / HTTP error message -> manifest status."""
    text = message.lower()
    if "429" in text or "too many requests" in text:
        return "rate-limited"
    if any(k in text for k in ("private video", "video unavailable", "has been removed", "terminated",
                               "not available", "404", "410", "copyright", "sign in to confirm your age")):
        return "unavailable"
    if any(k in text for k in ("timed out", "timeout", "connection", "temporary failure", "network", "500", "502",
                               "503", "504", "reset by peer", "unreachable")):
        return "network"
    return "decode" if "ffmpeg" in text or "invalid data" in text else "unavailable"


class _Silent:
    """yt-dlp's logger: our manifest and log say what happened, not its console output."""

    def debug(self, msg: str) -> None:
        pass

    info = warning = debug

    def error(self, msg: str) -> None:
        log.debug("yt-dlp: %s", msg)


def fetch_youtube(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    import yt_dlp
    from yt_dlp.utils import DownloadError, download_range_func

    ytid, start, end = str(clip["ytid"]), float(clip["start"]), float(clip["end"])
    if not YTID.match(ytid) or not 0 <= start < end:  # never let a bad id reach a URL or ffmpeg
        raise ClipFailure("unavailable", f"invalid YouTube id or times: {ytid!r} {start}-{end}")
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=out.parent) as tmp:
        options = {
            "outtmpl": str(Path(tmp) / "media.%(ext)s"), "format": "bestaudio/best", "quiet": True,
            "no_warnings": True, "noprogress": True, "logger": _Silent(), "retries": 0, "socket_timeout": 30,
            "download_ranges": download_range_func(None, [(start, end)]), "ffmpeg_location": ffmpeg_dir(),
            "cookiefile": cfg.cookies, "noplaylist": True,
        }
        try:
            with yt_dlp.YoutubeDL(options) as ydl:
                ydl.download([cfg.url_template.format(ytid=ytid)])
        except DownloadError as err:
            message = str(err).removeprefix("ERROR: ")
            raise ClipFailure(classify(message), message) from None
        media = [p for p in Path(tmp).iterdir() if p.is_file() and not p.name.endswith(".part")]
        if not media:
            raise ClipFailure("unavailable", "yt-dlp produced no file")
        try:
            wave = decode(media[0])
        except AudioError as err:
            raise ClipFailure("decode", f"segment {start}-{end} s: {err}") from None
    write_wav(out, wave)
    return wave.size / SAMPLE_RATE


Fetcher = Callable[[pd.Series, Path, DownloadParams], float]
FETCHERS: dict[str, Fetcher] = {"synthetic": fetch_synthetic, "esc50": fetch_local, "folder": fetch_local,
                                "audioset": fetch_youtube, "audiocaps": fetch_youtube}


class RateLimit:
    """At most ``per_second`` starts per second across all workers."""

    def __init__(self, per_second: float) -> None:
        self.interval = 1 / per_second if per_second > 0 else 0.0
        self.next = time.monotonic()
        self.lock = threading.Lock()

    def wait(self) -> None:
        if not self.interval:
            return
        with self.lock:
            now = time.monotonic()
            delay, self.next = max(0.0, self.next - now), max(now, self.next) + self.interval
        time.sleep(delay)


def fetch_with_retries(fetch: Fetcher, clip: pd.Series, out: Path, cfg: DownloadParams, limit: RateLimit) -> dict:
    clip_id = clip["clip_id"]
    for attempt in range(1, cfg.max_attempts + 1):
        limit.wait()
        try:
            seconds = fetch(clip, out, cfg)
            return {"clip_id": clip_id, "status": "ok", "reason": "", "path": out.name, "seconds": seconds}
        except ClipFailure as failure:
            status, reason = failure.status, str(failure)
        except A2IError as err:
            status, reason = "decode", str(err)
        if status not in RETRYABLE or attempt == cfg.max_attempts:
            break
        # Exponential backoff with full jitter: workers that hit a 429 together do not retry together.
        time.sleep(random.uniform(0, cfg.backoff_seconds * 2 ** (attempt - 1)))
    return {"clip_id": clip_id, "status": status, "reason": reason[:500], "path": "", "seconds": 0.0}


def download_clips(candidates: pd.DataFrame, audio_dir: str | Path, cfg: DownloadParams,
                   save_every: int = 50) -> dict[str, int]:
    """Materialise every clip of ``candidates`` under ``audio_dir``; return counts by status."""
    audio_dir = Path(audio_dir)
    audio_dir.mkdir(parents=True, exist_ok=True)
    if ffmpeg_dir() not in os.environ.get("PATH", "").split(os.pathsep):  # yt-dlp finds ffmpeg on PATH only
        os.environ["PATH"] = f"{ffmpeg_dir()}{os.pathsep}{os.environ.get('PATH', '')}"
    for leftover in [*audio_dir.glob(".*.tmp"), *audio_dir.glob(".dl-*"), audio_dir / STAGING]:  # a killed run's
        if leftover.is_dir():
            shutil.rmtree(leftover)
        elif leftover.exists():
            leftover.unlink()
    packer = PackWriter(audio_dir, cfg.pack_size) if cfg.pack_size else None
    target_dir = audio_dir / STAGING if packer else audio_dir
    target_dir.mkdir(exist_ok=True)
    clips = candidates.drop_duplicates("clip_id").set_index("clip_id", drop=False).sort_index()
    for clip_id in clips.index:
        check_clip_id(clip_id)
    rows = {r["clip_id"]: r for r in load_manifest(audio_dir).to_dict("records") if r["clip_id"] in clips.index}
    for wav in sorted(audio_dir.glob("*.wav")):
        if wav.stem not in clips.index:
            log.info("%s: no longer a candidate, removed", wav.name)
            wav.unlink()
        elif rows.get(wav.stem, {}).get("status") != "ok":  # written (atomically) before a kill saved the manifest
            rows[wav.stem] = {"clip_id": wav.stem, "status": "ok", "reason": "", "path": wav.name,
                              "seconds": float(sf.info(wav).duration)}
    done = {cid for cid, r in rows.items() if r["status"] == "ok" and (audio_dir / r["path"]).is_file()}
    final = {cid for cid, r in rows.items() if r["status"] not in RETRYABLE | {"ok"}}
    todo = [cid for cid in clips.index if cid not in done and cid not in final]
    log.info("%d clips: %d already done and %d failed for good (skipped), %d to fetch", len(clips), len(done),
             len(final), len(todo))
    limit, counts = RateLimit(cfg.requests_per_second), Counter()
    try:
        with ThreadPoolExecutor(max_workers=cfg.workers) as pool, \
                tqdm(total=len(todo), desc="download", unit="clip") as bar:
            futures = [pool.submit(fetch_with_retries, FETCHERS[clips.loc[c, "source"]], clips.loc[c],
                                   target_dir / f"{c}.wav", cfg, limit) for c in todo]
            for i, future in enumerate(as_completed(futures), start=1):
                row = future.result()
                if packer and row["status"] == "ok":
                    packed = packer.add(row, target_dir / row["path"])
                    rows.update({r["clip_id"]: r for r in packed})
                else:
                    rows[row["clip_id"]] = row
                counts[row["status"]] += 1
                if row["status"] != "ok":
                    log.debug("%s: %s: %s", row["clip_id"], row["status"], row["reason"])
                bar.set_postfix(ok=counts["ok"], failed=sum(counts.values()) - counts["ok"], refresh=False)
                bar.update()
                if i % save_every == 0:
                    save_manifest(audio_dir, rows)
        if packer:
            rows.update({r["clip_id"]: r for r in packer.flush()})
    finally:
        save_manifest(audio_dir, rows)  # progress survives Ctrl-C
        shutil.rmtree(audio_dir / STAGING, ignore_errors=True)
    totals = Counter(r["status"] for r in rows.values())
    lost = sum(v for k, v in totals.items() if k != "ok")
    log.info("download: %d of %d clips ok; %d lost (%.1f %%): %s", totals["ok"], len(clips), lost,
             100 * lost / max(len(clips), 1),
             ", ".join(f"{k} {v}" for k, v in sorted(totals.items()) if k != "ok") or "none")
    return {str(k): int(v) for k, v in sorted(totals.items())}
