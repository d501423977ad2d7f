import json

import pytest
import torch

from a2i_core.audio.encoder import load_audio_encoder
from a2i_core.audio.prepare import prepare_audio_encoder, prepare_vggish
from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import fetch_file, sha256_file
from a2i_core.core.hub import model_identity, sd3_source
from a2i_core.core.params import AudioEncoderParams
from a2i_core.diffusion.prepare import prepare_sd3
from a2i_core.diffusion.sd3 import load_sd3
from tests.conftest import offline


def _params(**kw) -> AudioEncoderParams:
    """The offline profile's audio_encoder without the PCA unless asked for: these tests are about the weights."""
    return offline("audio_encoder", **{"postprocess": False, **kw})


def test_tiny_vggish_is_saved_like_the_release_and_loads_back(tiny_vggish_dir):
    record = json.loads((tiny_vggish_dir / "source.json").read_text())
    assert record["weights"]["sha256"] == sha256_file(tiny_vggish_dir / "vggish.pth")
    encoder = load_audio_encoder(tiny_vggish_dir, postprocess=True)
    assert encoder.postprocessor is not None and encoder.weights_sha256 == record["weights"]["sha256"]


def test_weights_from_a_file_url_are_sha_checked(tmp_path, tiny_vggish_dir):
    src = tiny_vggish_dir / "vggish.pth"
    digest = sha256_file(src)
    out = tmp_path / "vggish"
    prepare_vggish(_params(weights=src.as_uri(), weights_sha256=digest), out)
    assert sha256_file(out / "vggish.pth") == digest
    with pytest.raises(A2IError, match="does not match the expected 0000000000"):
        fetch_file(src.as_uri(), tmp_path / "x.pth", "0" * 64)
    with pytest.raises(A2IError, match="a URL needs its full sha256"):  # a prefix pins a URL too loosely
        fetch_file(src.as_uri(), tmp_path / "x.pth", digest[:8])
    with pytest.raises(A2IError, match="got None, and nothing here pins it on first use"):  # no pin file given
        prepare_vggish(_params(weights=src.as_uri(), weights_sha256=None), tmp_path / "x")
    assert not (tmp_path / "x.pth").exists()


def test_wrong_weights_are_refused(tmp_path):
    bad = tmp_path / "bad.pth"
    torch.save({"features.0.weight": torch.zeros(1)}, bad)
    with pytest.raises(A2IError, match="do not match the torchvggish architecture"):
        prepare_vggish(_params(weights=str(bad)), tmp_path / "out")
    with pytest.raises(A2IError, match="no such file"):
        prepare_vggish(_params(weights=str(tmp_path / "missing.pth")), tmp_path / "out")


def test_tiny_sd3_loads_text_or_image_side_only(tiny_sd3_dir):
    assert sd3_source(tiny_sd3_dir) == (str(tiny_sd3_dir), None)
    text = load_sd3(tiny_sd3_dir, "text", torch.device("cpu"))
    assert text.transformer is None and text.vae is None and text.text_encoder_3 is not None
    image = load_sd3(tiny_sd3_dir, "image", torch.device("cpu"))
    assert image.text_encoder is None and image.text_encoder_3 is None and image.transformer is not None


def test_a_local_sd3_directory_is_pinned(tmp_path, tiny_sd3_dir):
    prepare_sd3(str(tiny_sd3_dir), tmp_path / "sd3")
    assert sd3_source(tmp_path / "sd3") == (str(tiny_sd3_dir.resolve()), None)
    assert model_identity(tmp_path / "sd3") == str(tiny_sd3_dir.resolve())
    assert model_identity(tiny_sd3_dir) == "tiny"  # the same name wherever a tiny SD3 was built
    with pytest.raises(A2IError, match="not a saved model directory"):
        prepare_sd3(str(tmp_path), tmp_path / "other")


def test_missing_encoders_point_at_the_stage(tmp_path):
    with pytest.raises(A2IError, match="dvc repro audio_encoder"):
        load_audio_encoder(tmp_path, postprocess=False)
    with pytest.raises(A2IError, match="dvc repro encoders"):
        sd3_source(tmp_path)


def test_the_real_stages_refuse_tiny_models_and_name_the_demo(tmp_path):
    for prepare in (lambda: prepare_vggish(_params(weights="tiny"), tmp_path / "vggish"),
                    lambda: prepare_sd3("tiny", tmp_path / "sd3"),
                    lambda: prepare_audio_encoder(_params(model="clap", checkpoint="tiny"), tmp_path / "clap")):
        with pytest.raises(A2IError, match="tiny models are the offline demo's.*a2i demo"):
            prepare()
    assert list(tmp_path.iterdir()) == []
