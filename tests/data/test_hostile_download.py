"""Untrusted input and a hostile machine never escape the download stage: the user's cookies file is never written
and never shared between threads, a full disk or a bug stops the stage with one line and loses no finished clip,
and a bad clip id costs that clip only. Real runs against the local media server, nothing written outside tmp_path.
"""

from __future__ import annotations

import dataclasses
import errno
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from a2i_core.core import packs, shards
from a2i_core.core.audio_io import decode, ffmpeg_dir, write_wav
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table
from a2i_core.core.errors import A2IError
from a2i_core.core.manifest import clip_sources, load_manifest
from a2i_core.core.packs import PackWriter
from a2i_core.core.params import params_from_dict
from a2i_core.data import download, fetch_clip, resume
from a2i_core.data.download import download_clips
from a2i_core.data.fetch_clip import disk_error
from a2i_core.data.ingest import build_candidates
from tests.conftest import ROOT, offline
from tests.data.test_download_youtube import _media
from tests.media_server import MediaServer

COOKIES = "# Netscape HTTP Cookie File\n127.0.0.1\tFALSE\t/\tFALSE\t0\tsession\ts3cr3t-value\n"
FILLER = [f"diskclip{i:03d}" for i in range(10)]  # YouTube-like ids: 11 characters
LONG = 5  # FILLER[LONG] is long: its segment is over the file size limit, the others well under
SIZE_LIMIT = 64 * 1024


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    _media(root / "cookieclip0.m4a", 2)
    for i, ytid in enumerate(FILLER):
        _media(root / f"{ytid}.m4a", 12 if i == LONG else 1, 300 + 40 * i)
    with MediaServer(root) as srv:
        srv.cookies = []  # the Cookie header of each request

        class Recording(srv.httpd.RequestHandlerClass):
            def _serve(self, head: bool) -> None:
                srv.cookies.append(self.headers.get("Cookie") or "")
                super()._serve(head)

        srv.httpd.RequestHandlerClass = Recording
        yield srv


@pytest.fixture
def private_tmp(tmp_path, monkeypatch) -> Path:
    """TMPDIR and the cache inside tmp_path, so a test can see what a run leaves there."""
    ffmpeg_dir()  # cached for the session: made where it belongs, not in this test's tmp_path
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # tempfile reads TMPDIR once per process
    return tmp


def _youtube(ids: list[str], ytids: list[str], seconds: list[float] | None = None) -> pd.DataFrame:
    seconds = seconds or [1.0] * len(ids)
    return pd.DataFrame([{"clip_id": c, "group": y, "label": "Speech", "prompt": "x", "source": "audioset",
                          "ytid": y, "start": 0.0, "end": s} for c, y, s in zip(ids, ytids, seconds, strict=True)])


def _cfg(server, **kw):
    return offline("download", **{**dict(url_template=server.url + "{ytid}.m4a", workers=1, max_attempts=1,
                                         backoff_seconds=0.01, requests_per_second=0), **kw})


@pytest.fixture
def synthetic(raw_params) -> pd.DataFrame:
    raw_params["data"]["synthetic"].update(classes=["siren", "clock"], clips_per_class=6, max_seconds=0.5)
    return build_candidates(params_from_dict(raw_params).data)[0]


SYNTHETIC = offline("download", workers=1, max_attempts=1, backoff_seconds=0, requests_per_second=0)


def _counting(monkeypatch, fail: dict[str, BaseException] | None = None, seconds: float = 0.0) -> list[str]:
    """The synthetic fetcher, recording each clip it is asked for and raising ``fail[clip_id]`` for some."""
    fetched = []

    def fetch(clip, out, cfg):
        fetched.append(clip["clip_id"])
        if clip["clip_id"] in (fail or {}):
            raise fail[clip["clip_id"]]
        time.sleep(seconds)
        return fetch_clip.fetch_synthetic(clip, out, cfg)

    monkeypatch.setitem(fetch_clip.FETCHERS, "synthetic", fetch)
    return fetched


# --- cookies ---------------------------------------------------------------------------------------------------

def test_cookies_are_read_once_and_each_worker_has_its_own_copy(server, tmp_path, private_tmp):
    user = tmp_path / "cookies.txt"
    user.write_text(COOKIES)
    os.utime(user, ns=(1_600_000_000_000_000_000, 1_600_000_000_000_000_000))
    before = user.read_bytes(), user.stat().st_mtime_ns
    server.cookies.clear()
    ids = [f"cookie{i:03d}" for i in range(80)]
    # Before: yt-dlp rewrote the user's file as each clip closed while other threads read it: 3-12 of 80 failed.
    counts = download_clips(_youtube(ids, ["cookieclip0"] * 80), tmp_path / "audio",
                            _cfg(server, workers=8, cookies=str(user)))
    assert counts == {"ok": 80}
    assert (user.read_bytes(), user.stat().st_mtime_ns) == before
    assert sum("session=s3cr3t-value" in c for c in server.cookies) >= 80  # every clip sent the user's cookie
    assert not list(private_tmp.iterdir())  # the private copies are gone


@pytest.mark.parametrize("content", ["garbage\nnot\tcookies\n", b"\xff\xfe\x00binary", '[{"name": "a"}]', None,
                                     "dir"], ids=["garbage", "binary", "json", "missing", "directory"])
def test_a_bad_cookies_file_stops_the_stage_before_any_clip(server, tmp_path, private_tmp, content):
    user = tmp_path / "cookies.txt"
    if isinstance(content, bytes):
        user.write_bytes(content)
    elif content == "dir":
        user.mkdir()
    elif content is not None:
        user.write_text(content)
    server.requests.clear()
    with pytest.raises(A2IError, match=r"^download\.cookies: .*cookies\.txt: ") as err:
        download_clips(_youtube(["a1"], ["cookieclip0"]), tmp_path / "audio", _cfg(server, cookies=str(user)))
    assert "\n" not in str(err.value) and str(user) in str(err.value)
    assert server.requests == [] and not (tmp_path / "audio").exists()
    assert not list(private_tmp.iterdir())


def _stage_workspace(cwd: Path, raw: dict, frame: pd.DataFrame, **download_params) -> None:
    raw["download"].update(download_params)
    with open(cwd / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    shards.write_table(candidates_table(frame), cwd / "data" / "candidates.parquet", CANDIDATES_KIND)


def _stage(cwd: Path, size_limit: int | None = None) -> subprocess.CompletedProcess:
    """``python -m stages.download`` in ``cwd``, writing no file over ``size_limit`` bytes (EFBIG, as a full disk)."""
    args = ["--candidates", "data/candidates.parquet", "--audio", "data/audio", "--frames", "data/frames",
            "--metrics", "metrics/download.json"]
    limit = f"resource.setrlimit(resource.RLIMIT_FSIZE, ({size_limit}, resource.RLIM_INFINITY))" if size_limit else ""
    script = (f"import resource, runpy, sys\n{limit}\nsys.argv = ['download', *{args!r}]\n"  # Python ignores SIGXFSZ
              "runpy.run_module('stages.download', run_name='__main__')\n")
    (cwd / "tmp").mkdir(exist_ok=True)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(cwd / "tmp"), "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-c", script], cwd=cwd, env=env, capture_output=True, text=True)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 1 and "Traceback" not in result.stderr, result.stderr[-3000:]
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1, result.stderr[-3000:]
    return errors[0]


def test_the_stage_says_one_line_for_a_bad_cookies_file(server, tmp_path, raw_params):
    (tmp_path / "cookies.txt").write_text("not a cookies file\n")
    _stage_workspace(tmp_path, raw_params, _youtube(["a1"], ["cookieclip0"]), url_template=server.url + "{ytid}.m4a",
                     cookies="cookies.txt")
    server.requests.clear()
    line = _one_error_line(_stage(tmp_path))
    assert line == ("error: download.cookies: cookies.txt: not a Netscape format cookies file (the first line must be "
                    "'# Netscape HTTP Cookie File')")
    assert server.requests == [] and not list((tmp_path / "tmp").iterdir())


# --- a full disk -----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("pack_size", [0, 4])
def test_a_full_disk_stops_the_stage_keeps_finished_clips_and_a_rerun_resumes(server, tmp_path, raw_params, pack_size):
    _stage_workspace(tmp_path, raw_params, _youtube(FILLER, FILLER, [10.0 if i == LONG else 0.5 for i in range(10)]),
                     url_template=server.url + "{ytid}.m4a", workers=1, max_attempts=1, requests_per_second=0,
                     pack_size=pack_size)
    server.requests.clear()
    line = _one_error_line(_stage(tmp_path, size_limit=SIZE_LIMIT))
    # Before: the long clip was a final "decode" failure, every later clip was still fetched.
    assert line.startswith(f"error: download stopped after {LONG} of 10 clips: ")
    assert "[Errno 27] File too large (finished clips are kept; rerun to resume)" in line
    assert {r.removesuffix(".m4a") for r in server.requests} == set(FILLER[: LONG + 1])  # no later clip started
    audio = tmp_path / "data" / "audio"
    manifest = load_manifest(audio)
    assert sorted(manifest["clip_id"]) == FILLER[:LONG] and set(manifest["status"]) == {"ok"}
    assert len(clip_sources(audio)) == LONG and all(abs(len(decode(s)) - 8000) < 800 for _, s in clip_sources(audio))
    if pack_size:  # the clips gathered for the next pack were packed when the stage stopped
        assert sorted(p.name for p in (audio / "packs").iterdir()) == ["pack-00000.parquet", "pack-00001.parquet"]
        assert not list((audio / ".staging").glob("*.wav"))

    server.requests.clear()
    done = _stage(tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    assert {r.removesuffix(".m4a") for r in server.requests} == set(FILLER[LONG:])  # only the rest
    assert load_manifest(audio)["status"].tolist() == ["ok"] * 10
    assert sorted(c for c, _ in clip_sources(audio)) == FILLER
    assert not [p for p in audio.iterdir() if p.name.startswith(".")]
    assert not list((tmp_path / "tmp").iterdir())


def test_a_failed_pack_write_keeps_the_staged_clips_for_the_rerun(tmp_path, synthetic, monkeypatch):
    write_table = shards.write_table

    def full(table, path, kind, **kwargs):  # packs only: the manifest is still written
        if kind == packs.PACK_KIND:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        write_table(table, path, kind, **kwargs)

    fetched = _counting(monkeypatch, seconds=0.05)  # slow enough that the worker is at most one clip ahead
    with monkeypatch.context() as patch:
        patch.setattr(shards, "write_table", full)
        with pytest.raises(A2IError) as err:
            download_clips(synthetic, tmp_path, dataclasses.replace(SYNTHETIC, pack_size=4))
    message = str(err.value)
    # Before: the finally deleted .staging, and the finished clips with it.
    assert message.startswith(f"download stopped after {len(fetched)} of 12 clips: ") and "\n" not in message
    assert "packs/pack-00000.parquet: [Errno 28] No space left on device; writing a pack failed too: " in message
    staged = sorted(p.stem for p in (tmp_path / ".staging").glob("*.wav"))
    assert staged == fetched == sorted(synthetic["clip_id"].unique())[: len(fetched)] and 4 <= len(fetched) < 12

    fetched.clear()
    assert download_clips(synthetic, tmp_path, dataclasses.replace(SYNTHETIC, pack_size=4)) == {"ok": 12}
    assert fetched == sorted(synthetic["clip_id"].unique())[len(staged):]  # the staged clips were adopted
    assert len(clip_sources(tmp_path)) == 12 and not (tmp_path / ".staging").exists()


def test_a_manifest_that_cannot_be_saved_is_said_on_the_same_line(tmp_path, synthetic, monkeypatch):
    def full(audio_dir, rows):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(audio_dir / "manifest.parquet"))

    for module in (download, resume):  # the saves while clips finish, and the last one
        monkeypatch.setattr(module, "save_manifest", full)
    fetched = _counting(monkeypatch, seconds=0.05)
    with pytest.raises(A2IError) as err:
        download_clips(synthetic, tmp_path, SYNTHETIC, save_every=3)
    assert str(err.value) == (
        f"download stopped after {len(fetched)} of 12 clips: {tmp_path}/manifest.parquet: [Errno 28] No space left "
        f"on device; saving the manifest failed too: {tmp_path}/manifest.parquet: [Errno 28] No space left on device "
        "(finished clips are kept; rerun to resume)")
    assert 3 <= len(fetched) < 12 and sorted(p.stem for p in tmp_path.glob("*.wav")) == sorted(fetched)


@pytest.mark.parametrize("message", ["unable to write data: [Errno 28] No space left on device",
                                     "ffmpeg: Read-only file system", "[Errno 13] Permission denied: 'x.part'"])
def test_yt_dlp_reporting_a_disk_problem_is_fatal_not_unavailable(tmp_path, message):
    err = disk_error(message, tmp_path)
    assert isinstance(err, OSError) and err.errno in fetch_clip.DISK_ERRNOS


def test_ffmpeg_failing_on_a_full_disk_is_told_from_a_bad_clip(tmp_path):
    # yt-dlp says only "ffmpeg exited with code 1" (ffmpeg's own message went to stderr): a probe write tells.
    script = ("import resource, sys; from pathlib import Path; from a2i_core.data.fetch_clip import disk_error\n"
              f"resource.setrlimit(resource.RLIMIT_FSIZE, ({SIZE_LIMIT}, resource.RLIM_INFINITY))\n"
              f"err = disk_error('ffmpeg exited with code 1', Path({str(tmp_path)!r}))\nprint(err.errno)\n")
    env = {**os.environ, "PYTHONPATH": str(ROOT), "TMPDIR": str(tmp_path)}
    result = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True)
    assert result.stdout.strip() == str(errno.EFBIG), result.stderr[-2000:]
    assert not list(tmp_path.iterdir())


@pytest.mark.parametrize("message", ["HTTP Error 404: Not Found", "ffmpeg exited with code 1", "Video unavailable"])
def test_a_clip_problem_is_not_a_disk_problem(tmp_path, message):
    assert disk_error(message, tmp_path) is None  # the folder is writable


# --- a bug in a job --------------------------------------------------------------------------------------------

def test_an_unexpected_exception_cancels_the_queued_clips(tmp_path, synthetic, monkeypatch):
    ids = sorted(synthetic["clip_id"].unique())
    fetched = _counting(monkeypatch, fail={ids[2]: RuntimeError("boom\nsecond line")})
    with pytest.raises(A2IError) as err:
        download_clips(synthetic, tmp_path, SYNTHETIC)
    # Before: the other 9 queued clips were all fetched, then a traceback.
    assert str(err.value) == ("download stopped after 2 of 12 clips: RuntimeError: boom second line "
                              "(finished clips are kept; rerun to resume)")
    assert fetched == ids[:3]
    assert sorted(load_manifest(tmp_path)["clip_id"]) == ids[:2]

    fetched = _counting(monkeypatch)
    assert download_clips(synthetic, tmp_path, SYNTHETIC) == {"ok": 12} and fetched == ids[2:]


def test_clips_running_when_a_job_fails_finish_and_are_recorded(tmp_path, synthetic, monkeypatch):
    ids, fetched, started = sorted(synthetic["clip_id"].unique()), [], threading.Barrier(4)

    def fetch(clip, out, cfg):
        fetched.append(clip["clip_id"])
        started.wait(timeout=10)  # the four workers have all started
        if clip["clip_id"] == ids[0]:
            raise RuntimeError("boom")
        time.sleep(0.3)  # still running when the first one fails
        return fetch_clip.fetch_synthetic(clip, out, cfg)

    monkeypatch.setitem(fetch_clip.FETCHERS, "synthetic", fetch)
    with pytest.raises(A2IError, match="RuntimeError: boom"):
        download_clips(synthetic, tmp_path, dataclasses.replace(SYNTHETIC, workers=4))
    assert sorted(fetched) == ids[:4]  # nothing started after the failure
    assert sorted(load_manifest(tmp_path)["clip_id"]) == ids[1:4] == sorted(p.stem for p in tmp_path.glob("*.wav"))


# --- bad ids and secrets ---------------------------------------------------------------------------------------

def test_bad_clip_ids_are_skipped_and_reported_once(tmp_path, synthetic, caplog):
    bad = ["../etc/passwd", "a b", "ok\n", "x" * 81, 42, "$(reboot)", ""]
    frame = pd.concat([synthetic, pd.DataFrame([{**synthetic.iloc[0].to_dict(), "clip_id": b} for b in bad])])
    with caplog.at_level(logging.WARNING, logger="a2i_core.data.download"):
        counts = download_clips(frame, tmp_path, SYNTHETIC)
    assert counts == {"invalid-id": 7, "ok": 12}
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and warnings[0].startswith("7 candidate clips skipped: invalid clip id")
    assert "\n" not in warnings[0] and "'../etc/passwd'" in warnings[0] and warnings[0].endswith(", ...")
    assert sorted(load_manifest(tmp_path)["clip_id"]) == sorted(synthetic["clip_id"].unique())
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        ["manifest.parquet", *(f"{c}.wav" for c in synthetic["clip_id"].unique())])


def test_failure_reasons_hide_credentials_in_urls(tmp_path, synthetic, monkeypatch):
    ids = sorted(synthetic["clip_id"].unique())
    url = "https://user:hunter2@example.com/watch?v=x&sig=s3cr3t"
    _counting(monkeypatch, fail={ids[0]: fetch_clip.ClipFailure("unavailable", f"HTTP Error 404 for {url}")})
    download_clips(synthetic, tmp_path, SYNTHETIC)
    reason = load_manifest(tmp_path).set_index("clip_id").loc[ids[0], "reason"]
    assert "hunter2" not in reason and "s3cr3t" not in reason and "example.com/watch" in reason


def test_a_pack_whose_recording_failed_is_recorded_later_not_written_twice(tmp_path):
    # Before: each retry of a failed manifest save wrote another copy of the pack.
    calls = []

    def on_pack(rows: list[dict]) -> None:
        calls.append(rows)
        if len(calls) < 3:
            raise OSError(28, "No space left on device", "manifest.parquet")

    staging = tmp_path / "staging"
    staging.mkdir()
    writer = PackWriter(tmp_path, 2, on_pack)
    for name in ("a", "b"):
        write_wav(staging / f"{name}.wav", np.zeros(1600, np.float32))
    writer.add({"clip_id": "a", "status": "ok", "reason": "", "path": "a.wav", "seconds": 0.1}, staging / "a.wav")
    with pytest.raises(OSError):
        writer.add({"clip_id": "b", "status": "ok", "reason": "", "path": "b.wav", "seconds": 0.1}, staging / "b.wav")
    with pytest.raises(OSError):
        writer.flush()
    writer.flush()
    assert [p.name for p in (tmp_path / "packs").iterdir()] == ["pack-00000.parquet"]
    assert [r["path"] for r in calls[-1]] == ["packs/pack-00000.parquet"] * 2 and not list(staging.iterdir())
