"""The download stage's body: every candidate clip as a 16 kHz mono WAV (or in a pack), a manifest row per clip.

Workers fetch clips through :mod:`a2i_core.fetchers` under a global rate limit; rate-limited and network
failures are retried with exponential backoff and jitter, here and on the next run; the others are final.

Resumable: each clip file is written to a temporary name and renamed, the manifest is rewritten as clips
finish, and a rerun skips clips whose file is there.
"""

from __future__ import annotations

import logging
import os
import random
import shutil
import threading
import time
from collections import Counter
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
import soundfile as sf
from tqdm import tqdm

from a2i_core.audio import ffmpeg_dir
from a2i_core.errors import A2IError
from a2i_core.fetchers import FETCHERS, RETRYABLE, ClipFailure, Fetcher
from a2i_core.manifest import check_clip_id, load_manifest, save_manifest
from a2i_core.packs import PackWriter
from a2i_core.params import DownloadParams

log = logging.getLogger(__name__)
STAGING = ".staging"



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
