"""Reference frames: the source video's frame at each evaluated clip's midpoint. Real yt-dlp and ffmpeg against the
local media server (Range requests), real local files, the synthetic classes' pictures."""

from __future__ import annotations

import dataclasses
import json
import subprocess

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from a2i_core.core import shards
from a2i_core.core.audio_io import ffmpeg_binary
from a2i_core.core.candidates import CANDIDATES_KIND, HELDOUT, candidates_table
from a2i_core.core.errors import A2IError
from a2i_core.core.manifest import load_manifest
from a2i_core.core.params import params_from_dict
from a2i_core.data import fetch_frame
from a2i_core.data.fetch_frame import download_frames
from a2i_core.data.frames import load_frames
from a2i_core.data.ingest import build_candidates
from a2i_core.data.sources import pictures
from a2i_core.pipeline.download import download as pipeline_download
from tests.conftest import offline
from tests.media_server import MediaServer

LEVEL = 60  # the timed video's grey level is LEVEL * t: its frame says when it was taken


def _ffmpeg(*args: str) -> None:
    subprocess.run([ffmpeg_binary(), "-y", "-hide_banner", "-loglevel", "error", *args], check=True)


def _timed_video(path, seconds: float = 4, audio: bool = True) -> None:
    """64x48 at 10 frames/s whose grey level rises LEVEL per second, with a tone."""
    grey = f"'{LEVEL}*T'"
    sound = ["-f", "lavfi", "-i", f"sine=duration={seconds}", "-c:a", "aac"] if audio else []
    _ffmpeg("-f", "lavfi", "-i", f"color=black:size=64x48:rate=10:duration={seconds},format=rgb24,"
            f"geq=r={grey}:g={grey}:b={grey}", *sound, "-c:v", "libx264", "-pix_fmt", "yuv420p", "-shortest", str(path))


def _audio_only(path, seconds: float = 4) -> None:
    _ffmpeg("-f", "lavfi", "-i", f"sine=duration={seconds}", "-c:a", "aac", str(path))


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    _timed_video(root / "timedvideo1.mp4")
    _timed_video(root / "ratelimit01.mp4")
    _audio_only(root / "audioonly01.mp4")
    _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=3840x2160:rate=4:duration=1", "-c:v", "libx264", "-preset",
            "ultrafast", "-pix_fmt", "yuv420p", str(root / "fourkvideo1.mp4"))
    # libx264 wants even sizes: a 1x1 video as PNG frames in a QuickTime file
    _ffmpeg("-f", "lavfi", "-i", "color=red:size=1x1:rate=5:duration=2", "-c:v", "png", "-f", "mov",
            str(root / "onepixel001.mp4"))
    (root / "webpage0001.mp4").write_bytes(b"<html>not a video</html>" * 100)
    (root / "notavideo01.mp4").write_bytes(bytes(range(256)) * 40)
    (root / "truncated01.mp4").write_bytes((root / "timedvideo1.mp4").read_bytes()[:3000])
    with MediaServer(root) as srv:
        yield srv


def _cfg(server, **kw):
    return offline("download", **{**dict(url_template=server.url + "{ytid}.mp4", workers=2, max_attempts=3,
                                         backoff_seconds=0.01, requests_per_second=0), **kw})


def _youtube(segments: dict[str, tuple[str, float, float]], split: str = "test") -> pd.DataFrame:
    return pd.DataFrame([{"clip_id": c, "group": y, "label": "Speech", "prompt": "x", "source": "audioset", "ytid": y,
                          "start": s, "end": e, "split": split} for c, (y, s, e) in segments.items()])


def _grey(path) -> float:
    return float(np.asarray(Image.open(path).convert("L"), np.float32).mean())


def _manifest(frames_dir) -> pd.DataFrame:
    return load_manifest(frames_dir).set_index("clip_id")


def test_each_frame_is_its_segments_midpoint_and_the_failures_are_said(server, tmp_path):
    server.fail["ratelimit01.mp4"] = [429]
    clips = _youtube({"at_two": ("timedvideo1", 1.0, 3.0), "at_one": ("timedvideo1", 0.5, 1.5),
                      "silent": ("audioonly01", 0.0, 4.0), "late": ("timedvideo1", 8.0, 10.0),
                      "huge": ("fourkvideo1", 0.0, 1.0), "tiny": ("onepixel001", 0.0, 2.0),
                      "gone": ("missingvid1", 0.0, 10.0), "page": ("webpage0001", 0.0, 10.0),
                      "junk": ("notavideo01", 0.0, 10.0), "cut": ("truncated01", 0.0, 4.0),
                      "limited": ("ratelimit01", 2.0, 4.0)})
    counts = download_frames(clips, tmp_path, _cfg(server))
    manifest = _manifest(tmp_path)
    assert manifest.loc["at_two", "seconds"] == 2.0 and abs(_grey(tmp_path / "at_two.png") - 2 * LEVEL) < 8
    assert manifest.loc["at_one", "seconds"] == 1.0 and abs(_grey(tmp_path / "at_one.png") - LEVEL) < 8
    assert Image.open(tmp_path / "at_two.png").size == (64, 48)
    assert manifest.loc["silent", "status"] == "no-video"
    assert manifest.loc["late", "status"] == "past-end"
    assert Image.open(tmp_path / "huge.png").size == (512, 288)  # 3840x2160 stored small, aspect kept
    assert manifest.loc["tiny", "status"] == "too-small"
    assert manifest.loc["gone", "status"] == "unavailable" and "404" in manifest.loc["gone", "reason"]
    assert manifest.loc["page", "status"] == "unavailable"  # yt-dlp finds no video on a web page
    assert manifest.loc["junk", "status"] == manifest.loc["cut", "status"] == "decode"
    assert manifest.loc["limited", "status"] == "ok" and server.requests.count("ratelimit01.mp4") >= 3
    assert abs(_grey(tmp_path / "limited.png") - 3 * LEVEL) < 8
    assert counts == {"decode": 2, "no-video": 1, "ok": 4, "past-end": 1, "too-small": 1, "unavailable": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["at_one.png", "at_two.png", "huge.png", "limited.png",
                                                          "manifest.parquet"]
    assert sorted(load_frames(tmp_path)) == ["at_one", "at_two", "huge", "limited"]


def test_a_rerun_fetches_nothing_done_or_failed_for_good_and_mends_what_is_not(server, tmp_path):
    clips = _youtube({"at_two": ("timedvideo1", 1.0, 3.0), "at_one": ("timedvideo1", 0.5, 1.5),
                      "silent": ("audioonly01", 0.0, 4.0), "late": ("timedvideo1", 8.0, 10.0)})
    first = download_frames(clips, tmp_path, _cfg(server))
    server.requests.clear()
    assert download_frames(clips, tmp_path, _cfg(server)) == first == {"no-video": 1, "ok": 2, "past-end": 1}
    assert server.requests == []

    (tmp_path / "at_one.png").write_bytes(b"not an image")  # a frame that does not open: fetched again
    (tmp_path / ".at_two.png.x1.tmp").write_bytes(b"half")  # a killed run's leftovers
    (tmp_path / ".dl-abc").mkdir()
    assert download_frames(clips, tmp_path, _cfg(server)) == first
    assert server.requests and set(server.requests) == {"timedvideo1.mp4"}
    assert abs(_grey(tmp_path / "at_one.png") - LEVEL) < 8
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]

    # A frame written by a stopped run before it was recorded is adopted; frames of clips no longer wanted go.
    Image.new("RGB", (40, 40), (9, 9, 9)).save(tmp_path / "adopted.png")
    more = pd.concat([clips.iloc[:1], _youtube({"adopted": ("timedvideo1", 0.0, 2.0)})], ignore_index=True)
    server.requests.clear()
    assert download_frames(more, tmp_path, _cfg(server)) == {"ok": 2}
    assert server.requests == []
    assert _manifest(tmp_path)["seconds"].to_dict() == {"adopted": 1.0, "at_two": 2.0}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adopted.png", "at_two.png", "manifest.parquet"]


def test_rate_limited_to_the_last_attempt_stays_retryable(server, tmp_path):
    clips = _youtube({"limited": ("ratelimit01", 2.0, 4.0)})
    server.fail["ratelimit01.mp4"] = [429] * 10
    assert download_frames(clips, tmp_path, _cfg(server, max_attempts=2)) == {"rate-limited": 1}
    server.fail["ratelimit01.mp4"] = []
    assert download_frames(clips, tmp_path, _cfg(server)) == {"ok": 1}


def test_the_users_cookies_go_with_every_request_and_the_file_is_never_written(server, tmp_path):
    user = tmp_path / "cookies.txt"
    user.write_text("# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\ts3cr3t-value\n")
    before = user.read_bytes(), user.stat().st_mtime_ns
    sent = []
    plain = server.httpd.RequestHandlerClass

    class Recording(plain):
        def _serve(self, head: bool) -> None:
            sent.append((self.headers.get("Cookie") or "", self.headers.get("Range")))
            super()._serve(head)

    server.httpd.RequestHandlerClass = Recording
    try:
        clips = _youtube({"a": ("timedvideo1", 1.0, 3.0), "b": ("timedvideo1", 0.0, 1.0)})
        assert download_frames(clips, tmp_path / "frames", _cfg(server, cookies=str(user))) == {"ok": 2}
    finally:
        server.httpd.RequestHandlerClass = plain
    assert sent and all("session=s3cr3t-value" in cookie for cookie, _ in sent)
    assert any(ranged for _, ranged in sent)  # ffmpeg's own requests, seeking with Range, carried it too
    assert (user.read_bytes(), user.stat().st_mtime_ns) == before


@pytest.mark.parametrize("ytid", ["../../etc/pa", "timedvideo1\n", "-x", "timedvideo1?a=1", ""])
def test_a_hostile_id_reaches_no_url(server, tmp_path, ytid):
    server.requests.clear()
    clips = _youtube({"hostile": (ytid, 0.0, 2.0), "bad_times": ("timedvideo1", 3.0, 1.0)})
    assert download_frames(clips, tmp_path, _cfg(server)) == {"unavailable": 2}
    assert server.requests == []


def test_invalid_clip_ids_and_sources_without_videos_are_counted_not_fetched(server, tmp_path):
    clips = _youtube({"../x": ("timedvideo1", 0.0, 2.0), "ok_clip": ("timedvideo1", 0.0, 2.0),
                      "odd_src": ("timedvideo1", 0.0, 2.0)})
    clips.loc[clips["clip_id"] == "odd_src", "source"] = "somewhere"
    assert download_frames(clips, tmp_path, _cfg(server)) == {"invalid-id": 1, "no-source": 1, "ok": 1}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["manifest.parquet", "ok_clip.png"]


def test_a_full_disk_stops_the_frames_with_one_line(server, tmp_path, monkeypatch):
    def full(frame, out):
        raise OSError(28, "No space left on device", str(out))

    monkeypatch.setattr(fetch_frame, "save_frame", full)
    clips = _youtube({"a": ("timedvideo1", 0.0, 2.0), "b": ("timedvideo1", 1.0, 2.0)})
    with pytest.raises(A2IError, match=r"^frames stopped after \d of 2 frames: .*No space left on device") as err:
        download_frames(clips, tmp_path, _cfg(server, workers=1))
    assert "\n" not in str(err.value)


# --- local files ------------------------------------------------------------------------------------------------

def test_local_files_give_their_midpoints_frame_and_audio_gives_none(tmp_path):
    media = tmp_path / "media"
    media.mkdir()
    _timed_video(media / "video.mp4")
    _audio_only(media / "sound.m4a")
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-f", "lavfi", "-i", "sine=duration=2", "-f", "lavfi",
                    "-i", "color=red:size=64x64:duration=1", "-frames:v", "1", "-map", "0", "-map", "1", "-c:a",
                    "libmp3lame", "-c:v", "png", "-disposition:v:0", "attached_pic", str(media / "cover.mp3")],
                   check=True)
    (media / "colon:name.mp4").write_bytes((media / "video.mp4").read_bytes())  # not a URL of a protocol "colon"
    uris = {"vid": "video.mp4", "snd": "sound.m4a", "cover": "cover.mp3", "colon": "colon:name.mp4",
            "missing": "gone.mp4"}
    clips = pd.DataFrame([{"clip_id": c, "source": "folder", "uri": str(media / u), "label": "x", "split": "test"}
                          for c, u in uris.items()])
    counts = download_frames(clips, tmp_path / "frames", _cfg_local())
    manifest = _manifest(tmp_path / "frames")
    assert counts == {"decode": 1, "no-video": 2, "ok": 2}
    assert abs(manifest.loc["vid", "seconds"] - 2.0) < 0.05 and abs(_grey(tmp_path / "frames" / "vid.png") - 120) < 8
    assert abs(_grey(tmp_path / "frames" / "colon.png") - 120) < 8
    assert manifest.loc["snd", "status"] == "no-video"
    assert manifest.loc["cover", "status"] == "no-video"  # a cover picture is not the source's video
    assert manifest.loc["missing", "status"] == "decode"


def _cfg_local():
    return offline("download", url_template="http://127.0.0.1:1/{ytid}", workers=2, max_attempts=1,
                   backoff_seconds=0, requests_per_second=0)


# --- synthetic --------------------------------------------------------------------------------------------------

@pytest.fixture
def synthetic(raw_params) -> pd.DataFrame:
    raw_params["data"]["synthetic"].update(classes=["siren", "clock"], clips_per_class=3, max_seconds=1.0)
    return build_candidates(params_from_dict(raw_params).data)[0]


def test_synthetic_frames_are_their_class_picture_varied_per_clip(synthetic, tmp_path):
    assert download_frames(synthetic, tmp_path / "a", _cfg_local()) == {"ok": 6}
    assert download_frames(synthetic, tmp_path / "b", _cfg_local()) == {"ok": 6}
    frames = {c: np.asarray(Image.open(p), np.float32) for c, p in load_frames(tmp_path / "a").items()}
    again = {c: np.asarray(Image.open(p), np.float32) for c, p in load_frames(tmp_path / "b").items()}
    assert all(np.array_equal(frames[c], again[c]) for c in frames)  # the same clip, the same pixels
    prompts = dict(zip(synthetic["clip_id"], synthetic["prompt"], strict=True))
    classes = sorted(set(prompts.values()))
    reference = {p: np.asarray(pictures.picture(p, 256), np.float32) for p in classes}
    coarse = {p: _coarse(r) for p, r in reference.items()}  # the layout, not the pixels a shifted crop moves
    for clip_id, frame in frames.items():
        assert frame.shape == (256, 256, 3)
        own, other = prompts[clip_id], next(p for p in classes if p != prompts[clip_id])
        assert np.abs(_coarse(frame) - coarse[own]).mean() < np.abs(_coarse(frame) - coarse[other]).mean() / 2
        assert np.abs(frame - reference[own]).mean() > 2  # varied
        twins = [c for c in frames if c != clip_id and prompts[c] == own]
        assert all(np.abs(frame - frames[c]).mean() > 2 for c in twins)  # clips of one class differ


def _coarse(pixels: np.ndarray) -> np.ndarray:
    return np.asarray(Image.fromarray(pixels.astype(np.uint8)).resize((8, 8), Image.Resampling.BOX), np.float32)


def test_a_negative_or_huge_seed_still_makes_a_frame():
    for seed in (-1, 2**70):
        assert fetch_frame.synthetic_frame("an image of a siren", seed).size == (256, 256)


# --- through the download stage's body -----------------------------------------------------------------------------

def test_the_stage_keeps_frames_of_evaluated_clips_only_and_their_counts(server, tmp_path):
    rows = []
    for clip_id, ytid, split in [("tr", "timedvideo1", "train"), ("va", "timedvideo1", "val"),
                                 ("te", "timedvideo1", "test"), ("ho", "timedvideo1", HELDOUT),
                                 ("ev", "timedvideo1", "eval"), ("au", "audioonly01", "test"),
                                 ("go", "missingvid1", "test")]:
        rows += [{"clip_id": clip_id, "group": ytid, "label": label, "prompt": f"a {label}", "source": "audioset",
                  "ytid": ytid, "start": 1.0, "end": 3.0, "split": split} for label in ("Speech", "Music")]
    path = tmp_path / "candidates.parquet"
    shards.write_table(candidates_table(pd.DataFrame(rows)), path, CANDIDATES_KIND)
    cfg = _cfg(server, url_template=server.url + "{ytid}.mp4")
    server.requests.clear()
    counts = pipeline_download(cfg, path, tmp_path / "audio", tmp_path / "download.json", frames=tmp_path / "frames")
    # a video found gone for the audio is not asked again for its frame
    assert counts == {"ok": 6, "unavailable": 1, "frames": {"no-video": 1, "ok": 3}}
    assert server.requests.count("missingvid1.mp4") == 1
    assert json.loads((tmp_path / "download.json").read_text()) == counts
    assert sorted(load_frames(tmp_path / "frames")) == ["ev", "ho", "te"]
    assert load_manifest(tmp_path / "audio").set_index("clip_id").loc["au", "status"] == "ok"  # its audio is fine

    off = dataclasses.replace(cfg, frames=False)
    assert pipeline_download(off, path, tmp_path / "audio", tmp_path / "d.json", frames=tmp_path / "none") == {
        "ok": 6, "unavailable": 1}
    assert (tmp_path / "none").is_dir() and not list((tmp_path / "none").iterdir())  # the stage's output exists
