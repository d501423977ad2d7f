"""yt-dlp segment downloads against a local HTTP server with Range support: real yt-dlp, real ffmpeg."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import numpy as np
import pandas as pd
import pytest

from a2i_core.core.audio_io import decode, ffmpeg_binary
from a2i_core.core.manifest import load_manifest
from a2i_core.core.params import DownloadParams
from a2i_core.data import fetch_clip
from a2i_core.data.download import download_clips
from tests.conftest import offline
from tests.media_server import MediaServer


def _media(path, seconds: float, freq: int = 440) -> None:
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}", "-ac", "2", "-ar", "44100", "-c:a", "aac",
                    str(path)], check=True)


def _candidates(segments: dict[str, tuple[float, float]]) -> pd.DataFrame:
    return pd.DataFrame([{"clip_id": f"{y}_{round(s * 1000)}", "group": y, "label": "Speech", "prompt": "x",
                          "source": "audioset", "ytid": y, "start": s, "end": e} for y, (s, e) in segments.items()])


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    _media(root / "goodclip001.m4a", 20)
    _media(root / "ratelimit01.m4a", 12, 660)
    _media(root / "shortclip01.m4a", 5)
    (root / "truncated01.m4a").write_bytes((root / "goodclip001.m4a").read_bytes()[:1500])
    for i in range(10):
        _media(root / f"manyclips{i:02d}.m4a", 4, 300 + 50 * i)
    with MediaServer(root) as srv:
        yield srv


def _cfg(server, **kw) -> DownloadParams:
    return offline("download", **{**dict(url_template=server.url + "{ytid}.m4a", workers=3, max_attempts=3,
                                         backoff_seconds=0.01, requests_per_second=0), **kw})


def test_good_missing_rate_limited_truncated_and_out_of_range(server, tmp_path):
    server.fail["ratelimit01.m4a"] = [429, 429]
    segments = {"goodclip001": (5.0, 8.0), "missingclip": (0.0, 10.0), "ratelimit01": (2.0, 7.0),
                "truncated01": (0.0, 10.0), "shortclip01": (30.0, 40.0)}
    counts = download_clips(_candidates(segments), tmp_path, _cfg(server))
    manifest = load_manifest(tmp_path).set_index("clip_id")
    assert manifest.loc["goodclip001_5000", "status"] == "ok"
    assert abs(len(decode(tmp_path / "goodclip001_5000.wav")) / 16000 - 3.0) < 0.1
    assert manifest.loc["missingclip_0", "status"] == "unavailable" and "404" in manifest.loc["missingclip_0", "reason"]
    assert manifest.loc["ratelimit01_2000", "status"] == "ok"  # after two 429s and a backoff
    assert server.requests.count("ratelimit01.m4a") >= 3
    assert manifest.loc["truncated01_0", "status"] in {"decode", "unavailable"}
    assert manifest.loc["shortclip01_30000", "status"] in {"decode", "unavailable"}
    assert counts["ok"] == 2 and sum(counts.values()) == 5
    assert sorted(p.name for p in tmp_path.iterdir()) == ["goodclip001_5000.wav", "manifest.parquet",
                                                          "ratelimit01_2000.wav"]


def test_rate_limited_until_the_last_attempt_stays_retryable(server, tmp_path):
    server.fail["ratelimit01.m4a"] = [429] * 10
    counts = download_clips(_candidates({"ratelimit01": (2.0, 7.0)}), tmp_path, _cfg(server, max_attempts=2))
    assert counts == {"rate-limited": 1}
    server.fail["ratelimit01.m4a"] = []
    assert download_clips(_candidates({"ratelimit01": (2.0, 7.0)}), tmp_path, _cfg(server)) == {"ok": 1}


def test_a_killed_run_resumes_without_redoing_finished_clips(server, tmp_path):
    candidates = _candidates({f"manyclips{i:02d}": (0.0, 3.0) for i in range(10)})
    candidates.to_parquet(tmp_path / "candidates.parquet")
    script = (
        "import pandas as pd; from a2i_core.data.download import download_clips; from a2i_core.core.params import "
        "DownloadParams\n"
        f"cfg = DownloadParams(url_template={server.url + '{ytid}.m4a'!r}, workers=1, max_attempts=1, "
        "backoff_seconds=0, requests_per_second=4, cookies=None, pack_size=0)\n"
        f"download_clips(pd.read_parquet({str(tmp_path / 'candidates.parquet')!r}), {str(tmp_path / 'audio')!r}, "
        "cfg, save_every=1000)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while len(list((tmp_path / "audio").glob("*.wav"))) < 3 and time.monotonic() < deadline:
        assert proc.poll() is None, "the download finished before it could be killed"
        time.sleep(0.02)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished = sorted(p.stem for p in (tmp_path / "audio").glob("*.wav"))
    assert 3 <= len(finished) < 10
    for name in finished:  # whole files only: each was renamed into place complete
        assert np.isfinite(decode(tmp_path / "audio" / f"{name}.wav")).all()

    fetched = []
    original = fetch_clip.FETCHERS["audioset"]

    def counting(clip, out, cfg):
        fetched.append(clip["clip_id"])
        return original(clip, out, cfg)

    fetch_clip.FETCHERS["audioset"] = counting
    try:
        counts = download_clips(candidates, tmp_path / "audio", _cfg(server))
    finally:
        fetch_clip.FETCHERS["audioset"] = original
    assert counts == {"ok": 10} and not set(fetched) & set(finished)
    assert not [p for p in (tmp_path / "audio").iterdir() if p.name.startswith(".")]
