"""Training the mapper: the whole loop in one place.

loss = w_cos * (1 - cos) + w_mse * MSE on the pooled embedding, plus the same on each predicted sequence token
when the target includes tokens; Adam; early stopping on the validation loss, the best epoch's weights kept.
"""

from __future__ import annotations

import copy
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from a2i_core.mapper import AudioToSD3Mapper, MapperConfig
from a2i_core.params import MapperParams, TrainParams
from a2i_core.provenance import Provenance

log = logging.getLogger(__name__)


def combined_loss(pred: torch.Tensor, target: torch.Tensor, w_cos: float, w_mse: float) -> torch.Tensor:
    cos = F.cosine_similarity(pred, target, dim=-1).mean()
    return w_cos * (1 - cos) + w_mse * F.mse_loss(pred, target)


def mapper_loss(model: AudioToSD3Mapper, output: torch.Tensor, target: torch.Tensor, w_cos: float,
                w_mse: float) -> torch.Tensor:
    pooled, tokens = model.pooled_and_tokens(output)  # (B, P), (B, N, D) | None
    target_pooled, target_tokens = model.pooled_and_tokens(target)
    loss = combined_loss(pooled, target_pooled, w_cos, w_mse)
    if tokens is not None:
        loss = loss + combined_loss(tokens, target_tokens, w_cos, w_mse)  # cosine per token
    return loss


@dataclass
class TrainResult:
    model: AudioToSD3Mapper
    history: list[dict]
    best_epoch: int
    stopped_epoch: int
    seconds: float


@dataclass
class Tensors:
    """One data split on the device: input (n, 128) or (n, T, 128), its mask (n, T) or None, target (n, P [+ N * D])."""

    x: torch.Tensor
    mask: torch.Tensor | None
    y: torch.Tensor

    @classmethod
    def of(cls, x: np.ndarray, mask: np.ndarray | None, y: np.ndarray, device: torch.device) -> Tensors:
        return cls(torch.from_numpy(x).to(device), None if mask is None else torch.from_numpy(mask).to(device),
                   torch.from_numpy(y).to(device))

    def rows(self, idx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        return self.x[idx], None if self.mask is None else self.mask[idx], self.y[idx]


def train_mapper(train: Tensors, val: Tensors, config: MapperConfig, params: TrainParams,
                 on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    torch.manual_seed(params.seed)
    device = train.x.device
    model = AudioToSD3Mapper(config).to(device)
    real = train.x if train.mask is None else train.x[train.mask]  # (n or real frames, 128)
    model.set_input_stats(real.mean(0), real.std(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    generator = torch.Generator(device="cpu").manual_seed(params.seed)

    history: list[dict] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    start = time.monotonic()
    n = train.x.shape[0]
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator).to(device)
        total = 0.0
        for i in range(0, n, params.batch_size):
            x, mask, y = train.rows(order[i : i + params.batch_size])
            loss = mapper_loss(model, model(x, mask), y, params.w_cos, params.w_mse)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * x.shape[0]

        model.eval()
        with torch.no_grad():
            out = model(val.x, val.mask)
            val_loss = mapper_loss(model, out, val.y, params.w_cos, params.w_mse).item()
            pooled, _ = model.pooled_and_tokens(out)
            target_pooled, _ = model.pooled_and_tokens(val.y)
            val_cos = F.cosine_similarity(pooled, target_pooled, dim=-1).mean().item()
        record = {"epoch": epoch, "train_loss": total / n, "val_loss": val_loss, "val_cosine": val_cos}
        history.append(record)
        if on_epoch is not None:
            on_epoch(record)
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        if epoch == 1 or epoch % 10 == 0:
            log.info("epoch %d/%d  train %.4f  val %.4f  val cos %.4f  (best %.4f @ %d)", epoch, params.epochs,
                     total / n, val_loss, val_cos, best_loss, best_epoch)
        if epoch - best_epoch >= params.patience:
            log.info("early stop at epoch %d: no val improvement for %d epochs", epoch, params.patience)
            break
    model.load_state_dict(best_state)
    return TrainResult(model.eval().cpu(), history, best_epoch, len(history), time.monotonic() - start)


def mapper_config(mapper: MapperParams, in_dim: int, pooled_dim: int, token_shape: tuple[int, int] | None,
                  provenance: Provenance) -> MapperConfig:
    tokens, width = token_shape or (0, 0)
    return MapperConfig(in_dim=in_dim, pooled_dim=pooled_dim, hidden=list(mapper.hidden),
                        dropout=list(mapper.dropout), tokens=tokens, token_width=width, input=mapper.input,
                        frames_width=mapper.frames_width, frames_layers=mapper.frames_layers,
                        max_frames=mapper.max_frames, provenance=provenance)
