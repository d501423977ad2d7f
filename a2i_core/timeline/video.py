"""A film's frames on disk and the MP4 made from them: a folder of numbered PNGs that a rerun resumes and one film
at a time may use, the frames streamed into ffmpeg (H.264, yuv420p, fast start) with the recording's sound muxed in,
what a finished film is (for tests and the app), and a short animated WebP preview of it.

The encoder is the ffmpeg of imageio-ffmpeg (``imageio_ffmpeg.write_frames``), fed one frame at a time, so memory
holds one frame whatever the film's length.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import struct
import subprocess
from collections.abc import Iterator
from pathlib import Path

import imageio_ffmpeg
import numpy as np
from PIL import Image

from a2i_core.core.audio_io import PROBE_TIMEOUT_S, ffmpeg_binary, not_a_file
from a2i_core.core.errors import A2IError, describe, first_line
from a2i_core.core.files import atomic_path, hold_folder
from a2i_core.diffusion.images import save_png

FRAME_NAME = "frame_{:06d}.png"  # six digits: the params cap (an hour at 60 frames/s) is 216,000 frames
LOCK_NAME = ".film.lock"
PNG_END = b"\x00\x00\x00\x00IEND\xaeB`\x82"  # the last 12 bytes of every whole PNG: a cut-off file lacks them
CRF = 18  # x264's quality (lower is better; 18 looks lossless for these pictures at a few MB a minute)
PRESET = "medium"  # x264's default speed/size trade-off
FULL_DISK_BYTES = 16 << 20  # less free than this after a failed write: the disk filled
MAX_BOXES = 64  # top-level MP4 boxes read to find moov and mdat (an MP4 has a handful)


class FrameFolder:
    """The numbered PNG frames of one film (``frame_000000.png`` ...), ``count`` of them, in ``folder``.

    ``size`` (width, height) is the size every frame must have; left out, it is the first readable frame's. A frame
    whose file is missing, cut off, not a PNG or of another size is not made yet: ``missing`` lists it, and a
    rerun makes it again.
    """

    def __init__(self, folder: Path, count: int, size: tuple[int, int] | None = None) -> None:
        if isinstance(count, bool) or not isinstance(count, int) or count < 1:
            raise A2IError(f"{folder}: a film needs at least one frame, got {count!r}")
        if size is not None and (len(size) != 2 or min(size) < 1):
            raise A2IError(f"{folder}: a frame size is (width, height) >= 1, got {size!r}")
        self.folder = Path(folder)
        self.count = count
        self.size = None if size is None else (int(size[0]), int(size[1]))

    def path(self, i: int) -> Path:
        if not 0 <= i < self.count:
            raise IndexError(f"frame {i} is outside 0..{self.count - 1}")
        return self.folder / FRAME_NAME.format(i)

    def missing(self) -> list[int]:
        """The frames not made yet, in order: absent, unreadable, cut off, or not of the frames' size."""
        sizes = [_png_size(self.path(i)) for i in range(self.count)]
        expected = self.size or next((s for s in sizes if s is not None), None)
        return [i for i, s in enumerate(sizes) if s is None or s != expected]

    def frame_size(self) -> tuple[int, int] | None:
        """(width, height) the frames have: ``size``, else the first readable frame's; None before any exists."""
        if self.size is not None:
            return self.size
        return next((s for s in map(_png_size, map(self.path, range(self.count))) if s is not None), None)

    def save(self, i: int, image: Image.Image, text: dict[str, str] | None = None) -> None:
        """Write frame ``i`` whole or not at all (``text`` into its PNG chunks, as ``save_png`` does)."""
        if self.size is not None and image.size != self.size:
            raise ValueError(f"frame {i} is {image.size[0]}x{image.size[1]}, the film's frames are "
                             f"{self.size[0]}x{self.size[1]}")
        path = self.path(i)
        try:
            save_png(image, path, text)
        except OSError as err:
            raise A2IError(f"{path}: cannot write the frame ({_why(err, path.parent)}); the frames made so far are "
                           f"kept in {self.folder} and a rerun resumes from them") from None

    def lock(self) -> contextlib.AbstractContextManager[None]:
        """Hold the folder for one film: a second holder, in this process or another, is refused at once with one
        line; released on exit and when the process dies."""
        return hold_folder(self.folder, LOCK_NAME, "another film is being made from this folder right now; wait for "
                           "it to finish or give this film another folder")


def _png_size(path: Path) -> tuple[int, int] | None:
    """A whole PNG's (width, height), from its header and its last chunk only; None if it is anything else."""
    try:
        with Image.open(path, formats=["PNG"]) as image:
            size = image.size
        with open(path, "rb") as f:
            f.seek(-len(PNG_END), os.SEEK_END)
            whole = f.read() == PNG_END
    except (OSError, SyntaxError, ValueError):  # absent, a folder, not a PNG, shorter than the tail
        return None
    return size if whole else None


def _why(err: OSError, folder: Path) -> str:
    """Why a write failed, in a few words: a full disk said as such (also where ffmpeg only left a broken file)."""
    if err.errno == errno.ENOSPC or _free_bytes(folder) < FULL_DISK_BYTES:
        return "no space left on the disk"
    return first_line(err) if err.errno is None else describe(err)


def _free_bytes(folder: Path) -> int:
    try:
        return shutil.disk_usage(folder).free
    except OSError:
        return 1 << 62  # cannot tell: do not claim a full disk


def encode_film(frames: FrameFolder, fps: float, audio: Path | None, out: Path) -> None:
    """Stream the frames, in order, into ``out``: H.264 (libx264), yuv420p, the index first (``+faststart``), with
    ``audio``'s first audio stream as AAC (a recording or a video: any file ffmpeg reads). Frames with an odd side
    are padded to even (yuv420p halves both sides) by repeating their last column or row. ``out`` appears whole or
    not at all; a missing frame is refused before ffmpeg starts, and a failed write (a full disk) keeps the frames
    for a rerun. Hold ``frames.lock()`` around making the frames and this."""
    fps = _check_fps(fps)
    out = Path(out)
    gaps = frames.missing()
    if gaps:
        raise A2IError(f"{frames.folder}: {len(gaps)} of {frames.count} frames are not made yet (first: "
                       f"{frames.path(gaps[0]).name}); make the film's frames before encoding it")
    sound = _audio_source(Path(audio)) if audio is not None else None
    size = frames.frame_size()
    assert size is not None  # no frame is missing
    even = (size[0] + size[0] % 2, size[1] + size[1] % 2)
    try:
        with atomic_path(out) as tmp:
            try:
                _write(frames, even, fps, sound, tmp)
                _check_written(tmp, frames.count, sound is not None)
            except OSError as err:  # the temporary file is still there: a full disk still reads as full
                raise A2IError(f"{out}: the film could not be written ({_why(err, out.parent)}); the "
                               f"{frames.count} frames are kept in {frames.folder} and a rerun resumes from them"
                               ) from None
    except OSError as err:  # before ffmpeg (no folder, no permission) or the final rename (a folder in the way)
        raise A2IError(f"{out}: cannot write the film there ({describe(err)})") from None


def _check_fps(fps: float) -> float:
    try:
        fps = float(fps)
    except (TypeError, ValueError):
        raise A2IError(f"a film's frame rate must be a number, got {fps!r}") from None
    if not (0 < fps < float("inf")):
        raise A2IError(f"a film's frame rate must be a finite number > 0, got {fps:g}")
    return fps


def _audio_source(audio: Path) -> Path:
    """``audio`` checked to be a file ffmpeg reads with an audio stream; absolute (ffmpeg reads "a:b" as a URL)."""
    problem = not_a_file(audio)
    if problem:
        raise A2IError(f"{audio}: {problem}")
    header = _ffmpeg_header(audio)
    if "Input #0" not in header:
        reason = header.strip().splitlines()[-1] if header.strip() else "ffmpeg failed"
        raise A2IError(f"{audio}: not a recording ffmpeg can read ({reason[:200]})")
    if not re.search(r"Stream #\S+.*: Audio: ", header):
        raise A2IError(f"{audio}: has no audio stream for the film's sound; give a recording or a video with sound")
    return audio.absolute()


def _ffmpeg_header(path: Path) -> str:
    """What ``ffmpeg -i`` says of a local file (its streams), without decoding it."""
    argv = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file", "-i", str(path.absolute())]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return ""
    return done.stderr.decode(errors="replace")


def _write(frames: FrameFolder, size: tuple[int, int], fps: float, sound: Path | None, tmp: Path) -> None:
    # ffmpeg's own log is silenced: the film is checked after, and a failure is said in one line of ours.
    writer = imageio_ffmpeg.write_frames(
        str(tmp.absolute()), size, fps=fps, codec="libx264", pix_fmt_out="yuv420p", quality=None,
        macro_block_size=1,  # x264 takes any even size: no rescaling to multiples of 16
        ffmpeg_log_level="quiet", audio_path=None if sound is None else str(sound), audio_codec="aac",
        output_params=["-crf", str(CRF), "-preset", PRESET, "-movflags", "+faststart", "-f", "mp4"])
    try:
        writer.send(None)
        for i in range(frames.count):
            writer.send(_pixels(frames.path(i), size))  # (height, width, 3) uint8, C order
    finally:
        writer.close()  # ffmpeg finishes the file (or has failed): checked by the caller


def _pixels(path: Path, size: tuple[int, int]) -> np.ndarray:
    """One frame's RGB pixels (height, width, 3), an odd side padded by repeating its last column or row."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))  # (h, w, 3)
    except (OSError, SyntaxError, ValueError) as err:
        raise A2IError(f"{path}: the frame cannot be read any more ({first_line(err)}); delete it and rerun") from None
    pad_h, pad_w = size[1] - rgb.shape[0], size[0] - rgb.shape[1]
    if not (0 <= pad_h <= 1 and 0 <= pad_w <= 1):
        raise A2IError(f"{path}: the frame is {rgb.shape[1]}x{rgb.shape[0]}, the film's are {size[0]}x{size[1]}; "
                       f"delete it and rerun")
    if pad_h or pad_w:
        rgb = np.pad(rgb, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")  # (size[1], size[0], 3)
    return np.ascontiguousarray(rgb)


def _check_written(tmp: Path, count: int, with_audio: bool) -> None:
    """OSError unless ffmpeg wrote a whole film: write_frames does not report ffmpeg's exit status."""
    try:
        info = _inspect(tmp)
    except (OSError, RuntimeError, ValueError):  # imageio-ffmpeg's reasons are ffmpeg's whole log
        raise OSError("ffmpeg left no readable film") from None
    if info["frames"] != count:
        raise OSError(f"ffmpeg wrote {info['frames']} of {count} frames")
    if with_audio and info["audio_codec"] is None:
        raise OSError("ffmpeg wrote no audio track")
    if not info["faststart"]:
        raise OSError("ffmpeg did not move the film's index to the front")


def film_info(path: Path) -> dict:
    """What a film is: ``duration`` (s, the container's), ``fps``, ``frames``, ``width``, ``height``, ``video_codec``,
    ``pix_fmt``, ``audio_codec`` and ``audio_duration`` (s; None without sound) and ``faststart`` (the index, the moov
    box, before the media data: a browser plays it before it has downloaded all of it)."""
    path = Path(path)
    problem = not_a_file(path)
    if problem:
        raise A2IError(f"{path}: {problem}")
    try:
        return _inspect(path)
    except (OSError, RuntimeError, ValueError) as err:
        raise A2IError(f"{path}: not a video ffmpeg can read ({first_line(err, 120)})") from None


def film_frames(path: Path) -> Iterator[np.ndarray]:
    """A film's frames as a viewer sees them (decoded from the MP4): (height, width, 3) uint8, in order, one in
    memory at a time."""
    reader = imageio_ffmpeg.read_frames(str(Path(path).absolute()), pix_fmt="rgb24")
    try:
        width, height = next(reader)["size"]
        for raw in reader:
            yield np.frombuffer(raw, np.uint8).reshape(height, width, 3)
    finally:
        reader.close()  # a consumer that stops early must not leave ffmpeg running


def _inspect(path: Path) -> dict:
    name = str(path.absolute())
    reader = imageio_ffmpeg.read_frames(name)
    try:
        meta = next(reader)  # parsed from ffmpeg's header by imageio-ffmpeg
    finally:
        reader.close()
    frames, _ = imageio_ffmpeg.count_frames_and_secs(name)
    audio_codec = meta.get("audio_codec")
    boxes = _top_level_boxes(path)
    return {
        "duration": float(meta["duration"]),
        "fps": float(meta["fps"]),
        "frames": int(frames),
        "width": int(meta["size"][0]),
        "height": int(meta["size"][1]),
        "video_codec": meta["codec"],
        "pix_fmt": meta["pix_fmt"].split("(")[0],  # "yuv420p(progressive)"
        "audio_codec": audio_codec,
        "audio_duration": _audio_seconds(name) if audio_codec else None,
        "faststart": "moov" in boxes and "mdat" in boxes and boxes.index("moov") < boxes.index("mdat"),
    }


def _audio_seconds(name: str) -> float | None:
    """The first audio stream's length: where ffmpeg's copy of it, to nowhere, ends (no decoding)."""
    argv = [ffmpeg_binary(), "-nostdin", "-hide_banner", "-protocol_whitelist", "file", "-i", name,
            "-map", "0:a:0", "-c", "copy", "-f", "null", "-"]
    try:
        done = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True, timeout=PROBE_TIMEOUT_S * 6)
    except subprocess.TimeoutExpired:
        return None
    times = re.findall(rb"time=(\d+):(\d\d):(\d\d(?:\.\d+)?)", done.stderr)
    if done.returncode != 0 or not times:
        return None
    hours, minutes, seconds = (float(g) for g in times[-1])
    return hours * 3600 + minutes * 60 + seconds


def _top_level_boxes(path: Path) -> list[str]:
    """The types of an MP4's top-level boxes, in file order (ftyp, moov, mdat, ...)."""
    kinds: list[str] = []
    with open(path, "rb") as f:
        end = os.fstat(f.fileno()).st_size
        pos = 0
        while pos + 8 <= end and len(kinds) < MAX_BOXES:
            f.seek(pos)
            head = f.read(16)
            size, kind = struct.unpack(">I4s", head[:8])
            if size == 1 and len(head) == 16:  # a 64-bit size follows the type
                size = struct.unpack(">Q", head[8:])[0]
            elif size == 0:  # the box runs to the end of the file
                size = end - pos
            if size < 8:
                break  # not an MP4 box: stop rather than loop
            kinds.append(kind.decode("latin-1"))
            pos += size
    return kinds


def preview(frames: FrameFolder, out: Path, fps: float, width: int, max_frames: int = 120) -> None:
    """An animated WebP of up to ``max_frames`` frames evenly spread over the film, ``width`` pixels wide, lasting
    as long as the film (each picked frame shown for the frames it stands for), looping."""
    fps = _check_fps(fps)
    if isinstance(width, bool) or not isinstance(width, int) or not 1 <= width <= 16_383:  # WebP's largest side
        raise A2IError(f"a preview's width must be a whole number of pixels in 1..16383, got {width!r}")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 1:
        raise A2IError(f"a preview needs max_frames >= 1, got {max_frames!r}")
    gaps = frames.missing()
    if gaps:
        raise A2IError(f"{frames.folder}: {len(gaps)} of {frames.count} frames are not made yet (first: "
                       f"{frames.path(gaps[0]).name}); make the film's frames before its preview")
    picks = np.unique(np.linspace(0, frames.count - 1, min(max_frames, frames.count)).round().astype(int))  # (k,)
    shown_ms = max(1, round(1000 * frames.count / (len(picks) * fps)))
    images = [_scaled(frames.path(int(i)), width) for i in picks]  # k small pictures: the preview is short
    with atomic_path(out) as tmp:
        images[0].save(tmp, format="WEBP", save_all=True, append_images=images[1:], duration=shown_ms, loop=0,
                       quality=80)


def _scaled(path: Path, width: int) -> Image.Image:
    with Image.open(path) as image:
        height = max(1, round(image.height * width / image.width))
        return image.convert("RGB").resize((width, min(height, 16_383)), Image.Resampling.LANCZOS)
