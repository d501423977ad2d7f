"""The mapper: VGGish embedding (128) -> SD3 pooled text embedding (2048), a plain MLP.

Knows nothing of training or rendering. ``save_pretrained`` writes ``model.safetensors`` and
``config.json``; the config also carries ``provenance`` (which audio features and diffusion model it was
trained on) so inference can refuse mismatched inputs.
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
    out_dim: int
    hidden: list[int]
    dropout: list[float]
    provenance: dict[str, str] = field(default_factory=dict)


class AudioToSD3Mapper(nn.Module):
    """Linear -> LayerNorm -> GELU -> Dropout per hidden layer, then a linear head to the target width."""

    def __init__(self, config: MapperConfig) -> None:
        super().__init__()
        self.config = config
        layers: list[nn.Module] = []
        width = config.in_dim
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

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        # audio: (B, in_dim) -> (B, out_dim)
        return self.net((audio - self.input_mean) / self.input_std)

    def save_pretrained(self, directory: str | Path) -> None:
        with atomic_dir(directory) as tmp:
            state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
            save_file(state, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
            (tmp / CONFIG_NAME).write_text(json.dumps(asdict(self.config), indent=2) + "\n")

    def check_provenance(self, actual: dict[str, str], what: str) -> None:
        """Refuse inputs made differently from the training features (other weights, other postprocess...)."""
        for key, value in actual.items():
            expected = self.config.provenance.get(key)
            if expected is not None and expected != value:
                raise A2IError(f"{what} has {key}={value!r}, but this mapper was trained with {expected!r}")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> AudioToSD3Mapper:
        directory = Path(directory)
        if not (directory / CONFIG_NAME).is_file() or not (directory / WEIGHTS_NAME).is_file():
            raise A2IError(f"{directory}: no trained mapper ({CONFIG_NAME} and {WEIGHTS_NAME} expected)")
        config = MapperConfig(**json.loads((directory / CONFIG_NAME).read_text()))
        model = cls(config)
        model.load_state_dict(load_file(str(directory / WEIGHTS_NAME)))
        return model.eval()
