"""CLAP and AST in the pipeline's audio path: prepared by the encoders stage, streamed like VGGish, same contracts."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import sys

import numpy as np
import pytest
import torch
from ruamel.yaml import YAML

from a2i_core.audio.encoder import VGGishEncoder, load_audio_encoder
from a2i_core.audio.features import embed_clips, embed_path, embed_waves, load_audio_embeddings
from a2i_core.audio.prepare import prepare_audio_encoder
from a2i_core.core.audio_io import SAMPLE_RATE, decode, write_wav
from a2i_core.core.errors import A2IError
from a2i_core.core.params import AudioEncoderParams, ParamsError, merge_overlay, params_from_dict
from a2i_core.core.provenance import Provenance
from a2i_core.mapper.artifact import MapperArtifact
from a2i_core.offline.audio_encoder import build_audio_encoder
from tests.conftest import ROOT
from tests.helpers import lighten, run

CPU = torch.device("cpu")


def _params(model: str, checkpoint: str | None) -> AudioEncoderParams:
    return AudioEncoderParams(model=model, checkpoint=checkpoint, weights="tiny", postprocess=False, batch_size=4,
                              shard_rows=2, decode_workers=1, device="cpu")


@pytest.fixture(scope="module")
def encoders(tmp_path_factory) -> dict:
    """The encoders stage's output for a tiny CLAP and a tiny AST: (folder, loaded encoder, its frontend)."""
    root = tmp_path_factory.mktemp("audio_encoders")
    out = {}
    for model in ("clap", "ast"):
        build_audio_encoder(_params(model, "tiny"), root / model)
        encoder = load_audio_encoder(root / model, postprocess=False)
        out[model] = (root / model, encoder, encoder.place(CPU))
    return out


def _signal(seconds: float, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * SAMPLE_RATE)) / SAMPLE_RATE
    return (0.3 * np.sin(2 * np.pi * 330 * t) + 0.05 * rng.standard_normal(t.size)).astype(np.float32)


@pytest.mark.parametrize(("model", "seconds", "windows"), [
    ("clap", 1.0, 1),  # shorter than one window: padded the extractor's way
    ("clap", 10.0, 1),  # exactly one
    ("clap", 16.0, 2),  # a 6 s tail: at least half a window, so a window of its own
    ("clap", 23.0, 2),  # a 3 s tail: dropped
    ("ast", 0.5, 1),
    ("ast", 10.24, 1),
    ("ast", 16.0, 2),
    ("ast", 26.0, 3),
])
def test_streaming_a_file_equals_embedding_it_whole(tmp_path, encoders, model, seconds, windows):
    _, encoder, frontend = encoders[model]
    path = tmp_path / "a.wav"
    write_wav(path, _signal(seconds))
    wave = decode(path, encoder.sample_rate)  # CLAP: 48 kHz, through the pipeline's 16 kHz
    whole = embed_waves(encoder, frontend, [wave], batch_size=2, device=CPU)[0]
    assert whole.shape == (windows, encoder.dim)
    for window_seconds in (0.01, 12.0, 60.0):  # one encoder window per streaming window, one, several
        frames, n, _ = embed_path(encoder, frontend, path, batch_size=2, device=CPU, window_seconds=window_seconds)
        assert n == wave.size
        np.testing.assert_allclose(frames, whole, atol=1e-5, rtol=0)


def test_clips_become_shards_of_the_encoders_width_with_its_provenance(tmp_path, encoders):
    folder, encoder, _ = encoders["clap"]
    clips = []
    for i, seconds in enumerate((2.0, 11.0, 0.7)):
        write_wav(tmp_path / f"c{i}.wav", _signal(seconds, seed=i))
        clips.append((f"c{i}", tmp_path / f"c{i}.wav"))
    report = embed_clips(encoder, clips, tmp_path / "features", batch_size=4, shard_rows=2, device=CPU)
    assert report["clips"] == 3
    ids, means, provenance = load_audio_embeddings(tmp_path / "features")
    assert ids == ["c0", "c1", "c2"] and means.shape == (3, encoder.dim) == (3, 24)
    assert provenance["frontend"].startswith("clap-logmel-v1-48k") and provenance["postprocess"] is False
    # A mapper trained on these features refuses AST's or VGGish's, naming the field.
    trained = Provenance.from_parts(provenance, {"diffusion_model": "tiny", "sequence_shape": [8, 8]})
    other, _, _ = encoders["ast"]
    with pytest.raises(A2IError, match=r"encoder_sha256 is [0-9a-f]{12}\.\.\., but the mapper was trained with"):
        trained.check(str(other), **load_audio_encoder(other, postprocess=False).provenance())
    trained.check(str(folder), **encoder.provenance())  # its own encoder passes


def test_a_pinned_local_folder_loads_and_another_model_is_refused(tmp_path, encoders):
    folder, encoder, _ = encoders["ast"]
    copy = tmp_path / "my_ast"
    shutil.copytree(folder, copy)
    (copy / "source.json").unlink()
    record = prepare_audio_encoder(_params("ast", str(copy)), tmp_path / "pinned")
    assert record == {"model": str(copy.resolve()), "revision": None}
    assert sorted(p.name for p in (tmp_path / "pinned").iterdir()) == ["source.json"]  # pinned, not copied
    loaded = load_audio_encoder(tmp_path / "pinned", postprocess=False)
    assert loaded.kind == "ast" and loaded.provenance() == encoder.provenance()
    with pytest.raises(A2IError, match=rf"^audio_encoder\.checkpoint {copy}: holds a ast model, but "
                                       r"audio_encoder\.model is clap$"):
        prepare_audio_encoder(_params("clap", str(copy)), tmp_path / "wrong")
    assert not (tmp_path / "wrong").exists()  # nothing half-made is left in place


def test_a_refused_local_folder_is_named_once(tmp_path, encoders):
    # Before: "/x/my_ast (/x/my_ast): cannot load the AST model (... look at the above report!)".
    folder, _, _ = encoders["ast"]
    copy = tmp_path / "my_ast"
    shutil.copytree(folder, copy)
    (copy / "source.json").unlink()
    config = json.loads((copy / "config.json").read_text())
    (copy / "config.json").write_text(json.dumps({**config, "num_hidden_layers": 10**6}))
    with pytest.raises(A2IError) as err:
        prepare_audio_encoder(_params("ast", str(copy)), tmp_path / "pinned")
    assert str(err.value).count(str(copy)) == 1 and "num_hidden_layers" in str(err.value), err.value


def test_what_no_window_reads_is_counted(encoders):
    # Before: a 14.9 s clip lost its last 4.9 s under CLAP's window rule, and nothing said so.
    clap = encoders["clap"][1]
    assert clap.unheard(int(14.9 * clap.sample_rate)) == pytest.approx(4.9 * clap.sample_rate, abs=1)
    vggish = VGGishEncoder(model=None, postprocessor=None, weights_sha256="")  # the rule needs no weights
    assert vggish.unheard(vggish.min_samples - 1) == 0  # padded to one example: all of it heard
    assert vggish.unheard(vggish.min_samples + 2 * vggish.step + 100) == 100


def test_params_name_what_each_model_reads(raw_params):
    raw_params["audio_encoder"].update(model="clap")
    with pytest.raises(ParamsError, match=r"audio_encoder\.checkpoint: required when model is clap"):
        params_from_dict(raw_params)
    raw_params["audio_encoder"].update(checkpoint="tiny", postprocess=True, pca="x.pth")
    with pytest.raises(ParamsError, match=r"audio_encoder\.postprocess: VGGish's PCA: only for model vggish"):
        params_from_dict(raw_params)
    raw_params["audio_encoder"].update(model="vggish", postprocess=False)
    with pytest.raises(ParamsError, match=r"audio_encoder\.checkpoint: only read for model clap or ast"):
        params_from_dict(raw_params)
    raw_params["audio_encoder"].update(model="wav2vec", checkpoint=None)
    with pytest.raises(ParamsError, match=r"audio_encoder\.model: must be one of"):
        params_from_dict(raw_params)


def test_the_clap_profile_is_an_overlay(offline_raw):
    profile = YAML(typ="safe", pure=True).load((ROOT / "profiles/clap.yaml").read_text())
    merged = params_from_dict(merge_overlay(offline_raw, profile))
    assert merged.audio_encoder.model == "clap" and merged.audio_encoder.checkpoint == "tiny"


def _run(cwd, *argv: str) -> subprocess.CompletedProcess:
    return run(cwd, sys.executable, "-m", *argv, ok=False)


def test_the_demo_with_clap_reruns_embed_audio_and_after_and_generate_follows(demo_workspace, tmp_path):
    """`-S audio_encoder.model=clap` on the demo: the audio encoder's stage and everything downstream of the
    features rerun (SD3's fitted models are kept); the mapper learns CLAP's width; `a2i generate` embeds with CLAP,
    and a mapper trained on VGGish features is refused with it."""
    ws = tmp_path / "ws"
    shutil.copytree(demo_workspace[0], ws, ignore=shutil.ignore_patterns(".git"))  # with its DVC cache
    assert _run(ws, "dvc", "config", "core.no_scm", "true").returncode == 0
    yaml = YAML()
    params = yaml.load((ws / "params.yaml").read_text())
    params["audio_encoder"].update(model="clap", checkpoint="tiny", batch_size=16)
    lighten(params)
    with open(ws / "params.yaml", "w") as f:
        yaml.dump(params, f)
    result = _run(ws, "dvc", "repro")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    ran = re.findall(r"Running stage '([\w@.-]+)'", result.stdout + result.stderr)
    # render_reference too: which clips it draws depends on which have audio features (a failed download has none)
    assert ran == ["check_params", "sources", "audio_encoder", "embed_audio", "train", "evaluate", "render_reference",
                   "label_head", "render", "image_eval", "timeline", "mixtures"]
    _, means, provenance = load_audio_embeddings(ws / "data/features/audio")
    assert means.shape[1] == 24 and provenance["frontend"].startswith("clap-logmel-v1")
    mapper = MapperArtifact.load(ws / "models/mapper").mapper
    assert mapper.config.in_dim == 24 and mapper.config.provenance.frontend == provenance["frontend"]
    assert json.loads((ws / "metrics/eval.json").read_text())["top1"] > 0.5  # CLAP's features are learnt from

    write_wav(tmp_path / "bell.wav", _signal(3.0, seed=5))
    write_wav(tmp_path / "long.wav", _signal(14.9, seed=6))
    made = _run(tmp_path, "a2i_core.cli", "generate", "bell.wav", "long.wav", "--project", str(ws), "--out", "out",
                "--steps", "2", "--device", "cpu")
    assert made.returncode == 0, made.stderr[-2000:]
    assert (tmp_path / "out/bell.png").is_file()
    assert "bell.wav: 3.00 s is shorter than one 10.000 s CLAP window: padded to fill one" in made.stderr
    # Before: the last 4.9 s of a 14.9 s clip were dropped by the window rule without a word.
    assert "long.wav: its last 4.90 s were not heard: less than half a CLAP window" in made.stderr
    refused = _run(tmp_path, "a2i_core.cli", "generate", "bell.wav", "--project", str(ws), "--mapper",
                   str(demo_workspace[0] / "models/mapper"), "--out", "out2", "--device", "cpu")
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: {ws / 'models/audio_encoder'}: holds CLAP, but the mapper learnt from VGGish features (rerun the "
        "audio_encoder stage, or pass --audio-encoder)"]


@pytest.mark.parametrize(("checkpoint", "message"), [
    ("./models/my_clap", r"^\./models/my_clap: no such model folder$"),
    ("not an id!", r"^not an id!: no such model folder, and not a Hub id \(owner/name or owner/name@revision\)$"),
])
def test_a_checkpoint_that_is_neither_a_folder_nor_a_hub_id_is_never_looked_up(tmp_path, monkeypatch, checkpoint,
                                                                                message):
    import a2i_core.core.hub

    def no_hub(*args, **kwargs):
        raise AssertionError("looked up on the Hub")

    monkeypatch.setattr(a2i_core.core.hub, "hub_revision", no_hub)
    monkeypatch.chdir(tmp_path)
    with pytest.raises(A2IError, match=message):
        prepare_audio_encoder(_params("clap", checkpoint), tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_a_hub_id_is_pinned_to_the_commit_its_revision_names(tmp_path, monkeypatch):
    import a2i_core.core.hub

    asked = []
    monkeypatch.setattr(a2i_core.core.hub, "hub_revision",
                        lambda repo, revision: asked.append((repo, revision)) or "c0ffee")
    record = a2i_core.core.hub.prepare_pretrained("laion/clap-htsat-unfused@refs/pr/5", tmp_path / "out",
                                                  "config.json")
    assert asked == [("laion/clap-htsat-unfused", "refs/pr/5")]
    assert record == {"model": "laion/clap-htsat-unfused", "revision": "c0ffee"}
