"""The label head: which prompts of the bank a clip holds, as independent probabilities (a multi-label logistic
classifier on the clip's standardised mean window embedding), trained on clips and on two-source mixtures of them.

A folder like the mapper's: ``head.safetensors`` (weight (K, D), bias (K,), input_mean (D,), input_std (D,)) and
``config.json`` (the prompts in the bank's order, the embedding width and the audio features it learnt from). It may
come from outside (a copy, a pull), so ``from_pretrained`` checks the config against caps before any tensor is
allocated, and the weights' header and values as the mapper's are checked.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from scipy.special import expit

from a2i_core.core.errors import A2IError
from a2i_core.core.fetch_file import SHA256
from a2i_core.core.files import atomic_dir, read_json
from a2i_core.core.provenance import AUDIO_FIELDS, Provenance
from a2i_core.core.typed import check, typed_from_dict
from a2i_core.mapper.model import MAX_PARAMETERS, MAX_WIDTH, MIN_INPUT_STD, read_tensors

log = logging.getLogger(__name__)
WEIGHTS_NAME = "head.safetensors"
CONFIG_NAME = "config.json"
MISSING = "no label head here (run `dvc repro label_head`, or layers.answer: nnls)"
# Caps on what a config.json may ask for, checked before anything is allocated: AudioSet's ontology has 632 classes,
# and a prompt is a sentence. The file itself is capped before it is parsed (a tampered one could hold gigabytes).
MAX_PROMPTS = 1 << 16
MAX_CONFIG_BYTES = 32 << 20
# Fitting: L-BFGS over the whole training set (convex: the same optimum from any start, so a seed changes nothing
# but is kept for any stochastic part to come); the loss is summed a slice of rows at a time so memory is bounded by
# CHUNK_ELEMENTS logits, not by the training set.
MAX_ITERATIONS = 300
CHUNK_ELEMENTS = 1 << 22  # 4M float64 logits, their sigmoid and gradient: ~100 MB
PRIOR_CLIP = 1e-4  # the bias starts at the log-odds of each prompt's share of positives, clipped to [this, 1 - this]


@dataclass
class AudioPart:
    """The audio features a head learnt from: the audio fields of the mapper's provenance."""

    encoder_sha256: str
    postprocess: bool
    frontend: str

    def __post_init__(self) -> None:
        check(bool(SHA256.fullmatch(self.encoder_sha256)), "encoder_sha256", "must be 64 lowercase hex digits")
        check(bool(self.frontend.strip()), "frontend", "must not be empty")


@dataclass
class HeadConfig:
    classes: int  # K, the prompts
    dim: int  # D, the audio embedding's width
    prompts: list[str]
    audio: AudioPart

    def __post_init__(self) -> None:
        check(1 <= self.classes <= MAX_PROMPTS, "classes", f"must be in [1, {MAX_PROMPTS}], got {self.classes}")
        check(1 <= self.dim <= MAX_WIDTH, "dim", f"must be in [1, {MAX_WIDTH}], got {self.dim}")
        check(self.classes * self.dim <= MAX_PARAMETERS, "dim", f"the head would have {self.classes * self.dim:.3g} "
              f"weights (at most {MAX_PARAMETERS:.0e})")
        check(len(self.prompts) == self.classes, "prompts", f"lists {len(self.prompts)}, but classes is "
              f"{self.classes}")
        check(len(set(self.prompts)) == len(self.prompts), "prompts", "lists a prompt twice")


def audio_part(provenance: Provenance) -> dict[str, Any]:
    """The audio fields of a provenance record: what a head's features must match (``check_fits``)."""
    return {name: getattr(provenance, name) for name in AUDIO_FIELDS}


@dataclass
class LabelHead:
    """sigmoid(weight @ ((x - mean) / std) + bias): one probability per prompt, for a clip's mean embedding x."""

    weight: np.ndarray  # (K, D) float32
    bias: np.ndarray  # (K,)
    mean: np.ndarray  # (D,)
    std: np.ndarray  # (D,), each at least MIN_INPUT_STD
    prompts: list[str]
    audio: dict[str, Any]  # AUDIO_FIELDS

    @property
    def dim(self) -> int:
        return int(self.weight.shape[1])

    def scores(self, clips: list[np.ndarray]) -> np.ndarray:
        """(c, K) probabilities: each clip's (n_i, D) window embeddings, averaged, through the head."""
        if not clips:
            return np.zeros((0, len(self.prompts)), np.float32)
        for i, clip in enumerate(clips):
            if clip.ndim != 2 or clip.shape[0] == 0 or clip.shape[1] != self.dim:
                raise A2IError(f"label head: clip {i} has embeddings of shape {clip.shape}, but the head takes "
                               f"(windows >= 1, {self.dim})")
        x = np.stack([np.asarray(c, np.float64).mean(axis=0) for c in clips])  # (c, D)
        return self.probabilities(x)

    def probabilities(self, x: np.ndarray) -> np.ndarray:
        """(c, K) probabilities of mean embeddings x (c, D)."""
        z = (np.asarray(x, np.float64) - self.mean) / self.std  # (c, D)
        return expit(z @ self.weight.T.astype(np.float64) + self.bias).astype(np.float32)  # (c, K)

    def check_fits(self, prompts: list[str], audio: dict[str, Any]) -> None:
        """A2IError unless this head was trained for ``prompts`` (the mapper's bank, in its order) and ``audio`` (the
        audio fields of the mapper's provenance: ``audio_part``)."""
        if list(prompts) != self.prompts:
            differ = next((k for k, (a, b) in enumerate(zip(prompts, self.prompts, strict=False)) if a != b),
                          min(len(prompts), len(self.prompts)))
            shown = prompts[differ] if differ < len(prompts) else "(none)"
            raise A2IError(f"the label head was trained for another prompt bank ({len(self.prompts)} prompts, the "
                           f"mapper has {len(prompts)}; first difference at {differ}: {shown!r}): rerun label_head")
        for name in AUDIO_FIELDS:
            if audio.get(name) != self.audio.get(name):
                raise A2IError(f"the label head was trained on other audio features ({name} is "
                               f"{str(self.audio.get(name))[:16]!r}, the mapper's {str(audio.get(name))[:16]!r}): "
                               "rerun label_head")

    def save_pretrained(self, directory: str | Path) -> None:
        """``head.safetensors`` and ``config.json``, written whole (an atomic swap)."""
        from safetensors.numpy import save_file

        config = HeadConfig(len(self.prompts), self.dim, list(self.prompts), AudioPart(**self.audio))
        with atomic_dir(directory) as tmp:
            save_file({"weight": _f32(self.weight), "bias": _f32(self.bias), "input_mean": _f32(self.mean),
                       "input_std": _f32(self.std)}, str(tmp / WEIGHTS_NAME))
            (tmp / CONFIG_NAME).write_text(json.dumps(dataclasses.asdict(config), indent=1, ensure_ascii=False)
                                           + "\n", encoding="utf-8")

    @classmethod
    def from_pretrained(cls, directory: str | Path) -> LabelHead:
        directory = Path(directory)
        config_path, weights_path = directory / CONFIG_NAME, directory / WEIGHTS_NAME
        if not config_path.is_file() or not weights_path.is_file():
            raise A2IError(f"{directory}: {MISSING}")
        if config_path.stat().st_size > MAX_CONFIG_BYTES:
            raise A2IError(f"{config_path}: {config_path.stat().st_size} bytes, but a label head's config is at most "
                           f"{MAX_CONFIG_BYTES}")
        config: HeadConfig = typed_from_dict(HeadConfig, read_json(config_path), str(config_path))
        k, d = config.classes, config.dim
        state = read_tensors(weights_path, {"weight": (k, d), "bias": (k,), "input_mean": (d,), "input_std": (d,)},
                             f"{config_path.name} makes it")
        std = state["input_std"]
        if (std < MIN_INPUT_STD).any():
            i = int(torch.argmin(std))
            raise A2IError(f"{weights_path}: input_std[{i}] is {float(std[i]):.3g}, but a trained head's are at least "
                           f"{MIN_INPUT_STD:g} (it divides by them)")
        return cls(state["weight"].numpy(), state["bias"].numpy(), state["input_mean"].numpy(), std.numpy(),
                   config.prompts, dataclasses.asdict(config.audio))


def _f32(array: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(array, np.float32)


def fit_head(features: np.ndarray, targets: np.ndarray, prompts: list[str], audio: dict[str, Any],
             weight_decay: float, seed: int, row_weights: np.ndarray | None = None) -> LabelHead:
    """A head fitted to mean embeddings (n, D) and 0/1 targets (n, K): standardised inputs, binary cross-entropy
    summed over prompts and averaged over rows (weighted by ``row_weights`` (n,), scaled to average 1, when given),
    plus weight_decay / 2 * |weight|^2 (per prompt, the logistic regression of C = 1 / (weight_decay * n));
    full-batch L-BFGS, deterministic."""
    x, y = _checked(features, targets, prompts)
    if row_weights is None:
        row_weights = np.ones(len(x))
    w = np.asarray(row_weights, np.float64)
    if w.shape != (len(x),) or not np.isfinite(w).all() or (w < 0).any() or w.sum() <= 0:
        raise A2IError(f"label head: row weights {w.shape} must be (n,) = ({len(x)},), finite, >= 0, not all 0")
    ws = torch.from_numpy(w * len(w) / w.sum())  # (n,): average 1, so weight_decay means what it means unweighted
    AudioPart(**audio)  # a record that says nothing must not be saved as one that matches
    torch.manual_seed(seed)
    mean = x.mean(axis=0)
    std = np.maximum(x.std(axis=0), MIN_INPUT_STD)
    xs = torch.from_numpy((x - mean) / std)  # (n, D) float64
    ys = torch.from_numpy(y)  # (n, K) float64
    prior = np.clip(np.average(y, axis=0, weights=w), PRIOR_CLIP, 1 - PRIOR_CLIP)
    weight = torch.zeros(y.shape[1], x.shape[1], dtype=torch.float64, requires_grad=True)  # (K, D)
    bias = torch.tensor(np.log(prior / (1 - prior)), requires_grad=True)  # (K,)
    optimiser = torch.optim.LBFGS([weight, bias], lr=1, max_iter=MAX_ITERATIONS, history_size=20,
                                  tolerance_grad=1e-7, tolerance_change=1e-12, line_search_fn="strong_wolfe")
    rows = max(1, CHUNK_ELEMENTS // y.shape[1])

    def closure() -> torch.Tensor:
        optimiser.zero_grad()
        total = 0.0
        for start in range(0, len(xs), rows):  # gradients add up slice by slice: memory bounded by one slice
            logits = xs[start:start + rows] @ weight.T + bias  # (rows, K)
            part = (torch.nn.functional.binary_cross_entropy_with_logits(
                logits, ys[start:start + rows], reduction="none").sum(dim=1) * ws[start:start + rows]).sum() / len(xs)
            part.backward()
            total += float(part.detach())
        penalty = weight_decay / 2 * (weight * weight).sum()
        penalty.backward()
        return torch.tensor(total + float(penalty.detach()))

    started = time.perf_counter()
    optimiser.step(closure)  # returns the first loss: the last one is measured below
    loss = float(closure())
    state = optimiser.state[weight]
    log.info("label head: %d rows, %d prompts, %d features: loss %.4f after %d L-BFGS iterations in %.1f s", len(x),
             y.shape[1], x.shape[1], loss, state.get("n_iter", 0), time.perf_counter() - started)
    if not math.isfinite(loss):
        raise A2IError(f"label head: the loss is {loss} (features too large to standardise?)")
    return LabelHead(_f32(weight.detach().numpy()), _f32(bias.detach().numpy()), _f32(mean), _f32(std),
                     list(prompts), dict(audio))


def _checked(features: np.ndarray, targets: np.ndarray, prompts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    x, y = np.asarray(features, np.float64), np.asarray(targets, np.float64)
    if x.ndim != 2 or y.ndim != 2 or len(x) != len(y) or len(x) == 0:
        raise A2IError(f"label head: features {x.shape} and targets {y.shape} must be (n, D) and (n, K), n >= 1")
    if y.shape[1] != len(prompts) or len(set(prompts)) != len(prompts):
        raise A2IError(f"label head: {y.shape[1]} target columns for {len(prompts)} prompts (each once)")
    if not np.isfinite(x).all():
        raise A2IError("label head: features hold values that are not finite")
    if not np.isin(y, (0.0, 1.0)).all():
        raise A2IError("label head: targets must be 0 or 1")
    return x, y
