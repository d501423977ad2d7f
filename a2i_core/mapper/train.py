"""Training the mapper: the whole loop in one place.

loss = w_cos * (1 - cos) + w_mse * MSE on the pooled embedding, plus the same on each predicted sequence token
when the target includes tokens; Adam; early stopping on the validation loss, the best epoch's weights kept.

The data are indexed, never copied per pair: a split holds each pair's clip row and prompt row, and shares the clip
features and the unique prompts' targets; every batch is gathered by index and moved to the device. 2 M pairs of a
few hundred prompts take two integers a pair, not 2048 floats (16 GB) plus their sequence tokens.
"""

from __future__ import annotations

import copy
import logging
import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING

import numpy as np
import torch
import torch.nn.functional as F

from a2i_core.core.errors import A2IError
from a2i_core.core.params import MapperParams, TrainParams
from a2i_core.core.provenance import Provenance
from a2i_core.mapper.model import AudioToSD3Mapper, MapperConfig

if TYPE_CHECKING:
    from a2i_core.mapper.pairs import Pairs

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
class Split:
    """One data split, indexed: pair i reads clip row ``clip[i]`` of the audio features and prompt row ``prompt[i]``
    of the targets. Features and targets are held once, shared by every split of one load (on the device when they
    fit); each batch is gathered by index and moved to the device. Memory follows clips and unique prompts, never
    the number of pairs."""

    device: torch.device  # where batches go
    clip: torch.Tensor  # (n,) int64, on the CPU
    prompt: torch.Tensor  # (n,) int64, on the CPU
    audio: torch.Tensor  # (C, 128) clip means, or (R, 128) every clip's frames end to end (at most max_frames each)
    pooled: torch.Tensor  # (K, P) each prompt's pooled target (or its whole target)
    tokens: torch.Tensor | None = None  # (K, N, D) its first sequence tokens as stored (float16), when predicted
    starts: torch.Tensor | None = None  # (C,) frames input: each clip's first row in ``audio``
    lengths: torch.Tensor | None = None  # (C,) and its number of frames
    # Frames input: every batch is padded to T, the longest clip of the load, as the whole-set array was: dropout's
    # random draws follow the batch's shape, so padding each batch to its own longest would change the results.
    pad_to: int = 0

    @classmethod
    def of(cls, pairs: Pairs, input: str, with_tokens: bool, device: torch.device) -> Split:
        """All of ``pairs`` as a mapper with this input and target reads them (``.rows()`` then picks a split)."""
        clip, prompt = torch.from_numpy(pairs.clip_row), torch.from_numpy(pairs.prompt_row)
        tokens = _place(pairs.prompt_tokens, device) if with_tokens else None
        if input != "frames":
            return cls(device, clip, prompt, _place(pairs.clip_audio, device), _place(pairs.prompt_pooled, device),
                       tokens)
        offsets = torch.from_numpy(pairs.clip_frames.offsets)  # (C + 1,)
        lengths = offsets[1:] - offsets[:-1]
        return cls(device, clip, prompt, _place(pairs.clip_frames.values, device), _place(pairs.prompt_pooled, device),
                   tokens, offsets[:-1], lengths, pad_to=int(lengths[clip].max()) if len(clip) else 0)

    @classmethod
    def dense(cls, x: np.ndarray, mask: np.ndarray | None, y: np.ndarray, device: torch.device) -> Split:
        """A clip and a prompt per pair: x (n, 128) or (n, T, 128) with mask (n, T) (real frames first), y (n, out)."""
        index = torch.arange(len(x))
        if mask is None:
            return cls(device, index, index, _place(x, device), _place(y, device))
        lengths = torch.from_numpy(mask.sum(1).astype(np.int64))
        return cls(device, index, index, _place(np.ascontiguousarray(x[mask]), device), _place(y, device),
                   starts=torch.cumsum(lengths, 0) - lengths, lengths=lengths, pad_to=mask.shape[1])

    def __len__(self) -> int:
        return len(self.clip)

    def rows(self, keep: np.ndarray | torch.Tensor) -> Split:
        """The pairs at ``keep`` (a boolean mask or positions), sharing the features and targets."""
        keep = torch.as_tensor(keep)
        return replace(self, clip=self.clip[keep], prompt=self.prompt[keep])

    def batch(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor]:
        """Pairs ``rows`` (B,) on the device: x (B, 128) or (B, T, 128) zero-padded, mask (B, T) or None,
        y (B, P [+ N * D])."""
        return *self.inputs(rows), self.targets(rows)

    def inputs(self, rows: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        clip = self.clip[rows]  # (B,)
        if self.starts is None:
            return _gather(self.audio, clip).to(self.device), None  # (B, 128)
        t = torch.arange(self.pad_to)  # (T,)
        mask = t < self.lengths[clip, None]  # (B, T)
        x = _gather(self.audio, torch.where(mask, self.starts[clip, None] + t, 0))  # (B, T, 128)
        return x.masked_fill(~mask[..., None].to(x.device), 0).to(self.device), mask.to(self.device)

    def targets(self, rows: torch.Tensor) -> torch.Tensor:
        prompt = self.prompt[rows]  # (B,)
        y = _gather(self.pooled, prompt)  # (B, P)
        if self.tokens is not None:
            y = torch.cat([y, _gather(self.tokens, prompt).flatten(1).float()], dim=1)  # (B, P + N * D)
        return y.to(self.device)

    def input_stats(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Mean and standard deviation (n - 1) of the inputs over these pairs (over their real frames, for frames
        input): gathered a bounded number of pairs at a time, the parts merged in float64 (Chan et al.). A split that
        fits one part gets exactly torch's mean and std of all its rows, as when every pair was held at once."""
        step = max(1, STATS_VALUES // (self.audio.shape[1] * max(self.pad_to, 1)))
        parts = []  # (rows, mean (128,), std (128,)) per part
        for i in range(0, len(self), step):
            x, mask = self.inputs(torch.arange(i, min(i + step, len(self))))
            real = x if mask is None else x[mask]  # (rows, 128)
            parts.append((len(real), real.mean(0), real.std(0)))
        if len(parts) == 1:
            return parts[0][1], parts[0][2]
        parts = [(n, m.cpu().double(), s.cpu().double()) for n, m, s in parts]  # float64 on the CPU (not on MPS)
        count = sum(n for n, _, _ in parts)
        mean = sum(n * m for n, m, _ in parts) / count
        square = sum((n - 1) * s**2 + n * (m - mean) ** 2 if n > 1 else (m - mean) ** 2 for n, m, s in parts)
        return mean.float().to(self.device), (square / (count - 1)).sqrt().float().to(self.device)


STATS_VALUES = 1 << 24  # input values per part of the input statistics (64 MB of float32)
EVAL_ELEMENTS = 1 << 24  # target values per validation batch (64 MB of float32)


def _place(array: np.ndarray, device: torch.device) -> torch.Tensor:
    """``array`` on ``device`` when it takes under half the device's free memory, else left in host memory, where
    batches are gathered before they move. On the CPU it is shared with ``array``, not copied."""
    with warnings.catch_warnings():  # read-only arrays (Arrow buffers) are fine: a split never writes its features
        warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
        tensor = torch.from_numpy(array)
    if device.type == "cuda" and tensor.nbytes > torch.cuda.mem_get_info(device)[0] // 2:
        return tensor
    return tensor.to(device)


def _gather(source: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    return source[index.to(source.device)]


def train_mapper(train: Split, val: Split, config: MapperConfig, params: TrainParams,
                 on_epoch: Callable[[dict], None] | None = None) -> TrainResult:
    torch.manual_seed(params.seed)
    device = train.device
    model = AudioToSD3Mapper(config).to(device)
    model.set_input_stats(*train.input_stats())  # (128,), (128,)
    optimizer = torch.optim.Adam(model.parameters(), lr=params.lr)
    generator = torch.Generator(device="cpu").manual_seed(params.seed)
    val_batch = max(params.batch_size, EVAL_ELEMENTS // config.out_dim)

    history: list[dict] = []
    best_loss, best_epoch, best_state = float("inf"), 0, copy.deepcopy(model.state_dict())
    start = time.monotonic()
    n = len(train)
    for epoch in range(1, params.epochs + 1):
        model.train()
        order = torch.randperm(n, generator=generator)  # (n,) on the CPU, where the indices are
        total = 0.0
        for i in range(0, n, params.batch_size):
            x, mask, y = train.batch(order[i : i + params.batch_size])  # (B, 128) | (B, T, 128), (B, T), (B, out)
            loss = mapper_loss(model, model(x, mask), y, params.w_cos, params.w_mse)
            value = loss.item()  # the batch's one host sync: checked here, summed below
            if not math.isfinite(value):  # every later step would be nan too, and the best epoch's weights are moot
                raise A2IError(f"train: the loss became {value} at epoch {epoch}, batch "
                               f"{i // params.batch_size + 1}: the mapper diverged (lower train.lr, or check the "
                               "features); the mapper is left as it was")
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            total += value * x.shape[0]

        # Validation in batches: the loss and the cosine are means over rows, so rows-weighted batch means are the
        # whole split's (and exactly so when it fits one batch).
        model.eval()
        val_loss = val_cos = 0.0
        with torch.no_grad():
            for i in range(0, len(val), val_batch):
                x, mask, y = val.batch(torch.arange(i, min(i + val_batch, len(val))))
                out = model(x, mask)  # (B, out)
                pooled, _ = model.pooled_and_tokens(out)  # (B, P)
                target_pooled, _ = model.pooled_and_tokens(y)
                val_loss += mapper_loss(model, out, y, params.w_cos, params.w_mse).item() * len(y)
                val_cos += F.cosine_similarity(pooled, target_pooled, dim=-1).mean().item() * len(y)
        val_loss, val_cos = val_loss / len(val), val_cos / len(val)
        if not math.isfinite(val_loss):  # no epoch could ever be "best": the untrained weights would be saved
            raise A2IError(f"train: the validation loss became {val_loss} at epoch {epoch}: the mapper or the "
                           "validation features are not finite (check the features, or lower train.lr); the mapper "
                           "is left as it was")
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
    """The mapper's config from params and the data's widths; a mapper too large for its caps is one line."""
    tokens, width = token_shape or (0, 0)
    try:
        return MapperConfig(in_dim=in_dim, pooled_dim=pooled_dim, hidden=list(mapper.hidden),
                            dropout=list(mapper.dropout), tokens=tokens, token_width=width, input=mapper.input,
                            frames_width=mapper.frames_width, frames_layers=mapper.frames_layers,
                            max_frames=mapper.max_frames, provenance=provenance)
    except ValueError as err:  # e.g. mapper.hidden with diffusion.tokens: 256 of SD3's 4096-wide tokens
        raise A2IError(f"mapper: {err} (see mapper.hidden, mapper.target and diffusion.tokens)") from None
