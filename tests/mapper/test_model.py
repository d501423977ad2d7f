import pytest
import torch

from a2i_core.core.errors import A2IError
from a2i_core.core.provenance import Provenance
from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig

PROVENANCE = Provenance(encoder_sha256="ab" * 32, postprocess=True, frontend="f", diffusion_model="tiny",
                        sequence_shape=(109, 32))


def _mapper() -> AudioToSD3Mapper:
    config = MapperConfig(in_dim=128, pooled_dim=2048, hidden=[512, 1024, 1024], dropout=[0.3, 0.3, 0.4],
                          provenance=PROVENANCE)
    return AudioToSD3Mapper(config)


def test_layout_of_the_study():
    model = _mapper()
    kinds = [type(m).__name__ for m in model.net]
    assert kinds == ["Linear", "LayerNorm", "GELU", "Dropout"] * 3 + ["Linear"]
    assert [m.p for m in model.net if isinstance(m, torch.nn.Dropout)] == [0.3, 0.3, 0.4]
    assert model(torch.randn(5, 128)).shape == (5, 2048)


def test_save_and_load_roundtrip(tmp_path):
    model = _mapper()
    model.set_input_stats(torch.full((128,), 2.0), torch.full((128,), 3.0))
    model.save_pretrained(tmp_path / "mapper")
    back = AudioToSD3Mapper.from_pretrained(tmp_path / "mapper")
    x = torch.randn(4, 128)
    assert torch.equal(model.eval()(x), back(x))
    assert back.config == model.config
    assert sorted(p.name for p in (tmp_path / "mapper").iterdir()) == ["config.json", "model.safetensors"]


def test_mismatched_features_are_refused(tmp_path):
    model = _mapper()
    model.config.provenance.check("features", postprocess=True, sequence_shape=[109, 32])
    with pytest.raises(A2IError, match="features: postprocess is False, but the mapper was trained with True"):
        model.config.provenance.check("features", postprocess=False)
    with pytest.raises(A2IError, match=r"sequence_shape is \(77, 32\), but the mapper was trained with \(109, 32\)"):
        model.config.provenance.check("features", sequence_shape=(77, 32))
    with pytest.raises(A2IError, match="no trained mapper"):
        AudioToSD3Mapper.from_pretrained(tmp_path)


def test_frames_input_and_token_target(tmp_path):
    config = MapperConfig(in_dim=128, pooled_dim=64, hidden=[32], dropout=[0.1], tokens=3, token_width=16,
                          provenance=PROVENANCE, input="frames", frames_width=32, frames_layers=1, max_frames=8)
    model = AudioToSD3Mapper(config).eval()
    frames = torch.randn(2, 5, 128)
    mask = torch.tensor([[True] * 5, [True, True, False, False, False]])
    out = model(frames, mask)
    assert out.shape == (2, 64 + 3 * 16)
    pooled, tokens = model.pooled_and_tokens(out)
    assert pooled.shape == (2, 64) and tokens.shape == (2, 3, 16)
    # Padding frames do not change a clip's output.
    changed = frames.clone()
    changed[1, 2:] = 99.0
    assert torch.allclose(model(changed, mask)[1], out[1], atol=1e-5)
    model.save_pretrained(tmp_path / "m")
    assert torch.allclose(AudioToSD3Mapper.from_pretrained(tmp_path / "m")(frames, mask), out, atol=1e-6)
