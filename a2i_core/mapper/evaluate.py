"""Held-out metrics: regression quality and whether the predicted embedding retrieves the true prompt."""

from __future__ import annotations

import numpy as np
import pandas as pd

from a2i_core.core.retrieval import normalise
from a2i_core.mapper.model import AudioToSD3Mapper, predict
from a2i_core.mapper.pairs import Pairs

# The numbers reported for baselines and summarised over folds.
SUMMARY_KEYS = ("mse", "cosine", "combined", "top1", "top5", "mrr")
# What a metrics file (and so `dvc exp show`) holds; the full report goes beside it as a plain output. Each column
# must earn its place in a table of experiments: the held-out classes and the extra sets leave out what the test
# split already says (chance, token quality).
HEADLINE_KEYS = ("top1", "top5", "mrr", "cosine", "mse")
TEST_HEADLINE = (*HEADLINE_KEYS, "tokens_cosine", "tokens_mse", "baseline_top1", "chance_top1")
HELDOUT_HEADLINE = (*HEADLINE_KEYS, "baseline_top1")
SET_HEADLINE = (*HEADLINE_KEYS, "chance_top1", "top1_fold_std")
PREDICT_ROWS = 4096  # pairs per prediction batch


def token_metrics(pred: np.ndarray, target: np.ndarray) -> dict[str, float]:
    """Cosine and MSE of predicted sequence tokens (n, N, D), averaged over tokens."""
    cos = np.sum(normalise(pred) * normalise(target), axis=-1)  # (n, N)
    return {"tokens_cosine": float(cos.mean()), "tokens_mse": float(np.mean((pred - target) ** 2))}


def regression_metrics(pred: np.ndarray, target: np.ndarray, w_cos: float, w_mse: float) -> dict[str, float]:
    mse = float(np.mean((pred - target) ** 2))
    cos = float(np.mean(np.sum(normalise(pred) * normalise(target), axis=-1)))
    return {"mse": mse, "cosine": cos, "combined": w_cos * (1 - cos) + w_mse * mse}


def true_prompt_ranks(pred: np.ndarray, true_prompts: list[str], prompts: list[str],
                      prompt_pooled: np.ndarray) -> np.ndarray:
    """1-based rank of each pair's true prompt among all prompts, by cosine similarity."""
    sims = normalise(pred) @ normalise(prompt_pooled).T  # (n, K)
    index = {p: i for i, p in enumerate(prompts)}
    true_sim = sims[np.arange(len(pred)), [index[p] for p in true_prompts]]
    return 1 + np.sum(sims > true_sim[:, None], axis=1)


def retrieval_metrics(ranks: np.ndarray, num_prompts: int) -> dict[str, float]:
    return {
        "top1": float(np.mean(ranks <= 1)),
        "top5": float(np.mean(ranks <= 5)),
        "mrr": float(np.mean(1.0 / ranks)),
        "chance_top1": 1.0 / num_prompts,
        "chance_top5": min(5, num_prompts) / num_prompts,
    }


def evaluate_predictions(pred: np.ndarray, target: np.ndarray, frame: pd.DataFrame, prompts: list[str],
                         prompt_pooled: np.ndarray, w_cos: float, w_mse: float) -> tuple[dict, pd.DataFrame]:
    """Overall metrics and a per-label table for one set of predictions."""
    ranks = true_prompt_ranks(pred, frame["prompt"].tolist(), prompts, prompt_pooled)
    metrics = {"pairs": len(frame), "prompts": len(prompts), **regression_metrics(pred, target, w_cos, w_mse),
               **retrieval_metrics(ranks, len(prompts))}
    cos = np.sum(normalise(pred) * normalise(target), axis=-1)
    per_label = (pd.DataFrame({"label": frame["label"].to_numpy(), "top1": ranks <= 1, "top5": ranks <= 5,
                               "cosine": cos})
                 .groupby("label", sort=True).agg(pairs=("top1", "size"), top1=("top1", "mean"),
                                                  top5=("top5", "mean"), cosine=("cosine", "mean"))
                 .reset_index())
    return metrics, per_label


def headline(report: dict, keys: tuple[str, ...]) -> dict[str, float]:
    """Those of ``keys`` the report has (token metrics only for a tokens mapper), the mean baseline's top-1 as
    ``baseline_top1``: the few numbers worth a column in `dvc exp show`."""
    flat = {**report, **({"baseline_top1": report["baseline_mean"]["top1"]} if "baseline_mean" in report else {})}
    return {key: flat[key] for key in keys if key in flat}


def mapper_metrics(mapper: AudioToSD3Mapper, part: Pairs, prompts: list[str], prompt_pooled: np.ndarray,
                   w_cos: float, w_mse: float, batch: int = PREDICT_ROWS) -> tuple[dict, pd.DataFrame]:
    """The mapper's predictions on ``part`` scored: overall metrics (with token metrics for a tokens mapper) and a
    per-label table. Predicts ``batch`` pairs at a time: a large split's inputs and predicted tokens are never held
    whole (token metrics are means over rows, so rows-weighted batch means are the split's)."""
    pooled, token_sums = [], {}
    for start in range(0, len(part.frame), batch):
        chunk = part.take(np.arange(start, min(start + batch, len(part.frame))))
        chunk_pooled, tokens = predict(mapper, *chunk.inputs(mapper.config.input))  # (B, P), (B, N, D) | None
        pooled.append(chunk_pooled)
        if tokens is not None:
            for key, value in token_metrics(tokens, chunk.tokens).items():
                token_sums[key] = token_sums.get(key, 0.0) + value * len(tokens)
    pooled = np.concatenate(pooled) if pooled else np.zeros((0, prompt_pooled.shape[1]), np.float32)
    metrics, per_label = evaluate_predictions(pooled, part.pooled, part.frame, prompts, prompt_pooled, w_cos, w_mse)
    metrics.update({key: value / len(part.frame) for key, value in token_sums.items()})
    return metrics, per_label
