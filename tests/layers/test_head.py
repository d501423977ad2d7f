"""The label head: fitted on clips and their mixtures it calls both sounds of a mixture; a folder from outside is
checked (config caps before allocating, tensors' shapes and values) and refused in one line when it does not fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from a2i_core.core.errors import A2IError
from a2i_core.layers.head import CONFIG_NAME, WEIGHTS_NAME, LabelHead, fit_head

AUDIO = {"encoder_sha256": "ab" * 32, "postprocess": True, "frontend": "vggish-torch: 16 kHz log-mel"}
PROMPTS = ["an image of a dog", "an image of rain"]


def _clusters(n: int = 200, dim: int = 16, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Rows of two Gaussian clusters and their pairwise averages (a mixture holds both), with 0/1 targets."""
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((2, dim)) * 3
    a = centres[0] + rng.standard_normal((n, dim))
    b = centres[1] + rng.standard_normal((n, dim))
    x = np.concatenate([a, b, (a + b) / 2]).astype(np.float32)
    y = np.concatenate([np.tile([1, 0], (n, 1)), np.tile([0, 1], (n, 1)), np.ones((n, 2))]).astype(np.float32)
    return x, y, centres, rng.standard_normal((50, dim))


@pytest.fixture(scope="module")
def head() -> LabelHead:
    x, y, _, _ = _clusters()
    return fit_head(x, y, PROMPTS, AUDIO, weight_decay=0.001, seed=0)


def test_the_head_separates_two_clusters_and_calls_both_on_their_average(head):
    _, _, centres, noise = _clusters(seed=0)
    dog, rain = centres[0] + noise, centres[1] + noise[::-1]
    p = head.probabilities(np.concatenate([dog, rain, (dog + rain) / 2]))  # (150, 2)
    assert (p[:50, 0] > 0.5).all() and (p[:50, 1] < 0.5).all()
    assert (p[50:100, 1] > 0.5).all() and (p[50:100, 0] < 0.5).all()
    assert (p[100:] > 0.5).all()
    clips = [np.stack([dog[0], dog[1]]), rain[:3]]  # (windows, D): their mean is what the head hears
    assert np.allclose(head.scores(clips), head.probabilities(np.stack([c.mean(0) for c in clips])), atol=1e-6)
    assert head.scores([]).shape == (0, 2)


def test_fitting_is_deterministic(head):
    x, y, _, _ = _clusters()
    again = fit_head(x, y, PROMPTS, AUDIO, weight_decay=0.001, seed=0)
    assert np.array_equal(again.weight, head.weight) and np.array_equal(again.bias, head.bias)


def test_weight_decay_keeps_probabilities_from_saturating():
    x, y, _, _ = _clusters()
    loose = fit_head(x, y, PROMPTS, AUDIO, weight_decay=0.0001, seed=0)
    tight = fit_head(x, y, PROMPTS, AUDIO, weight_decay=1.0, seed=0)
    assert np.abs(tight.weight).sum() < np.abs(loose.weight).sum()


@pytest.mark.parametrize(("targets", "match"), [(np.full((4, 2), 0.5), "0 or 1"), (np.zeros((4, 3)), "3 target")])
def test_bad_targets_are_refused(targets, match):
    with pytest.raises(A2IError, match=match):
        fit_head(np.zeros((4, 5)), targets, PROMPTS, AUDIO, 0.001, 0)


def test_a_saved_head_loads_back_and_scores_the_same(head, tmp_path):
    head.save_pretrained(tmp_path / "head")
    back = LabelHead.from_pretrained(tmp_path / "head")
    assert back.prompts == PROMPTS and back.audio == AUDIO
    clips = [np.random.default_rng(1).standard_normal((3, 16)).astype(np.float32)]
    assert np.array_equal(back.scores(clips), head.scores(clips))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["head"]  # written whole: no temporary left


def test_a_missing_folder_says_how_to_make_one(tmp_path):
    with pytest.raises(A2IError, match=r"no label head here \(run `dvc repro label_head`, or layers.answer: nnls\)"):
        LabelHead.from_pretrained(tmp_path / "nothing")


def _tampered_config(head: LabelHead, folder, **changes) -> None:
    head.save_pretrained(folder)
    config = json.loads((folder / CONFIG_NAME).read_text())
    (folder / CONFIG_NAME).write_text(json.dumps({**config, **changes}))


def test_a_config_asking_for_a_huge_head_fails_before_allocating(head, tmp_path):
    _tampered_config(head, tmp_path / "h", classes=10**12)
    with pytest.raises(A2IError, match=r"classes: must be in \[1, 65536\]") as err:
        LabelHead.from_pretrained(tmp_path / "h")
    assert "\n" not in str(err.value)
    _tampered_config(head, tmp_path / "w", dim=1 << 40)
    with pytest.raises(A2IError, match=r"dim: must be in"):
        LabelHead.from_pretrained(tmp_path / "w")


@pytest.mark.parametrize(("changes", "match"), [
    ({"classes": 3}, "prompts: lists 2, but classes is 3"),
    ({"prompts": ["a", "a"]}, "lists a prompt twice"),
    ({"audio": {**AUDIO, "encoder_sha256": ""}}, "encoder_sha256: must be 64"),
    ({"dim": "16"}, "dim: expected int"),
    ({"extra": 1}, "extra: unknown key"),
])
def test_a_mistyped_or_inconsistent_config_is_one_line(head, tmp_path, changes, match):
    _tampered_config(head, tmp_path / "h", **changes)
    with pytest.raises(A2IError, match=match):
        LabelHead.from_pretrained(tmp_path / "h")


def test_a_config_that_does_not_fit_the_weights_is_refused(head, tmp_path):
    _tampered_config(head, tmp_path / "h", dim=17)
    with pytest.raises(A2IError, match=r"weight: shape \(2, 16\), but config.json makes it \(2, 17\)"):
        LabelHead.from_pretrained(tmp_path / "h")


@pytest.mark.parametrize(("name", "value", "match"), [("weight", np.nan, r"weight\[0, 3\] is nan"),
                                                      ("input_std", 0.0, "input_std.* at least 1e-06")])
def test_bad_weights_are_refused(head, tmp_path, name, value, match):
    folder = tmp_path / "h"
    head.save_pretrained(folder)
    state = load_file(str(folder / WEIGHTS_NAME))
    state[name].reshape(-1)[3] = value
    save_file(state, str(folder / WEIGHTS_NAME))
    with pytest.raises(A2IError, match=match):
        LabelHead.from_pretrained(folder)


def test_a_head_for_another_prompt_bank_or_other_features_is_refused_with_what_to_do(head):
    head.check_fits(PROMPTS, AUDIO)
    for prompts in (PROMPTS[::-1], PROMPTS[:1], [*PROMPTS, "an image of a bell"]):
        with pytest.raises(A2IError, match="another prompt bank .*: rerun label_head") as err:
            head.check_fits(prompts, AUDIO)
        assert "\n" not in str(err.value)
    with pytest.raises(A2IError, match="other audio features .*postprocess.*: rerun label_head"):
        head.check_fits(PROMPTS, {**AUDIO, "postprocess": False})


def test_clips_of_another_width_are_refused(head):
    with pytest.raises(A2IError, match=r"clip 1 has embeddings of shape \(2, 8\)"):
        head.scores([np.zeros((2, 16), np.float32), np.zeros((2, 8), np.float32)])
    with pytest.raises(A2IError, match="clip 0"):
        head.scores([np.zeros((0, 16), np.float32)])


def _project(root, encoder) -> tuple[dict, list[str]]:
    """A tiny project as the stages before label_head leave it: candidates, audio (WAVs and a manifest), audio
    features and a mapper whose bank holds three prompts; one train clip holds two of them."""
    import pyarrow as pa
    import torch

    from a2i_core.audio.features import embed_clips
    from a2i_core.core import shards
    from a2i_core.core.audio_io import SAMPLE_RATE, write_wav
    from a2i_core.core.candidates import CANDIDATES_KIND
    from a2i_core.core.manifest import save_manifest
    from a2i_core.core.provenance import Provenance
    from a2i_core.mapper.artifact import MapperArtifact
    from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig

    rng = np.random.default_rng(0)
    t = np.arange(SAMPLE_RATE) / SAMPLE_RATE
    sounds = {"dog": lambda: 0.4 * np.sin(2 * np.pi * 300 * t) * (np.sin(2 * np.pi * 3 * t) > 0),
              "rain": lambda: 0.1 * rng.standard_normal(t.size), "bell": lambda: 0.3 * np.sin(2 * np.pi * 2000 * t)}
    rows, manifest = [], {}
    audio = root / "audio"
    for label, make in sounds.items():
        for i in range(6):
            clip_id = f"{label}_{i}"
            write_wav(audio / f"{clip_id}.wav", make().astype(np.float32))
            manifest[clip_id] = {"clip_id": clip_id, "status": "ok", "reason": None, "path": f"{clip_id}.wav",
                                 "seconds": 1.0}
            rows.append((clip_id, f"an image of a {label}", "train" if i < 4 else "val"))
    rows += [("dog_0", "an image of rain", "train"), ("bell_0", "an image of a unicorn", "train")]  # not in the bank
    table = pa.table({"clip_id": [r[0] for r in rows], "prompt": [r[1] for r in rows], "split": [r[2] for r in rows]})
    shards.write_table(table, root / "candidates.parquet", CANDIDATES_KIND)
    save_manifest(audio, manifest)
    embed_clips(encoder, [(c, audio / f"{c}.wav") for c in sorted(manifest)], root / "features", batch_size=16,
                shard_rows=100, device=torch.device("cpu"))
    prompts = [f"an image of a {label}" for label in sounds]
    provenance = Provenance.from_parts(encoder.provenance(), {"diffusion_model": "tiny", "sequence_shape": [3, 2]})
    mapper = AudioToSD3Mapper(MapperConfig(in_dim=encoder.dim, pooled_dim=4, hidden=[8], dropout=[0.0],
                                           provenance=provenance))
    MapperArtifact(mapper, np.zeros(4, np.float32), np.zeros((3, 2), np.float32), prompts,
                   rng.standard_normal((3, 4)).astype(np.float32)).save(root / "mapper")
    paths = {"candidates": root / "candidates.parquet", "audio": audio, "audio_features": root / "features",
             "audio_encoder": None, "mapper_dir": root / "mapper", "out": root / "label_head",
             "metrics": root / "label_head.json"}
    return paths, prompts


def test_the_stage_trains_a_head_on_clips_and_mixtures_that_fits_the_mapper(tmp_path, tiny_vggish_dir, caplog):
    from a2i_core.audio.encoder import load_audio_encoder
    from a2i_core.core.params import LabelHeadParams
    from a2i_core.layers.head import audio_part
    from a2i_core.mapper.artifact import MapperArtifact
    from a2i_core.pipeline.label_head import label_head

    paths, prompts = _project(tmp_path, load_audio_encoder(tiny_vggish_dir, postprocess=True))
    paths["audio_encoder"] = tiny_vggish_dir
    cfg = LabelHeadParams(mixtures=24, min_db=-6.0, max_db=3.0, weight_decay=0.001, seed=0)
    numbers = label_head(cfg, "cpu", 64, **paths)
    assert json.loads(paths["metrics"].read_text()) == numbers
    assert set(numbers) == {"val_top1", "val_recall_at_2", "train_clips", "train_mixtures"}
    assert numbers["train_clips"] == 12 and numbers["train_mixtures"] == 24
    assert numbers["val_top1"] is not None and numbers["val_recall_at_2"] is not None
    head = LabelHead.from_pretrained(paths["out"])
    head.check_fits(prompts, audio_part(MapperArtifact.load(paths["mapper_dir"]).mapper.config.provenance))
    again = label_head(cfg, "cpu", 64, **{**paths, "out": tmp_path / "again", "metrics": tmp_path / "again.json"})
    assert again == numbers
    assert np.array_equal(LabelHead.from_pretrained(tmp_path / "again").weight, head.weight)  # seeded
