"""CLAP's audio tower and AST through transformers, loaded as an :class:`~a2i_core.audio.encoder.AudioEncoder`.

A folder is checked before its model is built: its configs against the bounds below (a folder comes from outside,
and transformers builds whatever its config.json says), then the extractor's settings against the model's config.
Its windows are cut and turned into model inputs by the batched frontends of :mod:`a2i_core.audio.frontends`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

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
    unheard_samples,
)
from a2i_core.core.audio_io import SAMPLE_RATE as AUDIO_SAMPLE_RATE
from a2i_core.core.errors import A2IError, first_line, quiet_hf_libraries
from a2i_core.core.fetch_file import sha256_file

WEIGHTS_FILE = "model.safetensors"
# Some Hub repos (laion/clap-htsat-unfused among them) hold only this: read by torch's safe unpickler, as transformers
# reads it, never run.
PICKLE_WEIGHTS_FILE = "pytorch_model.bin"
CONFIG_FILE = "config.json"
EXTRACTOR_FILE = "preprocessor_config.json"
CLAP_MODEL_TYPES = ("clap", "clap_audio_model")
AST_MODEL_TYPE = "audio-spectrogram-transformer"

# Bounds on what a folder's configs may ask the loader to build, checked before any module or filter bank is. Left
# to itself, transformers builds what config.json says, one Python module per layer, before it reads a weight: an
# AST of 10^6 layers ran for minutes, its memory rising by 13 MB/s. Each bound is several times the value in the
# largest released audio tower (AST base; laion's CLAP HTSAT, 28 M and 50 M parameters).
MAX_CONFIG_BYTES = 1 << 20  # a config is read whole: AST's, with AudioSet's 527 labels, is about 25 KB
MAX_LAYERS = 96  # AST base: 12; HTSAT: 12 blocks (depths [2, 2, 6, 2])
MAX_STAGES = 8  # HTSAT: 4, each one twice as wide as the one before
MAX_WIDTH = 8192  # any hidden, stage or projection width: AST 768; HTSAT's last stage 768 or 1024
MAX_INTERMEDIATE = 32_768  # AST's feed-forward: 3072 (4 x 768)
MAX_MLP_RATIO = 16.0  # HTSAT's feed-forward: 4 x its width
MAX_HEADS = 256  # AST: 12; HTSAT: 32 in its last stage
MAX_CHANNELS = 16  # HTSAT's input channels: 1 (4 mel crops stacked when fused)
MAX_PATCH = 64  # a patch's side or stride: AST 16 and 10, HTSAT 4
MAX_SPEC_SIZE = 2048  # HTSAT's square image side: 256
MAX_SWIN_WINDOW = 16  # HTSAT's 8: each layer holds a window^2 x window^2 int64 index (0.5 MB at 16)
MAX_AST_PATCHES = 4096  # tokens an AST window becomes: 1212 (12 x 101); attention memory grows with their square
MAX_SWIN_PATCHES = 65_536  # HTSAT's first stage: 4096 (64 x 64); windowed attention, memory grows linearly
MAX_MEL_BINS = 512  # AST 128, CLAP 64; an extractor's filter bank is (FFT bins x mel bins) float64
MAX_FFT = 16_384  # CLAP 1024 (AST's 512 is fixed); also bounds the hop
MAX_FRAMES = 4096  # AST's window, max_length: 1024 frames (10.24 s)
MAX_WINDOW_SECONDS = 60.0  # CLAP's window, max_length_s: 10 s (the frontend holds each window as float64)
MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32: over ten times AST base (86 M), the largest released tower


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

    def unheard(self, samples: int) -> int:
        """Samples at the end of a waveform of ``samples`` that no window reads: a tail the window rule drops (less
        than half a window past the last whole one), for a note that says so."""
        return unheard_samples(samples, self.min_samples, self.step)

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
    model_config = _model_config(config, kind, shown)  # within the bounds, or refused: nothing is built yet
    extractor = _load_extractor(directory, shown, kind)
    (_check_clap if kind == "clap" else _check_ast)(model_config, extractor, shown)
    model = _load_model(directory, shown, kind, weights, model_config)
    return HFAudioEncoder(kind, model.eval(), extractor, encoder_digest(weights, directory / CONFIG_FILE))


def encoder_digest(weights: Path, config: Path) -> str:
    """sha256 of the weights file's sha256 and config.json's: a config edit (heads, activation, epsilon) changes
    the numbers without changing any tensor, so it must change the record too."""
    return hashlib.sha256(f"{sha256_file(weights)} {sha256_file(config)}".encode()).hexdigest()


def _read_json(path: Path, shown: Path) -> dict[str, Any]:
    if not path.is_file():
        raise A2IError(f"{shown}: no {path.name} (not a transformers model folder)")
    try:
        with path.open("rb") as f:
            text = f.read(MAX_CONFIG_BYTES + 1)  # never more, whatever the file grows to meanwhile
        if len(text) > MAX_CONFIG_BYTES:
            raise A2IError(f"{shown}: {path.name} is over {MAX_CONFIG_BYTES >> 20} MiB: not a model's settings")
        data = json.loads(text)
    # ValueError: an integer of over 4300 digits; RecursionError: arrays nested thousands deep.
    except (OSError, ValueError, RecursionError) as err:
        raise A2IError(f"{shown}: {path.name} is not readable JSON ({first_line(err)})") from None
    if not isinstance(data, dict):
        raise A2IError(f"{shown}: {path.name} holds a {type(data).__name__}, not a JSON object")
    return data


@dataclass(frozen=True)
class _Where:
    """Where a setting is read, for a refusal's one line: the folder as shown and the file."""

    shown: Path
    file: str
    prefix: str = ""  # "audio_config." inside a whole ClapModel's config.json

    def refuse(self, key: str, why: str) -> A2IError:
        return A2IError(f"{self.shown}: {self.file} {self.prefix}{key} {why}")


def _brief(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else f"{text[:37]}..."


def _bounded(value: Any, key: str, most: float, where: _Where, low: float = 1, integer: bool = True) -> float:
    """``value``, an integer (or any finite number) from ``low`` to ``most``; else a refusal naming ``key``."""
    number = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not number or (isinstance(value, float) and not math.isfinite(value)):
        raise where.refuse(key, f"is {_brief(value)}: expected {'an integer' if integer else 'a number'}")
    if value < low:
        raise where.refuse(key, f"is {_brief(value)}: expected at least {low}")
    if value > most:
        raise where.refuse(key, f"is {_brief(value)}: more than {most:g}, the most a2i builds (a bound against a "
                                "config that would take the machine)")
    return value


def _sides(value: Any, key: str, most: int, where: _Where) -> list[int]:
    """A side or (height, width), as transformers reads patch sizes and strides, each from 1 to ``most``."""
    sides = list(value) if isinstance(value, list | tuple) else [value, value]
    if len(sides) != 2:
        raise where.refuse(key, f"is {_brief(value)}: expected one side or two")
    return [int(_bounded(side, f"{key}[{i}]" if isinstance(value, list | tuple) else key, most, where))
            for i, side in enumerate(sides)]


def _model_config(data: dict[str, Any], kind: str, shown: Path) -> Any:
    """The audio tower's config (ClapAudioConfig or ASTConfig) from config.json's contents, once within the bounds."""
    from transformers import ASTConfig, ClapAudioConfig

    where = _Where(shown, CONFIG_FILE)
    values = data
    if kind == "clap" and data.get("model_type") == "clap":  # a whole ClapModel: only its audio tower is built
        values = data.get("audio_config", {})
        if not isinstance(values, dict):
            raise where.refuse("audio_config", f"is {_brief(values)}: expected an object")
        where = _Where(shown, CONFIG_FILE, "audio_config.")
    try:
        config = (ClapAudioConfig if kind == "clap" else ASTConfig).from_dict(values)
    except Exception as err:  # transformers' checks of each field's type, among others
        raise A2IError(f"{shown}: {CONFIG_FILE} is not {'a CLAP' if kind == 'clap' else 'an AST'} config "
                       f"({' '.join(str(err).split())[:200] or type(err).__name__})") from None
    parameters = (_bound_clap if kind == "clap" else _bound_ast)(config, where)
    if parameters > MAX_PARAMETERS:
        raise A2IError(f"{shown}: {CONFIG_FILE} describes a model of about {parameters / 1e6:,.0f} M parameters, "
                       f"more than the {MAX_PARAMETERS / 1e6:,.0f} M a2i builds (a bound against a config that would "
                       "take the machine)")
    return config


def _bound_ast(config: Any, where: _Where) -> int:
    """Refuse an AST config past the bounds; its parameter count, about (within 1% for AST base)."""
    width = int(_bounded(config.hidden_size, "hidden_size", MAX_WIDTH, where))
    layers = int(_bounded(config.num_hidden_layers, "num_hidden_layers", MAX_LAYERS, where))
    _bounded(config.num_attention_heads, "num_attention_heads", MAX_HEADS, where)
    inner = int(_bounded(config.intermediate_size, "intermediate_size", MAX_INTERMEDIATE, where))
    mels = int(_bounded(config.num_mel_bins, "num_mel_bins", MAX_MEL_BINS, where))
    frames = int(_bounded(config.max_length, "max_length", MAX_FRAMES, where))
    patch_h, patch_w = _sides(config.patch_size, "patch_size", MAX_PATCH, where)
    f_stride = int(_bounded(config.frequency_stride, "frequency_stride", MAX_PATCH, where))
    t_stride = int(_bounded(config.time_stride, "time_stride", MAX_PATCH, where))
    patches = max(0, (mels - patch_h) // f_stride + 1) * max(0, (frames - patch_w) // t_stride + 1)
    if not 1 <= patches <= MAX_AST_PATCHES:
        raise where.refuse("patch_size", f"and strides cut a window of {frames} x {mels} into {patches} patches: "
                                         f"expected 1 to {MAX_AST_PATCHES}")
    return layers * (4 * width * width + 2 * width * inner) + (patches + 2) * width + patch_h * patch_w * width


def _bound_clap(config: Any, where: _Where) -> int:
    """Refuse a CLAP audio config (HTSAT) past the bounds; its parameter count, about (within 1% for laion's)."""
    depths, heads = config.depths, config.num_attention_heads
    if not 1 <= len(depths) <= MAX_STAGES:
        raise where.refuse("depths", f"has {len(depths)} stages: expected 1 to {MAX_STAGES}")
    for i, depth in enumerate(depths):
        _bounded(depth, f"depths[{i}]", MAX_LAYERS, where)
    if sum(depths) > MAX_LAYERS:
        raise where.refuse("depths", f"sums to {sum(depths)} layers: more than {MAX_LAYERS}, the most a2i builds (a "
                                     "bound against a config that would take the machine)")
    if len(heads) != len(depths):
        raise where.refuse("num_attention_heads", f"has {len(heads)} entries for {len(depths)} stages (depths)")
    for i, count in enumerate(heads):
        _bounded(count, f"num_attention_heads[{i}]", MAX_HEADS, where)
    first = int(_bounded(config.patch_embeds_hidden_size, "patch_embeds_hidden_size", MAX_WIDTH, where))
    if first << (len(depths) - 1) > MAX_WIDTH:
        raise where.refuse("patch_embeds_hidden_size", f"{first}, doubled by each of {len(depths)} stages, is "
                                                       f"{first << (len(depths) - 1)} wide: more than {MAX_WIDTH}")
    width = int(_bounded(config.hidden_size, "hidden_size", MAX_WIDTH, where))
    projection = int(_bounded(config.projection_dim, "projection_dim", MAX_WIDTH, where))
    ratio = _bounded(config.mlp_ratio, "mlp_ratio", MAX_MLP_RATIO, where, low=0, integer=False)
    window = int(_bounded(config.window_size, "window_size", MAX_SWIN_WINDOW, where))
    channels = int(_bounded(config.patch_embed_input_channels, "patch_embed_input_channels", MAX_CHANNELS, where))
    _bounded(config.num_mel_bins, "num_mel_bins", MAX_MEL_BINS, where)
    if config.enable_fusion:  # its attentional fusion narrows the first width by aff_block_r
        _bounded(config.aff_block_r, "aff_block_r", first, where)
    spec = int(_bounded(config.spec_size, "spec_size", MAX_SPEC_SIZE, where))
    patch_h, patch_w = _sides(config.patch_size, "patch_size", MAX_PATCH, where)
    stride_h, stride_w = _sides(config.patch_stride, "patch_stride", MAX_PATCH, where)
    patches = (spec // stride_h) * (spec // stride_w)
    if not 1 <= patches <= MAX_SWIN_PATCHES:
        raise where.refuse("patch_stride", f"cuts the {spec} x {spec} image (spec_size) into {patches} patches: "
                                           f"expected 1 to {MAX_SWIN_PATCHES}")
    parameters = channels * 4 * first * patch_h * patch_w + width * projection + projection * projection
    for stage, (depth, count) in enumerate(zip(depths, heads, strict=True)):
        dim = first << stage
        inner = int(ratio * dim)
        parameters += depth * (4 * dim * dim + 2 * dim * inner + (2 * window - 1) ** 2 * count)
        parameters += 8 * dim * dim if stage < len(depths) - 1 else 0  # the patch merging after it
    return parameters


def _bound_extractor(settings: dict[str, Any], kind: str, where: _Where) -> None:
    """Refuse an extractor's settings past the bounds (an absent one takes the extractor's default, within them)."""
    bounds = ({"feature_size": MAX_MEL_BINS, "fft_window_size": MAX_FFT, "hop_length": MAX_FFT}
              if kind == "clap" else {"num_mel_bins": MAX_MEL_BINS, "max_length": MAX_FRAMES})
    for key, most in bounds.items():
        if key in settings:
            _bounded(settings[key], key, most, where)
    if kind == "clap" and "max_length_s" in settings:
        _bounded(settings["max_length_s"], "max_length_s", MAX_WINDOW_SECONDS, where, low=0.1, integer=False)


def _load_extractor(directory: Path, shown: Path, kind: str) -> Any:
    from transformers import ASTFeatureExtractor, ClapFeatureExtractor

    cls = ClapFeatureExtractor if kind == "clap" else ASTFeatureExtractor
    settings = _read_json(directory / EXTRACTOR_FILE, shown)
    declared = settings.get("feature_extractor_type", cls.__name__)
    if declared != cls.__name__:
        raise A2IError(f"{shown}: {EXTRACTOR_FILE} is a {declared}, but the model needs a {cls.__name__}")
    _bound_extractor(settings, kind, _Where(shown, EXTRACTOR_FILE))  # its filter banks are built as it loads
    try:
        with empty_mel_filters_expected():
            return cls.from_pretrained(str(directory))
    except Exception as err:  # bad values surface as many exception types
        raise A2IError(f"{shown}: cannot load the {cls.__name__} ({first_line(err)})") from None


def _load_model(directory: Path, shown: Path, kind: str, weights: Path, config: Any) -> nn.Module:
    from transformers import ASTModel, ClapAudioModelWithProjection

    # A whole ClapModel (as the Hub holds CLAP) or an AST classifier loads into the audio tower / the backbone.
    cls = ClapAudioModelWithProjection if kind == "clap" else ASTModel
    try:
        # config: the one checked, never a second reading of the file. Mismatched shapes are reported below, by
        # name: transformers' own error points at a report it logs, which quiet_hf_libraries keeps quiet.
        model, info = cls.from_pretrained(str(directory), config=config, use_safetensors=weights.name == WEIGHTS_FILE,
                                          weights_only=True, output_loading_info=True, ignore_mismatched_sizes=True)
    except Exception as err:  # a damaged file, a failed conversion: many exception types
        reason = first_line(err)
        if "weights_only" in reason:  # torch's advice to unpickle unsafely: never the advice for a file from outside
            reason = f"{weights.name} is not a plain tensor state dict (refused by the safe loader)"
        elif "above report" in reason:  # a report never shown
            reason = f"{weights.name} does not fit {CONFIG_FILE}"
        raise A2IError(f"{shown}: cannot load the {kind.upper()} model ({reason})") from None
    if info["mismatched_keys"]:
        key, in_file, in_model = sorted(info["mismatched_keys"])[0]
        raise A2IError(f"{shown}: {weights.name} does not fit {CONFIG_FILE}: {key} is {tuple(in_file)} there, "
                       f"{tuple(in_model)} by the config ({len(info['mismatched_keys'])} tensors differ)")
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
