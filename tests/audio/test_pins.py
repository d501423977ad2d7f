"""A weights or PCA URL that params give no sha256 for is trusted on first use: its first download's digest is pinned
in the pin file (said loudly), every later download must match it, and a sha256 in params always wins.

Before: such a URL was refused outright ("a URL needs its full sha256 ... got None"), so VGGish's PCA, whose digest
nobody had at hand, stayed off by default.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from a2i_core.audio.prepare import prepare_audio_encoder
from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import fetch_file, sha256_file
from a2i_core.offline.tiny_audio import tiny_vggish_pca
from tests.conftest import offline
from tests.media_server import MediaServer

OTHER = "ab" * 32  # a digest no served file has


@pytest.fixture
def server(tmp_path):
    (tmp_path / "served").mkdir()
    with MediaServer(tmp_path / "served") as media:
        yield media


def _serve(server: MediaServer, name: str, data: bytes) -> tuple[str, str]:
    (server.root / name).write_bytes(data)
    return server.url + name, sha256_file(server.root / name)


def _pca_bytes(tmp_path: Path, seed: int = 0) -> bytes:
    torch.save(tiny_vggish_pca(seed), tmp_path / "pca.pth")
    return (tmp_path / "pca.pth").read_bytes()


def _with_pca(tiny_vggish_dir: Path, url: str, **kw):
    """The tiny VGGish's weights from a local file (never pinned: the user's own), its PCA from ``url``."""
    return offline("audio_encoder", weights=str(tiny_vggish_dir / "vggish.pth"), weights_sha256=None, pca=url,
                   postprocess=True, **{"pca_sha256": None, **kw})


def _one_line(err: pytest.ExceptionInfo) -> str:
    message = str(err.value)
    assert "\n" not in message and "Traceback" not in message
    return message


def _tree(folder: Path) -> dict[str, bytes]:
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_first_use_pins_the_digest_and_says_so_loudly(server, tiny_vggish_dir, tmp_path, caplog):
    url, digest = _serve(server, "pca.pth", _pca_bytes(tmp_path))
    pins, out = tmp_path / "pins.json", tmp_path / "models" / "audio_encoder"
    record = prepare_audio_encoder(_with_pca(tiny_vggish_dir, url), out, pins)
    assert json.loads(pins.read_text()) == {url: digest}  # only the URL: the local weights are the user's own
    assert record["pca"]["sha256"] == digest and sha256_file(out / "pca.pth") == digest
    [warning] = _warnings(caplog)
    assert warning.startswith(f"TRUST ON FIRST USE: {url} is now pinned in {pins} to sha256 {digest}")
    assert "audio_encoder.pca_sha256" in warning and "\n" not in warning


def test_a_pinned_file_passes_silently_and_the_pins_stay_as_they_were(server, tiny_vggish_dir, tmp_path, caplog):
    url, digest = _serve(server, "pca.pth", _pca_bytes(tmp_path))
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({url: digest}))
    before = pins.read_bytes()
    prepare_audio_encoder(_with_pca(tiny_vggish_dir, url), tmp_path / "out", pins)
    assert _warnings(caplog) == [] and pins.read_bytes() == before
    assert sha256_file(tmp_path / "out" / "pca.pth") == digest


def _previous_model(tmp_path: Path) -> Path:
    out = tmp_path / "models" / "audio_encoder"
    out.mkdir(parents=True)
    (out / "vggish.pth").write_bytes(b"the weights checked last time")
    (out / "source.json").write_text("{}\n")
    return out


def test_a_changed_file_is_refused_in_one_line_and_the_previous_model_is_kept(server, tmp_path):
    url, digest = _serve(server, "vggish.pth", b"what the URL serves now")
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({url: OTHER}))
    out = _previous_model(tmp_path)
    before, pinned = _tree(out), pins.read_bytes()
    with pytest.raises(A2IError) as err:
        prepare_audio_encoder(offline("audio_encoder", weights=url, weights_sha256=None, postprocess=False), out, pins)
    assert _one_line(err) == (
        f"{url}: the file there changed since its first use: sha256 {digest[:16]}... is not the {OTHER[:16]}... "
        f"pinned in {pins}; nothing was replaced (if the new file is the one you want, put its sha256 in "
        f"audio_encoder.weights_sha256 or delete the URL's line from {pins})")
    assert _tree(out) == before and pins.read_bytes() == pinned
    assert [p.name for p in out.parent.iterdir()] == ["audio_encoder"]  # no half-made folder beside it


def test_a_sha256_in_params_that_disagrees_with_the_pin_is_one_line(server, tmp_path):
    url, digest = _serve(server, "vggish.pth", b"weights")
    pins = tmp_path / "pins.json"
    pins.write_text(json.dumps({url: OTHER}))
    out = _previous_model(tmp_path)
    before = _tree(out)
    with pytest.raises(A2IError) as err:
        prepare_audio_encoder(offline("audio_encoder", weights=url, weights_sha256=digest, postprocess=False), out,
                              pins)
    assert _one_line(err) == (
        f"{url}: audio_encoder.weights_sha256 says sha256 {digest[:16]}..., but {pins} pins it to {OTHER[:16]}...: "
        f"if audio_encoder.weights_sha256 is right, delete the URL's line from {pins}; else correct "
        "audio_encoder.weights_sha256")
    assert server.requests == [] and _tree(out) == before  # refused before anything was downloaded


def test_a_file_refused_on_first_use_is_not_pinned(server, tmp_path, caplog):
    url, _ = _serve(server, "vggish.pth", b"not a state dict")
    pins, out = tmp_path / "pins.json", tmp_path / "models" / "audio_encoder"
    with pytest.raises(A2IError) as err:
        prepare_audio_encoder(offline("audio_encoder", weights=url, weights_sha256=None, postprocess=False), out, pins)
    assert _one_line(err).endswith(": removed")
    # Pinned, it would hold the URL to a file nobody could use; the pin file exists, as the stage's output must.
    assert json.loads(pins.read_text()) == {} and _warnings(caplog) == [] and not out.exists()


@pytest.mark.parametrize("text,expected", [
    ("pinned: yes", "not valid JSON"),
    ("[]", "expected a JSON object of URL -> sha256, got list"),
    ('{"http://x/vggish.pth": "abc"}', "'http://x/vggish.pth': expected its sha256 (64 lowercase hex digits), got "
                                       "'abc'"),
])
def test_a_malformed_pin_file_is_one_line_naming_it(server, tmp_path, text, expected):
    url, _ = _serve(server, "vggish.pth", b"weights")
    pins = tmp_path / "pins.json"
    pins.write_text(text)
    with pytest.raises(A2IError) as err:
        fetch_file(url, tmp_path / "vggish.pth", None, pins)
    message = _one_line(err)
    assert message.startswith(f"{pins}: ") and expected in message
    assert server.requests == [] and not (tmp_path / "vggish.pth").exists()
