"""Training the mapper: the whole loop in one place.

loss = w_cos * (1 - cos(pred, target)) + w_mse * MSE(pred, target), Adam, early stopping on the
validation loss, the best epoch's weights kept.
"""

from __future__ import annotations

import copy
import logging
import time
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from a2i_core.mapper import AudioToSD3Mapper, MapperConfig
from a2i_core.params import MapperParams, TrainParams

log = logging.getLogger(__name__)


def combined_loss(pred: torch.Tensor, target: torch.Tensor, w_cos: float, w_mse: float) -> torch.Tensor:
    cos = F.cosine_similarity(pred, target, dim=-1).mean()
    return w_cos * (1 - cos) + w_mse * F.mse_loss(pred, target)


@dataclass
class TrainResult:
    model: AudioToSD3Mapper
    history: list[dict]
    best_epoch: int
    stopped_epoch: int
    seconds: float


def train_mapper(x_train: np.ndarray, y_train: np.ndarray, x_val: np.ndarray, y_val: np.ndarray,
                 mapper: MapperParams, train: TrainParams, device: torch.device,
                 provenance: dict[str, str]) -> TrainResult:
    torch.manual_seed(train.seed)
    xt, yt = torch.from_numpy(x_train).to(device), torch.from_numpy(y_train).to(device)  # (n, 128), (n, P)
    xv, yv = torch.from_numpy(x_val).to(device), torch.from_numpy(y_val).to(device)
    config = MapperConfig(in_dim=xt.shape[1], out_dim=yt.shape[1], hidden=list(mapper.hidden),
                          dropout=list(mapper.dropout), provenance=provenance)
    model = AudioToSD3Mapper(config).to(device)
    model.set_input_stats(xt.mean(0), xt.std(0))
    optimizer = torch.optim.Adam(model.parameters(), lr=train.lr)
    generator = torch.Generator(device="cpu").manual_seed(train.seed)

    history: list[dict] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    start = time.monotonic()
    for epoch in range(1, train.epochs + 1):
        model.train()
        order = torch.randperm(xt.shape[0], generator=generator).to(device)
        total, seen = 0.0, 0
        for i in range(0, xt.shape[0], train.batch_size):
            idx = order[i : i + train.batch_size]
            loss = combined_loss(model(xt[idx]), yt[idx], train.w_cos, train.w_mse)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += loss.item() * idx.numel()
            seen += idx.numel()

        model.eval()
        with torch.no_grad():
            pred = model(xv)
            val_loss = combined_loss(pred, yv, train.w_cos, train.w_mse).item()
            val_cos = F.cosine_similarity(pred, yv, dim=-1).mean().item()
        history.append({"epoch": epoch, "train_loss": total / seen, "val_loss": val_loss, "val_cosine": val_cos})
        if val_loss < best_loss - 1e-6:
            best_loss, best_epoch, best_state = val_loss, epoch, copy.deepcopy(model.state_dict())
        if epoch == 1 or epoch % 10 == 0:
            log.info("epoch %d/%d  train %.4f  val %.4f  val cos %.4f  (best %.4f @ %d)", epoch, train.epochs,
                     total / seen, val_loss, val_cos, best_loss, best_epoch)
        if epoch - best_epoch >= train.patience:
            log.info("early stop at epoch %d: no val improvement for %d epochs", epoch, train.patience)
            break
    model.load_state_dict(best_state)
    return TrainResult(model.eval().cpu(), history, best_epoch, len(history), time.monotonic() - start)
