"""Hostile strings from data (issue 13, items 1 and 3): labels and times from CSVs never become paths unchecked.

Each test is a real run of a stage script on a hostile file; nothing may be written outside the test's directories.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import soundfile as sf
from ruamel.yaml import YAML

from a2i_core.core import shards
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table
from a2i_core.core.manifest import CLIP_ID, load_manifest
from a2i_core.data.download import download_clips
from a2i_core.offline.workspace import tool_env
from tests.conftest import ROOT, offline
from tests.data.test_download_youtube import _media
from tests.media_server import MediaServer

ESCAPE = f"../../../../tmp/a2i-escape-{uuid.uuid4().hex[:8]}/evil"  # where a label used as a path would land
LONG = "x" * 10_000


def _stage(cwd: Path, name: str, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(cwd / "cache")}
    return subprocess.run([sys.executable, "-m", f"stages.{name}", *args], cwd=cwd, env=env, capture_output=True,
                          text=True)


def _ingest(cwd: Path, raw: dict) -> tuple[subprocess.CompletedProcess, pd.DataFrame | None, dict]:
    with open(cwd / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    result = _stage(cwd, "ingest", "--candidates", "data/candidates.parquet", "--metrics", "metrics/data.json")
    if result.returncode:
        return result, None, {}
    frame = shards.read_table(cwd / "data/candidates.parquet", CANDIDATES_KIND).to_pandas()
    return result, frame, json.loads((cwd / "metrics/data.json").read_text())


def _escaped() -> Path:
    return Path("/tmp") / ESCAPE.split("/tmp/")[1].split("/")[0]


def test_folder_labels_with_paths_newlines_and_10kb_are_checked_at_ingest(tmp_path, raw_params):
    sounds = tmp_path / "sounds"
    sounds.mkdir()
    labels = {"dog": 3, ESCAPE: 3, "a/b": 3, "line\nbreak": 1, LONG: 1, "tab\there": 1, "  ": 1}
    rows = []
    for i, (label, count) in enumerate(labels.items()):
        for j in range(count):
            sf.write(sounds / f"{i}-{j}.wav", np.zeros(1600, np.float32), 16_000)
            rows.append({"file": f"{i}-{j}.wav", "label": label})
    pd.DataFrame(rows).to_csv(tmp_path / "labels.csv", index=False)
    raw_params["data"].update(source="folder", folder={"root": str(sounds), "labels_csv": str(tmp_path / "labels.csv")})
    result, frame, metrics = _ingest(tmp_path, raw_params)

    assert result.returncode == 0, result.stderr
    assert sorted(set(frame["label"])) == sorted(["dog", ESCAPE, "a/b"])  # kept as data, never as a path
    assert metrics["rows_skipped"] == {"bad_label": 4}
    assert "label holds control characters" in result.stderr and "label 10000 characters (at most 200)" in result.stderr
    assert LONG not in result.stderr  # a report line stays a line
    assert frame["clip_id"].map(lambda c: bool(CLIP_ID.match(c))).all()
    assert not _escaped().exists()


def test_render_names_images_by_a_safe_id_of_the_label(demo_workspace, tmp_path):
    # Before: a label '../../../../tmp/x/evil' made render write a PNG outside the workspace, 'a/b' made
    # sub-folders, and a 10 KB label crashed render with "File name too long" after every image was rendered.
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace[0], ws, ignore=shutil.ignore_patterns(".dvc", ".git"))
    path = ws / "data/candidates.parquet"
    frame = shards.read_table(path, CANDIDATES_KIND).to_pandas()
    rendered = sorted(frame.loc[frame["split"] == "test", "label"].unique())[:3]  # labels render draws
    hostile = dict(zip(rendered, [ESCAPE, "a/b", LONG], strict=True))  # render trusts the candidates it is given
    frame["label"] = frame["label"].replace(hostile)
    shards.write_table(candidates_table(frame), path, CANDIDATES_KIND)
    params = YAML().load((ws / "params.yaml").read_text())
    params["render"].update(steps=1, size=64)  # names are the point here, not pictures: the cheapest render
    params["layers"].update(max_layers=2)  # room for its regions in 64 px
    with open(ws / "params.yaml", "w") as f:
        YAML().dump(params, f)
    cmd = shlex.split(YAML(typ="safe", pure=True).load((ws / "dvc.yaml").read_text())["stages"]["render"]["cmd"])
    result = subprocess.run([sys.executable, *cmd[1:]], cwd=ws, env=tool_env(), capture_output=True, text=True)

    assert result.returncode == 0, result.stderr[-2000:]
    images = ws / "metrics/images"
    files = sorted(p for p in images.rglob("*") if p.is_file())
    assert files and all(len(p.name) <= 160 and p.parent.parent == images for p in files)
    index = pd.read_csv(ws / "metrics/render_index.csv", keep_default_na=False)
    assert set(hostile.values()) <= set(index["label"])  # the labels themselves are kept, in the table
    assert all((images / f).is_file() for f in index["file"])
    assert not _escaped().exists() and not (ws / "metrics/.images.tmp").exists()


@pytest.fixture(scope="module")
def media(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    _media(root / "goodclip001.m4a", 14)
    _media(root / "goodclip002.m4a", 12, 660)
    with MediaServer(root) as server:
        yield server


def test_audiocaps_times_must_be_finite_and_inside_a_video(tmp_path, raw_params, media):
    # Before: a start of inf was a traceback in ingest; 1e300 passed ingest, then ended the whole download stage
    # on its 300-digit clip id.
    (tmp_path / "captions.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n"
        "1,goodclip001,2,A tone\n"
        "2,goodclip002,0.5,Another tone\n"
        "3,goodclip001,inf,x\n4,goodclip001,1e300,x\n5,goodclip001,nan,x\n6,goodclip001,-5,x\n"
        "7,goodclip001,soon,x\n8,../etc/pass,0,x\n9/../x,goodclip001,0,x\n"
        '10,goodclip002,3,"A caption\x07with a bell character"\n')
    raw_params["data"].update(source="audiocaps", audiocaps={"csv": [str(tmp_path / "captions.csv")]},
                              val_fraction=0.3, test_fraction=0.3)
    result, frame, metrics = _ingest(tmp_path, raw_params)

    assert result.returncode == 0, result.stderr
    assert frame["clip_id"].tolist() == ["goodclip001_2000", "goodclip002_500"]
    assert metrics["rows_skipped"] == {"invalid_row": 7, "bad_prompt": 1}
    assert "start_time outside [0, 43200] s" in result.stderr and "Traceback" not in result.stderr
    cfg = offline("download", url_template=media.url + "{ytid}.m4a", workers=2, max_attempts=1,
                  requests_per_second=0)
    counts = download_clips(frame, tmp_path / "audio", cfg)
    assert counts == {"ok": 2}
    assert sorted(load_manifest(tmp_path / "audio")["clip_id"]) == ["goodclip001_2000", "goodclip002_500"]


AUDIOSET_SEGMENTS = """\
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/a"
--ZhevVpy1s, inf, inf, "/m/a"
-0DLPzsiXXE, 1e15, 1000000000000005.0, "/m/a"
-0RWZT-miFs, 0.000, 10.000, "/m/b,/m/c"
"""


def test_audioset_labels_and_times_from_its_files_are_checked(tmp_path, raw_params):
    (tmp_path / "segments.csv").write_text(AUDIOSET_SEGMENTS)
    (tmp_path / "labels.csv").write_text(
        f'index,mid,display_name\n0,/m/a,"Dog"\n1,/m/b,"Bad\nname"\n2,/m/c,"{"y" * 5000}"\n')
    (tmp_path / "qa.csv").write_text("label_id,num_rated,num_true\n0,10,10\n1,10,10\n2,10,10\n3,ten,x\n")
    (tmp_path / "ontology.json").write_text(json.dumps([{"id": m} for m in ("/m/a", "/m/b", "/m/c")]))
    raw_params["data"].update(source="audioset", audioset={
        "segments": [str(tmp_path / "segments.csv")], "class_labels": str(tmp_path / "labels.csv"),
        "qa_counts": str(tmp_path / "qa.csv"), "ontology": str(tmp_path / "ontology.json"), "min_label_quality": 0.5,
        "excluded_restrictions": [], "include": [], "exclude": [], "max_pairs_per_class": 0})
    result, frame, metrics = _ingest(tmp_path, raw_params)

    assert result.returncode == 0, result.stderr
    assert frame["clip_id"].tolist() == ["--PJHxphWEs_30000"]
    assert metrics["rows_skipped"] == {"bad_label": 2}
    assert metrics["segment_files"]["segments.csv"]["invalid_rows"] == 2
    assert "qa.csv:5: not a quality row, skipped" in result.stderr


def test_a_metadata_file_missing_a_column_is_one_line(tmp_path, raw_params):
    (tmp_path / "captions.csv").write_text("id,ytid,start\n1,goodclip001,0\n")
    raw_params["data"].update(source="audiocaps", audiocaps={"csv": [str(tmp_path / "captions.csv")]})
    result, _, _ = _ingest(tmp_path, raw_params)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip().splitlines()[-1].endswith(
        "no column 'audiocap_id' (an AudioCaps CSV has audiocap_id, youtube_id, start_time, caption)")
