"""The mapper: VGGish audio embeddings -> SD3 text conditioning, a plain nn.Module.

Input is either the clip's mean VGGish vector (128) or its sequence of per-0.96 s frames (T x 128, read by a
small transformer). Output is the pooled text embedding (2048 for SD3 Medium), optionally followed by the
first ``tokens`` rows of the sequence embedding (N x 4096), flattened. Knows nothing of training or rendering.
``save_pretrained`` writes ``model.safetensors`` and ``config.json``; the config's ``provenance`` records which
audio features and diffusion model it was trained on, so inference can refuse mismatched inputs.
The math every user of a trained mapper shares (its input, its prediction, cosine geometry) lives here too.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from torch import nn

from a2i_core.errors import A2IError
from a2i_core.files import atomic_dir
from a2i_core.provenance import Provenance, ProvenanceError

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class MapperConfig:
    in_dim: int
    pooled_dim: int
    hidden: list[int]
    dropout: list[float]
    provenance: Provenance
    tokens: int = 0  # predicted sequence tokens; 0 for target "pooled"
    token_width: int = 0
    input: str = "mean"  # "mean" or "frames"
    frames_width: int = 256
    frames_layers: int = 2
    max_frames: int = 32

    @property
    def out_dim(self) -> int:
        return self.pooled_dim + self.tokens * self.token_width

    def to_json(self) -> dict:
        return {**dataclasses.asdict(self), "provenance": self.provenance.to_json()}

    @classmethod
    def from_json(cls, data: dict, what: str) -> MapperConfig:
        data = dict(data)
        try:
            data["provenance"] = Provenance.from_json(data.get("provenance"), f"{what}: provenance")
        except ProvenanceError as err:
            raise ProvenanceError(f"{err} (an older a2i made it? rerun train, or `make demo`)") from None
        return cls(**data)


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
        self.input_std.copy_(std.clamp_min(1e-6))

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
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise A2IError(f"{directory}: no trained mapper ({CONFIG_NAME} and {WEIGHTS_NAME} expected)")
        config = MapperConfig.from_json(json.loads((directory / CONFIG_NAME).read_text()), str(directory / CONFIG_NAME))
        model = cls(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.eval()


def normalise(x: np.ndarray) -> np.ndarray:
    """Rows scaled to unit length (zero rows stay zero)."""
    return x / np.maximum(np.linalg.norm(x, axis=-1, keepdims=True), 1e-12)


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
