"""VGGSound as an evaluation set: its rows from the training clips' videos are dropped before anything is fetched.

The leak check's rewrite of the set's files runs on small tables here; the whole eval_set (ingest, the leak check,
yt-dlp from a local media server, frames, embeddings, metrics) runs on the demo workspace's trained mapper.
"""

from __future__ import annotations

import json
import subprocess

import pandas as pd
import pytest
from ruamel.yaml import YAML

from a2i_core.core import shards
from a2i_core.core.audio_io import ffmpeg_binary
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table
from a2i_core.core.errors import A2IError
from a2i_core.core.params import params_from_dict
from a2i_core.pipeline.eval_set import EVAL_SPLIT, drop_training_videos
from a2i_core.pipeline.ingest import ingest
from tests.media_server import MediaServer

SET_CSV = """\
vggclip0001,0,dog barking,test
vggclip0002,1,"siren, ambulance wailing",test
vggclip0003,2,church bell ringing,test
vggclip0004,0,dog barking,test
leakvideo01,0,clock ticking,test
vggclip0005,0,clock ticking,train
"""
KEPT = ["vggclip0001_0", "vggclip0002_1000", "vggclip0003_2000", "vggclip0004_0"]
LEAKED = "leakvideo01"


def _training(path, frame: pd.DataFrame) -> None:
    shards.write_table(candidates_table(frame), path, CANDIDATES_KIND)


def _audioset_like(videos: dict[str, str]) -> pd.DataFrame:
    return pd.DataFrame([{"clip_id": f"{y}_30000", "group": y, "label": "Dog", "prompt": "an image of a dog",
                          "split": s, "source": "audioset", "ytid": y, "start": 30.0, "end": 40.0}
                         for y, s in videos.items()])


def _set(raw_params, tmp_path):
    (tmp_path / "vggsound.csv").write_text(SET_CSV)
    raw_params["data"].update(source="vggsound", vggsound={"csv": str(tmp_path / "vggsound.csv"), "split": "test"})
    data = params_from_dict(raw_params).data
    return ingest(data, tmp_path / "set.parquet", tmp_path / "data.json", split=EVAL_SPLIT)


def test_the_sets_candidates_and_counts_are_rewritten_without_the_leaked_rows(raw_params, tmp_path):
    frame = _set(raw_params, tmp_path)
    _training(tmp_path / "training.parquet", _audioset_like({LEAKED: "train", "vggclip0001": "test"}))
    kept, leak = drop_training_videos(frame, tmp_path / "set.parquet", tmp_path / "data.json",
                                      tmp_path / "training.parquet")
    assert leak == {"videos": 1, "rows": 1} and sorted(kept["clip_id"]) == KEPT  # a test clip's video is no leak
    written = shards.read_table(tmp_path / "set.parquet", CANDIDATES_KIND).to_pandas()
    assert sorted(written["clip_id"]) == KEPT and set(written["split"]) == {EVAL_SPLIT}
    counts = json.loads((tmp_path / "data.json").read_text())
    assert counts["pairs"] == counts["clips"] == 4 and "clock ticking" not in counts["pairs_per_label"]
    assert counts["labels_total"] == 4 and counts["rows_read"] == 6  # the source's own report stays
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def test_training_data_without_videos_leaves_the_set_alone(raw_params, tmp_path):
    frame = _set(raw_params, tmp_path)
    before = (tmp_path / "set.parquet").read_bytes(), (tmp_path / "data.json").read_bytes()
    synthetic = _audioset_like({LEAKED: "train"}).drop(columns=["ytid", "start", "end"]).assign(source="synthetic")
    _training(tmp_path / "training.parquet", synthetic)
    kept, leak = drop_training_videos(frame, tmp_path / "set.parquet", tmp_path / "data.json",
                                      tmp_path / "training.parquet")
    assert leak is None and len(kept) == 5
    _training(tmp_path / "training.parquet", _audioset_like({"othervideo1": "train"}))
    assert drop_training_videos(frame, tmp_path / "set.parquet", tmp_path / "data.json",
                                tmp_path / "training.parquet")[1] == {"videos": 0, "rows": 0}
    assert ((tmp_path / "set.parquet").read_bytes(), (tmp_path / "data.json").read_bytes()) == before


def test_missing_or_foreign_training_candidates_are_one_line(raw_params, tmp_path):
    frame = _set(raw_params, tmp_path)
    with pytest.raises(A2IError, match="not found") as err:
        drop_training_videos(frame, tmp_path / "set.parquet", tmp_path / "data.json", tmp_path / "missing.parquet")
    assert "\n" not in str(err.value)
    pd.DataFrame({"split": ["train"], "ytid": [LEAKED]}).to_parquet(tmp_path / "plain.parquet")
    with pytest.raises(A2IError, match="candidates"):
        drop_training_videos(frame, tmp_path / "set.parquet", tmp_path / "data.json", tmp_path / "plain.parquet")


@pytest.fixture(scope="module")
def vggsound_server(tmp_path_factory):
    """The set's videos (a test pattern and a tone each, 13 s) and its CSV, served over HTTP with Range requests."""
    root = tmp_path_factory.mktemp("vggsound")
    ytids = sorted({line.split(",")[0] for line in SET_CSV.splitlines()})
    for i, ytid in enumerate(ytids):
        subprocess.run([ffmpeg_binary(), "-y", "-loglevel", "error", "-f", "lavfi", "-i",
                        "testsrc=size=160x120:rate=5:duration=13", "-f", "lavfi", "-i",
                        f"sine=frequency={300 + 150 * i}:duration=13", "-c:v", "libx264", "-pix_fmt", "yuv420p",
                        "-c:a", "aac", "-shortest", str(root / f"{ytid}.mp4")], check=True)
    (root / "vggsound.csv").write_text(SET_CSV)
    with MediaServer(root) as server:
        yield server


def test_a_vggsound_eval_set_runs_through_the_pipeline_functions(demo_workspace, vggsound_server, tmp_path):
    # The demo trained on synthetic clips (no videos): its candidates are given videos here, one of them the set's.
    from a2i_core.core.params import load_params
    from a2i_core.pipeline.eval_set import eval_set

    ws, _ = demo_workspace  # read only: everything eval_set writes goes under tmp_path
    training = shards.read_table(ws / "data/candidates.parquet", CANDIDATES_KIND).to_pandas()
    training["ytid"] = [f"synth{i:06d}" for i in range(len(training))]
    training.loc[training.index[training["split"] == "train"][0], "ytid"] = LEAKED
    _training(tmp_path / "candidates.parquet", training)
    raw = YAML(typ="safe", pure=True).load((ws / "params.yaml").read_text())
    raw["download"].update(url_template=vggsound_server.url + "{ytid}.mp4", max_attempts=1, backoff_seconds=0.01,
                           requests_per_second=0, frames=True)
    raw["eval_sets"] = {"vgg": {"source": "vggsound", "images_per_class": 1,
                                "vggsound": {"csv": vggsound_server.url + "vggsound.csv", "split": "test"}}}
    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump(raw, f)
    params = load_params(tmp_path / "params.yaml")
    out = tmp_path / "out"
    report = eval_set(params, "vgg", ws / "models/mapper", ws / "models/audio_encoder", ws / "models/sd3",
                      ws / "models/clip", out, tmp_path / "vgg.json", tmp_path / "vgg_report.json",
                      tmp_path / "vgg_table.md", tmp_path / "candidates.parquet")

    assert report["source"] == "vggsound" and report["leak"] == {"videos": 1, "rows": 1}
    assert report["pairs"] == 4 and json.loads((tmp_path / "vgg_report.json").read_text()) == report
    numbers = json.loads((tmp_path / "vgg.json").read_text())["eval_sets"]["vgg"]
    assert numbers["top1"] == report["top1"] and numbers["aic"] == report["images"]["rows"]["mapper"]["aic"]
    assert report["chance_top1"] == 1 / 3  # dog barking, the siren, the bell: the leaked clock is gone
    candidates = shards.read_table(out / "candidates.parquet", CANDIDATES_KIND).to_pandas()
    assert sorted(candidates["clip_id"]) == KEPT
    # Nothing of the leaked video was fetched: neither its audio nor its frame.
    assert LEAKED + ".mp4" not in vggsound_server.requests
    assert sorted(p.stem for p in (out / "audio").glob("*.wav")) == KEPT
    downloaded = json.loads((out / "download.json").read_text())
    assert downloaded["ok"] == 4 and downloaded["frames"] == {"ok": 4}
    assert sorted(p.stem for p in (out / "frames").glob("*.png")) == KEPT
    assert json.loads((out / "data.json").read_text())["pairs"] == 4
    # Every row drawn for one clip of each of the set's 3 labels and measured against the set's own frames.
    images = report["images"]
    assert list(images["rows"]) == ["true_prompt", "mapper", "mapper_fill_nearest_prompts", "mapper_fill_zeros",
                                    "shuffled_audio", "baseline_mean"]
    assert images["labels"] == 3 and images["frames"] == {"clips": 3, "with_frame": 3, "missing": {}}
    assert all(row["images"] == row["images_with_frame"] == 3 for row in images["rows"].values())
    table = (tmp_path / "vgg_table.md").read_text()
    assert "| true prompt | 3 |" in table and "| shuffled audio | 3 |" in table and "1 of 3 labels" in table
