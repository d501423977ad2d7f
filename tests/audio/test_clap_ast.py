"""CLAP's audio tower and AST: tiny models saved and loaded back, frontends against the feature extractors, refusals."""

from __future__ import annotations

import hashlib
import json
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from a2i_core.audio.clap_ast import HFAudioEncoder, load_hf_audio_encoder
from a2i_core.audio.frontends import ASTFrontend, ClapFrontend
from a2i_core.core.errors import A2IError
from a2i_core.offline.tiny_audio import save_tiny_ast, save_tiny_clap

CLAP_RATE, AST_RATE = 48_000, 16_000
CLAP_WINDOW = 480_000  # 10 s
AST_WINDOW, AST_STRIDE = 400 + 1023 * 160, 1024 * 160  # 1024 frames; the next window continues the frame grid
# (seconds, windows): full windows, plus a tail of at least half a window, or the only window.
CLAP_CLIPS = [(0.7, 1), (3.3, 1), (9.99, 1), (10.0, 1), (16.0, 2), (23.0, 2)]
AST_CLIPS = [(0.02, 1), (0.5, 1), (3.3, 1), (10.24, 1), (10.255, 1), (16.0, 2), (21.0, 2)]


def wave(seconds: float, rate: int, seed: int = 0) -> torch.Tensor:
    rng = np.random.default_rng(seed)
    t = np.arange(round(seconds * rate)) / rate
    tone = 0.3 * np.sin(2 * np.pi * (300 + 100 * seed) * t) * (1 + np.sin(2 * np.pi * 0.7 * t))
    return torch.from_numpy((tone + 0.05 * rng.standard_normal(t.size)).astype(np.float32))


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hf_audio")
    save_tiny_clap(root / "clap")
    save_tiny_clap(root / "clap_fused", fused=True)
    save_tiny_ast(root / "ast")
    return {name: root / name for name in ("clap", "clap_fused", "ast")}


@pytest.fixture(scope="module")
def encoders(models: dict[str, Path]) -> dict[str, HFAudioEncoder]:
    return {name: load_hf_audio_encoder(path) for name, path in models.items()}


@pytest.fixture
def ast_extractor(monkeypatch: pytest.MonkeyPatch):
    """ASTFeatureExtractor on its numpy path, the one the frontend reproduces, even where torchaudio is installed."""
    from transformers import ASTFeatureExtractor
    from transformers.models.audio_spectrogram_transformer import feature_extraction_audio_spectrogram_transformer as m

    monkeypatch.setattr(m, "is_speech_available", lambda: False)
    with warnings.catch_warnings():  # kaldi's 128 bands hold an empty filter: the extractor says so
        warnings.simplefilter("ignore", UserWarning)
        return ASTFeatureExtractor()


def test_tiny_builders_are_seeded_safetensors_and_leave_the_rng_alone(tmp_path: Path, models: dict[str, Path]):
    torch.manual_seed(1234)
    state = torch.get_rng_state()
    save_tiny_clap(tmp_path / "clap")
    save_tiny_ast(tmp_path / "ast")
    assert torch.equal(torch.get_rng_state(), state)
    save_tiny_ast(tmp_path / "ast_seed1", seed=1)

    def digest(path: Path) -> str:
        return hashlib.sha256((path / "model.safetensors").read_bytes()).hexdigest()

    assert digest(tmp_path / "clap") == digest(models["clap"]) and digest(tmp_path / "ast") == digest(models["ast"])
    assert digest(tmp_path / "ast_seed1") != digest(models["ast"])
    for path in models.values():
        files = sorted(p.name for p in path.iterdir())
        assert files == ["config.json", "model.safetensors", "preprocessor_config.json"]
    # Saved as the Hub holds them: a whole ClapModel (text tower too), an AST classifier.
    assert json.loads((models["clap"] / "config.json").read_text())["architectures"] == ["ClapModel"]
    assert json.loads((models["ast"] / "config.json").read_text())["architectures"] == ["ASTForAudioClassification"]


def test_round_trip_attributes_and_provenance(models: dict[str, Path], encoders: dict[str, HFAudioEncoder]):
    clap, fused, ast = encoders["clap"], encoders["clap_fused"], encoders["ast"]
    assert (clap.kind, clap.sample_rate, clap.dim) == ("clap", CLAP_RATE, 24)
    assert (fused.kind, fused.sample_rate, fused.dim) == ("clap", CLAP_RATE, 24)
    assert (ast.kind, ast.sample_rate, ast.dim) == ("ast", AST_RATE, 32)
    for name, encoder in encoders.items():
        record = encoder.provenance()
        assert set(record) == {"encoder_sha256", "postprocess", "frontend"} and record["postprocess"] is False
        weights, config = (hashlib.sha256((models[name] / f).read_bytes()).hexdigest()
                           for f in ("model.safetensors", "config.json"))
        assert record["encoder_sha256"] == hashlib.sha256(f"{weights} {config}".encode()).hexdigest()
        assert not encoder.model.training
    assert clap.provenance()["frontend"] == ("clap-logmel-v1-48k-64mel-50-14000hz-slaney-fft1024-hop480-10s-repeatpad; "
                                             "audio decoded at 16 kHz, then resampled")
    assert fused.provenance()["frontend"].startswith("clap-logmel-v1-48k-64mel-50-14000hz-htk-fft1024-hop480-10s-")
    assert ast.provenance()["frontend"] == "ast-fbank-v1-16k-128mel-hop160-1024frames-zeropad-mean-4.267739-std4.568997"
    inputs, counts = clap.frontend("cpu").batch([wave(3.3, CLAP_RATE), wave(16.0, CLAP_RATE)])
    assert counts == [1, 2] and clap.embed(inputs).shape == (3, 24)
    inputs, counts = ast.frontend("cpu").batch([wave(3.3, AST_RATE), wave(16.0, AST_RATE)])
    assert counts == [1, 2] and ast.embed(inputs).shape == (3, 32)


@pytest.mark.parametrize("frontend_kind", ["clap", "ast"])
def test_window_count_rule(frontend_kind: str, encoders: dict[str, HFAudioEncoder]):
    frontend = encoders[frontend_kind].frontend("cpu")
    if frontend_kind == "clap":
        window, stride = CLAP_WINDOW, CLAP_WINDOW
    else:
        window, stride = AST_WINDOW, AST_STRIDE
    half = (window + 1) // 2
    cases = {0: 0, 1: 1, window - 1: 1, window: 1, stride + half - 1: 1, stride + half: 2, stride + window: 2,
             2 * stride + half - 1: 2, 2 * stride + window - 1: 3, 2 * stride + window: 3,
             7 * stride + window + half: 9}
    assert {n: frontend.window_count(n) for n in cases} == cases


def test_the_tail_the_window_rule_drops_is_counted(encoders: dict[str, HFAudioEncoder]):
    """A 14.9 s clip is CLAP's first 10 s: the 4.9 s left are less than half a window, and are said to be unheard; a
    tail of half a window or more is padded and heard, as is a clip shorter than one window."""
    clap, ast = encoders["clap"], encoders["ast"]
    assert clap.unheard(round(14.9 * CLAP_RATE)) == round(4.9 * CLAP_RATE)
    assert ast.unheard(round(14.9 * AST_RATE)) == round(14.9 * AST_RATE) - AST_WINDOW  # past the first window's frames
    assert clap.unheard(round(3.3 * CLAP_RATE)) == 0 and clap.unheard(round(16.0 * CLAP_RATE)) == 0
    assert clap.unheard(CLAP_WINDOW) == 0 and ast.unheard(AST_STRIDE + AST_WINDOW) == 0 and clap.unheard(0) == 0
    for encoder, window, stride in ((clap, CLAP_WINDOW, CLAP_WINDOW), (ast, AST_WINDOW, AST_STRIDE)):
        frontend = encoder.frontend("cpu")
        for n in (window - 1, window + 1, stride + window // 2 - 1, stride + window // 2, 3 * stride + window + 7):
            count = frontend.window_count(n)  # whatever the windows read, the rest is what is unheard
            assert encoder.unheard(n) == max(0, n - ((count - 1) * stride + window)), n


@pytest.mark.parametrize("truncation", ["rand_trunc", "fusion"])
def test_clap_frontend_equals_the_extractor(truncation: str):
    from transformers import ClapFeatureExtractor

    extractor = ClapFeatureExtractor(frequency_min=50, truncation=truncation)
    clips = [wave(seconds, CLAP_RATE, seed=i) for i, (seconds, _) in enumerate(CLAP_CLIPS)]
    ours, counts = ClapFrontend(extractor).batch(clips)
    assert counts == [n for _, n in CLAP_CLIPS]
    assert ours.shape == (sum(counts), 4 if truncation == "fusion" else 1, 1001, 64) and ours.dtype == torch.float32
    row = 0
    for clip, count in zip(clips, counts, strict=True):
        for k in range(count):
            # The extractor sees only one window at a time: it would crop anything longer at random.
            window = clip[k * CLAP_WINDOW : (k + 1) * CLAP_WINDOW].numpy()
            theirs = extractor([window], sampling_rate=CLAP_RATE, return_tensors="pt")["input_features"][0]
            torch.testing.assert_close(ours[row], theirs, atol=1e-4, rtol=0)  # dB, values -100..+30
            row += 1


def test_ast_frontend_equals_the_extractor(ast_extractor):
    clips = [wave(seconds, AST_RATE, seed=i) for i, (seconds, _) in enumerate(AST_CLIPS)]
    ours, counts = ASTFrontend(ast_extractor).batch(clips)
    assert counts == [n for _, n in AST_CLIPS]
    assert ours.shape == (sum(counts), 1024, 128) and ours.dtype == torch.float32
    row = 0
    for clip, count in zip(clips, counts, strict=True):
        for k in range(count):
            window = clip[k * AST_STRIDE : k * AST_STRIDE + AST_WINDOW].numpy()
            theirs = ast_extractor([window], sampling_rate=AST_RATE, return_tensors="pt")["input_values"][0]
            torch.testing.assert_close(ours[row], theirs, atol=1e-5, rtol=0)
            row += 1
    # The 10.24 s clip holds 1022 frames: the last two are the extractor's zero padding, normalised.
    padded = ours[counts[0] + counts[1] + counts[2], -2:]
    assert torch.allclose(padded, torch.full_like(padded, 4.2677393 / (2 * 4.5689974)))


@pytest.mark.parametrize("name", ["clap", "clap_fused", "ast"])
def test_a_clip_embeds_the_same_alone_in_a_batch_and_twice(name: str, encoders: dict[str, HFAudioEncoder]):
    encoder = encoders[name]
    rate = encoder.sample_rate
    frontend = encoder.frontend("cpu")
    clips = [wave(0.7, rate, seed=1), wave(16.0, rate, seed=2), wave(3.3, rate, seed=3)]
    inputs, counts = frontend.batch(clips)
    again, _ = frontend.batch(clips)
    assert torch.equal(inputs, again)
    batch = encoder.embed(inputs)
    assert torch.equal(batch, encoder.embed(inputs))
    alone = torch.cat([encoder.embed(frontend.batch([clip])[0]) for clip in clips])
    torch.testing.assert_close(alone, batch, atol=1e-5, rtol=1e-5)
    # Not vacuous: different sounds embed differently.
    assert torch.cdist(batch, batch).fill_diagonal_(1.0).min() > 1e-3


@pytest.mark.parametrize("name", ["clap", "clap_fused"])
def test_clap_embed_equals_the_whole_models_normalised_audio_features(name: str, models: dict[str, Path],
                                                                      encoders: dict[str, HFAudioEncoder]):
    from transformers import ClapModel

    whole = ClapModel.from_pretrained(str(models[name])).eval()
    inputs, _ = encoders[name].frontend("cpu").batch([wave(3.3, CLAP_RATE), wave(12.0, CLAP_RATE, seed=4)])
    ours = encoders[name].embed(inputs)
    with torch.no_grad():
        out = whole.get_audio_features(input_features=inputs, is_longer=torch.zeros(len(inputs), 1, dtype=torch.bool))
    reference = torch.nn.functional.normalize(getattr(out, "pooler_output", out), dim=-1)
    torch.testing.assert_close(ours, reference, atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(ours.norm(dim=-1), torch.ones(len(inputs)))


def test_ast_embed_is_the_classifiers_backbone_pooled_output(models: dict[str, Path],
                                                            encoders: dict[str, HFAudioEncoder]):
    from transformers import ASTForAudioClassification

    classifier = ASTForAudioClassification.from_pretrained(str(models["ast"])).eval()
    inputs, _ = encoders["ast"].frontend("cpu").batch([wave(3.3, AST_RATE), wave(12.0, AST_RATE, seed=4)])
    with torch.no_grad():
        reference = classifier.audio_spectrogram_transformer(input_values=inputs).pooler_output
    torch.testing.assert_close(encoders["ast"].embed(inputs), reference, atol=1e-5, rtol=1e-5)


def test_an_empty_waveform_is_refused(encoders: dict[str, HFAudioEncoder]):
    for encoder in encoders.values():
        with pytest.raises(A2IError, match="waveform 1 has shape"):
            encoder.frontend("cpu").batch([wave(1.0, encoder.sample_rate), torch.zeros(0)])


def edit_json(path: Path, **changes) -> None:
    data = json.loads(path.read_text())
    data.update(changes)
    path.write_text(json.dumps(data))


# (folder, what to break, a word the message must hold)
REFUSALS = [
    ("clap", lambda d, m: edit_json(d / "preprocessor_config.json", truncation="fusion"), "unfused"),
    ("clap_fused", lambda d, m: edit_json(d / "preprocessor_config.json", truncation="rand_trunc"), "fused model"),
    ("clap", lambda d, m: edit_json(d / "preprocessor_config.json", feature_size=32), "32 mel bins"),
    ("clap", lambda d, m: edit_json(d / "preprocessor_config.json", sampling_rate=44_100), "sampling_rate 44100"),
    ("clap", lambda d, m: edit_json(d / "preprocessor_config.json", padding="mirror"), "padding 'mirror'"),
    ("clap", lambda d, m: edit_json(d / "preprocessor_config.json", max_length_s=20), "2001 frames"),
    ("clap", lambda d, m: edit_json(d / "preprocessor_config.json", feature_extractor_type="ASTFeatureExtractor"),
     "is a ASTFeatureExtractor"),
    ("clap", lambda d, m: shutil.copy(m["ast"] / "model.safetensors", d / "model.safetensors"), "lacks"),
    ("clap", lambda d, m: (d / "model.safetensors").unlink(), "no model.safetensors or pytorch_model.bin"),
    ("clap", lambda d, m: edit_json(d / "config.json", model_type="bert"), "'bert'"),
    ("ast", lambda d, m: edit_json(d / "preprocessor_config.json", max_length=512), "max_length 512"),
    ("ast", lambda d, m: edit_json(d / "preprocessor_config.json", num_mel_bins=64), "64 mel bins"),
    ("ast", lambda d, m: edit_json(d / "preprocessor_config.json", sampling_rate=22_050), "sampling_rate 22050"),
    ("ast", lambda d, m: (d / "preprocessor_config.json").unlink(), "no preprocessor_config.json"),
    ("ast", lambda d, m: (d / "model.safetensors").write_bytes(b"not safetensors"), "cannot load the AST model"),
]


@pytest.mark.parametrize(("name", "damage", "word"), REFUSALS, ids=[r[2] for r in REFUSALS])
def test_inconsistent_folders_are_refused_in_one_line(name, damage, word, tmp_path: Path, models: dict[str, Path]):
    folder = tmp_path / "encoder"
    shutil.copytree(models[name], folder)
    load_hf_audio_encoder(folder)  # sound before the damage
    damage(folder, models)
    with pytest.raises(A2IError) as caught:
        load_hf_audio_encoder(folder)
    message = str(caught.value)
    assert "\n" not in message and message.startswith(f"{folder}: ") and word in message, message


def test_refusals_name_the_folder_as_shown(tmp_path: Path, models: dict[str, Path]):
    folder = tmp_path / "encoder"
    shutil.copytree(models["ast"], folder)
    edit_json(folder / "preprocessor_config.json", max_length=512)
    with pytest.raises(A2IError, match=r"^models/ast: AST feature extractor max_length 512"):
        load_hf_audio_encoder(folder, shown_as="models/ast")


def test_a_pickled_checkpoint_loads_by_the_safe_unpickler_only(models, tmp_path):
    """Hub repos such as laion/clap-htsat-unfused hold pytorch_model.bin only: the same weights load and embed the
    same; a pickle that would run code is refused in one line that never advises unpickling unsafely."""
    import os
    import pickle

    from safetensors.torch import load_file

    folder = tmp_path / "bin_only"
    shutil.copytree(models["clap"], folder)
    torch.save(load_file(folder / "model.safetensors"), folder / "pytorch_model.bin")
    (folder / "model.safetensors").unlink()
    ours, theirs = load_hf_audio_encoder(models["clap"]), load_hf_audio_encoder(folder)
    inputs, _ = ours.frontend().batch([wave(3.0, CLAP_RATE, seed=4)])
    torch.testing.assert_close(theirs.embed(inputs), ours.embed(inputs))
    assert theirs.weights_sha256 != ours.weights_sha256  # another file: another record

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'ran'}",))

    (folder / "pytorch_model.bin").write_bytes(pickle.dumps({"w": Payload()}))
    with pytest.raises(A2IError, match=r"pytorch_model\.bin is not a plain tensor state dict \(refused by the safe "
                                       r"loader\)\)$") as caught:
        load_hf_audio_encoder(folder)
    assert "weights_only=False" not in str(caught.value) and not (tmp_path / "ran").exists()
