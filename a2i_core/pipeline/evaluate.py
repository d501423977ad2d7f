"""evaluate: the mapper on held-out pairs -> headline metrics, the full report and a per-class table.

Reports the test split, the held-out-class split when data.heldout_classes is set, and a trivial baseline
(always the training set's mean embedding) beside the mapper. The metrics file holds only the headline numbers, so
that `dvc exp show` stays readable; the report beside it holds everything (pairs, chance, combined loss, the
baseline's every number).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from a2i_core.core.candidates import HELDOUT
from a2i_core.core.charts import bar_chart, write_chart
from a2i_core.core.files import atomic_path, write_json
from a2i_core.core.params import TrainParams
from a2i_core.mapper.evaluate import (
    HELDOUT_HEADLINE,
    SUMMARY_KEYS,
    TEST_HEADLINE,
    evaluate_predictions,
    headline,
    mapper_metrics,
)
from a2i_core.mapper.model import AudioToSD3Mapper
from a2i_core.mapper.pairs import load_pairs_for


def evaluate(params: TrainParams, mapper_dir: Path, candidates: Path, audio_features: Path, text_features: Path,
             metrics: Path, report: Path, per_class: Path,
             per_class_chart: Path) -> dict:
    """Writes the headline ``metrics``, the full ``report``, the ``per_class`` table and its chart; returns the
    report."""
    w_cos, w_mse = params.w_cos, params.w_mse
    mapper = AudioToSD3Mapper.from_pretrained(mapper_dir)
    pairs = load_pairs_for(mapper, candidates, audio_features, text_features)
    train_mean = pairs.subset("train").mean_pooled()[None]  # (1, P), from prompt counts: no row per training pair

    full, tables = {}, []
    for split in ("test", HELDOUT):
        part = pairs.subset(split)
        if not len(part.frame):
            continue
        scores, per_label = mapper_metrics(mapper, part, pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        baseline, _ = evaluate_predictions(np.repeat(train_mean, len(part.frame), axis=0), part.pooled, part.frame,
                                           pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        scores["baseline_mean"] = {k: baseline[k] for k in SUMMARY_KEYS}
        full[split] = scores
        tables.append(per_label.assign(split=split))
    # The test split's numbers at the top level, so `dvc metrics show` and `dvc exp show` list them directly.
    full = {**full.pop("test"), **full}
    write_json(report, full)
    numbers = headline(full, TEST_HEADLINE)
    if HELDOUT in full:
        numbers[HELDOUT] = headline(full[HELDOUT], HELDOUT_HEADLINE)
    write_json(metrics, numbers)
    table = pd.concat(tables)
    with atomic_path(per_class) as tmp:
        table.to_csv(tmp, index=False)
    shown = [label if split == "test" else f"{label} (held out)"
             for label, split in zip(table["label"], table["split"], strict=True)]
    write_chart(per_class_chart, bar_chart(shown, table["top1"].tolist(), "Retrieval of the true prompt per class",
                                           "top-1"))
    return full
