"""Untrusted input never escapes: hostile archives, ESC-50 CSVs and folder label CSVs.

Each case puts one hostile value in and expects one clear line out (an A2IError, or a row skipped and counted),
with nothing written outside the test's folder and the cache, and nothing beside the user's archive.
"""

from __future__ import annotations

import logging
import os
import stat
import struct
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest
from ruamel.yaml import YAML

from a2i_core.core.errors import A2IError
from a2i_core.core.names import safe_id
from a2i_core.core.params import ArchiveParams
from a2i_core.data.sources import local
from a2i_core.data.sources.archive import extracted
from tests.conftest import ROOT
from tests.media_server import MediaServer

LIMITS = ArchiveParams(max_mb=1, max_files=50)
ESC50_HEADER = "filename,fold,target,category,esc10,src_file,take\n"
GOOD_ROWS = "1-100032-A-0.wav,1,0,dog,True,100032,A\n5-9032-A-1.wav,5,1,chirping_birds,False,9032,A\n"


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return tmp_path / "cache" / "a2i" / "archives"


@pytest.fixture
def user(tmp_path) -> Path:
    """The user's own folder, where their archive lies: nothing may appear in it."""
    (tmp_path / "user").mkdir()
    return tmp_path / "user"


def make_zip(path: Path, entries: list[tuple[str | zipfile.ZipInfo, bytes]]) -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as zf:
        for name, data in entries:
            zf.writestr(name, data)
    return path


def special(name: str, mode: int) -> zipfile.ZipInfo:
    """An entry whose Unix mode says it is a link, a device, ...: what a hostile `zip --symlinks` makes."""
    info = zipfile.ZipInfo(name)
    info.create_system = 3  # Unix
    info.external_attr = (mode | 0o777) << 16
    return info


def esc50_zip(path: Path, csv_text: str) -> Path:
    """The official archive's layout: ESC-50-master/{meta/esc50.csv, audio/*.wav}."""
    clips = [line.split(",")[0] for line in GOOD_ROWS.splitlines()]
    return make_zip(path, [("ESC-50-master/meta/esc50.csv", csv_text.encode())]
                    + [(f"ESC-50-master/audio/{clip}", b"RIFF") for clip in clips])


def assert_untouched(user: Path, cache: Path, *names: str) -> None:
    """Only the user's own files beside the archive, and no extraction (complete or partial) in the cache."""
    assert sorted(p.name for p in user.iterdir()) == sorted(names)
    assert not cache.exists() or not any(cache.iterdir())


# Archives: caps.

def test_a_zip_bomb_stops_at_max_mb(user, cache):
    bomb = make_zip(user / "bomb.zip", [("zeros.bin", bytes(2 << 20))])  # 2 MB of zeros: a few KB zipped
    assert bomb.stat().st_size < 20_000
    with pytest.raises(A2IError, match=r"^bomb.zip: expands to more than 1 MB \(data.archives.max_mb\)$"):
        extracted(bomb, LIMITS)
    assert_untouched(user, cache, "bomb.zip")


def test_a_lying_declared_size_writes_no_more_than_it_declares(user, cache):
    bomb = make_zip(user / "liar.zip", [("zeros.bin", bytes(2 << 20))])
    _declare_size(bomb, 100)  # the headers now claim 100 bytes; the data still inflates to 2 MB
    assert zipfile.ZipFile(bomb).getinfo("zeros.bin").file_size == 100
    with pytest.raises(A2IError, match=r"^liar.zip: not a readable zip archive \(Bad CRC-32"):
        extracted(bomb, LIMITS)
    assert_untouched(user, cache, "liar.zip")


def _declare_size(path: Path, size: int) -> None:
    """Overwrite the uncompressed size in the local header (offset 22) and the central directory (offset 24)."""
    data = bytearray(path.read_bytes())
    central = data.index(b"PK\x01\x02")
    struct.pack_into("<I", data, 22, size)
    struct.pack_into("<I", data, central + 24, size)
    path.write_bytes(bytes(data))


def test_too_many_files(user, cache):
    many = make_zip(user / "many.zip", [(f"f{i}.txt", b"x") for i in range(4)])
    with pytest.raises(A2IError, match=r"^many.zip: holds more than 3 entries \(data.archives.max_files\)$"):
        extracted(many, ArchiveParams(max_mb=1, max_files=3))
    assert_untouched(user, cache, "many.zip")


# Archives: entries that would write outside the extraction, or through another entry.

@pytest.mark.parametrize(("entries", "message"), [
    ([(special("link", stat.S_IFLNK), b"/etc"), ("link/passwd", b"x")], "entry 'link' is a symbolic link"),
    ([("a", b"x"), ("a/b", b"y")], "entry 'a/b' lies beneath the file entry 'a'"),
    ([("a", b"x"), ("a/", b"")], "entry 'a/' lies beneath the file entry 'a'"),
    ([("x.txt", b"x"), ("x.txt", b"y")], "entry 'x.txt' appears twice"),
    ([(special("fifo", stat.S_IFIFO), b"")], "entry 'fifo' is not a regular file or folder"),
    ([("ok.txt", b"x"), ("../evil.txt", b"x")], "entry '../evil.txt' climbs out with '..'"),
    ([("a/../../evil.txt", b"x")], "entry 'a/../../evil.txt' climbs out"),
    ([("/tmp/evil.txt", b"x")], "entry '/tmp/evil.txt' is an absolute path"),
    ([("C:/evil.txt", b"x")], "drive letter"),
    ([("a\\..\\..\\evil.txt", b"x")], "backslash"),
])
@pytest.mark.filterwarnings("ignore:Duplicate name")
def test_a_hostile_entry_refuses_the_whole_archive(user, cache, tmp_path, entries, message):
    archive = make_zip(user / "x.zip", entries)
    with pytest.raises(A2IError, match=r"^x.zip: ") as err:
        extracted(archive, LIMITS)
    assert message in str(err.value) and "\n" not in str(err.value)
    assert_untouched(user, cache, "x.zip")
    assert not list(tmp_path.rglob("evil.txt")) and not (tmp_path.parent / "evil.txt").exists()


def test_a_file_that_is_not_a_zip_is_one_line(user, cache):
    (user / "x.zip").write_bytes(b"<html>not found</html>")
    with pytest.raises(A2IError, match=r"^x.zip: not a readable zip archive \(File is not a zip file\)$"):
        extracted(user / "x.zip", LIMITS)


# Archives: where they go, and when they are extracted again.

def test_the_extraction_is_in_the_cache_not_beside_the_archive(user, cache):
    archive = make_zip(user / "data.zip", [("dir/a.txt", b"one")])
    out = extracted(archive, LIMITS)
    assert out.parent == cache and (out / "dir" / "a.txt").read_text() == "one"
    assert_untouched(user, Path("/nonexistent"), "data.zip")
    assert [p.name for p in cache.iterdir()] == [out.name]  # no temp folder left over


def test_a_changed_archive_is_extracted_anew_and_an_unchanged_one_reused(user, cache):
    archive = make_zip(user / "data.zip", [("a.txt", b"one")])
    first = extracted(archive, LIMITS)
    make_zip(archive, [("a.txt", b"two"), ("b.txt", b"new")])
    second = extracted(archive, LIMITS)
    assert second != first and (second / "a.txt").read_text() == "two" and (second / "b.txt").exists()
    (second / "marker").write_text("")  # a reuse returns this very folder; a re-extraction would not have it
    assert extracted(archive, LIMITS) == second and (second / "marker").exists()
    assert (first / "a.txt").read_text() == "one"  # the old one is another archive's: left alone


# ESC-50: its CSV's file names are data, not paths.

def test_esc50_over_http_skips_rows_that_leave_audio_and_bad_folds(tmp_path, cache, caplog):
    hostile = ("../../etc/passwd,1,0,dog,True,1,A\n/etc/passwd,1,0,dog,True,2,A\n"
               "1-3-A-0.wav,x,0,dog,True,3,A\n1-4-A-0.wav,1,1.5,dog,True,4,A\n")
    served = tmp_path / "served"
    served.mkdir()
    esc50_zip(served / "ESC-50-master.zip", ESC50_HEADER + GOOD_ROWS + hostile)
    with MediaServer(served) as server, caplog.at_level(logging.WARNING, logger="a2i_core.data.sources.local"):
        frame, skipped = local.esc50_rows(server.url + "ESC-50-master.zip", LIMITS)
    assert skipped == {"path_outside_root": 2, "bad_fold": 1, "bad_target": 1}
    assert sorted(frame["label"]) == ["chirping_birds", "dog"] and sorted(frame["fold"]) == [1, 5]
    assert all(Path(uri).is_relative_to(cache) and Path(uri).parent.name == "audio" for uri in frame["uri"])
    assert len(caplog.records) == 4 and "'../../etc/passwd'" in caplog.text and "bad fold: 'x'" in caplog.text


def test_esc50_names_that_climb_out_are_skipped_links_kept_and_warnings_capped(tmp_path, caplog):
    root = tmp_path / "esc50"
    (root / "meta").mkdir(parents=True)
    (root / "audio").mkdir()
    (tmp_path / "secret.wav").write_bytes(b"secret")
    (root / "audio" / "link.wav").symlink_to(tmp_path / "secret.wav")
    bad = "".join(f"../x{i}.wav,1,0,dog,True,{i},A\n" for i in range(15))
    (root / "meta" / "esc50.csv").write_text(ESC50_HEADER + GOOD_ROWS + "link.wav,1,0,dog,True,9,A\n" + bad)
    with caplog.at_level(logging.WARNING, logger="a2i_core.data.sources.local"):
        frame, skipped = local.esc50_rows(str(root), LIMITS)
    # A link in the user's own copy is theirs to make (DVC's symlink cache makes them): only names are checked.
    assert skipped == {"path_outside_root": 15} and len(frame) == 3
    assert len(caplog.records) == 11 and "5 more rows skipped" in caplog.records[-1].getMessage()


def test_esc50_missing_columns_are_one_line(tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text("filename,fold\na.wav,1\n")
    with pytest.raises(A2IError, match=r"esc50.csv: columns \['filename', 'fold'\], expected"):
        local.esc50_rows(str(tmp_path), LIMITS)


def test_the_ingest_stage_stops_a_served_zip_bomb_in_one_line(tmp_path, raw_params):
    served, ws = tmp_path / "served", tmp_path / "ws"
    served.mkdir()
    ws.mkdir()
    make_zip(served / "ESC-50-master.zip", [("ESC-50-master/audio/zeros.wav", bytes(2 << 20))])
    with MediaServer(served) as server:
        raw_params["data"].update(source="esc50", esc50={"root": server.url + "ESC-50-master.zip"},
                                  archives={"max_mb": 1, "max_files": 50})
        with open(ws / "params.yaml", "w") as f:
            YAML().dump(raw_params, f)
        env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
        result = subprocess.run([sys.executable, "-m", "stages.ingest", "--candidates", "c.parquet",
                                 "--metrics", "m.json"], cwd=ws, env=env, capture_output=True, text=True)
    assert result.returncode == 1
    assert result.stderr.strip().splitlines()[-1] == \
        f"error: {server.url}ESC-50-master.zip: expands to more than 1 MB (data.archives.max_mb)"
    assert "Traceback" not in result.stderr and sorted(p.name for p in ws.iterdir()) == ["params.yaml"]


# Folders: a labels CSV names files, and those must stay under the root.

@pytest.fixture
def folder(tmp_path) -> Path:
    root = tmp_path / "rec"
    for rel in ("dog/a.wav", "rain/c.flac"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    (tmp_path / "outside.wav").write_bytes(b"secret")
    return root


def test_folder_labels_csv_rows_outside_root_or_missing_are_skipped(folder, tmp_path):
    (folder / "dog" / "out.wav").symlink_to(tmp_path / "outside.wav")
    (tmp_path / "labels.csv").write_text(
        "file,label\ndog/a.wav,dog\n../outside.wav,cat\n/etc/passwd,x\ndog/out.wav,dog\nmissing.wav,dog\n"
        f"{folder / 'rain' / 'c.flac'},rain\n")
    frame, skipped = local.folder_rows(str(folder), str(tmp_path / "labels.csv"))
    assert skipped == {"path_outside_root": 2, "missing_file": 1}
    assert frame["label"].tolist() == ["dog", "dog", "rain"]
    assert frame["clip_id"].tolist() == [safe_id(r) for r in ("dog/a.wav", "dog/out.wav", "rain/c.flac")]


@pytest.mark.parametrize(("text", "message"), [
    ("path,label\na.wav,dog\n", "columns \\['path', 'label'\\], expected file,label"),
    (b"file,label\n\xff\xfe,dog\n", "cannot read the labels CSV"),
])
def test_a_bad_labels_csv_is_one_line(folder, tmp_path, text, message):
    csv_path = tmp_path / "labels.csv"
    csv_path.write_bytes(text if isinstance(text, bytes) else text.encode())
    with pytest.raises(A2IError, match=message):
        local.folder_rows(str(folder), str(csv_path))


def test_a_folder_of_links_is_the_users_own_data(folder, tmp_path):
    # DVC's symlink cache and link farms point outside the folder: walked files are the user's, links or not.
    (folder / "dog" / "linked.wav").symlink_to(tmp_path / "outside.wav")
    (folder / "dog" / "alias.wav").symlink_to(folder / "rain" / "c.flac")
    (folder / "dog" / "dangling.wav").symlink_to(tmp_path / "gone.wav")  # leads nowhere: no file to list
    frame, skipped = local.folder_rows(str(folder), None)
    assert skipped == {}
    assert sorted(frame["clip_id"]) == sorted(safe_id(r) for r in ("dog/a.wav", "dog/alias.wav", "dog/linked.wav",
                                                                   "rain/c.flac"))
    assert str(folder / "rain" / "c.flac") in set(frame["uri"])


def test_an_interrupted_extraction_leaves_nothing_that_looks_complete(user, cache, monkeypatch):
    from a2i_core.data.sources import archive as archive_module

    archive = make_zip(user / "data.zip", [("a.txt", b"one"), ("b.txt", b"two")])
    copy, calls = archive_module._copy_file, []

    def killed_on_the_second(*args):
        calls.append(args)
        if len(calls) == 2:
            raise KeyboardInterrupt
        return copy(*args)

    monkeypatch.setattr(archive_module, "_copy_file", killed_on_the_second)
    with pytest.raises(KeyboardInterrupt):
        extracted(archive, LIMITS)
    assert not any(cache.iterdir())
    monkeypatch.setattr(archive_module, "_copy_file", copy)
    assert (extracted(archive, LIMITS) / "b.txt").read_text() == "two"
