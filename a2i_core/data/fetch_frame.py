"""Reference frames fetched: one fetcher per kind of source, each keeping one PNG frame of a clip or raising
ClipFailure, and :func:`download_frames`, the queue that runs them for the evaluated clips.

The field's image measures (IIS, FID, KID) compare a generated image with the source video's real frame at the
clip's midpoint. Synthetic clips have no video: their frame is their class's procedural picture, varied per clip.
Local files and YouTube videos are read by ffmpeg, which seeks to the midpoint (over HTTP with Range requests: only
the bytes around it are fetched). Every frame is stored with its longest side at most MAX_SIDE pixels.

Statuses beyond the audio's: no-video (an audio-only file), past-end (the midpoint is past the video's end) and
too-small (a frame under MIN_SIDE pixels on a side) are final, like unavailable and decode; rate-limited and network
are retried. A full or read-only disk raises OSError, as for the audio.

The queue is the audio's (:func:`a2i_core.data.download.fetch_all`: threads, the rate limit for network sources,
retries with backoff) and resumes the same way: each PNG is written whole under a temporary name, the manifest
(:mod:`a2i_core.data.frames`) is rewritten as frames finish, and a rerun fetches only what is missing or failed for a
reason that may pass. It lives here, not in ``frames``, so that what only reads the frames imports no fetching code.
"""

from __future__ import annotations

import logging
import subprocess
import tempfile
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
from PIL import Image, UnidentifiedImageError
from tqdm import tqdm

from a2i_core.core.audio_io import claimed_seconds, ffmpeg_binary
from a2i_core.core.files import atomic_path
from a2i_core.core.manifest import CLIP_ID, load_manifest, save_manifest
from a2i_core.core.params import DownloadParams
from a2i_core.core.urls import redact_text
from a2i_core.data.cookies import CookieCopies, private_cookies
from a2i_core.data.download import _ffmpeg_on_path, fetch_all, stopped, summary, unrecorded
from a2i_core.data.fetch_clip import (
    ClipFailure,
    Fetcher,
    classify,
    disk_error,
    youtube_segment,
    ytdl_options,
)
from a2i_core.data.frames import SUFFIX
from a2i_core.data.resume import keep_finished, remove_leftovers, to_fetch
from a2i_core.data.sources import pictures

log = logging.getLogger(__name__)

MAX_SIDE = 512  # a 4K frame is stored small: the measures look at 224-299 px
MIN_SIDE = 32  # smaller than this on a side: no picture worth comparing with
SYNTHETIC_SIZE = 256
# A video stream (height 720 is plenty for MAX_SIDE) that ffmpeg can read with Range requests: plain HTTP(S), not
# HLS or DASH manifests.
VIDEO_FORMAT = "/".join(f"{f}[protocol^=http][protocol!*=dash][protocol!*=m3u8]"
                        for f in ("bv*[height<=720]", "bv*", "b"))
NETWORK_PROTOCOLS = "http,https,tcp,tls"
RW_TIMEOUT_US = 30_000_000  # ffmpeg's socket timeout, as yt-dlp's socket_timeout
FFMPEG_TIMEOUT_S = 120
NO_VIDEO = "matches no streams"
LOCAL_SOURCES = frozenset({"esc50", "folder"})  # ffmpeg's words when -map 0:V:0 finds no video stream


def frame_seconds(clip: pd.Series) -> float:
    """When in its source a clip's frame is: the middle of the clip (a local file: of the whole file, as far as its
    header says; 0 where it says nothing)."""
    if clip["source"] in LOCAL_SOURCES:
        seconds = claimed_seconds(_local_path(clip))
        return seconds / 2 if seconds else 0.0
    if clip["source"] == "synthetic":
        return float(clip["seconds"]) / 2
    return (float(clip["start"]) + float(clip["end"])) / 2


def fetch_synthetic_frame(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    save_frame(synthetic_frame(str(clip["prompt"]), int(clip["seed"])), out)
    return frame_seconds(clip)


def synthetic_frame(prompt: str, seed: int, size: int = SYNTHETIC_SIZE) -> Image.Image:
    """The class's picture as one clip's camera saw it: a crop of 80-100 % at a random place, brightness and contrast
    within 10 %, a little sensor noise; the same pixels for the same seed."""
    rng = np.random.default_rng([seed & (2**64 - 1), 0xF7A3E])  # a stream of its own, apart from the clip's audio
    side = round(size * rng.uniform(0.8, 1.0))
    x0, y0 = (int(v) for v in rng.integers(0, size - side + 1, 2))
    view = pictures.picture(prompt, size).crop((x0, y0, x0 + side, y0 + side)).resize((size, size),
                                                                                     Image.Resampling.BICUBIC)
    pixels = np.asarray(view, np.float32)
    mean = pixels.mean()
    pixels = ((pixels - mean) * rng.uniform(0.9, 1.1) + mean) * rng.uniform(0.9, 1.1)
    pixels += rng.normal(0.0, 4.0, pixels.shape)
    return Image.fromarray(np.clip(np.rint(pixels), 0, 255).astype(np.uint8), "RGB")


def fetch_local_frame(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    path = _local_path(clip)
    if not path.is_file():
        raise ClipFailure("decode", f"{path}: no such file")
    middle = frame_seconds(clip)
    grab_frame(["-protocol_whitelist", "file"], str(path), middle, out, network=False)
    return middle


def _local_path(clip: pd.Series) -> Path:
    return Path(str(clip["uri"])).absolute()  # absolute: ffmpeg reads "a:b.mp4" as a URL of a protocol "a"


def fetch_youtube_frame(clip: pd.Series, out: Path, cfg: DownloadParams) -> float:
    import yt_dlp
    from yt_dlp.utils import DownloadError

    ytid, _, _ = youtube_segment(clip)
    options = ytdl_options(cfg, format=VIDEO_FORMAT)
    try:
        with yt_dlp.YoutubeDL(options) as ydl:
            info = ydl.extract_info(cfg.url_template.format(ytid=ytid), download=False)
            chosen = (info.get("requested_formats") or [info])[0]  # a merged pick lists its video first
            url = chosen.get("url")
            if not str(url or "").startswith(("http://", "https://")):  # never an option or a local file to ffmpeg
                raise ClipFailure("unavailable", "yt-dlp found no video format read over HTTP")
            headers = dict(chosen.get("http_headers") or info.get("http_headers") or {})
            if cookie := ydl.cookiejar.get_cookie_header(url):  # as yt-dlp's own ffmpeg downloader sends them
                headers["Cookie"] = cookie
    except DownloadError as err:
        message = redact_text(str(err).removeprefix("ERROR: "))
        raise ClipFailure(classify(message), message) from None
    middle = frame_seconds(clip)
    options = ["-protocol_whitelist", NETWORK_PROTOCOLS, "-rw_timeout", str(RW_TIMEOUT_US)]
    if headers:  # no CR or LF in a value: a header from a web page never adds one of its own
        options += ["-headers", "".join(f"{_one_line(k)}: {_one_line(v)}\r\n" for k, v in headers.items())]
    grab_frame(options, url, middle, out, network=True)
    return middle


def _one_line(text: object) -> str:
    return str(text).replace("\r", " ").replace("\n", " ")


def grab_frame(input_options: list[str], name: str, seconds: float, out: Path, network: bool) -> None:
    """ffmpeg's frame at ``seconds`` of ``name`` (a local path or a media URL), kept as ``out``."""
    with tempfile.TemporaryDirectory(prefix=".dl-", dir=out.parent) as tmp:
        raw = Path(tmp) / "frame.png"
        argv = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-loglevel", "error", *input_options,
                "-ss", f"{seconds:.3f}", "-i", name, "-map", "0:V:0", "-frames:v", "1", "-pix_fmt", "rgb24",
                "-c:v", "png", "-f", "image2", "-update", "1", str(raw)]
        try:
            done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=FFMPEG_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            raise ClipFailure("network" if network else "decode",
                              f"ffmpeg took over {FFMPEG_TIMEOUT_S} s for one frame") from None
        message = redact_text(done.stderr.decode(errors="replace").strip())[-1000:]
        if done.returncode != 0:
            raise _ffmpeg_failure(message, out.parent, network)
        if not raw.is_file() or not raw.stat().st_size:
            raise ClipFailure("past-end", f"no frame at {seconds:.3f} s: past the video's end")
        try:
            with Image.open(raw) as image:
                image.load()
                frame = image.convert("RGB")
        except (UnidentifiedImageError, OSError, ValueError) as err:
            raise ClipFailure("decode", f"ffmpeg's frame does not open: {err}") from None
    save_frame(frame, out)


def _ffmpeg_failure(message: str, folder: Path, network: bool) -> Exception:
    if NO_VIDEO in message:
        return ClipFailure("no-video", "no video stream (audio only)")
    if disk := disk_error(message, folder):
        return disk
    text = f"ffmpeg: {message.splitlines()[-1] if message else 'failed'}"
    if not network:
        return ClipFailure("decode", text)
    return ClipFailure(classify(text), text)  # the HTTP status or network fault ffmpeg met; else decode


def save_frame(frame: Image.Image, out: Path) -> None:
    """``frame`` scaled down to MAX_SIDE (aspect kept), written atomically as PNG and checked to open; a frame too
    small to compare is refused, and nothing is kept."""
    if min(frame.size) < MIN_SIDE:
        raise ClipFailure("too-small", f"frame of {frame.width}x{frame.height} px: under {MIN_SIDE} px on a side")
    frame = frame.convert("RGB")
    if max(frame.size) > MAX_SIDE:
        frame = frame.copy()
        frame.thumbnail((MAX_SIDE, MAX_SIDE), Image.Resampling.LANCZOS)
    try:
        with atomic_path(out) as tmp:
            frame.save(tmp, format="PNG")
            if not opens(tmp):
                raise ClipFailure("decode", "the written frame does not open")
    except OSError as err:
        raise OSError(err.errno, err.strerror, str(out)) from None


def opens(path: Path, whole: bool = True) -> bool:
    """Whether ``path`` is an image PIL reads: the header only, or (``whole``) every byte of it checked."""
    try:
        with Image.open(path) as image:
            if whole:
                image.verify()
        return True
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError):
        return False


FRAME_FETCHERS: dict[str, Fetcher] = {"synthetic": fetch_synthetic_frame, "esc50": fetch_local_frame,
                                      "folder": fetch_local_frame, "audioset": fetch_youtube_frame,
                                      "audiocaps": fetch_youtube_frame, "vggsound": fetch_youtube_frame}


def download_frames(clips: pd.DataFrame, frames_dir: Path, cfg: DownloadParams, save_every: int = 50
                    ) -> dict[str, int]:
    """One frame per clip of ``clips`` under ``frames_dir``; counts by status (of the wanted clips only).

    Frames of clips no longer in ``clips`` are removed. A fatal error (a full disk, a bug) raises A2IError, one
    line, after the finished frames are recorded.
    """
    with private_cookies(cfg.cookies) as cookies, _ffmpeg_on_path():
        return _download_frames(clips, Path(frames_dir), cfg, cookies, save_every)


def _download_frames(clips: pd.DataFrame, frames_dir: Path, cfg: DownloadParams, cookies: CookieCopies,
                     save_every: int) -> dict[str, int]:
    frames_dir.mkdir(parents=True, exist_ok=True)
    wanted, skipped = _wanted(clips)
    rows = {r["clip_id"]: r for r in load_manifest(frames_dir).to_dict("records") if r["clip_id"] in wanted.index}
    contents = dict(wanted["sha256"].fillna("")) if "sha256" in wanted else {}  # a local file replaced: taken again
    counts: Counter = Counter()
    todo: list[str] = []

    def record(row: dict) -> None:
        row["source_sha256"] = contents.get(row["clip_id"], "")
        rows[row["clip_id"]] = row
        counts[row["status"]] += 1
        if row["status"] != "ok":
            log.debug("frame %s: %s: %s", row["clip_id"], row["status"], row["reason"])
        bar.set_postfix(ok=counts["ok"], failed=counts.total() - counts["ok"], refresh=False)
        bar.update()
        if counts.total() % save_every == 0:
            save_manifest(frames_dir, rows)

    try:
        remove_leftovers(frames_dir)
        _tidy(frames_dir, wanted, rows, contents)
        todo = to_fetch(frames_dir, wanted.index, rows, None, contents)
        jobs = [(FRAME_FETCHERS[wanted.loc[c, "source"]], wanted.loc[c], frames_dir / f"{c}{SUFFIX}") for c in todo]
        with tqdm(total=len(todo), desc="frames", unit="frame") as bar:
            fetch_all(jobs, cfg, cookies, record)
    except BaseException as err:
        problems = keep_finished(frames_dir, rows, None)
        if not isinstance(err, Exception):  # Ctrl-C: progress is saved, the caller says so
            raise
        raise stopped("frames", "frames", counts.total(), len(todo), err, problems) from None
    if problems := keep_finished(frames_dir, rows, None):
        raise unrecorded("frames", "frames", problems)
    return summary(rows, skipped, "frames")


def _wanted(clips: pd.DataFrame) -> tuple[pd.DataFrame, Counter]:
    """The clips to keep a frame of, one row per clip by id; and the clips that get none, by why (counted only)."""
    ids = clips.drop_duplicates("clip_id")
    usable = ids["clip_id"].map(lambda c: isinstance(c, str) and CLIP_ID.match(c) is not None).to_numpy(bool)
    known = ids["source"].isin(list(FRAME_FETCHERS)).to_numpy(bool)
    skipped = Counter({"invalid-id": int((~usable).sum()), "no-source": int((usable & ~known).sum())})
    if skipped.total():  # the audio's log already showed the bad ids
        log.warning("%d clips get no frame: %s", skipped.total(),
                    ", ".join(f"{k} {v}" for k, v in sorted(skipped.items()) if v))
    return ids[usable & known].set_index("clip_id", drop=False).sort_index(), +skipped


def _tidy(frames_dir: Path, wanted: pd.DataFrame, rows: dict[str, dict], contents: dict[str, str]) -> None:
    """Frames of clips no longer wanted go; a PNG a stopped run wrote before it could record it is adopted when it
    opens; a file that does not open goes, and its frame is fetched again."""
    for png in sorted(frames_dir.glob(f"*{SUFFIX}")):
        recorded = rows.get(png.stem, {}).get("status") == "ok"
        if png.stem not in wanted.index:
            log.info("frame %s: no longer an evaluated clip, removed", png.name)
            png.unlink()
        elif not opens(png, whole=not recorded):  # recorded ones were checked whole when written
            log.info("frame %s: not an image, removed and fetched again", png.name)
            png.unlink()
            rows.pop(png.stem, None)
        elif not recorded:
            rows[png.stem] = {"clip_id": png.stem, "status": "ok", "reason": "", "path": png.name,
                              "seconds": frame_seconds(wanted.loc[png.stem]),
                              "source_sha256": contents.get(png.stem, "")}
