"""AudioSet's released embeddings (TFRecord SequenceExamples) imported as audio features, without TensorFlow."""

from __future__ import annotations

import logging
import os
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from ruamel.yaml import YAML

from a2i_core.audio import tfrecord
from a2i_core.audio.audioset_release import import_release
from a2i_core.audio.encoder import encoder_for
from a2i_core.audio.features import AUDIO_KIND, load_audio_embeddings
from a2i_core.audio.tfrecord import SequenceExample
from a2i_core.core import provenance, shards
from a2i_core.core.candidates import CANDIDATES_KIND, candidates_table
from a2i_core.core.errors import A2IError
from a2i_core.core.provenance import RELEASE_AUDIO, RELEASE_NOTE, Provenance, ProvenanceError
from tests.audio import tfrecord_writer
from tests.conftest import ROOT

# (video id, start s, seconds of embeddings): two files in subfolders; "notcand" is in the release only,
# "nofile0000" is a candidate with no record.
RELEASE = {
    "bal_train/a.tfrecord": [("vid_A-1xyz0", 30.0, 10), ("notcand0001", 0.0, 10), ("vid_B-2xyz0", 12.5, 3)],
    "unbal/deep/b.tfrecord": [("vid_C-3xyz0", 250.25, 10), ("notcand0002", 5.0, 4)],
}
CANDIDATES = [("vid_A-1xyz0", 30.0), ("vid_B-2xyz0", 12.5), ("vid_C-3xyz0", 250.25), ("nofile0000", 40.0)]


def frames_of(video_id: str, seconds: int) -> np.ndarray:
    seed = sum(video_id.encode())
    return np.random.default_rng(seed).integers(0, 256, (seconds, 128), dtype=np.uint8)


def segment_example(video_id: str, start: float, seconds: int) -> SequenceExample:
    return SequenceExample(
        context={"video_id": [video_id.encode()], "start_time_seconds": [start],
                 "end_time_seconds": [start + 10.0], "labels": [0, 137, 72]},
        feature_lists={"audio_embedding": [[row.tobytes()] for row in frames_of(video_id, seconds)]})


def write_release(root: Path, layout: dict = RELEASE) -> Path:
    for name, segments in layout.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        tfrecord_writer.write_records(root / name, (tfrecord_writer.serialize_sequence_example(segment_example(*s))
                                             for s in segments))
    return root


def write_candidates(path: Path, segments=CANDIDATES, source: str = "audioset") -> Path:
    frame = pd.DataFrame([{"clip_id": f"{y}_{round(s * 1000)}", "group": y, "label": "dog", "prompt": "a dog",
                           "split": "train", "source": source, "ytid": y, "start": s, "end": s + 10.0}
                          for y, s in segments])
    path.parent.mkdir(parents=True, exist_ok=True)
    shards.write_table(candidates_table(frame), path, CANDIDATES_KIND)
    return path


def test_crc32c_matches_the_standard_check_value_and_the_batched_form():
    assert tfrecord.crc32c(b"123456789") == 0xE3069283  # CRC-32C's published check value
    assert tfrecord.crc32c(b"") == 0
    rng = np.random.default_rng(0)
    items = [rng.integers(0, 256, n, dtype=np.uint8).tobytes() for n in [0, 1, 3, 4, 5, 200, 1500, 1501] * 3]
    assert tfrecord.crc32c_many(items).tolist() == [tfrecord.crc32c(i) for i in items]


def test_records_and_sequence_examples_round_trip(tmp_path):
    example = segment_example("vid_A-1xyz0", 30.0, 10)
    example.context.update(negative=[-1, 2**62], floats=[0.5, -2.0], empty=[])
    serialized = tfrecord_writer.serialize_sequence_example(example)
    tfrecord_writer.write_records(tmp_path / "x.tfrecord", [serialized, b"", b"abc"] * 20)
    records = list(tfrecord.read_records(tmp_path / "x.tfrecord", batch_bytes=4096))
    assert [data for _, data in records[1:3]] == [b"", b"abc"] and len(records) == 60
    assert records[1][0] == 16 + len(records[0][1])  # byte offsets: header 12, footer 4
    assert tfrecord.parse_sequence_example(records[0][1]) == example


def test_unpacked_numeric_lists_decode_as_packed_ones():
    # TensorFlow packs them, but a protobuf reader must take both forms.
    floats = b"".join(b"\x0d" + struct.pack("<f", v) for v in (1.5, 2.0))  # field 1, wire type 5, twice
    ints = b"\x08\x05\x08" + bytes([0xFF] * 9) + b"\x01"  # 5, then -1 as a ten-byte varint
    assert tfrecord.parse_feature(b"\x12" + bytes([len(floats)]) + floats) == [1.5, 2.0]
    assert tfrecord.parse_feature(b"\x1a" + bytes([len(ints)]) + ints) == [5, -1]


def test_import_writes_the_candidates_segments_as_audio_features(tmp_path):
    release = write_release(tmp_path / "release")
    out = tmp_path / "features"
    counts = import_release(release, write_candidates(tmp_path / "candidates.parquet"), out, shard_rows=2)
    assert counts["clips"] == 3 and counts["candidates_without_record"] == 1
    assert counts["records"] == 5 and counts["records_not_candidates"] == 2 and counts["files"] == 2
    assert counts["shards"] == 2  # 2 + 1 rows

    ids, means, part = load_audio_embeddings(out)
    assert ids == ["vid_A-1xyz0_30000", "vid_B-2xyz0_12500", "vid_C-3xyz0_250250"]  # in file order
    assert part == RELEASE_AUDIO
    Provenance.from_parts(part, {"diffusion_model": "tiny", "sequence_shape": [4, 8]}).validate("release")
    table = shards.read_shards(out, AUDIO_KIND)
    assert table["n_frames"].to_pylist() == [10, 3, 10]
    for i, (video_id, seconds) in enumerate([("vid_A-1xyz0", 10), ("vid_B-2xyz0", 3), ("vid_C-3xyz0", 10)]):
        expected = frames_of(video_id, seconds).astype(np.float32)  # the 8-bit values, 0..255, as float32
        assert np.array_equal(np.array(table["frames"][i].as_py(), np.float32), expected)
        assert np.allclose(means[i], expected.mean(0), atol=1e-4)


def test_a_rerun_replaces_the_shards_and_a_failed_import_leaves_none(tmp_path):
    release = write_release(tmp_path / "release")
    candidates = write_candidates(tmp_path / "candidates.parquet")
    out = tmp_path / "features"
    import_release(release, candidates, out, shard_rows=1)
    assert len(shards.shard_paths(out)) == 3
    import_release(release, candidates, out, shard_rows=10)
    assert len(shards.shard_paths(out)) == 1
    path = release / "unbal/deep/b.tfrecord"
    path.write_bytes(path.read_bytes()[:-3])
    with pytest.raises(A2IError):
        import_release(release, candidates, out, shard_rows=1)
    assert shards.shard_paths(out, missing_ok=True) == []


def _one_line_error(release: Path, candidates: Path, out: Path) -> str:
    with pytest.raises(A2IError) as err:
        import_release(release, candidates, out, shard_rows=10)
    message = str(err.value)
    assert "\n" not in message
    return message


def test_a_corrupt_record_is_one_line_naming_the_file_and_the_offset(tmp_path):
    release = write_release(tmp_path / "release")
    candidates = write_candidates(tmp_path / "candidates.parquet")
    path = release / "bal_train" / "a.tfrecord"
    records = list(tfrecord.read_records(path))
    data = bytearray(path.read_bytes())
    second = records[1][0]
    data[second + 12 + 40] ^= 0x01  # one bit of the second record's data
    path.write_bytes(bytes(data))
    message = _one_line_error(release, candidates, tmp_path / "out")
    assert message == f"{path}: corrupt record at byte {second}: its data fails its CRC"


def test_a_corrupt_length_and_a_truncated_file_are_one_line_each(tmp_path):
    release = write_release(tmp_path / "release")
    candidates = write_candidates(tmp_path / "candidates.parquet")
    path = release / "unbal" / "deep" / "b.tfrecord"
    whole = path.read_bytes()
    second = next(o for o, _ in list(tfrecord.read_records(path))[1:])
    path.write_bytes(whole[:-10])
    message = _one_line_error(release, candidates, tmp_path / "out")
    assert message.startswith(f"{path}: truncated at byte {second}: a record of ")
    path.write_bytes(whole[: second + 5])  # inside a header
    assert _one_line_error(release, candidates, tmp_path / "out").startswith(f"{path}: truncated at byte {second}")
    broken = bytearray(whole)
    broken[0] ^= 0x40  # the first record's length
    path.write_bytes(bytes(broken))
    assert _one_line_error(release, candidates, tmp_path / "out") == \
        f"{path}: corrupt record at byte 0: its length fails its CRC"


def test_a_record_that_is_no_segment_is_one_line(tmp_path):
    release = tmp_path / "release"
    release.mkdir()
    bad = SequenceExample(context={"video_id": [b"x"], "start_time_seconds": [1.0]},
                          feature_lists={"audio_embedding": [[b"short"]]})
    serialized = tfrecord_writer.serialize_sequence_example(bad)
    tfrecord_writer.write_records(release / "x.tfrecord", [b"\xff\xff", serialized])
    message = _one_line_error(release, write_candidates(tmp_path / "c.parquet"), tmp_path / "out")
    assert message.startswith(f"{release / 'x.tfrecord'}: record at byte 0 is not an AudioSet segment")
    tfrecord_writer.write_records(release / "x.tfrecord", [tfrecord_writer.serialize_sequence_example(bad)])
    message = _one_line_error(release, write_candidates(tmp_path / "c.parquet"), tmp_path / "out")
    assert "audio_embedding second 0 is not one 128-byte string" in message


def test_candidates_of_another_source_or_no_match_are_refused(tmp_path):
    release = write_release(tmp_path / "release")
    esc50 = write_candidates(tmp_path / "esc.parquet", source="esc50")
    assert "data.source: audioset" in _one_line_error(release, esc50, tmp_path / "out")
    strangers = write_candidates(tmp_path / "s.parquet", segments=[("nofile0000", 1.0)])
    assert "none of the 1 candidate clips has a record" in _one_line_error(release, strangers, tmp_path / "out")
    assert "no *.tfrecord files" in _one_line_error(tmp_path / "out", strangers, tmp_path / "out2")


def test_the_embed_audio_stage_imports_the_release(tmp_path, raw_params):
    write_release(tmp_path / "release")
    write_candidates(tmp_path / "data" / "candidates.parquet")
    raw_params["audio_encoder"]["release"] = "release"
    with open(tmp_path / "params.yaml", "w") as f:
        YAML().dump(raw_params, f)
    env = {**os.environ, "PYTHONPATH": str(ROOT), "XDG_CACHE_HOME": str(tmp_path / "cache")}
    args = ["--audio", "data/audio", "--audio-encoder", "models/audio_encoder", "--features", "data/features/audio",
            "--candidates", "data/candidates.parquet"]  # no audio, no VGGish: neither is read
    result = subprocess.run([sys.executable, "-m", "stages.embed_audio", *args], cwd=tmp_path, env=env,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "imported 3 clips from 5 release records in 2 files" in result.stderr
    assert "1 candidate clips have no record in the release" in result.stderr
    ids, _, part = load_audio_embeddings(tmp_path / "data" / "features" / "audio")
    assert len(ids) == 3 and part == RELEASE_AUDIO


def _trained_on_release() -> Provenance:
    return Provenance.from_parts(RELEASE_AUDIO, {"diffusion_model": "tiny", "sequence_shape": [4, 8]})


def test_a_release_mapper_takes_the_local_vggish_with_pca_and_says_so_once(tiny_vggish_dir, caplog):
    provenance.note_once.cache_clear()
    trained = _trained_on_release()
    with caplog.at_level(logging.WARNING):
        encoder = encoder_for(trained, tiny_vggish_dir)  # generate: the PCA found beside the weights is used
        trained.check("features", **encoder.provenance())  # eval sets meet it again when they load their pairs
        encoder_for(trained, tiny_vggish_dir, postprocess=True)
    assert encoder.postprocessor is not None
    assert [r.getMessage() for r in caplog.records] == [RELEASE_NOTE]


def test_a_release_mapper_without_local_pca_is_one_line_saying_what_to_set(tiny_vggish_dir, tmp_path):
    no_pca = tmp_path / "vggish"
    no_pca.mkdir()
    (no_pca / "vggish.pth").symlink_to(tiny_vggish_dir / "vggish.pth")
    trained = _trained_on_release()
    for directory, postprocess in ((no_pca, None), (tiny_vggish_dir, False)):
        with pytest.raises(ProvenanceError) as err:
            encoder_for(trained, directory, postprocess)
        assert str(err.value) == (f"{directory}: this mapper learnt from AudioSet's released embeddings (PCA, 8-bit), "
                                  "but this VGGish has no PCA: set audio_encoder.postprocess: true, with pca naming "
                                  "its PCA file (as params.yaml does), then rerun the audio_encoder stage")


def test_a_local_mapper_still_refuses_release_features(tiny_vggish_dir):
    encoder = encoder_for(_trained_on_release(), tiny_vggish_dir)
    local = Provenance.from_parts(encoder.provenance(), {"diffusion_model": "tiny", "sequence_shape": [4, 8]})
    with pytest.raises(ProvenanceError, match="encoder_sha256"):
        local.check("features", **RELEASE_AUDIO)


def test_an_empty_record_does_not_hide_a_later_good_copy_of_its_clip(tmp_path):
    # Review finding: the empty record marked the clip found, and the good copy after it counted as a duplicate.
    layout = {"a.tfrecord": [("vid_A-1xyz0", 30.0, 0)], "b.tfrecord": [("vid_A-1xyz0", 30.0, 10)]}
    counts = import_release(write_release(tmp_path / "release", layout),
                            write_candidates(tmp_path / "candidates.parquet", [("vid_A-1xyz0", 30.0)]),
                            tmp_path / "features", shard_rows=4)
    assert counts["clips"] == 1 and counts["empty_records"] == 1 and counts["duplicate_records"] == 0
    assert shards.read_shards(tmp_path / "features", AUDIO_KIND)["n_frames"].to_pylist() == [10]
