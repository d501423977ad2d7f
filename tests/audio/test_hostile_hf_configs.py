"""CLAP and AST folders whose configs ask for absurd models: refused in one line naming the file and the key, before
any module or filter bank is built (a config of 10^6 AST layers once ran for minutes, its memory rising)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

from a2i_core.audio import clap_ast
from a2i_core.audio.clap_ast import MAX_CONFIG_BYTES, MAX_PARAMETERS, load_hf_audio_encoder
from a2i_core.core.errors import A2IError
from a2i_core.offline.tiny_audio import save_tiny_ast, save_tiny_clap


class Built(BaseException):
    """Raised by a model or extractor that the check should have kept from being built (escapes ``except
    Exception``)."""


@pytest.fixture(scope="module")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny_hf")
    save_tiny_clap(root / "clap")
    save_tiny_ast(root / "ast")
    return {"clap": root / "clap", "ast": root / "ast"}


def copy(tiny: dict[str, Path], name: str, tmp_path: Path) -> Path:
    """The tiny folder's configs, copied (to be edited), beside a link to its weights."""
    folder = tmp_path / name
    folder.mkdir()
    for file in ("config.json", "preprocessor_config.json"):
        shutil.copy(tiny[name] / file, folder / file)
    (folder / "model.safetensors").symlink_to(tiny[name] / "model.safetensors")
    return folder


def edit(path: Path, **changes: object) -> None:
    data = json.loads(path.read_text())
    target = data.get("audio_config", data)  # a whole ClapModel: its audio tower's
    target.update(changes)
    path.write_text(json.dumps(data))


@pytest.fixture
def nothing_built(monkeypatch: pytest.MonkeyPatch) -> None:
    from transformers import ASTFeatureExtractor, ASTModel, ClapAudioModelWithProjection, ClapFeatureExtractor

    def built(*args: object, **kwargs: object) -> None:
        raise Built

    for cls in (ASTModel, ClapAudioModelWithProjection, ASTFeatureExtractor, ClapFeatureExtractor):
        monkeypatch.setattr(cls, "from_pretrained", built)


HUGE = 10**9
CONFIGS: list[tuple[str, dict, str]] = [  # (folder, config.json changes, what the message must hold)
    ("ast", {"num_hidden_layers": 10**6}, "config.json num_hidden_layers is 1000000: more than 96"),
    ("ast", {"hidden_size": HUGE}, "config.json hidden_size is 1000000000: more than 8192"),
    ("ast", {"intermediate_size": HUGE}, "config.json intermediate_size is 1000000000"),
    ("ast", {"num_attention_heads": HUGE}, "config.json num_attention_heads is 1000000000"),
    ("ast", {"num_mel_bins": HUGE}, "config.json num_mel_bins is 1000000000"),
    ("ast", {"max_length": HUGE}, "config.json max_length is 1000000000"),
    ("ast", {"patch_size": 10**4}, "config.json patch_size is 10000"),
    ("ast", {"frequency_stride": 0}, "config.json frequency_stride is 0: expected at least 1"),
    ("ast", {"num_hidden_layers": -3}, "config.json num_hidden_layers is -3: expected at least 1"),
    ("ast", {"time_stride": 1, "frequency_stride": 1}, "config.json patch_size and strides cut a window of 1024 x "
                                                       "128 into 114017 patches"),
    ("ast", {"num_hidden_layers": 96, "hidden_size": 8192, "intermediate_size": 32768}, "config.json describes a "
                                                                                         "model of about 77,316 M"),
    ("ast", {"num_hidden_layers": 1e6}, "config.json is not an AST config (Validation error for field "
                                        "'num_hidden_layers'"),
    ("clap", {"depths": [10**6, 1]}, "config.json audio_config.depths[0] is 1000000: more than 96"),
    ("clap", {"depths": [50, 50]}, "config.json audio_config.depths sums to 100 layers: more than 96"),
    ("clap", {"depths": [1] * 20, "num_attention_heads": [1] * 20}, "audio_config.depths has 20 stages"),
    ("clap", {"num_attention_heads": [2]}, "audio_config.num_attention_heads has 1 entries for 2 stages"),
    ("clap", {"num_attention_heads": [2, HUGE]}, "audio_config.num_attention_heads[1] is 1000000000"),
    ("clap", {"hidden_size": HUGE}, "config.json audio_config.hidden_size is 1000000000: more than 8192"),
    ("clap", {"projection_dim": HUGE}, "audio_config.projection_dim is 1000000000"),
    ("clap", {"patch_embeds_hidden_size": 8192}, "audio_config.patch_embeds_hidden_size 8192, doubled by each of 2 "
                                                 "stages, is 16384 wide"),
    ("clap", {"window_size": 1000}, "audio_config.window_size is 1000: more than 16"),
    ("clap", {"spec_size": 10**6}, "audio_config.spec_size is 1000000"),
    ("clap", {"spec_size": 1024, "patch_stride": [1, 1]}, "audio_config.patch_stride cuts the 1024 x 1024 image "
                                                          "(spec_size) into 1048576 patches"),
    ("clap", {"patch_size": [4, HUGE]}, "audio_config.patch_size[1] is 1000000000"),
    ("clap", {"mlp_ratio": 1e9}, "audio_config.mlp_ratio is 1000000000.0: more than 16"),
    ("clap", {"num_mel_bins": HUGE}, "audio_config.num_mel_bins is 1000000000"),
    ("clap", {"patch_embed_input_channels": HUGE}, "audio_config.patch_embed_input_channels is 1000000000"),
]


def check_refusal(folder: Path, words: str) -> str:
    with pytest.raises(A2IError) as caught:
        load_hf_audio_encoder(folder, shown_as="models/enc")
    message = str(caught.value)
    assert "\n" not in message and message.startswith("models/enc: ") and words in message, message
    assert message.count("models/enc") == 1 and "above report" not in message
    return message


@pytest.mark.parametrize(("name", "changes", "words"), CONFIGS, ids=[c[2][:50] for c in CONFIGS])
@pytest.mark.usefixtures("nothing_built")
def test_a_config_past_the_bounds_is_refused_before_anything_is_built(name: str, changes: dict, words: str,
                                                                      tiny: dict[str, Path], tmp_path: Path):
    folder = copy(tiny, name, tmp_path)
    edit(folder / "config.json", **changes)
    check_refusal(folder, words)


EXTRACTORS: list[tuple[str, dict, str]] = [  # (folder, preprocessor_config.json changes, message words)
    ("clap", {"feature_size": 10**7}, "preprocessor_config.json feature_size is 10000000: more than 512"),
    ("clap", {"fft_window_size": 10**8}, "preprocessor_config.json fft_window_size is 100000000"),
    ("clap", {"hop_length": 0}, "preprocessor_config.json hop_length is 0: expected at least 1"),
    ("clap", {"max_length_s": 1e6}, "preprocessor_config.json max_length_s is 1000000.0: more than 60"),
    ("clap", {"feature_size": "64"}, "preprocessor_config.json feature_size is '64': expected an integer"),
    ("clap", {"hop_length": 10**400}, f"preprocessor_config.json hop_length is {'1' + '0' * 36}...: more than 16384"),
    ("clap", {"max_length_s": float("nan")}, "preprocessor_config.json max_length_s is nan: expected a number"),
    ("ast", {"num_mel_bins": 10**7}, "preprocessor_config.json num_mel_bins is 10000000"),
    ("ast", {"max_length": HUGE}, "preprocessor_config.json max_length is 1000000000: more than 4096"),
]


@pytest.mark.parametrize(("name", "changes", "words"), EXTRACTORS, ids=[c[2][:50] for c in EXTRACTORS])
@pytest.mark.usefixtures("nothing_built")
def test_an_extractor_past_the_bounds_is_refused_before_its_filter_banks(name: str, changes: dict, words: str,
                                                                         tiny: dict[str, Path], tmp_path: Path):
    folder = copy(tiny, name, tmp_path)
    edit(folder / "preprocessor_config.json", **changes)
    check_refusal(folder, words)


FILES: list[tuple[str, Callable[[Path], None], str]] = [
    ("huge", lambda p: p.write_text(json.dumps({"model_type": "clap", "pad": "x" * MAX_CONFIG_BYTES})),
     "config.json is over 1 MiB"),
    ("nested", lambda p: p.write_text("[" * 100_000 + "]" * 100_000), "config.json is not readable JSON"),
    ("digits", lambda p: p.write_text('{"model_type": "clap", "x": 1' + "0" * 10_000 + "}"),
     "config.json is not readable JSON"),
    ("not an object", lambda p: p.write_text('{"model_type": "clap", "audio_config": [1]}'),
     "config.json audio_config is [1]: expected an object"),
]


@pytest.mark.parametrize(("case", "damage", "words"), FILES, ids=[c[0] for c in FILES])
@pytest.mark.usefixtures("nothing_built")
def test_a_config_file_that_is_no_model_s_settings_is_refused(case: str, damage: Callable[[Path], None], words: str,
                                                              tiny: dict[str, Path], tmp_path: Path):
    folder = copy(tiny, "clap", tmp_path)
    damage(folder / "config.json")
    check_refusal(folder, words)


def test_weights_of_other_shapes_are_named_not_pointed_at_an_unshown_report(tiny: dict[str, Path], tmp_path: Path):
    """Within the bounds, a config wider than its weights: the tensor and both shapes, not transformers' "look at the
    above report" (a report it logs, which is kept quiet)."""
    folder = copy(tiny, "ast", tmp_path)
    edit(folder / "config.json", hidden_size=64)
    check_refusal(folder, "model.safetensors does not fit config.json: embeddings.cls_token is (1, 1, 32) there, "
                          "(1, 1, 64) by the config")


def test_released_configs_are_within_the_bounds_and_the_estimate_is_close():
    """transformers' defaults are the released towers (AST base; laion's CLAP HTSAT), with laion's larger CLAP and a
    fused one: all pass, and the parameter estimate the cap reads is within 1% of the built model's count."""
    from transformers import ASTConfig, ASTModel, ClapAudioConfig, ClapAudioModelWithProjection

    cases = [(ASTConfig(), "ast", ASTModel), (ClapAudioConfig(), "clap", ClapAudioModelWithProjection),
             (ClapAudioConfig(patch_embeds_hidden_size=128, hidden_size=1024, depths=[2, 2, 12, 2]), "clap",
              ClapAudioModelWithProjection),
             (ClapAudioConfig(enable_fusion=True, fusion_type="aff_2d"), "clap", ClapAudioModelWithProjection)]
    for config, kind, cls in cases:
        checked = clap_ast._model_config(config.to_dict(), kind, Path("released"))
        bound = clap_ast._bound_clap if kind == "clap" else clap_ast._bound_ast
        estimate = bound(checked, clap_ast._Where(Path("released"), "config.json"))
        with torch.device("meta"):
            count = sum(p.numel() for p in cls(checked).parameters())
        assert abs(estimate - count) < 0.01 * count < MAX_PARAMETERS / 10, (cls.__name__, estimate, count)
