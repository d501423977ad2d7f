"""Models from outside (a pulled mapper, weights from a URL) are checked before they are used, and fail in one line.

A tampered config.json may ask for a terabyte or switch the provenance checks off; a weights file may be a pickle
that runs code; a URL may carry a password or a signed query. None of it may turn into a traceback, a huge
allocation, a file left in ``models/``, or a secret in an error or a DVC output.
"""

from __future__ import annotations

import json
import pickle
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from safetensors.torch import save_file

from a2i_core.audio.prepare import prepare_vggish
from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import fetch_file, local_copy, sha256_file
from a2i_core.core.provenance import Provenance
from a2i_core.mapper import model as mapper_module
from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig
from a2i_core.offline.audio_encoder import build_audio_encoder
from a2i_core.offline.tiny_audio import tiny_vggish_pca, tiny_vggish_weights
from a2i_core.offline.workspace import tool_env
from tests.conftest import offline
from tests.mapper.test_model import PROVENANCE
from tests.media_server import MediaServer

PASSWORD, SIGNATURE = "pw-7f3a", "secret-9c1e"


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


# --- the mapper's config.json ---------------------------------------------------------------------

@pytest.fixture
def saved_mapper(tmp_path) -> Path:
    config = MapperConfig(in_dim=8, pooled_dim=4, hidden=[16], dropout=[0.1], provenance=PROVENANCE)
    AudioToSD3Mapper(config).save_pretrained(tmp_path / "mapper")
    return tmp_path / "mapper"


def _tamper(directory: Path, change) -> Path:
    path = directory / "config.json"
    data = json.loads(path.read_text())
    change(data)
    path.write_text(json.dumps(data))
    return path


CONFIG_CASES = {
    "unknown key": (lambda c: c.update(layers=3), "layers: unknown key"),
    "missing key": (lambda c: c.pop("hidden"), "hidden: missing"),
    "wrong type": (lambda c: c.update(hidden=["16"]), "hidden[0]: expected int"),
    "huge layer": (lambda c: c.update(hidden=[2_000_000_000]), "hidden[0]: must be in [1, 65536], got 2000000000"),
    # Each layer within its cap, the whole far over: counted from the config, refused before allocation.
    "huge total": (lambda c: c.update(hidden=[60_000] * 5, dropout=[0.0] * 5), "hidden: the mapper would have"),
    "huge tokens": (lambda c: c.update(tokens=4096, token_width=65536), "tokens: the mapper would have"),
    "bogus input": (lambda c: c.update(input="bogus"), "input: must be one of mean, frames, got 'bogus'"),
    "dropout length": (lambda c: c.update(dropout=[0.1, 0.1]), "dropout: needs one value per hidden layer"),
    "dropout range": (lambda c: c.update(dropout=[1.5]), "dropout[0]: must be in [0, 1)"),
    "frames width": (lambda c: c.update(input="frames", frames_width=30), "frames_width: must be a multiple of 4"),
    "empty provenance": (lambda c: c.update(provenance={}), "provenance.encoder_sha256: missing"),
    "provenance not a mapping": (lambda c: c.update(provenance=None), "provenance: expected a mapping"),
    "short sha256": (lambda c: c["provenance"].update(encoder_sha256="abc"),
                     "provenance.encoder_sha256: must be 64 lowercase hex digits, got 'abc'"),
    "empty sha256": (lambda c: c["provenance"].update(encoder_sha256=""), "provenance.encoder_sha256: must be 64"),
    "empty frontend": (lambda c: c["provenance"].update(frontend=" "), "provenance.frontend: must not be empty"),
    "empty model": (lambda c: c["provenance"].update(diffusion_model=""),
                    "provenance.diffusion_model: must not be empty"),
    "zero shape": (lambda c: c["provenance"].update(sequence_shape=[0, 32]),
                   "provenance.sequence_shape: must be two positive integers"),
    "unknown provenance key": (lambda c: c["provenance"].update(extra=1), "provenance.extra: unknown key"),
}


@pytest.mark.parametrize("case", CONFIG_CASES)
def test_a_tampered_config_fails_in_one_line_before_any_tensor(saved_mapper, monkeypatch, case):
    change, expected = CONFIG_CASES[case]
    path = _tamper(saved_mapper, change)

    def no_model(*args, **kwargs):
        raise AssertionError("the mapper was built from a config that should have been refused")

    monkeypatch.setattr(mapper_module.AudioToSD3Mapper, "__init__", no_model)
    with pytest.raises(A2IError) as err:
        AudioToSD3Mapper.from_pretrained(saved_mapper)
    assert _one_line(err).startswith(f"{path}: ") and expected in str(err.value)


@pytest.mark.parametrize(("content", "expected"), [("{not json", "not valid JSON (Expecting property name"),
                                                   ("[1, 2]", "top level: expected a mapping, got list"),
                                                   ("\"text\"", "top level: expected a mapping, got str")])
def test_a_config_that_is_no_object_is_refused(saved_mapper, content, expected):
    (saved_mapper / "config.json").write_text(content)
    with pytest.raises(A2IError) as err:
        AudioToSD3Mapper.from_pretrained(saved_mapper)
    assert _one_line(err).startswith(f"{saved_mapper / 'config.json'}: ") and expected in str(err.value)


def test_weights_that_do_not_fit_the_config_are_refused_naming_the_tensor(saved_mapper, tmp_path):
    weights = saved_mapper / "model.safetensors"
    other = MapperConfig(in_dim=8, pooled_dim=4, hidden=[32], dropout=[0.1], provenance=PROVENANCE)
    AudioToSD3Mapper(other).save_pretrained(tmp_path / "other")
    shutil.copy(tmp_path / "other" / "model.safetensors", weights)
    with pytest.raises(A2IError) as err:
        AudioToSD3Mapper.from_pretrained(saved_mapper)
    assert _one_line(err) == (f"{weights}: net.0.weight: shape (32, 8), but config.json makes it (16, 8)")

    state = {k: v for k, v in AudioToSD3Mapper.from_pretrained(tmp_path / "other").state_dict().items()}
    save_file({k: v for k, v in state.items() if k != "input_std"}, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(A2IError, match=r"model.safetensors: input_std: missing$"):
        AudioToSD3Mapper.from_pretrained(tmp_path / "other")
    save_file({**state, "extra": torch.zeros(1)}, str(tmp_path / "other" / "model.safetensors"))
    with pytest.raises(A2IError, match=r"model.safetensors: extra: unexpected tensor$"):
        AudioToSD3Mapper.from_pretrained(tmp_path / "other")

    weights.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{garbage")
    with pytest.raises(A2IError) as err:
        AudioToSD3Mapper.from_pretrained(saved_mapper)
    assert _one_line(err).startswith(f"{weights}: not a readable safetensors file")
    weights.unlink()
    with pytest.raises(A2IError, match="no trained mapper"):
        AudioToSD3Mapper.from_pretrained(saved_mapper)


def _sound(tmp_path: Path) -> Path:
    sf.write(tmp_path / "x.wav", np.random.default_rng(0).uniform(-0.5, 0.5, 16000), 16000)
    return tmp_path / "x.wav"


def test_the_cli_refuses_a_tampered_mapper_in_one_line(saved_mapper, tmp_path):
    # The CLI reads the mapper before VGGish and SD3; a tampered provenance must not switch its checks off.
    path = _tamper(saved_mapper, lambda c: c.update(provenance={}))
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "generate", str(_sound(tmp_path)), "--out",
                             str(tmp_path / "out"), "--mapper", str(saved_mapper), "--project", str(tmp_path)],
                            env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {path}: provenance.encoder_sha256: missing"


@pytest.mark.e2e
def test_the_cli_refuses_a_tampered_copy_of_the_demo_mapper(demo_workspace, tmp_path):
    ws = demo_workspace[0]
    copy = tmp_path / "mapper"
    shutil.copytree(ws / "models/mapper", copy)
    path = _tamper(copy, lambda c: c.update(hidden=[2_000_000_000]))
    result = subprocess.run([sys.executable, "-m", "a2i_core.cli", "generate", str(_sound(tmp_path)), "--out",
                             str(tmp_path / "out"), "--mapper", str(copy), "--project", str(ws), "--device", "cpu"],
                            env=tool_env(), capture_output=True, text=True)
    assert result.returncode == 1 and "Traceback" not in result.stderr
    assert result.stderr.strip() == f"error: {path}: hidden[0]: must be in [1, 65536], got 2000000000"


# --- VGGish weights from a URL --------------------------------------------------------------------

class Payload:
    """A pickle that would create ``marker`` when unpickled unsafely."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


@pytest.fixture
def server(tmp_path):
    root = tmp_path / "served"
    root.mkdir()
    with MediaServer(root) as media:
        media.auth: list[str | None] = []
        handler = media.httpd.RequestHandlerClass

        class Recording(handler):  # also records the Authorization header each request carried
            def do_GET(self) -> None:
                media.auth.append(self.headers.get("Authorization"))
                super().do_GET()

        media.httpd.RequestHandlerClass = Recording
        yield media


def _serve(server: MediaServer, name: str, data: bytes) -> tuple[str, str]:
    (server.root / name).write_bytes(data)
    return server.url + name, sha256_file(server.root / name)


def _torch_bytes(obj, tmp_path: Path) -> bytes:
    torch.save(obj, tmp_path / "obj.pth")
    return (tmp_path / "obj.pth").read_bytes()


def test_a_url_needs_its_whole_sha256(server, tmp_path):
    url, digest = _serve(server, "vggish.pth", _torch_bytes(tiny_vggish_weights(), tmp_path))
    with pytest.raises(ValueError, match="weights is a URL: give its full sha256"):
        offline("audio_encoder", weights=url, weights_sha256=digest[:8])
    with pytest.raises(A2IError) as err:  # fetch_file refuses too, before downloading anything
        fetch_file(url, tmp_path / "out.pth", digest[:8])
    assert "a URL needs its full sha256" in _one_line(err)
    assert server.requests == [] and not (tmp_path / "out.pth").exists()


def test_a_file_with_another_digest_is_refused_and_not_left(server, tmp_path):
    url, _ = _serve(server, "vggish.pth", _torch_bytes(tiny_vggish_weights(), tmp_path))
    out = tmp_path / "models" / "vggish"
    with pytest.raises(A2IError) as err:
        prepare_vggish(offline("audio_encoder", weights=url, weights_sha256="0" * 64), out)
    assert "does not match the expected 0000" in _one_line(err)
    assert not out.exists() and list((tmp_path / "models").iterdir()) == []


@pytest.mark.parametrize("kind", ["raw pickle", "torch.save of an object", "torch.save of a list"])
def test_a_pickle_that_is_no_tensor_dict_is_refused_and_removed(server, tmp_path, kind):
    marker = tmp_path / "ran"
    data = {"raw pickle": lambda: pickle.dumps(Payload(marker)),
            "torch.save of an object": lambda: _torch_bytes(Payload(marker), tmp_path),
            "torch.save of a list": lambda: _torch_bytes([torch.zeros(2)], tmp_path)}[kind]()
    url, digest = _serve(server, "vggish.pth", data)
    out = tmp_path / "models" / "vggish"
    with pytest.raises(A2IError) as err:
        prepare_vggish(offline("audio_encoder", weights=url, weights_sha256=digest), out)
    message = _one_line(err)
    assert message.startswith(f"{out / 'vggish.pth'}: not a plain tensor state dict") and message.endswith(": removed")
    assert "weights_only" not in message
    assert not marker.exists() and not out.exists() and list((tmp_path / "models").iterdir()) == []


def test_a_bad_pca_file_is_refused_and_a_previous_good_model_is_kept(server, tmp_path):
    out = tmp_path / "models" / "vggish"
    build_audio_encoder(offline("audio_encoder", pca="tiny", postprocess=True), out)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    pca = tiny_vggish_pca()
    for data, expected in [(pickle.dumps(Payload(tmp_path / "ran")), "not a plain tensor state dict"),
                           (_torch_bytes({**pca, "pca_means": torch.zeros(3)}, tmp_path),
                            "VGGish PCA does not match the embedding"),
                           (_torch_bytes({"features.0.weight": torch.zeros(1)}, tmp_path),
                            "VGGish PCA file must hold")]:
        url, digest = _serve(server, "pca.pth", data)
        params = offline("audio_encoder", pca=url, pca_sha256=digest, postprocess=True)
        with pytest.raises(A2IError) as err:
            build_audio_encoder(params, out)  # tiny weights, the PCA from the URL through the real fetch
        assert _one_line(err).startswith(f"{out / 'pca.pth'}: {expected}") and str(err.value).endswith(": removed")
        assert {p.name: p.read_bytes() for p in out.iterdir()} == before  # the bad file never appeared
    assert not (tmp_path / "ran").exists()


def test_weights_of_another_architecture_are_removed(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    out = tmp_path / "models" / "vggish"
    with pytest.raises(A2IError) as err:
        prepare_vggish(offline("audio_encoder", weights=str(bad)), out)
    assert _one_line(err).startswith(f"{out / 'vggish.pth'}: VGGish weights do not match the torchvggish")
    assert not out.exists()


# --- secrets in URLs ------------------------------------------------------------------------------

def _with_secrets(url: str) -> str:
    return url.replace("http://", f"http://alice:{PASSWORD}@") + f"?X-Amz-Signature={SIGNATURE}"


def test_secrets_never_reach_an_error_or_source_json(server, tmp_path):
    out = tmp_path / "models" / "vggish"
    missing = _with_secrets(server.url + "missing.pth")
    with pytest.raises(A2IError) as err:
        prepare_vggish(offline("audio_encoder", weights=missing, weights_sha256="0" * 64), out)
    message = _one_line(err)
    assert "HTTP Error 404" in message and "missing.pth" in message
    assert PASSWORD not in message and SIGNATURE not in message

    url, digest = _serve(server, "vggish.pth", _torch_bytes(tiny_vggish_weights(), tmp_path))
    prepare_vggish(offline("audio_encoder", weights=_with_secrets(url), weights_sha256=digest), out)
    source = (out / "source.json").read_text()
    assert PASSWORD not in source and SIGNATURE not in source
    assert json.loads(source)["weights"]["source"].endswith("/media/vggish.pth?X-Amz-Signature=REDACTED")
    assert server.auth[-1] == "Basic YWxpY2U6cHctN2YzYQ=="  # alice:pw-7f3a, sent as a header, not as a host name


def test_the_metadata_cache_names_hold_no_secret(server, tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    url, _ = _serve(server, "labels.csv", b"index,mid,display_name\n")
    first, second = local_copy(_with_secrets(url)), local_copy(_with_secrets(url).replace("9c1e", "0000"))
    assert first != second and first.read_bytes() == second.read_bytes()  # distinct URLs, distinct copies
    assert first.name.endswith("-labels.csv") and local_copy(_with_secrets(url)) == first  # fetched once
    with pytest.raises(A2IError) as err:
        local_copy(_with_secrets(server.url + "gone.csv"))
    message = _one_line(err)
    names = [p.name for p in (tmp_path / "cache").rglob("*")]
    for text in [message, *names]:
        assert PASSWORD not in text and "secret" not in text


def test_a_tampered_artifact_fails_in_one_line(tmp_path):
    from a2i_core.mapper.artifact import MapperArtifact

    mapper = AudioToSD3Mapper(MapperConfig(in_dim=8, pooled_dim=4, hidden=[16], dropout=[0.1], provenance=PROVENANCE))
    artifact = MapperArtifact(mapper, np.zeros(4, np.float32), np.zeros((3, 2), np.float32), ["a", "b"],
                              np.ones((2, 4), np.float32))
    artifact.save(tmp_path / "m")
    assert MapperArtifact.load(tmp_path / "m").prompts == ["a", "b"]
    (tmp_path / "m" / "prompts.json").write_text('["a", "b", "c"]')
    with pytest.raises(A2IError) as err:
        MapperArtifact.load(tmp_path / "m")
    assert _one_line(err) == (f"{tmp_path / 'm' / 'prompt_bank.safetensors'}: pooled: shape (2, 4), but the mapper "
                              "and prompts.json make it (3, 4)")
    (tmp_path / "m" / "prompts.json").write_text('{"a": 1}')
    with pytest.raises(A2IError, match=r"prompts.json: expected a list of prompts \(strings\)$"):
        MapperArtifact.load(tmp_path / "m")
    (tmp_path / "m" / "prompts.json").write_text('["a", "b"]')
    save_file({"empty_pooled": torch.zeros(5), "empty_sequence": torch.zeros(3, 2)},
              str(tmp_path / "m" / "guidance.safetensors"))
    with pytest.raises(A2IError, match=r"guidance.safetensors: empty_pooled: shape \(5,\), but the mapper makes it "
                                       r"\(4,\)$"):
        MapperArtifact.load(tmp_path / "m")


def test_a_mapper_too_large_for_its_caps_is_one_line_at_train():
    # Before: the default hidden sizes with 256 of SD3's 4096-wide tokens were a ValueError traceback in train.
    from a2i_core.mapper.train import mapper_config

    params = offline("mapper", target="pooled+tokens")
    provenance = Provenance(encoder_sha256="ab" * 32, postprocess=False, frontend="f", diffusion_model="tiny",
                            sequence_shape=(333, 4096))
    with pytest.raises(A2IError, match=r"^mapper: tokens: the mapper would have .* parameters \(at most 1e\+09\) "
                                       r"\(see mapper.hidden, mapper.target and diffusion.tokens\)$"):
        mapper_config(params, 128, 2048, (256, 4096), provenance)
