"""Source metadata in the exact official formats: AudioSet, ESC-50, AudioCaps, and plain folders."""

from __future__ import annotations

import json
import os

import pytest

from a2i_core.core.candidates import data_counts
from a2i_core.core.errors import A2IError
from a2i_core.core.params import params_from_dict
from a2i_core.data.ingest import build_candidates
from a2i_core.data.sources.audioset import readable_name

SEGMENTS = """\
# Segments csv created Sun Mar  5 10:54:31 2017
# num_ytids=5, num_segs=5, num_unique_labels=5, num_positive_labels=8
# YTID, start_seconds, end_seconds, positive_labels
--PJHxphWEs, 30.000, 40.000, "/m/09x0r,/t/dd00088"
--ZhevVpy1s, 50.000, 60.000, "/m/012xff"
-0DLPzsiXXE, 30.000, 40.000, "/m/05zppz,/m/09x0r"
-0RWZT-miFs, 420.000, 426.240, "/m/0jbk,/m/012xff"
bad id!!, 0.000, 10.000, "/m/0jbk"
"""
CLASS_LABELS = """\
index,mid,display_name
0,/m/09x0r,"Speech"
1,/m/05zppz,"Male speech, man speaking"
2,/m/012xff,"Toothbrush"
3,/t/dd00088,"Gush"
4,/m/0jbk,"Animal"
"""
QA = """\
label_id,num_rated,num_true
0,10,10
1,10,8
2,10,3
4,10,10
"""
ONTOLOGY = [{"id": "/m/09x0r", "name": "Speech", "restrictions": []},
            {"id": "/m/05zppz", "name": "Male speech, man speaking", "restrictions": []},
            {"id": "/m/012xff", "name": "Toothbrush", "restrictions": []},
            {"id": "/t/dd00088", "name": "Gush", "restrictions": []},
            {"id": "/m/0jbk", "name": "Animal", "restrictions": ["abstract"]}]


@pytest.fixture
def audioset_dir(tmp_path):
    (tmp_path / "balanced_train_segments.csv").write_text(SEGMENTS)
    (tmp_path / "class_labels_indices.csv").write_text(CLASS_LABELS)
    (tmp_path / "qa_true_counts.csv").write_text(QA)
    (tmp_path / "ontology.json").write_text(json.dumps(ONTOLOGY))
    return tmp_path


def _audioset_params(raw_params, root, **overrides):
    raw_params["data"]["source"] = "audioset"
    raw_params["data"]["audioset"] = {
        "segments": [str(root / "balanced_train_segments.csv")], "class_labels": str(root / "class_labels_indices.csv"),
        "qa_counts": str(root / "qa_true_counts.csv"), "ontology": str(root / "ontology.json"),
        "min_label_quality": 0.6, "excluded_restrictions": ["abstract", "blacklist"], "include": [], "exclude": [],
        "max_pairs_per_class": 0, **overrides}
    return params_from_dict(raw_params).data


def test_audioset_header_counts_and_drop_reasons(raw_params, audioset_dir):
    frame, report = build_candidates(_audioset_params(raw_params, audioset_dir))
    file_report = report["segment_files"]["balanced_train_segments.csv"]
    assert file_report["header"] == {"num_ytids": 5, "num_segs": 5, "num_unique_labels": 5,
                                     "num_positive_labels": 8}
    # Every row is counted against the header (all match), then the malformed one is refused.
    assert file_report["segments_read"] == 5 and file_report["invalid_rows"] == 1
    assert file_report["header_mismatches"] == {}
    assert report["labels_kept"] == 2 and report["labels_dropped"] == {"abstract": 1, "low_quality": 1,
                                                                       "unrated": 1}
    assert report["labels_kept"] + sum(report["labels_dropped"].values()) == report["labels_total"]
    assert sorted(frame["clip_id"]) == ["--PJHxphWEs_30000", "-0DLPzsiXXE_30000", "-0DLPzsiXXE_30000"]
    assert set(frame["prompt"]) == {"an image of a speech", "an image of a male speech"}
    assert frame.groupby("group")["split"].nunique().max() == 1  # a video never spans two splits
    assert data_counts(frame)["pairs"] == 3
    assert report["pairs_dropped"]["label_not_kept"] == 4


def test_a_header_mismatch_is_reported(raw_params, audioset_dir, caplog):
    path = audioset_dir / "balanced_train_segments.csv"
    path.write_text(SEGMENTS.replace("num_segs=5", "num_segs=6"))
    _, report = build_candidates(_audioset_params(raw_params, audioset_dir))
    assert report["segment_files"][path.name]["header_mismatches"] == {"num_segs": (6, 5)}
    assert "header says num_segs=6, read 5" in caplog.text


def test_audioset_include_exclude_and_cap(raw_params, audioset_dir):
    frame, _ = build_candidates(_audioset_params(raw_params, audioset_dir, include=["Speech"]))
    assert set(frame["label"]) == {"Speech"}
    frame, _ = build_candidates(_audioset_params(raw_params, audioset_dir, exclude=["/m/09x0r"]))
    assert set(frame["label"]) == {"Male speech, man speaking"}
    frame, _ = build_candidates(_audioset_params(raw_params, audioset_dir, max_pairs_per_class=1))
    assert frame["label"].value_counts().max() == 1
    with pytest.raises(A2IError, match="no \\(segment, label\\) pair"):
        build_candidates(_audioset_params(raw_params, audioset_dir, include=["Nothing"]))


def test_readable_names():
    assert readable_name("Male speech, man speaking") == "male speech"
    assert readable_name("Dog") == "dog" and readable_name("MP3") == "MP3"


def test_esc50_layout_keeps_its_folds(raw_params, tmp_path):
    (tmp_path / "meta").mkdir()
    (tmp_path / "audio").mkdir()
    (tmp_path / "meta" / "esc50.csv").write_text(
        "filename,fold,target,category,esc10,src_file,take\n"
        "1-100032-A-0.wav,1,0,dog,True,100032,A\n1-100032-B-0.wav,1,0,dog,True,100032,B\n"
        "5-9032-A-1.wav,5,1,chirping_birds,False,9032,A\n")
    raw_params["data"].update(source="esc50", esc50={"root": str(tmp_path)})
    frame, _ = build_candidates(params_from_dict(raw_params).data)
    assert sorted(frame["fold"]) == [1, 1, 5]
    assert "an image of a chirping birds" in set(frame["prompt"])
    assert frame.groupby("group")["split"].nunique().max() == 1  # takes of one recording stay together


def test_audiocaps_captions_are_prompts(raw_params, tmp_path):
    (tmp_path / "test.csv").write_text(
        "audiocap_id,youtube_id,start_time,caption\n1,--PJHxphWEs,30,A dog barks twice\n2,bad,0,x\n")
    raw_params["data"].update(source="audiocaps", audiocaps={"csv": [str(tmp_path / "test.csv")]})
    frame, report = build_candidates(params_from_dict(raw_params).data)
    assert frame["prompt"].tolist() == ["A dog barks twice"] and report["rows_skipped"] == {"invalid_row": 1}
    assert frame["end"].tolist() == [40.0]


def test_folder_labels_from_subfolders_or_csv(raw_params, tmp_path):
    for rel in ("dog/a.wav", "dog/b b.mp3", "rain/c.flac", "loose.wav"):
        (tmp_path / rel).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    raw_params["data"].update(source="folder", folder={"root": str(tmp_path), "labels_csv": None})
    frame, _ = build_candidates(params_from_dict(raw_params).data)
    assert sorted(frame["label"]) == ["dog", "dog", "rain"] and frame["clip_id"].str.match(r"^[\w-]+$").all()
    (tmp_path / "labels.csv").write_text("file,label\nloose.wav,wind\n")
    raw_params["data"]["folder"]["labels_csv"] = str(tmp_path / "labels.csv")
    frame, _ = build_candidates(params_from_dict(raw_params).data)
    assert frame["label"].tolist() == ["wind"]


@pytest.mark.network
@pytest.mark.skipif(os.environ.get("A2I_NETWORK_TESTS") != "1", reason="needs the network: set A2I_NETWORK_TESTS=1")
def test_the_real_audioset_class_list(tmp_path, monkeypatch):
    from a2i_core.core.fetch_file import local_copy
    from a2i_core.data.sources.audioset import read_class_labels

    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    url = "http://storage.googleapis.com/us_audioset/youtube_corpus/v1/csv/class_labels_indices.csv"
    names = read_class_labels(local_copy(url))
    assert len(names) == 527 and names["/m/09x0r"] == "Speech"
