"""CLAP's audio tower and AST through transformers, loaded as an :class:`~a2i_core.audio.encoder.AudioEncoder`.

A folder is checked before its model is built (the extractor's settings against the model's config), and its
windows are cut and turned into model inputs by the batched frontends of :mod:`a2i_core.audio.frontends`.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from a2i_core.audio.frontends import (
    AST_FRAME,
    AST_HOP,
    AST_SAMPLE_RATE,
    CLAP_PADDINGS,
    CLAP_SAMPLE_RATE,
    ASTFrontend,
    ClapFrontend,
    empty_mel_filters_expected,
)
from a2i_core.core.audio_io import SAMPLE_RATE as AUDIO_SAMPLE_RATE
from a2i_core.core.errors import A2IError, first_line, quiet_hf_libraries
from a2i_core.core.fetch_file import sha256_file

if TYPE_CHECKING:
    pass

WEIGHTS_FILE = "model.safetensors"
# Some Hub repos (laion/clap-htsat-unfused among them) hold only this: read by torch's safe unpickler, as transformers
# reads it, never run.
PICKLE_WEIGHTS_FILE = "pytorch_model.bin"
CONFIG_FILE = "config.json"
EXTRACTOR_FILE = "preprocessor_config.json"
CLAP_MODEL_TYPES = ("clap", "clap_audio_model")
AST_MODEL_TYPE = "audio-spectrogram-transformer"


@dataclass
class HFAudioEncoder:
    """A frozen CLAP audio tower (``kind`` 'clap') or AST (``kind`` 'ast') with its feature extractor."""

    kind: str
    model: nn.Module
    extractor: Any  # ClapFeatureExtractor or ASTFeatureExtractor
    weights_sha256: str

    @property
    def sample_rate(self) -> int:
        return int(self.extractor.sampling_rate)

    @property
    def dim(self) -> int:
        return int(self.model.config.projection_dim if self.kind == "clap" else self.model.config.hidden_size)

    @property
    def step(self) -> int:
        """Samples between the starts of consecutive windows."""
        return int(self.extractor.nb_max_samples) if self.kind == "clap" else int(self.extractor.max_length) * AST_HOP

    @property
    def overlap(self) -> int:
        """Samples a window reads past the next one's start (AST's last frame: 240; CLAP: none)."""
        return 0 if self.kind == "clap" else AST_FRAME - AST_HOP

    @property
    def min_samples(self) -> int:
        """A whole window: anything shorter is padded."""
        return self.step + self.overlap

    def keeps_tail(self, samples: int) -> bool:
        """What is left after the last whole window makes one more window when at least half a window long (the
        module's window rule)."""
        return 2 * samples >= self.min_samples

    def to(self, device: torch.device | str) -> HFAudioEncoder:
        self.model.to(device)
        return self

    def frontend(self, device: torch.device | str = "cpu") -> ClapFrontend | ASTFrontend:
        frontend = ClapFrontend(self.extractor) if self.kind == "clap" else ASTFrontend(self.extractor)
        return frontend.to(device)

    def place(self, device: torch.device) -> ClapFrontend | ASTFrontend:
        """Move the model to ``device``; the frontend to feed ``embed`` with, there too."""
        return self.to(device).frontend(device)

    @torch.no_grad()
    def embed(self, inputs: torch.Tensor) -> torch.Tensor:
        """One embedding per window of the frontend's output: (n_windows, dim)."""
        if self.kind == "ast":
            return self.model(input_values=inputs).pooler_output  # (n, hidden): mean of the CLS and distil tokens
        # Never 'longer': a window is at most 10 s, and a fused model then uses its global branch only, as the
        # original CLAP does (the extractor's random is_longer flag is a training-time trick).
        is_longer = torch.zeros(inputs.shape[0], 1, dtype=torch.bool, device=inputs.device)
        embeds = self.model(input_features=inputs, is_longer=is_longer).audio_embeds  # (n, projection_dim)
        return nn.functional.normalize(embeds, dim=-1)  # as ClapModel.get_audio_features

    def provenance(self) -> dict[str, Any]:
        """The audio part of a provenance record: what makes these features these features."""
        frontend = self.frontend("cpu").description
        if self.sample_rate != AUDIO_SAMPLE_RATE:  # see core.audio_io.decode: through the pipeline's 16 kHz first
            frontend += f"; audio decoded at {AUDIO_SAMPLE_RATE // 1000} kHz, then resampled"
        return {"encoder_sha256": self.weights_sha256, "postprocess": False, "frontend": frontend}


def load_hf_audio_encoder(directory: str | Path, shown_as: str | Path | None = None) -> HFAudioEncoder:
    """CLAP's audio tower or AST from a ``save_pretrained`` folder (safetensors only), in eval mode on the CPU, once
    its model and feature extractor are checked against each other; messages name it ``shown_as`` if given."""
    directory = Path(directory)
    shown = Path(shown_as) if shown_as is not None else directory
    config = _read_json(directory / CONFIG_FILE, shown)
    model_type = config.get("model_type")
    if model_type in CLAP_MODEL_TYPES:
        kind = "clap"
    elif model_type == AST_MODEL_TYPE:
        kind = "ast"
    else:
        raise A2IError(f"{shown}: holds a {model_type!r} model, not CLAP ({CLAP_MODEL_TYPES[0]}) or AST "
                       f"({AST_MODEL_TYPE})")
    weights = next((directory / name for name in (WEIGHTS_FILE, PICKLE_WEIGHTS_FILE) if (directory / name).is_file()),
                   None)
    if weights is None:
        raise A2IError(f"{shown}: no {WEIGHTS_FILE} or {PICKLE_WEIGHTS_FILE} (sharded weights are not loaded)")
    quiet_hf_libraries()
    extractor = _load_extractor(directory, shown, kind)
    model = _load_model(directory, shown, kind, weights)
    (_check_clap if kind == "clap" else _check_ast)(model.config, extractor, shown)
    return HFAudioEncoder(kind, model.eval(), extractor, encoder_digest(weights, directory / CONFIG_FILE))


def encoder_digest(weights: Path, config: Path) -> str:
    """sha256 of the weights file's sha256 and config.json's: a config edit (heads, activation, epsilon) changes
    the numbers without changing any tensor, so it must change the record too."""
    return hashlib.sha256(f"{sha256_file(weights)} {sha256_file(config)}".encode()).hexdigest()


def _read_json(path: Path, shown: Path) -> dict[str, Any]:
    if not path.is_file():
        raise A2IError(f"{shown}: no {path.name} (not a transformers model folder)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise A2IError(f"{shown}: {path.name} is not readable JSON ({first_line(err)})") from None
    if not isinstance(data, dict):
        raise A2IError(f"{shown}: {path.name} holds a {type(data).__name__}, not a JSON object")
    return data


def _load_extractor(directory: Path, shown: Path, kind: str) -> Any:
    from transformers import ASTFeatureExtractor, ClapFeatureExtractor

    cls = ClapFeatureExtractor if kind == "clap" else ASTFeatureExtractor
    declared = _read_json(directory / EXTRACTOR_FILE, shown).get("feature_extractor_type", cls.__name__)
    if declared != cls.__name__:
        raise A2IError(f"{shown}: {EXTRACTOR_FILE} is a {declared}, but the model needs a {cls.__name__}")
    try:
        with empty_mel_filters_expected():
            return cls.from_pretrained(str(directory))
    except Exception as err:  # bad values surface as many exception types
        raise A2IError(f"{shown}: cannot load the {cls.__name__} ({first_line(err)})") from None


def _load_model(directory: Path, shown: Path, kind: str, weights: Path) -> nn.Module:
    from transformers import ASTModel, ClapAudioModelWithProjection

    # A whole ClapModel (as the Hub holds CLAP) or an AST classifier loads into the audio tower / the backbone.
    cls = ClapAudioModelWithProjection if kind == "clap" else ASTModel
    try:
        model, info = cls.from_pretrained(str(directory), use_safetensors=weights.name == WEIGHTS_FILE,
                                          weights_only=True, output_loading_info=True)
    except Exception as err:  # a damaged file, a shape mismatch: many exception types
        reason = first_line(err)
        if "weights_only" in reason:  # torch's advice to unpickle unsafely: never the advice for a file from outside
            reason = f"{weights.name} is not a plain tensor state dict (refused by the safe loader)"
        raise A2IError(f"{shown}: cannot load the {kind.upper()} model ({reason})") from None
    if info["missing_keys"]:
        # transformers would silently initialise them at random: never embed with a partly random encoder.
        missing = sorted(info["missing_keys"])
        raise A2IError(f"{shown}: {weights.name} lacks {len(missing)} of the {kind.upper()} model's weights "
                       f"(e.g. {missing[0]})")
    return model


def _check_clap(config: Any, extractor: Any, shown: Path) -> None:
    fusion = extractor.truncation == "fusion"
    if extractor.truncation not in ("fusion", "rand_trunc"):
        raise A2IError(f"{shown}: CLAP feature extractor truncation {extractor.truncation!r} is neither 'fusion' nor "
                       "'rand_trunc'")
    if fusion != bool(config.enable_fusion):
        raise A2IError(f"{shown}: CLAP feature extractor truncation {extractor.truncation!r} does not fit a "
                       f"{'fused' if config.enable_fusion else 'unfused'} model (enable_fusion {config.enable_fusion})")
    if extractor.sampling_rate != CLAP_SAMPLE_RATE:
        raise A2IError(f"{shown}: CLAP feature extractor sampling_rate {extractor.sampling_rate}, expected "
                       f"{CLAP_SAMPLE_RATE}")
    if extractor.feature_size != config.num_mel_bins:
        raise A2IError(f"{shown}: CLAP feature extractor has {extractor.feature_size} mel bins, the model "
                       f"{config.num_mel_bins}")
    if extractor.padding not in CLAP_PADDINGS:
        raise A2IError(f"{shown}: CLAP feature extractor padding {extractor.padding!r} is none of {CLAP_PADDINGS}")
    # HTSAT folds the mel image into spec_size x spec_size; a longer window is refused by the model at run time.
    frames = 1 + int(extractor.nb_max_samples) // extractor.hop_length
    most = config.spec_size * (config.spec_size // config.num_mel_bins)
    if frames > most:
        raise A2IError(f"{shown}: CLAP feature extractor windows of {frames} frames exceed the model's {most}")


def _check_ast(config: Any, extractor: Any, shown: Path) -> None:
    if extractor.sampling_rate != AST_SAMPLE_RATE:
        raise A2IError(f"{shown}: AST feature extractor sampling_rate {extractor.sampling_rate}, expected "
                       f"{AST_SAMPLE_RATE}")
    if extractor.num_mel_bins != config.num_mel_bins:
        raise A2IError(f"{shown}: AST feature extractor has {extractor.num_mel_bins} mel bins, the model "
                       f"{config.num_mel_bins}")
    if extractor.max_length != config.max_length:
        raise A2IError(f"{shown}: AST feature extractor max_length {extractor.max_length} frames, the model's "
                       f"{config.max_length}")
