import numpy as np
import pandas as pd
import pytest
import torch

from a2i_core.core.errors import A2IError
from a2i_core.core.params import MapperParams, TrainParams
from a2i_core.mapper.evaluate import evaluate_predictions, true_prompt_ranks
from a2i_core.mapper.model import predict
from a2i_core.mapper.train import Split, combined_loss, mapper_config, train_mapper
from tests.conftest import offline
from tests.mapper.test_model import PROVENANCE


def _toy(n_per_class: int, seed: int):
    # Four audio clusters, each mapped to its own target vector.
    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4, 16)) * 3
    targets = rng.standard_normal((4, 8)).astype(np.float32)
    labels = np.repeat(np.arange(4), n_per_class)
    audio = (centers[labels] + rng.standard_normal((labels.size, 16))).astype(np.float32)
    return audio, targets[labels], labels, targets


def _mapper(hidden, dropout) -> MapperParams:
    return offline("mapper", hidden=hidden, dropout=dropout, frames_width=32, frames_layers=1, max_frames=8)


def _train(x, y, xv, yv, mapper: MapperParams, train: TrainParams):
    cpu = torch.device("cpu")
    config = mapper_config(mapper, x.shape[1], y.shape[1], None, PROVENANCE)
    return train_mapper(Split.dense(x, None, y, cpu), Split.dense(xv, None, yv, cpu), config, train)


def test_combined_loss_is_the_study_formula():
    pred, target = torch.tensor([[1.0, 0.0]]), torch.tensor([[0.0, 2.0]])
    # cos = 0, mse = (1 + 4) / 2
    assert torch.isclose(combined_loss(pred, target, 0.7, 0.3), torch.tensor(0.7 * 1 + 0.3 * 2.5))


def test_training_learns_and_stops_early():
    x, y, labels, targets = _toy(40, 0)
    xv, yv, vlabels, _ = _toy(10, 0)
    train = offline("train", lr=1e-3, batch_size=16, epochs=300, patience=5, seed=0)
    result = _train(x, y, xv, yv, _mapper([32, 32], [0.1, 0.1]), train)
    assert result.stopped_epoch < 300 and result.stopped_epoch - result.best_epoch == 5
    assert result.history[-1]["train_loss"] < result.history[0]["train_loss"] / 3
    prompts = [f"p{i}" for i in range(4)]
    frame = pd.DataFrame({"label": vlabels, "prompt": [prompts[i] for i in vlabels]})
    metrics, per_label = evaluate_predictions(predict(result.model, xv)[0], yv, frame, prompts, targets, 0.7, 0.3)
    assert metrics["top1"] == 1.0 and metrics["chance_top1"] == 0.25 and metrics["cosine"] > 0.9
    assert len(per_label) == 4


def test_a_diverging_run_stops_with_one_line_and_returns_nothing():
    # Before: train.lr too large gave nan losses, early stopping on nan, exit 0 and the untrained weights as the mapper.
    x, y, _, _ = _toy(40, 0)
    train = offline("train", lr=1e30, batch_size=16, epochs=50, patience=50, seed=0)
    with pytest.raises(A2IError, match=r"^train: the loss became (nan|inf) at epoch \d+, batch \d+: the mapper "):
        _train(x, y, x, y, _mapper([32, 32], [0.1, 0.1]), train)


def test_a_validation_loss_that_is_not_finite_stops_with_one_line():
    # Before: nan only in the validation features never made an epoch "best": patience ran out and the untrained
    # weights were saved as the mapper, exit 0.
    x, y, _, _ = _toy(40, 0)
    xv, yv, _, _ = _toy(10, 0)
    xv[3, 0] = np.nan
    train = offline("train", lr=1e-3, batch_size=16, epochs=50, patience=5, seed=0)
    with pytest.raises(A2IError, match=r"^train: the validation loss became nan at epoch 1: "):
        _train(x, y, xv, yv, _mapper([32, 32], [0.1, 0.1]), train)


def test_same_seed_same_model():
    x, y, _, _ = _toy(20, 1)
    train = offline("train", lr=1e-3, batch_size=8, epochs=3, patience=3, seed=7)
    mapper = _mapper([16], [0.2])
    a = _train(x, y, x, y, mapper, train).model
    b = _train(x, y, x, y, mapper, train).model
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_ranks_count_prompts_closer_than_the_true_one():
    prompt_pooled = np.eye(3, dtype=np.float32)
    pred = np.array([[1.0, 0.5, 0.0], [0.0, 0.2, 1.0]], np.float32)
    ranks = true_prompt_ranks(pred, ["p1", "p2"], ["p0", "p1", "p2"], prompt_pooled)
    assert ranks.tolist() == [2, 1]
