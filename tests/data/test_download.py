import dataclasses
import os

import pandas as pd
import pytest

from a2i_core.core import shards
from a2i_core.core.audio_io import ffmpeg_dir
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table
from a2i_core.core.errors import A2IError
from a2i_core.core.manifest import check_clip_id, load_manifest
from a2i_core.core.params import params_from_dict
from a2i_core.data import download, fetch_clip
from a2i_core.data.download import download_clips
from a2i_core.data.ingest import build_candidates
from a2i_core.pipeline.download import download as pipeline_download
from tests.conftest import offline

CFG = offline("download", url_template="http://127.0.0.1:1/{ytid}", workers=2, max_attempts=2, backoff_seconds=0.01,
              requests_per_second=0)


@pytest.fixture
def candidates(raw_params) -> pd.DataFrame:
    raw_params["data"]["synthetic"].update(classes=["siren", "clock"], clips_per_class=4, max_seconds=1.0)
    return build_candidates(params_from_dict(raw_params).data)[0]


def test_download_writes_clips_and_manifest(tmp_path, candidates):
    counts = download_clips(candidates, tmp_path, CFG)
    manifest = load_manifest(tmp_path)
    assert counts == {"ok": 8} and sorted(manifest["clip_id"]) == sorted(candidates["clip_id"])
    assert all((tmp_path / p).is_file() for p in manifest["path"])
    assert not list(tmp_path.glob(".*tmp"))


def test_ffmpeg_is_on_path_for_the_download_only(tmp_path, candidates, monkeypatch):
    # Before: the download put a folder holding ffmpeg alone on this process's PATH for good, and Gradio's audio
    # check, finding ffmpeg there, died looking for ffprobe beside it (the app's tests after the data tests).
    monkeypatch.setenv("PATH", "/usr/bin:/bin")
    seen = []
    original = fetch_clip.FETCHERS["synthetic"]
    monkeypatch.setitem(fetch_clip.FETCHERS, "synthetic",
                        lambda *args: seen.append(os.environ["PATH"]) or original(*args))
    assert download_clips(candidates, tmp_path, CFG) == {"ok": 8}
    assert seen and all(path.split(os.pathsep)[0] == ffmpeg_dir() for path in seen)
    assert os.environ["PATH"] == "/usr/bin:/bin"


def test_rerun_only_fetches_what_is_missing(tmp_path, candidates, monkeypatch):
    download_clips(candidates, tmp_path, CFG)
    (tmp_path / "siren_0001.wav").unlink()
    fetched = []
    original = fetch_clip.FETCHERS["synthetic"]
    monkeypatch.setitem(fetch_clip.FETCHERS, "synthetic", lambda clip, out, cfg: fetched.append(out.name) or
                        original(clip, out, cfg))
    download_clips(candidates, tmp_path, CFG)
    assert fetched == ["siren_0001.wav"]


def test_interrupted_download_keeps_finished_clips(tmp_path, candidates, monkeypatch):
    original = fetch_clip.FETCHERS["synthetic"]
    calls = []

    def flaky(clip, out, cfg):
        calls.append(out.name)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return original(clip, out, cfg)

    monkeypatch.setitem(fetch_clip.FETCHERS, "synthetic", flaky)
    one_worker = dataclasses.replace(CFG, workers=1)
    with pytest.raises(KeyboardInterrupt):
        download_clips(candidates, tmp_path, one_worker)
    assert len(load_manifest(tmp_path)) == 2  # the two finished clips are recorded
    monkeypatch.setitem(fetch_clip.FETCHERS, "synthetic", original)
    assert download_clips(candidates, tmp_path, CFG) == {"ok": 8}


def test_stale_clips_are_removed(tmp_path, candidates):
    download_clips(candidates, tmp_path, CFG)
    download_clips(candidates[candidates["label"] == "clock"], tmp_path, CFG)
    assert sorted(p.stem for p in tmp_path.glob("*.wav")) == [f"clock_{i:04d}" for i in range(4)]
    assert set(load_manifest(tmp_path)["clip_id"]) == {f"clock_{i:04d}" for i in range(4)}


@pytest.mark.parametrize("bad", ["../etc/passwd", "a b", "x;rm", "", "ok\n", "x" * 81, None])
def test_clip_ids_are_checked_before_they_touch_a_path(bad):
    with pytest.raises(A2IError, match="invalid clip id"):
        check_clip_id(bad)


def test_the_rate_limit_is_for_network_fetches_only(tmp_path, candidates):
    # Before: 2 requests/s applied to every source; 440 local recordings took 220 s. (clips/s: benchmarks/download.py)
    limited = dataclasses.replace(CFG, requests_per_second=0.5)  # 8 clips would take 14 s under the limit
    calls = []

    class Spy(download.RateLimit):
        def wait(self) -> None:
            calls.append(1)
            super().wait()

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(download, "RateLimit", Spy)
        assert download_clips(candidates, tmp_path, limited) == {"ok": 8}
    assert calls == []  # synthetic clips never waited
    assert set(fetch_clip.NETWORK_SOURCES) == {"audioset", "audiocaps", "vggsound"}


def test_audioset_clips_are_not_downloaded_when_features_come_from_the_release(tmp_path, candidates):
    rows = candidates.assign(source="audioset", ytid="--PJHxphWEs", start=0.0, end=10.0)
    mixed = pd.concat([rows.iloc[:3], candidates.iloc[3:]], ignore_index=True)
    path = tmp_path / "candidates.parquet"
    shards.write_table(candidates_table(mixed), path, CANDIDATES_KIND)
    # url_template points nowhere: a single YouTube fetch would fail, so every AudioSet clip must be skipped
    counts = pipeline_download(CFG, path, tmp_path / "audio", tmp_path / "download.json", release=str(tmp_path))
    assert counts == {"ok": 5, "from-release": 3}
    assert sorted(load_manifest(tmp_path / "audio")["clip_id"]) == sorted(candidates["clip_id"].iloc[3:])


def test_turning_the_release_on_keeps_the_audio_already_downloaded(tmp_path, candidates):
    # Review finding: with the release on, AudioSet clips dropped out of the download and their packs were deleted.
    packed = dataclasses.replace(CFG, pack_size=3)
    path = tmp_path / "candidates.parquet"
    shards.write_table(candidates_table(candidates), path, CANDIDATES_KIND)
    assert pipeline_download(packed, path, tmp_path / "audio", tmp_path / "d.json") == {"ok": 8}
    packs = sorted(p.read_bytes() for p in (tmp_path / "audio" / "packs").iterdir())
    released = candidates.assign(source=["audioset"] * 3 + list(candidates["source"].iloc[3:]), ytid="--PJHxphWEs",
                                 start=0.0, end=10.0)
    shards.write_table(candidates_table(released), path, CANDIDATES_KIND)
    counts = pipeline_download(packed, path, tmp_path / "audio", tmp_path / "d.json", release=str(tmp_path))
    assert counts == {"ok": 8, "from-release": 3}
    assert sorted(p.read_bytes() for p in (tmp_path / "audio" / "packs").iterdir()) == packs
