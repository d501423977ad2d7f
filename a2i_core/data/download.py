"""The download stage's body: every candidate clip as a 16 kHz mono WAV (or in a pack), a manifest row per clip.

Workers fetch clips through :mod:`a2i_core.data.fetch_clip`; network fetches share a global rate limit, local ones
go at disk speed. Rate-limited and network failures are retried with exponential backoff and jitter, here and on the
next run; the others are final.

Resumable: each clip file is written to a temporary name and renamed, the manifest is rewritten as clips
finish, and a rerun skips clips whose file is there (the bookkeeping: :mod:`a2i_core.data.resume`). Anything else
(a full disk, a bug) is fatal: no queued clip starts, the finished ones are kept and recorded, and the stage ends
with one line.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import random
import shutil
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor, as_completed
from pathlib import Path

import pandas as pd
from tqdm import tqdm

from a2i_core.core.audio_io import ffmpeg_dir
from a2i_core.core.errors import A2IError, describe
from a2i_core.core.manifest import check_clip_id, load_manifest, save_manifest
from a2i_core.core.packs import PackWriter
from a2i_core.core.params import DownloadParams
from a2i_core.core.urls import redact_text
from a2i_core.data.cookies import CookieCopies, private_cookies
from a2i_core.data.fetch_clip import FETCHERS, NETWORK_SOURCES, RETRYABLE, ClipFailure, Fetcher
from a2i_core.data.resume import (
    STAGING,
    adopt_files,
    adopt_staged,
    keep_finished,
    remove_leftovers,
    remove_unrecorded_packs,
    to_fetch,
)

log = logging.getLogger(__name__)
SHOWN_BAD_IDS = 5


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


def fetch_with_retries(fetch: Fetcher, clip: pd.Series, out: Path, cfg: DownloadParams, limit: RateLimit | None,
                       stop: threading.Event | None = None) -> dict:
    """One clip's row in the manifest, after up to ``cfg.max_attempts`` tries; a set ``stop`` ends the backoff at
    once (the row stays retryable, for the rerun)."""
    clip_id = clip["clip_id"]
    stop = stop or threading.Event()
    for attempt in range(1, cfg.max_attempts + 1):
        if limit is not None:
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
        if stop.wait(random.uniform(0, cfg.backoff_seconds * 2 ** (attempt - 1))):
            break
    # yt-dlp's messages echo the URL, which may carry credentials or a signed query
    return {"clip_id": clip_id, "status": status, "reason": redact_text(reason)[:500], "path": "", "seconds": 0.0}


def fetch_all(jobs: list[tuple[Fetcher, pd.Series, Path]], cfg: DownloadParams, cookies: CookieCopies,
              record: Callable[[dict], None]) -> None:
    """Run ``jobs`` on ``cfg.workers`` threads, handing each finished clip's row to ``record``.

    The first exception, from a job or from ``record``, stops everything: no job starts after it, the running ones
    finish and are recorded, then it is raised.
    """
    limit, stop = RateLimit(cfg.requests_per_second), threading.Event()

    def job(fetch: Fetcher, clip: pd.Series, out: Path) -> dict | None:
        if stop.is_set():  # a worker can take the next job before the pool hears of a failure: check here
            return None
        try:  # yt-dlp rewrites its cookie file: each thread gets its own copy
            return fetch_with_retries(fetch, clip, out, dataclasses.replace(cfg, cookies=cookies.path()),
                                      limit if clip["source"] in NETWORK_SOURCES else None, stop)
        except BaseException:
            stop.set()
            raise

    pool = ThreadPoolExecutor(max_workers=cfg.workers)
    futures = [pool.submit(job, *j) for j in jobs]
    unrecorded = set(futures)
    try:
        for future in as_completed(futures):
            unrecorded.discard(future)
            if (row := future.result()) is not None:
                record(row)
    except BaseException:
        stop.set()
        pool.shutdown(wait=True, cancel_futures=True)
        for future in unrecorded:  # finished while we stopped: keep them if we can, their files are on disk anyway
            if not future.cancelled() and future.exception() is None and future.result() is not None:
                try:
                    record(future.result())
                except Exception:
                    break
        raise
    pool.shutdown()


def download_clips(candidates: pd.DataFrame, audio_dir: str | Path, cfg: DownloadParams, save_every: int = 50,
                   skip_sources: frozenset[str] = frozenset()) -> dict[str, int]:
    """Materialise every clip of ``candidates`` under ``audio_dir``; return counts by status.

    Clips of ``skip_sources`` are not fetched, but what an earlier run fetched of them is kept (their features come
    from elsewhere for now, and the audio dir is persistent). A fatal error raises A2IError (one line) after the
    finished clips are recorded in the manifest.
    """
    with private_cookies(cfg.cookies) as cookies, _ffmpeg_on_path():  # a bad cookies file stops here, before any clip
        return _download(candidates, Path(audio_dir), cfg, cookies, save_every, skip_sources)


@contextlib.contextmanager
def _ffmpeg_on_path() -> Iterator[None]:
    """ffmpeg on PATH while the clips download (yt-dlp finds it there only), and PATH as it was afterwards: the
    folder holds ffmpeg without ffprobe, and anything else in this process that finds ffmpeg there would expect
    ffprobe beside it (Gradio's audio check does, and fails)."""
    before = os.environ.get("PATH")
    if ffmpeg_dir() not in (before or "").split(os.pathsep):
        os.environ["PATH"] = f"{ffmpeg_dir()}{os.pathsep}{before or ''}"
    try:
        yield
    finally:
        if before is None:
            os.environ.pop("PATH", None)
        else:
            os.environ["PATH"] = before


def _download(candidates: pd.DataFrame, audio_dir: Path, cfg: DownloadParams, cookies: CookieCopies,
              save_every: int, skip_sources: frozenset[str]) -> dict[str, int]:
    audio_dir.mkdir(parents=True, exist_ok=True)
    clips, bad_ids = valid_clips(candidates)
    rows = {r["clip_id"]: r for r in load_manifest(audio_dir).to_dict("records") if r["clip_id"] in clips.index}

    def on_pack(packed: list[dict]) -> None:  # recorded before the pack's WAVs are deleted
        rows.update({r["clip_id"]: r for r in packed})
        save_manifest(audio_dir, rows)

    packer = PackWriter(audio_dir, cfg.pack_size, on_pack) if cfg.pack_size else None
    # A local file's digest (ingest's sha256 column): a recording replaced under the same name is taken again.
    contents = dict(clips["sha256"]) if "sha256" in clips else {}
    target_dir = audio_dir / STAGING if packer else audio_dir
    todo: list[str] = []
    counts: Counter = Counter()

    def record(row: dict) -> None:
        row["source_sha256"] = contents.get(row["clip_id"], "")
        counts[row["status"]] += 1
        if packer and row["status"] == "ok":
            packer.add(row, target_dir / row["path"])
        else:
            rows[row["clip_id"]] = row
        if row["status"] != "ok":
            log.debug("%s: %s: %s", row["clip_id"], row["status"], row["reason"])
        bar.set_postfix(ok=counts["ok"], failed=counts.total() - counts["ok"], refresh=False)
        bar.update()
        if counts.total() % save_every == 0:
            save_manifest(audio_dir, rows)

    try:
        remove_leftovers(audio_dir)
        remove_unrecorded_packs(audio_dir, rows)
        adopt_staged(audio_dir, clips.index, rows, packer)
        adopt_files(audio_dir, clips.index, rows)
        todo = to_fetch(audio_dir, clips.index[~clips["source"].isin(skip_sources)], rows, packer, contents)
        target_dir.mkdir(exist_ok=True)
        jobs = [(FETCHERS[clips.loc[c, "source"]], clips.loc[c], target_dir / f"{c}.wav") for c in todo]
        with tqdm(total=len(todo), desc="download", unit="clip") as bar:
            fetch_all(jobs, cfg, cookies, record)
    except BaseException as err:
        problems = keep_finished(audio_dir, rows, packer)
        if not isinstance(err, Exception):  # Ctrl-C: progress is saved, the caller says so
            raise
        raise stopped("download", "clips", counts.total(), len(todo), err, problems) from None
    if problems := keep_finished(audio_dir, rows, packer):
        raise unrecorded("download", "clips", problems)
    if packer:
        shutil.rmtree(target_dir, ignore_errors=True)  # empty now: every clip is in a pack
    return summary(rows, Counter({"invalid-id": bad_ids}))


def stopped(run: str, what: str, done: int, todo: int, err: Exception, problems: list[tuple[str, str]]
            ) -> A2IError:
    """The one line for a ``run`` of ``todo`` fetches of ``what`` stopped by ``err`` after ``done``, and what
    keeping the finished ones met (:func:`a2i_core.data.resume.keep_finished`)."""
    log.debug("%s stopped", run, exc_info=err)
    where = f" after {done} of {todo} {what}" if todo else ""
    also = "".join(f"; {step} failed too: {why}" for step, why in problems)
    return A2IError(f"{run} stopped{where}: {describe(err)}{also} (finished {what} are kept; rerun to resume)")


def unrecorded(run: str, what: str, problems: list[tuple[str, str]]) -> A2IError:
    """The one line for a ``run`` whose finished ``what`` could not be recorded."""
    said = "; ".join(f"{step} failed: {why}" for step, why in problems)
    return A2IError(f"{run}: {said} (the {what} are on disk; rerun to record them)")


def summary(rows: dict[str, dict], skipped: Counter, what: str = "clips") -> dict[str, int]:
    """Counts by status, ``skipped`` too (clips with an invalid id, say: they have no manifest row); logged."""
    totals = Counter(r["status"] for r in rows.values()) + skipped
    lost = totals.total() - totals["ok"]
    log.info("download: %d of %d %s ok; %d lost (%.1f %%): %s", totals["ok"], totals.total(), what, lost,
             100 * lost / max(totals.total(), 1),
             ", ".join(f"{k} {v}" for k, v in sorted(totals.items()) if k != "ok") or "none")
    return {str(k): int(v) for k, v in sorted(totals.items())}


def valid_clips(candidates: pd.DataFrame) -> tuple[pd.DataFrame, int]:
    """The candidates with a usable clip id, one row per clip by id; and how many ids were not usable."""
    def usable(clip_id: object) -> bool:
        try:
            check_clip_id(clip_id)  # type: ignore[arg-type]
            return True
        except A2IError:
            return False

    ok = candidates["clip_id"].map(usable).to_numpy(dtype=bool)
    bad = candidates.loc[~ok, "clip_id"].drop_duplicates()
    if len(bad):  # one line, however many: ids from a CSV can be anything, and millions of them
        shown = ", ".join(repr(c)[:40] for c in bad.iloc[:SHOWN_BAD_IDS])
        shown += ", ..." if len(bad) > SHOWN_BAD_IDS else ""
        log.warning("%d candidate clips skipped: invalid clip id (1 to 80 letters, digits, '_' or '-'): %s",
                    len(bad), shown)
    clips = candidates[ok].drop_duplicates("clip_id").set_index("clip_id", drop=False).sort_index()
    return clips, len(bad)
