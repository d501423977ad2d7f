"""The mapper: VGGish audio embeddings -> SD3 text conditioning, a plain nn.Module.

Input is either the clip's mean VGGish vector (128) or its sequence of per-0.96 s frames (T x 128, read by a
small transformer). Output is the pooled text embedding (2048 for SD3 Medium), optionally followed by the
first ``tokens`` rows of the sequence embedding (N x 4096), flattened. Knows nothing of training or rendering.
``save_pretrained`` writes ``model.safetensors`` and ``config.json``; the config's ``provenance`` records which
audio features and diffusion model it was trained on, so inference can refuse mismatched inputs.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file
from torch import nn

from a2i_core.errors import A2IError
from a2i_core.files import atomic_dir

WEIGHTS_NAME = "model.safetensors"
CONFIG_NAME = "config.json"


@dataclass
class MapperConfig:
    in_dim: int
    pooled_dim: int
    hidden: list[int]
    dropout: list[float]
    tokens: int = 0  # predicted sequence tokens; 0 for target "pooled"
    token_width: int = 0
    input: str = "mean"  # "mean" or "frames"
    frames_width: int = 256
    frames_layers: int = 2
    max_frames: int = 32
    provenance: dict[str, str] = field(default_factory=dict)

    @property
    def out_dim(self) -> int:
        return self.pooled_dim + self.tokens * self.token_width


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

    def split(self, output: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(B, P + N * D) -> pooled (B, P), tokens (B, N, D) or None."""
        pooled = output[:, : self.config.pooled_dim]
        if not self.config.tokens:
            return pooled, None
        return pooled, output[:, self.config.pooled_dim :].reshape(-1, self.config.tokens, self.config.token_width)

    def check_provenance(self, actual: dict[str, str], what: str) -> None:
        """Refuse inputs made differently from the training features (other weights, other postprocess...)."""
        for key, value in actual.items():
            expected = self.config.provenance.get(key)
            if expected is not None and expected != value:
                raise A2IError(f"{what} has {key}={value!r}, but this mapper was trained with {expected!r}")

    def save_pretrained(self, directory: str | Path) -> None:
        with atomic_dir(directory) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AudioToSD3Mapper:
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise A2IError(f"{directory}: no trained mapper ({CONFIG_NAME} and {WEIGHTS_NAME} expected)")
        config = MapperConfig(**json.loads((directory / CONFIG_NAME).read_text()))
        model = cls(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.eval()
