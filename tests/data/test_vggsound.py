"""VGGSound's published vggsound.csv (no header; youtube_id,start_seconds,label,split), hostile rows, the leak check
against the training clips' videos, and its clips fetched like AudioSet's through yt-dlp from a local server."""

from __future__ import annotations

import logging
import subprocess

import numpy as np
import pandas as pd
import pytest

from a2i_core.core.audio_io import decode, ffmpeg_binary
from a2i_core.core.errors import A2IError
from a2i_core.core.manifest import load_manifest
from a2i_core.core.params import ParamsError, params_from_dict
from a2i_core.data import fetch_clip
from a2i_core.data.download import download_clips
from a2i_core.data.ingest import build_candidates, drop_leaked
from a2i_core.data.sources.vggsound import vggsound_candidates
from tests.conftest import offline
from tests.media_server import MediaServer

# The real file's rows, as published: integer starts, lower-case labels, those with a comma quoted.
REAL = """\
---g-f_I2yQ,1,people marching,test
--0PQM4-hqg,30,waterfall burbling,train
--56QUhyDQM,185,playing tennis,train
--5OkAjCI7g,40,"male speech, man speaking",test
--8puiAGLhs,30,"pigeon, dove cooing",train
--96EN9NUQM,242,"engine accelerating, revving, vroom",test
--9O4XZOge4,30,dog barking,test
"""


def _data(raw_params, path, split="test"):
    raw_params["data"].update(source="vggsound", vggsound={"csv": str(path), "split": split})
    return params_from_dict(raw_params).data


def test_the_published_format_is_read_with_its_quoted_labels(raw_params, tmp_path):
    (tmp_path / "vggsound.csv").write_text("\ufeff" + REAL.replace("\n", "\r\n"))  # as a spreadsheet saves it
    frame, report = build_candidates(_data(raw_params, tmp_path / "vggsound.csv"))
    assert sorted(frame["clip_id"]) == ["---g-f_I2yQ_1000", "--5OkAjCI7g_40000", "--96EN9NUQM_242000",
                                        "--9O4XZOge4_30000"]
    row = frame.set_index("clip_id").loc["--96EN9NUQM_242000"]
    assert row["label"] == "engine accelerating, revving, vroom" and row["group"] == row["ytid"] == "--96EN9NUQM"
    assert (row["start"], row["end"], row["source"]) == (242.0, 252.0, "vggsound")
    assert row["prompt"] == raw_params["data"]["prompt_template"].format(name="engine accelerating, revving, vroom")
    # The label set is the whole file's (both splits): AIC's classes, 309 in the real file.
    assert report["labels_total"] == 7 and report["rows_read"] == 7 and report["rows_skipped"] == {}
    assert set(frame["split"]) == {"test"}  # VGGSound's own test split is the test split


def test_as_the_training_source_its_own_test_split_is_the_test_split(raw_params, tmp_path):
    # Papers train on VGGSound's train split and report on its test split: those must be a2i's splits too, whatever
    # data.test_fraction says; a video listed in both is tested whole (never in two splits).
    (tmp_path / "vggsound.csv").write_text(REAL + "--56QUhyDQM,195,playing tennis,test\n")
    raw_params["data"]["test_fraction"] = 0.5
    frame, _ = build_candidates(_data(raw_params, tmp_path / "vggsound.csv", "all"))
    split = frame.set_index("clip_id")["split"]
    tested = {"---g-f_I2yQ_1000", "--5OkAjCI7g_40000", "--96EN9NUQM_242000", "--9O4XZOge4_30000",
              "--56QUhyDQM_185000", "--56QUhyDQM_195000"}
    assert set(split[split == "test"].index) == tested
    assert set(split.drop(sorted(tested))) <= {"train", "val"}


@pytest.mark.parametrize(("split", "clips"), [("test", 4), ("train", 3), ("all", 7)])
def test_the_split_chosen_is_the_rows_kept(raw_params, tmp_path, split, clips):
    (tmp_path / "vggsound.csv").write_text(REAL)
    frame, report = build_candidates(_data(raw_params, tmp_path / "vggsound.csv", split))
    assert len(frame) == frame["clip_id"].nunique() == clips and report["labels_total"] == 7


def test_an_unknown_split_is_a_params_error(raw_params, tmp_path):
    with pytest.raises(ParamsError, match="split"):
        _data(raw_params, tmp_path / "vggsound.csv", "val")


HOSTILE = {
    "../../etc,1,dog barking,test": "invalid YouTube id",
    '"abcdefghij\n",1,dog barking,test': "invalid YouTube id",  # 11 characters with the newline
    "abcdefghijk,-1,dog barking,test": "start_seconds outside",
    "abcdefghijk,nan,dog barking,test": "start_seconds outside",
    "abcdefghijk,inf,dog barking,test": "start_seconds outside",
    "abcdefghijk,1e12,dog barking,test": "start_seconds outside",
    "abcdefghijk,abc,dog barking,test": "start_seconds is not a number",
    "abcdefghijk,,dog barking,test": "start_seconds is not a number",
    "abcdefghijk,1,,test": "label empty",
    "abcdefghijk,1,   ,test": "label empty",
    f"abcdefghijk,1,{'x' * 10_000},test": "label 10000 characters",
    '"abcdefghijk",1,"dog\nbarking",test': "label holds control characters",
    "abcdefghijk,1,dog\u202ebarking,test": "label holds control characters",
    "abcdefghijk,1,dog barking,val": "split is not train or test",
    "abcdefghijk,1,dog barking,TEST": "split is not train or test",
    "abcdefghijk,1,dog barking, test": "split is not train or test",
    "abcdefghijk,1,dog barking": "3 fields, not 4",
    "abcdefghijk,1,dog barking,test,extra": "5 fields, not 4",
    "abcdefghijk,1,dog, barking,test": "5 fields, not 4",  # a comma in an unquoted label
    "youtube_id,start_seconds,label,split": "invalid YouTube id",  # a header someone added
}


@pytest.mark.parametrize("line", list(HOSTILE))
def test_each_hostile_row_is_skipped_and_named_and_the_rest_goes_on(tmp_path, caplog, line):
    (tmp_path / "vggsound.csv").write_text(f"goodclip001,1,dog barking,test\n{line}\ngoodclip002,2,cat purring,test\n")
    with caplog.at_level(logging.WARNING):
        frame, report = vggsound_candidates(tmp_path / "vggsound.csv", "vggsound.csv", "all", "a {name}")
    assert frame["clip_id"].tolist() == ["goodclip001_1000", "goodclip002_2000"]
    assert report["rows_skipped"] == {"invalid_row": 1} and report["rows_read"] == 3 and report["labels_total"] == 2
    (message,) = [r.getMessage() for r in caplog.records if "row skipped" in r.getMessage()]
    assert HOSTILE[line] in message and "vggsound.csv:2" in message and len(message) < 400  # not 10 KB of label


def test_a_field_over_the_parsers_limit_is_one_skipped_row(tmp_path):
    (tmp_path / "vggsound.csv").write_text(f"goodclip001,1,dog barking,test\nabcdefghijk,1,{'y' * 200_000},test\n"
                                           "goodclip002,2,cat purring,test\n")
    frame, report = vggsound_candidates(tmp_path / "vggsound.csv", "vggsound.csv", "test", "a {name}")
    assert len(frame) == 2 and report["rows_skipped"] == {"invalid_row": 1}


def test_a_clip_listed_twice_is_one_row(tmp_path):
    (tmp_path / "vggsound.csv").write_text("goodclip001,1,dog barking,test\ngoodclip001,1.0,dog growling,test\n"
                                           "goodclip001,1,dog barking,test\ngoodclip001,2,dog barking,test\n\n")
    frame, report = vggsound_candidates(tmp_path / "vggsound.csv", "vggsound.csv", "test", "a {name}")
    assert frame["clip_id"].tolist() == ["goodclip001_1000", "goodclip001_2000"]
    assert frame["label"].tolist() == ["dog barking", "dog barking"]  # the first listing wins
    assert report["rows_skipped"] == {"duplicate_clip": 2}


def test_a_file_that_is_not_a_csv_is_one_line(raw_params, tmp_path):
    (tmp_path / "vggsound.csv").write_bytes(bytes(range(256)) * 40)
    with pytest.raises(A2IError, match="not a text file") as err:
        build_candidates(_data(raw_params, tmp_path / "vggsound.csv"))
    assert "\n" not in str(err.value)
    (tmp_path / "page.html").write_text("<html>\n<body>Not found</body>\n</html>\n")  # text, but no row is a clip
    with pytest.raises(A2IError, match="no usable rows") as err:
        build_candidates(_data(raw_params, tmp_path / "page.html"))
    assert "invalid_row" in str(err.value)
    with pytest.raises(A2IError, match="no such file"):
        build_candidates(_data(raw_params, tmp_path / "missing.csv"))


def test_a_split_with_no_rows_is_one_line(raw_params, tmp_path):
    (tmp_path / "vggsound.csv").write_text("goodclip001,1,dog barking,train\n")
    with pytest.raises(A2IError, match="no usable rows"):
        build_candidates(_data(raw_params, tmp_path / "vggsound.csv", "test"))


# The leak check: AudioSet's videos are VGGSound's too.
def _training(rows: dict[str, str]) -> pd.DataFrame:
    """AudioSet-like main candidates: ytid -> split, two labels for some clips (one row per pair)."""
    frame = pd.DataFrame([{"clip_id": f"{y}_30000", "group": y, "label": "Speech", "split": s, "source": "audioset",
                           "ytid": y, "start": 30.0, "end": 40.0} for y, s in rows.items()])
    return pd.concat([frame, frame.assign(label="Dog")], ignore_index=True)


def _set(ytids: list[str]) -> pd.DataFrame:
    return pd.DataFrame([{"clip_id": f"{y}_{i}000", "group": y, "label": "dog barking", "split": "eval",
                          "source": "vggsound", "ytid": y, "start": float(i), "end": i + 10.0}
                         for i, y in enumerate(ytids)])


def test_rows_from_videos_the_mapper_learnt_from_are_dropped(caplog):
    training = _training({"trainvideo1": "train", "valvideo001": "val", "testvideo01": "test",
                          "heldoutvid1": "heldout"})
    # Another segment of a training video is the same video: dropped too, whatever its start.
    evaluation = _set(["trainvideo1", "trainvideo1", "valvideo001", "testvideo01", "heldoutvid1", "freshvideo1"])
    with caplog.at_level(logging.INFO):
        kept, report = drop_leaked(evaluation, training)
    assert report == {"videos": 2, "rows": 3}
    assert kept["ytid"].tolist() == ["testvideo01", "heldoutvid1", "freshvideo1"] and kept.index.tolist() == [0, 1, 2]
    assert "3 rows of 2 videos dropped: their videos are training clips" in caplog.text


def test_no_leak_is_zeros_and_sources_without_videos_are_null():
    training = _training({"trainvideo1": "train"})
    kept, report = drop_leaked(_set(["freshvideo1"]), training)
    assert report == {"videos": 0, "rows": 0} and len(kept) == 1
    synthetic = training.drop(columns="ytid").assign(source="synthetic")  # the demo's: no videos
    assert drop_leaked(_set(["trainvideo1"]), synthetic)[1] is None
    esc50 = _set(["trainvideo1"]).drop(columns="ytid").assign(source="esc50")
    kept, report = drop_leaked(esc50, training)
    assert report is None and len(kept) == 1


def test_a_set_made_only_of_training_videos_is_one_line():
    with pytest.raises(A2IError, match="every one of the set's 2 rows") as err:
        drop_leaked(_set(["trainvideo1", "valvideo001"]), _training({"trainvideo1": "train", "valvideo001": "val"}))
    assert "\n" not in str(err.value)


# Fetching: the same yt-dlp segment download as AudioSet's, under the network rate limit.
def _media(path, seconds: float, freq: int = 440) -> None:
    subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                    f"sine=frequency={freq}:duration={seconds}", "-ac", "2", "-ar", "44100", "-c:a", "aac",
                    str(path)], check=True)


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    root = tmp_path_factory.mktemp("media")
    _media(root / "goodclip001.m4a", 14)
    _media(root / "goodclip002.m4a", 13, 660)
    (root / "vggsound.csv").write_text("goodclip001,1,dog barking,test\ngoodclip002,2,\"pigeon, dove cooing\",test\n"
                                       "goodclip002,200,cat purring,test\nmissingclip,0,dog barking,test\n"
                                       "goodclip001,3,dog barking,train\n")
    with MediaServer(root) as srv:
        yield srv


def test_vggsound_clips_come_through_youtubes_fetcher(raw_params, server, tmp_path):
    assert fetch_clip.FETCHERS["vggsound"] is fetch_clip.fetch_youtube and "vggsound" in fetch_clip.NETWORK_SOURCES
    # The CSV by URL, as params.yaml's example names it: downloaded once into the cache, then read.
    frame, report = build_candidates(_data(raw_params, server.url + "vggsound.csv"))
    assert sorted(frame["clip_id"]) == ["goodclip001_1000", "goodclip002_2000", "goodclip002_200000", "missingclip_0"]
    cfg = offline("download", url_template=server.url + "{ytid}.m4a", workers=2, max_attempts=1,
                  backoff_seconds=0.01, requests_per_second=0)
    counts = download_clips(frame, tmp_path, cfg)
    manifest = load_manifest(tmp_path).set_index("clip_id")
    assert counts["ok"] == 2 and sum(counts.values()) == 4, counts
    assert manifest.loc["missingclip_0", "status"] == "unavailable"
    assert manifest.loc["goodclip002_200000", "status"] in {"decode", "unavailable"}  # past the video's end
    for clip_id, seconds in (("goodclip001_1000", 10.0), ("goodclip002_2000", 10.0)):
        wave = decode(tmp_path / f"{clip_id}.wav")
        assert abs(len(wave) / 16000 - seconds) < 0.2 and np.isfinite(wave).all()
        assert np.abs(wave).max() > 0.05  # the sine, not silence
