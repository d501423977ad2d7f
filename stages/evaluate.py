"""evaluate: the mapper on held-out pairs -> metrics/eval.json and metrics/eval_per_class.csv.

Reports the test split, the held-out-class split when data.heldout_classes is set, and a trivial baseline
(always the training set's mean embedding) beside the mapper.
"""

import numpy as np
import pandas as pd

from a2i_core.errors import exit_cleanly, setup_logging
from a2i_core.evaluate import SUMMARY_KEYS, evaluate_predictions, mapper_metrics
from a2i_core.files import atomic_path, write_json
from a2i_core.ingest import HELDOUT
from a2i_core.mapper import AudioToSD3Mapper
from a2i_core.pairs import load_pairs_for
from a2i_core.params import load_params


@exit_cleanly
def main() -> None:
    setup_logging()
    params = load_params()
    w_cos, w_mse = params.train.w_cos, params.train.w_mse
    mapper = AudioToSD3Mapper.from_pretrained("models/mapper")
    pairs = load_pairs_for(mapper, "data/candidates.parquet", "data/features/audio", "data/features/text")
    train_mean = pairs.split("train").pooled.mean(0, keepdims=True)

    report, tables = {}, []
    for split in ("test", HELDOUT):
        part = pairs.split(split)
        if not len(part.frame):
            continue
        metrics, per_label = mapper_metrics(mapper, part, pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        baseline, _ = evaluate_predictions(np.repeat(train_mean, len(part.frame), axis=0), part.pooled, part.frame,
                                           pairs.prompts, pairs.prompt_pooled, w_cos, w_mse)
        metrics["baseline_mean"] = {k: baseline[k] for k in SUMMARY_KEYS}
        report[split] = metrics
        tables.append(per_label.assign(split=split))
    # The test split's numbers at the top level, so `dvc metrics show` and `dvc exp show` list them directly.
    write_json("metrics/eval.json", {**report.pop("test"), **report})
    with atomic_path("metrics/eval_per_class.csv") as tmp:
        pd.concat(tables).to_csv(tmp, index=False)


if __name__ == "__main__":
    main()
