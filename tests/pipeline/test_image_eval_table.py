"""The image_eval stage's own parts: the shuffled-audio control's pairing and the markdown table (the stage end to end
is tested against the demo in test_pipeline.py)."""

from __future__ import annotations

import pandas as pd

from a2i_core.pipeline.image_eval import SHUFFLED, markdown_table, shuffled_row


def _mapper(labels: list[str]) -> pd.DataFrame:
    return pd.DataFrame({"row": "mapper", "label": labels, "clip_id": [f"c{i}" for i in range(len(labels))],
                         "prompt": labels, "split": "test", "file": [f"mapper/{i}.png" for i in range(len(labels))],
                         "path": [f"/x/mapper/{i}.png" for i in range(len(labels))]})


def test_the_shuffled_row_gives_every_clip_another_class_sound_image():
    mapper = _mapper(["dog", "dog", "rain", "rain", "bell", "bell", "clock", "siren"])
    shuffled, same = shuffled_row(mapper, seed=0)
    assert same == 0 and set(shuffled["row"]) == {SHUFFLED}
    by_file = dict(zip(mapper["file"], mapper["label"], strict=True))
    assert all(by_file[f] != label for f, label in zip(shuffled["file"], shuffled["label"], strict=True))
    assert sorted(shuffled["file"]) == sorted(mapper["file"])  # each image once: the same set as the mapper's
    assert shuffled["clip_id"].tolist() == mapper["clip_id"].tolist()
    assert shuffled_row(mapper, 0)[0].equals(shuffled) and not shuffled_row(mapper, 1)[0].equals(shuffled)


def test_the_shuffled_row_when_a_class_holds_most_clips_or_there_is_one_clip():
    _, same = shuffled_row(_mapper(["dog"] * 5 + ["rain"]), seed=0)
    assert same == 4  # only one clip of another class to go round
    empty, same = shuffled_row(_mapper(["dog"]), seed=0)
    assert empty.empty and same == 0


def test_the_markdown_table_lists_every_row_with_its_counts():
    rows = {"true_prompt": {"images": 8, "aic": 1.0, "clip_score": 30.0, "images_with_frame": 7, "iis": 0.5,
                            "iis_rank": 0.9, "r@1": 0.5, "r@5": 1.0, "fid": 12.3, "kid": 0.01, "note": None},
            SHUFFLED: {"images": 8, "aic": 0.0, "clip_score": 10.0, "images_with_frame": 7, "iis": 0.1,
                       "iis_rank": 0.4, "fid": None, "kid": 0.02, "note": "no FID: 8 images"}}
    full = {"rows": rows, "chance": {"aic": 0.125, "iis_rank": 0.5, "r@1": 1 / 7, "r@5": 5 / 7}, "labels": 8,
            "features": {"iis": "CLIP (tiny)", "fid_kid": "CLIP (tiny)"}, "frames": {"clips": 8, "with_frame": 7}}
    text = markdown_table(full)
    assert "| true prompt | 8 | 1.000 | 30.0 | 0.500 | 0.900 | 0.500 | 1.000 | — | 12.3 | 0.01 | 7 |" in text
    assert "| shuffled audio | 8 | 0.000 |" in text and "Note, shuffled audio: no FID: 8 images." in text
    assert "Chance: AIC 0.125 (1 of 8 labels)" in text


def test_a_frame_missing_or_not_an_image_is_counted_and_the_rest_kept(tmp_path, caplog):
    from PIL import Image

    from a2i_core.core.manifest import save_manifest
    from a2i_core.pipeline.image_eval import usable_frames

    Image.new("RGB", (64, 48), (200, 10, 10)).save(tmp_path / "good.png")
    (tmp_path / "junk.png").write_bytes(b"<html>not a picture</html>")
    save_manifest(tmp_path, {c: {"clip_id": c, "status": "ok", "reason": "", "path": f"{c}.png", "seconds": 1.0}
                             for c in ("good", "junk")})
    with caplog.at_level("INFO"):
        found, problems = usable_frames(tmp_path, ["good", "junk", "novideo"])
    assert found == {"good": tmp_path / "good.png"}
    assert problems == {"frame not an image": 1, "no frame": 1}
    assert "1 of 3 clips without a frame (frame not an image)" in caplog.text
    assert usable_frames(tmp_path / "absent", ["good"])[1] == {"no frame": 1}  # download.frames: false
