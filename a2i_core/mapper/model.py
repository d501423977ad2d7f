"""The mapper: VGGish audio embeddings -> SD3 text conditioning, a plain nn.Module.

Input is either the clip's mean VGGish vector (128) or its sequence of per-0.96 s frames (T x 128, read by a
small transformer). Output is the pooled text embedding (2048 for SD3 Medium), optionally followed by the
first ``tokens`` rows of the sequence embedding (N x 4096), flattened. Knows nothing of training or rendering.
``save_pretrained`` writes ``model.safetensors`` and ``config.json``; the config's ``provenance`` records which
audio features and diffusion model it was trained on, so inference can refuse mismatched inputs. A folder may come
from outside (a pull, a copy), so ``from_pretrained`` checks the config against caps, then the weights' header
(names, shapes, float32) against the config before any tensor is allocated, then that every value is finite.
The math every user of a trained mapper shares (its input, its prediction, cosine geometry) lives here too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from safetensors import safe_open
from safetensors.torch import save_file
from torch import nn

from a2i_core.core.errors import A2IError, first_line
from a2i_core.core.files import atomic_dir, read_json
from a2i_core.core.provenance import Provenance
from a2i_core.core.typed import check, typed_from_dict

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"
# Caps on what a config.json may ask for: it is read from disk (a pull, a copy), and a tampered or mistyped one
# must fail in one line before any tensor is allocated, not reserve a terabyte.
MAX_WIDTH = 1 << 16  # in_dim, pooled_dim, token_width, each hidden size (SD3: 2048 pooled, 4096 wide tokens)
MAX_TOKENS = 4096
MAX_LAYERS = 64
MAX_FRAMES_WIDTH = 8192
MAX_FRAMES = 1 << 16
MAX_PARAMETERS = 1_000_000_000  # 4 GB of float32
# What a mapper folder's safetensors files hold, checked from the header before any data is read: a tampered or
# damaged file must fail in one line, not load as integers or NaNs that render a black image.
WEIGHTS_DTYPE = "F32"  # safetensors' name for float32, what save_pretrained writes
# A mapper's header lists ~130 bytes per tensor and the largest config (64 frame layers of 12 tensors, 64 hidden
# layers of 4) has ~1100 tensors: 150 KB. safetensors itself parses up to 100 MB (~20 s); refused before that.
MAX_HEADER_BYTES = 1 << 20
FINITE_CHECK_ELEMENTS = 1 << 24  # checked for NaN/inf a slice at a time: 16 MB of booleans, whatever the tensor
MIN_INPUT_STD = 1e-6  # training clamps the standardisation to this; a smaller one divides by (nearly) zero


@dataclass
class MapperConfig:
    in_dim: int
    pooled_dim: int
    hidden: list[int]
    dropout: list[float]
    provenance: Provenance
    tokens: int = 0  # predicted sequence tokens; 0 for target "pooled"
    token_width: int = 0
    input: Literal["mean", "frames"] = "mean"
    frames_width: int = 256
    frames_layers: int = 2
    max_frames: int = 32

    def __post_init__(self) -> None:
        check(1 <= self.in_dim <= MAX_WIDTH, "in_dim", f"must be in [1, {MAX_WIDTH}]")
        check(1 <= self.pooled_dim <= MAX_WIDTH, "pooled_dim", f"must be in [1, {MAX_WIDTH}]")
        check(0 <= self.tokens <= MAX_TOKENS, "tokens", f"must be in [0, {MAX_TOKENS}]")
        check((1 if self.tokens else 0) <= self.token_width <= MAX_WIDTH, "token_width",
               f"must be in [1, {MAX_WIDTH}] when tokens is set, else >= 0")
        check(self.input in ("mean", "frames"), "input", f"must be mean or frames, got {self.input!r}")
        check(1 <= len(self.hidden) <= MAX_LAYERS, "hidden", f"needs 1 to {MAX_LAYERS} layers")
        for i, size in enumerate(self.hidden):
            check(1 <= size <= MAX_WIDTH, f"hidden[{i}]", f"must be in [1, {MAX_WIDTH}], got {size}")
        check(len(self.dropout) == len(self.hidden), "dropout", "needs one value per hidden layer")
        for i, p in enumerate(self.dropout):
            check(0 <= p < 1, f"dropout[{i}]", f"must be in [0, 1), got {p}")
        check(8 <= self.frames_width <= MAX_FRAMES_WIDTH and self.frames_width % 4 == 0, "frames_width",
               f"must be a multiple of 4 in [8, {MAX_FRAMES_WIDTH}]")  # 4 attention heads
        check(1 <= self.frames_layers <= MAX_LAYERS, "frames_layers", f"must be in [1, {MAX_LAYERS}]")
        check(1 <= self.max_frames <= MAX_FRAMES, "max_frames", f"must be in [1, {MAX_FRAMES}]")
        counts = self.parameter_counts()
        largest = max(counts, key=counts.__getitem__)
        check(sum(counts.values()) <= MAX_PARAMETERS, largest,
               f"the mapper would have {sum(counts.values()):.3g} parameters (at most {MAX_PARAMETERS:.0e})")

    @property
    def out_dim(self) -> int:
        return self.pooled_dim + self.tokens * self.token_width

    def parameter_counts(self) -> dict[str, int]:
        """The mapper's parameters, by the field that sizes each part: known before any tensor exists."""
        counts: dict[str, int] = {}
        width = self.in_dim
        if self.input == "frames":
            w = self.frames_width
            # per layer: attention 4 w^2 + 4 w, feed-forward (2 w wide) 4 w^2 + 3 w, two LayerNorms 4 w
            layer = 8 * w * w + 11 * w
            counts["frames_width"] = (self.in_dim + 1 + self.max_frames) * w + self.frames_layers * layer
            width = w
        counts["hidden"] = 0
        for size in self.hidden:
            counts["hidden"] += width * size + 3 * size  # Linear and LayerNorm
            width = size
        counts["tokens" if self.tokens else "pooled_dim"] = (width + 1) * self.out_dim
        return counts

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "provenance": self.provenance.to_json()}

    @classmethod
    def from_json(cls, data: Any, what: str) -> MapperConfig:
        """A config from its JSON form, checked like params.yaml; ``what`` names it in the one-line errors."""
        config = typed_from_dict(cls, data, what)
        config.provenance.validate(f"{what}: provenance")
        return config


class AudioToSD3Mapper(nn.Module):
    """[frame transformer ->] Linear -> LayerNorm -> GELU -> Dropout per hidden layer -> Linear head."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        width = config.in_dim
        if config.input == "frames":
            w = config.frames_width
            self.frame_proj = nn.Linear(config.in_dim, w)
            self.frame_pos = nn.Parameter(torch.randn(config.max_frames, w) * 0.02)
            layer = nn.TransformerEncoderLayer(w, nhead=4, dim_feedforward=2 * w, dropout=0.1, batch_first=True,
                                               norm_first=True)
            self.frame_encoder = nn.TransformerEncoder(layer, config.frames_layers, enable_nested_tensor=False)
            width = w
        layers: list[nn.Module] = []
        for size, p in zip(config.hidden, config.dropout, strict=True):
            layers += [nn.Linear(width, size), nn.LayerNorm(size), nn.GELU(), nn.Dropout(p)]
            width = size
        layers.append(nn.Linear(width, config.out_dim))
        self.net = nn.Sequential(*layers)
        # Input standardisation, fitted on the training split: raw VGGish values span very different scales.
        self.register_buffer("input_mean", torch.zeros(config.in_dim))
        self.register_buffer("input_std", torch.ones(config.in_dim))

    def set_input_stats(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.input_mean.copy_(mean)
        self.input_std.copy_(std.clamp_min(MIN_INPUT_STD))

    def forward(self, audio: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        # audio: (B, 128) clip means, or (B, T, 128) frames with mask (B, T), True where a frame is real
        x = (audio - self.input_mean) / self.input_std
        if self.config.input == "frames":
            if mask is None:
                raise ValueError("a frames mapper needs the frames' mask")
            h = self.frame_proj(x) + self.frame_pos[: x.shape[1]]  # (B, T, W)
            h = self.frame_encoder(h, src_key_padding_mask=~mask)  # (B, T, W)
            m = mask.unsqueeze(-1).to(h.dtype)
            x = (h * m).sum(1) / m.sum(1).clamp_min(1)  # (B, W): mean over real frames
        return self.net(x)  # (B, P + N * D)

    def pooled_and_tokens(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, P + N * D) -> pooled (B, P), tokens (B, N, D) or None."""
        pooled = output[:, : self.config.pooled_dim]
        if not self.config.tokens:
            return pooled, None
        return pooled, output[:, self.config.pooled_dim :].reshape(-1, self.config.tokens, self.config.token_width)

    def save_pretrained(self, directory: str | Path) -> None:
        with atomic_dir(directory) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(json.dumps(self.config.to_json(), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AudioToSD3Mapper:
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise A2IError(f"{directory}: no trained mapper ({CONFIG_NAME} and {WEIGHTS_NAME} expected)")
        config = MapperConfig.from_json(read_json(config_path), str(config_path))
        with torch.device("meta"):  # shapes without storage: nothing is allocated until the weights' header fits
            model = cls(config)
        expected = {name: tuple(t.shape) for name, t in model.state_dict().items()}
        state = read_tensors(weights_path, expected, f"{config_path.name} makes it", WEIGHTS_DTYPE)
        std = state["input_std"]
        if (std < MIN_INPUT_STD).any():
            i = int(torch.argmin(std))
            raise A2IError(f"{weights_path}: input_std[{i}] is {float(std[i]):.3g}, but a trained mapper's are at "
                           f"least {MIN_INPUT_STD:g} (it divides by them)")
        model.load_state_dict(state, assign=True)  # the file's tensors become the model's: no random init first
        return model.eval()


def read_tensors(path: Path, expected: dict[str, tuple[int | None, ...]], why: str = "expected",
                 dtype: str = WEIGHTS_DTYPE) -> dict[str, torch.Tensor]:
    """A safetensors file's tensors, which must be exactly those named in ``expected`` with those shapes (None: any
    size) and ``dtype`` (safetensors' name: F32, F16), checked from the header before any tensor is read, and hold
    only finite values. One line naming the file and the tensor otherwise. The tensors are the caller's own, not
    views of the file: one rewritten in place must not change (or, truncated, crash) a running model."""
    try:
        with open(path, "rb") as f:  # the header's length, before safetensors parses up to 100 MB of it
            length = int.from_bytes(f.read(8), "little")
        if length > MAX_HEADER_BYTES:
            raise A2IError(f"{path}: a safetensors header of {length} bytes, but a mapper's is at most "
                           f"{MAX_HEADER_BYTES}")
        with safe_open(str(path), framework="pt") as f:
            header = {name: f.get_slice(name) for name in f.keys()}  # noqa: SIM118 (not iterable)
            _check_header(path, {name: (tuple(s.get_shape()), s.get_dtype()) for name, s in header.items()},
                          expected, why, dtype)
            tensors = {}
            for name in header:
                tensors[name] = f.get_tensor(name).clone()  # checked after the copy: the file may change meanwhile
                _check_finite(path, name, tensors[name])
            return tensors
    except A2IError:
        raise
    except Exception as err:  # safetensors raises its own error types for a damaged header
        raise A2IError(f"{path}: not a readable safetensors file ({first_line(err)})") from None


def _check_header(path: Path, header: dict[str, tuple[tuple[int, ...], str]],
                  expected: dict[str, tuple[int | None, ...]], why: str, dtype: str) -> None:
    for name, want in expected.items():
        if name not in header:
            raise A2IError(f"{path}: {name}: missing")
        shape, stored = header[name]
        if len(shape) != len(want) or any(w is not None and w != n for w, n in zip(want, shape, strict=False)):
            raise A2IError(f"{path}: {name}: shape {_shown(shape)}, but {why} {_shown(want)}")
        if stored != dtype:
            raise A2IError(f"{path}: {name}: dtype {stored}, but a mapper's file holds {dtype}")
    unexpected = sorted(set(header) - set(expected))
    if unexpected:
        raise A2IError(f"{path}: {unexpected[0]}: unexpected tensor")


def _check_finite(path: Path, name: str, tensor: torch.Tensor) -> None:
    flat = tensor.reshape(-1)
    for start in range(0, flat.numel(), FINITE_CHECK_ELEMENTS):
        bad = ~torch.isfinite(flat[start : start + FINITE_CHECK_ELEMENTS])
        if bad.any():
            index = start + int(bad.to(torch.uint8).argmax())  # argmax: the first of the largest
            at = ", ".join(str(int(i)) for i in np.unravel_index(index, tuple(tensor.shape)))
            raise A2IError(f"{path}: {name}[{at}] is {float(flat[index])}: a mapper's values are all finite")


def _shown(shape: tuple[int | None, ...]) -> str:
    return "(" + ", ".join("N" if n is None else str(n) for n in shape) + ("," if len(shape) == 1 else "") + ")"


def pad_frames(frames: list[np.ndarray], max_frames: int) -> tuple[np.ndarray, np.ndarray]:
    """Ragged (n_i, 128) arrays -> (n, T, 128) zero-padded and (n, T) mask, T = min(longest, max_frames)."""
    length = min(max(len(f) for f in frames), max_frames)
    out = np.zeros((len(frames), length, frames[0].shape[1]), np.float32)
    mask = np.zeros((len(frames), length), bool)
    for i, f in enumerate(frames):
        f = f[:length]
        out[i, : len(f)] = f
        mask[i, : len(f)] = True
    return out, mask


@torch.no_grad()
def predict(model: AudioToSD3Mapper, audio: np.ndarray,
            mask: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """Predicted pooled (n, P) and, for a tokens mapper, tokens (n, N, D)."""
    output = model.eval()(torch.from_numpy(audio), None if mask is None else torch.from_numpy(mask))
    pooled, tokens = model.pooled_and_tokens(output)
    return pooled.numpy(), None if tokens is None else tokens.numpy()


def predict_clips(model: AudioToSD3Mapper, clips: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray | None]:
    """Each clip's (n_i, D) window embeddings mapped as training saw clips (their mean, or the frames themselves):
    pooled (c, P) and, for a tokens mapper, tokens (c, N, D)."""
    if model.config.input == "frames":
        x, mask = pad_frames(clips, model.config.max_frames)  # (c, T, D), (c, T)
    else:
        x, mask = np.stack([c.mean(axis=0) for c in clips]).astype(np.float32), None  # (c, D)
    return predict(model, x, mask)
