"""evaluate: the mapper on held-out pairs -> headline metrics and a per-class table.

Reports the test split, the held-out-class split when data.heldout_classes is set, and a trivial baseline
(always the training set's mean embedding) beside the mapper.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from a2i_core.candidates import HELDOUT
from a2i_core.evaluate import SUMMARY_KEYS, evaluate_predictions, mapper_metrics
from a2i_core.files import atomic_path, write_json
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import load_pairs_for
from a2i_core.params import TrainParams


def evaluate(params: TrainParams, mapper_dir: Path, candidates: Path, audio_features: Path, text_features: Path,
             metrics: Path, per_class: Path) -> dict:
    w_cos, w_mse = params.w_cos, params.w_mse
    mapper = AudioToSD3Mapper.from_pretrained(mapper_dir)
    pairs = load_pairs_for(mapper, candidates, audio_features, text_features)
    train_mean = pairs.subset("train").mean_pooled()[None]  # (1, P), from prompt counts: no row per training pair

    report, tables = {}, []
    for split in ("test", HELDOUT):
        part = pairs.subset(split)
        if not len(part.frame):
            continue
        scores, per_label = mapper_metrics(mapper, part, pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        baseline, _ = evaluate_predictions(np.repeat(train_mean, len(part.frame), axis=0), part.pooled, part.frame,
                                           pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        scores["baseline_mean"] = {k: baseline[k] for k in SUMMARY_KEYS}
        report[split] = scores
        tables.append(per_label.assign(split=split))
    # The test split's numbers at the top level, so `dvc metrics show` and `dvc exp show` list them directly.
    report = {**report.pop("test"), **report}
    write_json(metrics, report)
    with atomic_path(per_class) as tmp:
        pd.concat(tables).to_csv(tmp, index=False)
    return report
